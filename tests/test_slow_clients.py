"""Slow readers and the WSGI pool: a finished response is handed over, a streaming one is not.

Issue "HTTP security", section 3: eight clients that never read a 16 MiB response must not
stop a 4-thread pool from answering anyone else. A worker whose *finished* response the
client is slow to take hands the rest to the acceptor thread (`Connection.hand_over`) and
is free at once; the acceptor writes it as the client reads, in order with pipelined
requests, under the same write timeout. Memory stays bounded (`wsgi_write_behind_bytes`),
and a streaming response keeps its worker while it streams (the lab's thread-holding lesson).
`benchmarks/slow_clients.py` measures the same attacks against waitress and gunicorn.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path

from asgi_lab import serve_in_background

from rawhttp import exchange, status_of

MiB = 1024 * 1024
BIG = 16 * MiB


def big_app(environ, start_response):
    """A finished response of the size the query asks for (a list: known in full)."""
    size = int(environ["QUERY_STRING"] or 0)
    start_response("200 OK", [("Content-Type", "application/octet-stream"), ("Content-Length", str(size))])
    return [b"x" * size]


def streaming_app(environ, start_response):
    """A generator: the response is not finished until the last chunk is produced."""
    start_response("200 OK", [("Content-Type", "application/octet-stream")])
    for _ in range(64):
        yield b"s" * (256 * 1024)


def non_reader(address, target: bytes) -> socket.socket:
    """A client that asks for `target` and reads nothing (a small receive buffer)."""
    sock = socket.create_connection(address, timeout=5)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.sendall(b"GET " + target + b" HTTP/1.1\r\nHost: x\r\n\r\n")
    return sock


def wait_until(condition, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.02)
    return condition()


def get_small(server) -> float:
    """Seconds a normal client waits for a 5-byte response."""
    started = time.monotonic()
    raw = exchange(server.address, b"GET /?5 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert status_of(raw) == 200 and raw.endswith(b"xxxxx")
    return time.monotonic() - started


def read_exactly(sock: socket.socket, size: int) -> bytes:
    data = bytearray()
    while len(data) < size:
        chunk = sock.recv(min(size - len(data), 1 << 20))
        assert chunk, f"closed after {len(data)} of {size} bytes"
        data += chunk
    return bytes(data)


def test_eight_non_readers_leave_every_worker_free():
    """Default write timeout (30 s): without the hand-over, 8 non-readers would hold all 4
    workers for 30 s. With it, each worker is free as soon as its app has returned."""
    with serve_in_background(big_app, kind="wsgi", name="test-non-readers", threads=4,
                             access_log=False) as server:
        stuck = [non_reader(server.address, b"/?%d" % BIG) for _ in range(8)]
        try:
            # all 8 answered, most of each response waiting in the acceptor's hands
            assert wait_until(lambda: server.server._unsent_bytes > 8 * 8 * MiB)
            assert wait_until(lambda: server.server.stats()["busy"] == 0)
            assert get_small(server) < 2.0
            assert wait_until(lambda: server.server.stats()["connections"] == 8)  # non-readers still open
        finally:
            for sock in stuck:
                sock.close()


def test_a_handed_over_response_arrives_whole_and_pipelined_requests_stay_in_order():
    with serve_in_background(big_app, kind="wsgi", name="test-hand-over", threads=1,
                             access_log=False) as server:
        with socket.create_connection(server.address, timeout=5) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 256 * 1024)  # small, not slow to drain
            sock.sendall(b"GET /?%d HTTP/1.1\r\nHost: x\r\n\r\nGET /?3 HTTP/1.1\r\nHost: x\r\n\r\n" % BIG)
            assert wait_until(lambda: server.server._unsent_bytes > 0)
            assert get_small(server) < 2.0  # the only worker is free while we do not read
            head = b"HTTP/1.1 200 "
            first = read_exactly(sock, len(head))
            assert first == head
            while not first.endswith(b"\r\n\r\n"):
                first += read_exactly(sock, 1)
            assert read_exactly(sock, BIG) == b"x" * BIG
            second = b""
            while not second.endswith(b"\r\n\r\nxxx"):
                chunk = sock.recv(4096)
                assert chunk, second
                second += chunk
            assert second.startswith(b"HTTP/1.1 200 ")
            assert server.server._unsent_bytes == 0


def test_connection_close_is_honoured_after_the_rest_is_written():
    with serve_in_background(big_app, kind="wsgi", name="test-hand-over", threads=1,
                             access_log=False) as server:
        with socket.create_connection(server.address, timeout=5) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 256 * 1024)  # small, not slow to drain
            sock.sendall(b"GET /?%d HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n" % BIG)
            assert wait_until(lambda: server.server._unsent_bytes > 0)
            received = bytearray()
            while chunk := sock.recv(1 << 20):
                received += chunk
            assert received.endswith(b"\r\n\r\n" + b"x" * BIG)  # all of it, then the close
        assert wait_until(lambda: server.server.stats()["connections"] == 0)


def test_a_handed_over_response_still_times_out():
    """The acceptor applies the same write timeout, and gives the memory back."""
    with serve_in_background(big_app, kind="wsgi", name="test-hand-over", threads=1,
                             wsgi_timeout_write=0.5, access_log=False) as server:
        with non_reader(server.address, b"/?%d" % BIG):
            assert wait_until(lambda: server.server._unsent_bytes > 0)
            assert wait_until(lambda: server.server.stats()["connections"] == 0, timeout=4)
            assert server.server._unsent_bytes == 0


def test_beyond_the_memory_bound_a_worker_writes_the_rest_itself():
    """`wsgi_write_behind_bytes` bounds the memory: a response larger than the room left
    keeps its worker (until the write timeout), as without the hand-over."""
    with serve_in_background(big_app, kind="wsgi", name="test-hand-over", threads=1,
                             wsgi_write_behind_bytes=MiB, wsgi_timeout_write=1.0,
                             access_log=False) as server:
        with non_reader(server.address, b"/?%d" % BIG):
            assert wait_until(lambda: server.server.stats()["busy"] == 1)
            time.sleep(0.2)
            assert server.server.stats()["busy"] == 1 and server.server._unsent_bytes == 0
            assert get_small(server) > 0.5  # served once the write timeout freed the worker


def test_a_streaming_response_keeps_its_worker():
    """The thread-holding lesson holds: a generator's response is not finished while it
    streams, so a client that does not read it holds the worker writing it."""
    with serve_in_background(streaming_app, kind="wsgi", name="test-hand-over", threads=1,
                             wsgi_timeout_write=5.0, access_log=False) as server:
        with non_reader(server.address, b"/"):
            assert wait_until(lambda: server.server.stats()["busy"] == 1)
            time.sleep(0.3)
            assert server.server.stats()["busy"] == 1 and server.server._unsent_bytes == 0


def test_shutdown_gives_a_handed_over_response_the_grace_period_then_cuts_it():
    server = serve_in_background(big_app, kind="wsgi", name="test-hand-over", threads=1,
                                 timeout_graceful_shutdown=0.5, access_log=False)
    with non_reader(server.address, b"/?%d" % BIG):
        assert wait_until(lambda: server.server._unsent_bytes > 0)
        started = time.monotonic()
        server.stop()
        assert time.monotonic() - started < 3.0
        assert server.server._unsent_bytes == 0 and not server.server.connections


def test_the_reliability_pages_table_is_the_benchmarks_own():
    """The docs' figures are rendered from the committed result, never typed
    (tools/render_results.py writes docs/reliability.md with the script's own --markdown)."""
    root = Path(__file__).resolve().parents[1]
    table = subprocess.run([sys.executable, "benchmarks/slow_clients.py", "--markdown",
                            "benchmarks/results/slow-clients.json"], cwd=root, capture_output=True,
                           text=True, check=True).stdout.strip()
    page = subprocess.run([sys.executable, "-c", "import sys; sys.path.insert(0, 'tools'); import render_results as r; "
                           "print(r.render_pages()[r.DOCS / 'reliability.md'])"], cwd=root,
                          capture_output=True, text=True, check=True).stdout
    assert table.startswith("| attack |") and table in page
