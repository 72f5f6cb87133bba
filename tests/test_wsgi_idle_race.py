"""The keep-alive race in the WSGI server's idle sweep, made deterministic.

An idle keep-alive connection can reach its timeout in the very moment its next request
arrives: after the acceptor's select() last looked at it, before the sweep that closes expired
connections. Closing a socket with unread bytes makes the kernel answer with a reset, and the
client loses a request it had already sent. The connection core's "overdue" rule (closed only
at the second sweep past the deadline; `tests/test_core.py` checks it without sockets) lets the
next select() see those bytes and hand the connection to a worker instead.

To hit that moment every time, the test parks the acceptor just before one of its select()
calls, sends the request while it is parked, waits past the idle timeout, and lets the
acceptor go on as if that select() had found nothing: the sweep comes next.
"""

from __future__ import annotations

import threading
import time

import pytest
from rawhttp import Client

from asgi_lab.config import Config
from asgi_lab.wsgi.server import WSGIServer

pytestmark = pytest.mark.timeout(20)

KEEP_ALIVE = 1.0  # the acceptor checks the idle deadlines every KEEP_ALIVE / 4 seconds


def wait_for(condition, timeout: float = 3.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.005)


def test_a_request_arriving_as_the_idle_timeout_expires_is_answered_once():
    release_hold = threading.Event()

    def app(environ, start_response):
        if environ["PATH_INFO"] == "/hold":  # keeps the only worker busy until released
            release_hold.wait(10)
        start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "2")])
        return [b"ok"]

    server = WSGIServer(app, Config(port=0, threads=1, timeout_keep_alive=KEEP_ALIVE,
                                    timeout_graceful_shutdown=1.0, access_log=False))
    server.start()
    keep_alive = busy = None
    try:
        # A keep-alive connection, idle after its first request.
        keep_alive = Client(server.address)
        response, body = keep_alive.get("/")
        assert (response.status_code, body) == (200, b"ok")
        wait_for(lambda: len(server.idle_connections()) == 1)
        (connection,) = server.idle_connections()

        # Another client holds the only worker: whatever is handed on waits in the queue.
        busy = Client(server.address)
        busy.request("GET", "/hold")
        wait_for(lambda: server.stats()["busy"] == 1)

        # Park the acceptor before its next select(); that select() will "find nothing".
        selector = server._selector
        real_select = selector.select
        parked, go_on = threading.Event(), threading.Event()
        real_selects = []

        def select(timeout):
            if not parked.is_set():
                parked.set()
                go_on.wait(10)
                return []
            real_selects.append(timeout)
            return real_select(timeout)

        selector.select = select
        assert parked.wait(3)

        # The next request arrives, and the idle deadline passes, while the acceptor is parked.
        keep_alive.request("GET", "/")
        wait_for(connection.has_bytes_waiting)
        wait_for(lambda: connection.core.time_left(time.monotonic()) < 0)
        go_on.set()  # select() "found nothing"; the sweep runs next

        # The sweep handed the connection to the (busy) pool: queued once, not closed. A few
        # real select() calls later it is still queued once: epoll does not report it again.
        wait_for(lambda: len(real_selects) >= 3)
        assert not connection.closed
        assert server.stats()["queued"] == 1

        # The worker, once free, answers the request that arrived; the connection lives on.
        release_hold.set()
        response, body = busy.response()
        assert (response.status_code, body) == (200, b"ok")
        response, body = keep_alive.response()
        assert (response.status_code, body) == (200, b"ok")
        response, body = keep_alive.get("/")
        assert (response.status_code, body) == (200, b"ok")
    finally:
        release_hold.set()
        for client in (keep_alive, busy):
            if client is not None:
                client.close()
        server.shutdown()


def test_an_idle_connection_without_a_request_is_still_closed():
    """The other side of the same sweep: no bytes waiting, so the timeout closes it."""

    def app(environ, start_response):
        start_response("200 OK", [("Content-Length", "2")])
        return [b"ok"]

    server = WSGIServer(app, Config(port=0, threads=1, timeout_keep_alive=0.2, access_log=False))
    server.start()
    try:
        with Client(server.address) as client:
            response, body = client.get("/")
            assert (response.status_code, body) == (200, b"ok")
            client.sock.settimeout(3)
            started = time.monotonic()
            assert client.sock.recv(1) == b""  # the server closed it (a FIN, not a reset)
            assert time.monotonic() - started < 1.5
        wait_for(lambda: not server.connections)
    finally:
        server.shutdown()
