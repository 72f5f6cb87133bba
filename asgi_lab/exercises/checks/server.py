"""Stretch exercise 10: a tiny HTTP/1.1 server on `asyncio.start_server`, with h11.

The student writes the connection handler, `async def handle(reader, writer)`, that
`asyncio.start_server` calls once per connection (Python docs, "Streams"). The check starts it
on 127.0.0.1, port 0, on an event loop of its own, and talks to it with real sockets, every
read under a timeout: keep-alive (RFC 9112 section 9.3: HTTP/1.1 connections persist unless
either side says `Connection: close`), a request body to read past, `Connection: close`, a
client that is slow to send, one that sends garbage, and one that leaves half-way.
"""

from __future__ import annotations

import asyncio
import ctypes
import inspect
import socket
import threading
import time

import h11

from ..feedback import fail, passed, register
from ..harness import AppTimeout, describe_exception, run

ASYNCIO_SERVER = "asyncio HTTP server"
TIMEOUT = 2.0  # seconds any one answer may take
register(
    ASYNCIO_SERVER, "check_asyncio_server",
    concept="a server is a loop per connection: read bytes, hand them to the HTTP parser, act on "
            "the events it gives back, write the answer, and go round again for the next request "
            "on the same connection, until the client closes. asyncio.start_server runs one such "
            "loop as a coroutine per connection; h11 does the parsing, so you never split HTTP "
            "by hand.",
    api="conn.next_event() returns h11.NEED_DATA (then conn.receive_data(await "
        "reader.read(65536)); b'' means the client closed), h11.Request, h11.Data, "
        "h11.EndOfMessage or h11.ConnectionClosed; answer with writer.write(conn.send(h11.Response"
        "(...))), conn.send(h11.Data(...)), conn.send(h11.EndOfMessage()); then "
        "conn.start_next_cycle() unless conn.our_state is h11.MUST_CLOSE.",
    code="while True: event = conn.next_event(); if event is h11.NEED_DATA: "
         "conn.receive_data(await reader.read(65536)); elif isinstance(event, h11.Request): "
         "request = event; elif isinstance(event, h11.EndOfMessage): (write the response); await "
         "writer.drain(); if conn.our_state is h11.MUST_CLOSE: break; conn.start_next_cycle(); "
         "elif isinstance(event, h11.ConnectionClosed): break. Around it: try/except "
         "h11.RemoteProtocolError (answer 400), finally: writer.close()")


class _Server:
    """The student's handler on its own loop, in a thread; errors it raises are collected."""

    def __init__(self, handle) -> None:
        self.handle = handle
        self.errors: list[BaseException] = []
        self.handlers_running = 0
        self.loop: asyncio.AbstractEventLoop | None = None
        self.loop_thread: int | None = None
        self.address: tuple[str, int] | None = None

    async def serve(self, drive):
        self.loop = asyncio.get_running_loop()
        self.loop_thread = threading.get_ident()
        # What asyncio would print about the handlers goes to the check, not to stderr.
        self.loop.set_exception_handler(lambda loop, context: None)

        async def handle(reader, writer):
            self.handlers_running += 1
            try:
                await self.handle(reader, writer)
            except ConnectionError:
                pass  # the client vanished while we wrote: nothing to explain
            except asyncio.CancelledError:
                pass  # the check is over and stops the handlers still running
            except Exception as exc:  # kept for the check to explain
                self.errors.append(exc)
            finally:
                self.handlers_running -= 1

        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        self.address = server.sockets[0].getsockname()[:2]
        try:
            return await asyncio.to_thread(self._drive_then_settle, drive)
        finally:
            server.close()

    def _drive_then_settle(self, drive):
        try:
            return drive(self)
        finally:
            # A handler that spins without awaiting would keep this loop from ever finishing:
            # look a few times, a moment apart, and break any such loop (see loop_alive).
            for _ in range(3):
                time.sleep(0.05)
                self.loop_alive(0.5)

    def loop_alive(self, timeout: float = 1.0) -> bool:
        """Does the server's event loop still run callbacks? A handler that loops without ever
        awaiting stops it dead; then we break that loop (by raising `_Stuck` inside it, between
        two bytecodes), so the check can end and the kernel does not spin for ever."""
        ran = threading.Event()
        try:
            self.loop.call_soon_threadsafe(ran.set)
        except RuntimeError:
            return False
        if ran.wait(timeout):
            return True
        ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(self.loop_thread),
                                                   ctypes.py_object(_Stuck))
        ran.wait(timeout)
        self.errors[:] = [error for error in self.errors if not isinstance(error, _Stuck)]
        return False


