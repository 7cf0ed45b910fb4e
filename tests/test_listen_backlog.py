"""A burst of connections waits in the listen backlog instead of being dropped.

When a venue's Wi-Fi comes back, every booth screen reconnects at once. Twisted listens with a
backlog of 50 by default: while the server was busy, connections beyond it were dropped by the
kernel and a thousand-stream burst lost 169 handshakes. The server here is stopped (SIGSTOP),
so nothing is accepted and only the kernel's accept queue holds the connections.
"""

from __future__ import annotations

import os
import selectors
import signal
import socket
import time

import pytest

from tests.upstream_helpers import fresh_var_dir, serve

pytestmark = pytest.mark.skipif(os.name != "posix", reason="SIGSTOP is POSIX")

BURST = 300  # well above Twisted's default backlog of 50


def connect_all(port: int, count: int, within: float) -> tuple[list[socket.socket], int]:
    """Start `count` connections; return those the kernel completed within `within` s."""
    selector = selectors.DefaultSelector()
    pending = []
    for _ in range(count):
        sock = socket.socket()
        sock.setblocking(False)
        sock.connect_ex(("127.0.0.1", port))
        selector.register(sock, selectors.EVENT_WRITE)
        pending.append(sock)
    connected: list[socket.socket] = []
    deadline = time.monotonic() + within
    while len(connected) < count and (left := deadline - time.monotonic()) > 0:
        for key, _ in selector.select(timeout=left):
            sock = key.fileobj
            selector.unregister(sock)
            if sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0:
                connected.append(sock)
    for sock in pending:
        if sock not in connected:
            sock.close()
    selector.close()
    return connected, count - len(connected)


def health_status(sock: socket.socket) -> bytes:
    sock.setblocking(True)
    sock.settimeout(30)
    sock.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
    answer = b""
    while chunk := sock.recv(4096):
        answer += chunk
    return answer.split(b"\r\n", 1)[0]


def test_a_burst_of_connections_to_a_busy_server_is_queued_then_served(tmp_path):
    with serve(fresh_var_dir(tmp_path / "var")) as server:
        port = int(server.base.rsplit(":", 1)[1])
        server.process.send_signal(signal.SIGSTOP)  # busy: it accepts nothing
        try:
            connected, dropped = connect_all(port, BURST, within=0.8)
        finally:
            server.process.send_signal(signal.SIGCONT)
        try:
            assert dropped == 0, f"{dropped} of {BURST} connections found the backlog full"
            statuses = [health_status(sock) for sock in connected]
        finally:
            for sock in connected:
                sock.close()
    assert statuses == [b"HTTP/1.1 200 OK"] * BURST
