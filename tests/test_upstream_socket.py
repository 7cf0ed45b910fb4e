"""The one event socket per process: taken over by another connection (4015), it moves on."""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import threading

import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect
from websockets.sync.server import serve as ws_serve

from tests.upstream_helpers import (
    Booth,
    UpstreamView,
    contract_problems,
    derived_api_key,
    fresh_var_dir,
    our_app_ids,
    result_problems,
    serve,
    wait_for,
)


@pytest.fixture
def var_dir(tmp_path):
    return fresh_var_dir(tmp_path / "var")


def test_a_takeover_of_our_app_id_makes_the_client_renew_it_and_carry_on(var_dir):
    with serve(var_dir, MOCKUP_API_STEP_SECONDS="0.05") as server:
        upstream = UpstreamView(f"{server.base}/mockup-api", derived_api_key())
        [ours] = wait_for(lambda: our_app_ids(upstream), "our socket")
        booth = Booth(server.base, "takeover")
        upload = booth.upload()
        before = booth.generation(upload, number_images=4)
        booth.wait_for_event(before, lambda e: e["type"] == "started")

        # Another connection authenticates with our app id: the API closes ours with 4015.
        # It gets the running task's messages now; an unbounded buffer lets it close unread.
        with connect(upstream.socket_url(ours), open_timeout=10, max_queue=None) as intruder:
            nonce = json.loads(intruder.recv(10))["nonce"]
            key = upstream.api_key.encode()
            signature = hmac.new(key, nonce.encode(), hashlib.sha256).hexdigest()
            intruder.send(json.dumps({"type": "auth", "signature": signature}))
            assert json.loads(intruder.recv(10)) == {"type": "authenticated", "app_id": ours}

            apps = wait_for(
                lambda: (apps := upstream.connections()["apps"]) and len(apps) == 2 and apps,
                "our server to connect again under a new app id",
            )
            [renewed] = set(apps) - {ours}
            assert apps == {ours: 1, renewed: 1}
            assert renewed.startswith("photobooth-")

        after = booth.enhancement(uploadId=upload)
        finished = [booth.wait_for_task(t["taskId"]) for t in (before, after)]
        assert [t["status"] for t in finished] == ["completed", "completed"], finished
        # The new task went out under the new app id, so its messages reach us again.
        assert upstream.generation(finished[1]["upstreamId"])["app_id"] == renewed

        problems = []
        for task in finished:
            problems += contract_problems(task, booth.events(task))
            problems += result_problems(booth, task)
        assert not problems, problems
        assert upstream.connections()["apps"] == {renewed: 1}


def test_the_socket_keeps_reconnecting_when_the_upstream_speaks_nonsense(var_dir):
    """Whatever goes wrong in a connection, the socket comes back (with backoff)."""
    connections = []

    def nonsense(websocket) -> None:
        connections.append(websocket.request.path)
        websocket.send("this is not a challenge")  # not even JSON
        with contextlib.suppress(ConnectionClosed):
            websocket.recv(5)

    with ws_serve(nonsense, "127.0.0.1", 0) as fake:
        threading.Thread(target=fake.serve_forever, daemon=True).start()
        root = f"http://127.0.0.1:{fake.socket.getsockname()[1]}/api"
        with serve(var_dir, MOCKUP_API_URL=root) as server:
            wait_for(lambda: len(connections) >= 3, "the socket to try again", timeout=15)
            assert server.process.poll() is None
        fake.shutdown()
    assert all(path.startswith("/api/v2/socket?app_id=photobooth-") for path in connections)