class _Stuck(Exception):
    """Raised by the check inside a handler that never gives the event loop back."""


class _Client:
    """One connection from the check: h11 on the client side, a timeout on every read."""

    def __init__(self, address) -> None:
        self.sock = socket.create_connection(address, timeout=TIMEOUT)
        self.conn = h11.Connection(h11.CLIENT)
        self.closed_by_server = False

    def send(self, method: str, target: str, headers=(), body: bytes = b"") -> None:
        all_headers = [("host", "127.0.0.1"), *headers]
        if body:
            all_headers.append(("content-length", str(len(body))))
        data = self.conn.send(h11.Request(method=method, target=target, headers=all_headers))
        data += self.conn.send(h11.Data(data=body)) if body else b""
        data += self.conn.send(h11.EndOfMessage())
        self.sock.sendall(data)

    def response(self) -> tuple[int, bytes] | str:
        """(status, body), or a string saying what happened instead."""
        status, body = None, b""
        deadline = time.monotonic() + TIMEOUT
        while True:
            try:
                event = self.conn.next_event()
            except h11.RemoteProtocolError as exc:
                if self.closed_by_server and status is None:
                    return "closed"
                return f"sent bytes that are not a valid HTTP response ({exc})"
            if event is h11.NEED_DATA:
                self.sock.settimeout(max(deadline - time.monotonic(), 0.01))
                try:
                    data = self.sock.recv(65536)
                except (socket.timeout, TimeoutError):
                    return "timeout"
                except ConnectionError:
                    data = b""
                if not data:
                    self.closed_by_server = True
                self.conn.receive_data(data)
            elif isinstance(event, h11.Response):
                status = event.status_code
            elif isinstance(event, h11.Data):
                body += event.data
            elif isinstance(event, h11.EndOfMessage):
                return status, body
            elif isinstance(event, h11.ConnectionClosed):
                return "closed"

    def next_cycle(self) -> bool:
        """Ready for another request on this connection (False if the server closed it)."""
        if self.conn.our_state is h11.DONE and self.conn.their_state is h11.DONE:
            self.conn.start_next_cycle()
            return True
        return False

    def closes_within(self, timeout: float) -> bool:
        self.sock.settimeout(timeout)
        try:
            while self.sock.recv(65536):
                pass
            return True
        except (socket.timeout, TimeoutError):
            return False
        except ConnectionError:
            return True

    def close(self) -> None:
        self.sock.close()


def _expect_answer(server: _Server, client: _Client, method: str, target: str, when: str) -> None:
    got = client.response()
    _raise_handler_errors(server, when)
    if got == "timeout":
        if not server.loop_alive():
            fail(ASYNCIO_SERVER, f"{when}, the client waited {TIMEOUT:g} s and the event loop "
                                 "itself was stuck: your handler loops without ever awaiting, so "
                                 "no other coroutine (no other client) can run.",
                 concept="a coroutine gives the event loop back only at an await. A loop that "
                         "calls conn.next_event() again and again without awaiting (after "
                         "h11.ConnectionClosed, say) keeps the whole server busy doing nothing.",
                 api="on h11.ConnectionClosed, leave the loop; on h11.NEED_DATA, await "
                     "reader.read(...)")
        fail(ASYNCIO_SERVER, f"{when}, the client waited {TIMEOUT:g} s for an answer to "
                             f"{method} {target} and got nothing.")
    if got == "closed":
        fail(ASYNCIO_SERVER, f"{when}, your server closed the connection without answering "
                             f"{method} {target}.")
    if isinstance(got, str):
        fail(ASYNCIO_SERVER, f"{when}, your server {got}.",
             "let h11 write the response: writer.write(conn.send(h11.Response(...)))")
    status, body = got
    expected = f"{method} {target}\n".encode()
    if status != 200 or body != expected:
        fail(ASYNCIO_SERVER, f"{when}, {method} {target} got {status} {body!r}; expected 200 "
                             f"{expected!r} (the method and target of the request, and a "
                             "newline).",
             "body = f'{request.method.decode()} {request.target.decode()}\\n'.encode()")


