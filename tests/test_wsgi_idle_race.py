"""The keep-alive race in the WSGI server's idle sweep, made deterministic.

An idle keep-alive connection can reach its timeout in the very moment its next request
arrives: after the acceptor's select() last looked at it, before the sweep that closes expired
connections. Closing a socket with unread bytes makes the kernel answer with a reset, and the
client loses a request it had already sent. The connection core's "overdue" rule (closed only
at the second sweep past the deadline; `tests/test_core.py` checks it without sockets) lets the
next select() see those bytes and hand the connection to a worker instead.

To hit that moment every time, the test parks the acceptor just before one of its select()
calls (its watch list, made by `new_watch_list`, is replaced by one that can be held) and
sends the request while it is parked. Then, still on the acceptor thread, it sweeps with
`check_deadlines(now)` at a time past the idle deadline (no waiting for the clock), and lets
the acceptor go on as if that select() had found nothing.
"""

from __future__ import annotations

import threading
import time

import pytest
from rawhttp import Client, wait_until

from asgi_lab.config import Config
from asgi_lab.wsgi import server as wsgi_server
from asgi_lab.wsgi.server import WSGIServer

pytestmark = pytest.mark.timeout(20)

KEEP_ALIVE = 5.0  # long: only the test's own sweep finds the connection past its deadline


class HeldWatchList:
    """The acceptor's watch list, whose next select() can be held: `hold()`, then the acceptor
    parks in select() until `go_on(then)`; it runs `then()` on the acceptor thread and returns
    as if select() had found nothing. The select() calls after that one are counted."""

    def __init__(self, real) -> None:
        self.real = real
        self.holding = False
        self.parked, self.go_on_event = threading.Event(), threading.Event()
        self.then = None
        self.real_selects = 0
        self.three_real_selects = threading.Event()

    def __getattr__(self, name):  # everything else is the real watch list's
        return getattr(self.real, name)

    def hold(self) -> None:
        self.holding = True

    def go_on(self, then) -> None:
        self.then = then
        self.go_on_event.set()

    def select(self, timeout):
        if self.holding:
            self.holding = False
            self.parked.set()
            self.go_on_event.wait(10)
            self.then()
            return []
        if self.parked.is_set():
            self.real_selects += 1
            if self.real_selects >= 3:
                self.three_real_selects.set()
        return self.real.select(timeout)


def test_a_request_arriving_as_the_idle_timeout_expires_is_answered_once(monkeypatch):
    release_hold, holding = threading.Event(), threading.Event()
    watch_lists = []

    def new_watch_list():
        watch_lists.append(HeldWatchList(real_new_watch_list()))
        return watch_lists[-1]

    real_new_watch_list = wsgi_server.new_watch_list
    monkeypatch.setattr(wsgi_server, "new_watch_list", new_watch_list)

    def app(environ, start_response):
        if environ["PATH_INFO"] == "/hold":  # keeps the only worker busy until released
            holding.set()
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
        # (given back to the acceptor after its response: no event says when, so look)
        wait_until(lambda: len(server.idle_connections()) == 1, 3, "the connection to be idle")
        (connection,) = server.idle_connections()

        # Another client holds the only worker: whatever is handed on waits in the queue.
        busy = Client(server.address)
        busy.request("GET", "/hold")
        assert holding.wait(5)

        # Park the acceptor before its next select(); that select() will "find nothing".
        (watch_list,) = watch_lists
        watch_list.hold()  # (the select() under way ends within a tick)
        assert watch_list.parked.wait(3)

        # The next request arrives while the acceptor is parked; then, on the acceptor thread,
        # a sweep at a time past the idle deadline finds the connection overdue.
        keep_alive.request("GET", "/")
        wait_until(connection.has_bytes_waiting, 3, "the request to arrive")
        watch_list.go_on(lambda: server.check_deadlines(time.monotonic() + KEEP_ALIVE + 1))

        # The next select() handed the connection to the (busy) pool: queued once, not closed.
        # A few real select() calls later it is still queued once: epoll does not report it again.
        assert watch_list.three_real_selects.wait(5)
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
        wait_until(lambda: not server.connections, 3, "the server to drop the connection")
    finally:
        server.shutdown()
