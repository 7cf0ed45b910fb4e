"""A server process killed mid-task (SIGKILL) and started again on the same var dir.

Contract section 7: a restart or crash cancels nothing; queued and running tasks carry on and
end as they would have.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path

from tests.live import free_port
from tests.upstream_helpers import (
    Booth,
    FlakyNetwork,
    Server,
    contract_problems,
    fresh_var_dir,
    read_tasks,
    result_problems,
    serve,
    standalone_api,
)

SLOW = {"MOCKUP_API_STEP_SECONDS": "0.2"}


def _kill_mid_task(
    start: Callable[[], AbstractContextManager[Server]],
    var_dir: Path,
    hold_submissions: Callable[[], None],
) -> tuple[Booth, list[dict], dict[str, dict]]:
    """Start the server and SIGKILL it while a generation and a mockup render upstream and
    two later tasks wait in our queue (`hold_submissions` keeps them from going out)."""
    with start() as server:
        booth = Booth(server.base, "restart-booth")
        upload = booth.upload()
        running = [
            booth.generation(upload, number_images=6),
            booth.mockup(upload, list(range(7100, 7110)), client_app_id="restart-shop"),
        ]
        booth.wait_for_event(running[0], lambda e: e["type"] == "started")
        booth.wait_for_task(running[1]["taskId"], ("running",))
        hold_submissions()
        waiting = [
            booth.enhancement(uploadId=upload),
            booth.mockup(upload, [1900], product_id=19, client_app_id="restart-mugs"),
        ]
        server.kill()
    at_kill = read_tasks(var_dir)
    assert [at_kill[t["taskId"]]["upstream_id"] for t in waiting] == [None, None]
    return booth, running + waiting, at_kill


def test_a_killed_server_finishes_every_task_after_a_restart(tmp_path):
    port, var_dir = free_port(), fresh_var_dir(tmp_path / "var")
    api_dir = fresh_var_dir(tmp_path / "api")
    with (
        standalone_api(api_dir, public_base_url=f"http://127.0.0.1:{port}", **SLOW) as api,
        FlakyNetwork(int(api.base.rpartition(":")[2])) as network,
    ):
        root = f"http://127.0.0.1:{network.port}/mockup-api"

        def start() -> AbstractContextManager[Server]:
            return serve(var_dir, port=port, MOCKUP_API_URL=root)

        def hold_submissions() -> None:
            network.refuse_posts = True

        booth, created, _ = _kill_mid_task(start, var_dir, hold_submissions)
        network.refuse_posts = False
        with start():
            booth.reconnect()
            finished = [booth.wait_for_task(t["taskId"]) for t in created]
            problems = []
            for task in finished:
                problems += contract_problems(task, booth.events(task))
                problems += result_problems(booth, task)

    # The upstream survived, so every task completes, with every result.
    assert [t["status"] for t in finished] == ["completed"] * len(created), [
        (t["kind"], t["status"], t["error"]) for t in finished
    ]
    assert not problems, problems


def test_a_killed_server_with_the_embedded_api_fails_lost_tasks_and_runs_the_rest(tmp_path):
    """The built-in API dies with the server: what it was rendering is lost, not stuck."""
    port, var_dir = free_port(), fresh_var_dir(tmp_path / "var")
    # 3 requests a minute: the catalog read and the first two submissions use them up, so the
    # later tasks wait for the rate limiter when the server dies (and its limiter with it).
    limited = {"MOCKUP_API_RATE_LIMIT": "3", "MOCKUP_API_RATE_WINDOW_SECONDS": "60"}
    booth, created, _ = _kill_mid_task(
        lambda: serve(var_dir, port=port, **SLOW, **limited), var_dir, lambda: None
    )

    with serve(var_dir, port=port, **SLOW):
        booth.reconnect()
        finished = [booth.wait_for_task(t["taskId"]) for t in created]
        problems = [p for t in finished for p in contract_problems(t, booth.events(t))]
        problems += [p for t in finished[2:] for p in result_problems(booth, t)]

    assert not problems, problems
    # Both were rendering at the kill: lost with the API, failed, not stuck and not cancelled.
    assert [(t["status"], t["error"]["code"]) for t in finished[:2]] == [
        ("failed", "upstream_lost"),
        ("failed", "upstream_lost"),
    ]
    # The two that never left our queue went to the new API and completed.
    assert [t["status"] for t in finished[2:]] == ["completed", "completed"]