def _raise_handler_errors(server: _Server, when: str) -> None:
    if server.errors:
        error = server.errors.pop(0)
        if isinstance(error, h11.RemoteProtocolError):
            fail(ASYNCIO_SERVER, f"{when}, your handler raised {describe_exception(error)}: h11 "
                                 "found the client's request broken or cut short, and the "
                                 "exception ended your "
                                 "handler.",
                 "except h11.RemoteProtocolError: answer 400 (writer.write(conn.send(h11.Response("
                 "status_code=400, headers=[('content-length', '0')])))) and close",
                 concept="bad input is normal for a server: the client may send garbage or "
                         "vanish mid-request. Each is an answer (a 400) or a closed connection, "
                         "never an exception that escapes the handler.")
        fail(ASYNCIO_SERVER, f"{when}, your handler raised {describe_exception(error)}.")


def _wait_for_handlers(server: _Server, running: int, timeout: float = 1.0) -> None:
    deadline = time.monotonic() + timeout
    while server.handlers_running > running and time.monotonic() < deadline:
        time.sleep(0.01)


def _drive(server: _Server) -> list[str]:
    notes = []
    address = server.address

    # 1. Keep-alive: two requests, one after the other, on one connection.
    first = _Client(address)
    try:
        first.send("GET", "/first")
        _expect_answer(server, first, "GET", "/first", "for the first request")
        if first.conn.their_state is h11.MUST_CLOSE:
            fail(ASYNCIO_SERVER, "your server answered the first request with 'Connection: close'. "
                                 "That is legal HTTP, but this exercise asks for keep-alive: the "
                                 "connection stays open for the next request.",
                 "leave the connection header out; h11 keeps the connection open")
        if not first.next_cycle() or first.closed_by_server:
            fail(ASYNCIO_SERVER, "after answering the first request your server closed the "
                                 "connection: an HTTP/1.1 connection stays open for the next "
                                 "request unless the client or the server says "
                                 "'Connection: close' (RFC 9112, section 9.3).",
                 "after the EndOfMessage of your response, conn.start_next_cycle() and go round "
                 "the loop again",
                 concept="keep-alive: one connection carries many requests, one after the other; "
                         "the handler answers each and goes back to reading.")
        first.send("GET", "/second?x=1")
        _expect_answer(server, first, "GET", "/second?x=1",
                       "for a second request on the same connection (keep-alive)")
    finally:
        first.close()

    # 2. A request with a body, then another request on the same connection.
    upload = _Client(address)
    try:
        upload.send("POST", "/upload", body=b"x" * 5000)
        _expect_answer(server, upload, "POST", "/upload", "for a POST with a 5000-byte body")
        upload.next_cycle()
        upload.send("GET", "/after-upload")
        _expect_answer(server, upload, "GET", "/after-upload",
                       "for a GET after a POST on the same connection")
    finally:
        upload.close()

    # 3. The client says Connection: close: answer, then close.
    closing = _Client(address)
    try:
        closing.send("GET", "/bye", headers=[("connection", "close")])
        _expect_answer(server, closing, "GET", "/bye", "for a request with 'Connection: close'")
        if not closing.closed_by_server and not closing.closes_within(1.0):
            fail(ASYNCIO_SERVER, "the client sent 'Connection: close'; your server answered but "
                                 "kept the connection open for 1 s more.",
                 "if conn.our_state is h11.MUST_CLOSE: leave the loop and writer.close()")
    finally:
        closing.close()

    # 4. A slow client must not hold up a quick one.
    slow = socket.create_connection(address, timeout=TIMEOUT)
    try:
        slow.sendall(b"GET /slow HTTP/1.1\r\nHost: 127.0.0.1\r\n")  # ... and no blank line yet
        time.sleep(0.05)
        quick = _Client(address)
        try:
            quick.send("GET", "/quick")
            _expect_answer(server, quick, "GET", "/quick",
                           "while another client had sent half a request and was thinking")
        finally:
            quick.close()
    finally:
        slow.close()  # and it leaves half-way: the handler must end quietly
    _wait_for_handlers(server, 0)  # every client so far has closed its connection
    _raise_handler_errors(server, "when a client left half-way through its request")

    # 5. Garbage: answer 400 or close; never hang, never crash.
    garbage = socket.create_connection(address, timeout=TIMEOUT)
    try:
        garbage.sendall(b"HELLO THERE\r\n\r\n")
        garbage.settimeout(TIMEOUT)
        try:
            reply = garbage.recv(65536)
        except (socket.timeout, TimeoutError):
            _raise_handler_errors(server, "when a client sent 'HELLO THERE' (not HTTP)")
            fail(ASYNCIO_SERVER, f"a client sent 'HELLO THERE\\r\\n\\r\\n' (not HTTP), and your "
                                 f"server neither answered nor closed the connection in "
                                 f"{TIMEOUT:g} s: it would hold the socket forever.",
                 "except h11.RemoteProtocolError: answer 400 and close")
        except ConnectionError:
            reply = b""
        if not reply.startswith(b"HTTP/1.1 400"):
            notes.append("a garbage request got its connection closed (a 400 answer would "
                         "tell the client why)")
    finally:
        garbage.close()

    # The handlers of the clients that left must end, quietly.
    _wait_for_handlers(server, 0)
    _raise_handler_errors(server, "when clients left (one half-way through a request)")
    if not server.loop_alive():
        fail(ASYNCIO_SERVER, "after the clients left, the event loop was stuck: a handler loops "
                             "without awaiting (h11.ConnectionClosed must end the loop).",
             "elif isinstance(event, h11.ConnectionClosed): break")
    if server.handlers_running:
        fail(ASYNCIO_SERVER, f"every client has left, and {server.handlers_running} of your "
                             "handlers are still running: a client that closed its connection "
                             "(reader.read() returned b'') was not noticed.",
             "conn.receive_data(b'') tells h11 the client closed; then next_event() returns "
             "h11.ConnectionClosed (or raises RemoteProtocolError mid-request): leave the loop",
             concept="reader.read() returns b'' when the client has closed: the end of the "
                     "conversation, which the handler must notice, or it waits forever.")
    return notes


def check_asyncio_server(handle) -> None:
    """Stretch 10: `handle(reader, writer)`, run by `asyncio.start_server`, answers every
    HTTP/1.1 request with 200 and the body b"<METHOD> <target>\\n", keeps the connection open
    for the next request (keep-alive) until the client closes it or says Connection: close,
    and survives slow, broken and vanishing clients."""
    if not callable(handle):
        fail(ASYNCIO_SERVER, f"you passed a {type(handle).__name__}, not a function.",
             "check_asyncio_server(handle), without calling it")
    if not inspect.iscoroutinefunction(handle):
        fail(ASYNCIO_SERVER, "your handler is a plain `def`: it cannot `await reader.read()`, so "
                             "it cannot wait for a request without stopping the loop. (start_server "
                             "accepts a plain callback too, for code built on callbacks.)",
             "async def handle(reader, writer): asyncio.start_server then runs it as a task, one "
             "per connection")
    server = _Server(handle)
    try:
        notes = run(lambda: server.serve(_drive), timeout=20.0).value
    except AppTimeout:
        fail(ASYNCIO_SERVER, "the check could not finish in 20 s: the event loop was stuck, so a "
                             "handler loops without ever awaiting.",
             "elif isinstance(event, h11.ConnectionClosed): break",
             concept="a coroutine gives the event loop back only at an await; a loop that never "
                     "awaits keeps the whole server busy doing nothing.")
    passed(ASYNCIO_SERVER, "keep-alive (two requests on one connection), a 5000-byte POST then a "
                           "GET, Connection: close, a slow client beside a quick one, garbage, "
                           "and clients that left." + (f" Note: {notes[0]}." if notes else ""))
