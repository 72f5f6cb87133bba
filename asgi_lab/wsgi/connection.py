"""HTTP/1.1 for the WSGI server: the blocking shell around the connection core.

Two classes, read them in this order (they mirror `asgi/http.py`, so compare them):

- `Connection` owns one TCP connection. A thread hands it the bytes it read from the
  socket (`data_received`); it hands them to the sans-IO connection core (`core.py`: h11 and
  every HTTP/1.1 rule both servers share) and, for every complete request, runs one
  `RequestResponseCycle` right there, on that thread, blocking until the response is sent.
  It answers pipelined requests in order and keeps the connection alive between them.
- `RequestResponseCycle` is the WSGI side of one request (PEP 3333): it builds the
  `environ`, calls the app with `start_response`, sends what the returned iterable yields,
  and always calls the iterable's `close()`; the core's `ResponseState` says how far the
  response has come.

Where the ASGI server awaits, this one blocks: the request body is *pulled* through
`wsgi.input` (a blocking `recv`), and the response is written with `sendall`, holding the
thread until the socket is ready. That is the whole difference the lab measures. One
exception, so that clients that never read cannot take the whole pool: once the app has
returned and its response is complete, the bytes the client has not taken yet can be handed
over to the acceptor thread (`hand_over`), freeing the worker. Who calls `data_received`, and
what happens between requests, is the server's business (see `server.py`): a pooled worker
hands an idle connection back to the acceptor's selector, a thread-per-connection blocks in
`serve_forever`.
"""

from __future__ import annotations

import logging
import socket
import time
import types
from collections import deque
from wsgiref.util import is_hop_by_hop

import h11

from ..core import (COMPLETE, NEED_DATA, NOT_STARTED, STARTED, ClientDisconnected, ConnectionCore,
                    Refused, Wait)
from ..http11 import MSG_DONTWAIT, bytes_waiting, check_status, no_delay
from .environ import build_environ, environ_base, environ_for_trace
from .streams import FileRegion, FileWrapper, RequestBody
from .upgrade import UPGRADE_KEY, Upgrade

logger = logging.getLogger("asgi_lab.error")

RECV_BUFFER = 64 * 1024
"""Bytes asked of the socket per recv(): a whole small request (or many pipelined ones) at once."""



class RequestBodyError(OSError):
    """The request body cannot be read: malformed (400), too large (413), too slow (408).
    Raised from `wsgi.input.read()`; the server answers with `status` if it still can."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class Connection:
    """One client connection: bytes in from the socket, core events out, one cycle per request."""

    def __init__(self, server, sock: socket.socket, client: tuple[str, int] | None, conn_id: int) -> None:
        self.server = server            # the WSGIServer: app, config, tracer, address
        self.app = server.app
        self.config = server.config
        self.tracer = server.tracer
        self.sock = sock
        self.fd = sock.fileno()         # its number, still known after close (see watchlist.py)
        self.client = client
        self.id = conn_id
        self.core = ConnectionCore(self.config, server.heads, self.tracer, conn_id, client)
        self.conn = self.core.conn
        self.base_environ = environ_base(server.address, client, self.config.root_path, server.scheme)
        self.cycle: RequestResponseCycle | None = None
        self.closed = False
        self.socket_timeout: float | None = None  # what sock.settimeout() was last given
        self.writes = 0
        # A request whose head has arrived, waiting for the start of its body (see
        # `early_body_arrived`), and the h11 body events read for it so far.
        self.pending: h11.Request | None = None
        self.early_events: deque = deque()
        self.early_bytes = 0
        # The rest of a finished response that the client was slow to take, left to the
        # acceptor to write (see `hand_over`); None when nothing waits.
        self.unsent: memoryview | None = None
        if self.tracer is not None:
            self.tracer.emit(self.id, "socket", "connection_made",
                             {"client": client, "server": server.address})

    @property
    def keep_alive(self) -> bool:
        """False once this connection must close after its response (shutdown, an error)."""
        return self.core.keep_alive

    @keep_alive.setter
    def keep_alive(self, value: bool) -> None:
        self.core.keep_alive = value

    # -- the two ways a thread drives a connection ---------------------------------------------

    def serve_ready(self) -> bool:
        """Pooled worker: bytes are (probably) waiting. Read them and answer every request
        they complete. True if the connection stays open and idle, waiting for more bytes.

        The read never blocks: if nothing has arrived yet (a brand-new connection whose
        request is still on its way), the connection just goes back to the selector.
        """
        try:
            data = self.recv(None, MSG_DONTWAIT)
        except BlockingIOError:
            # Nothing new; but a pipelined request may wait in h11's buffer, read while an
            # earlier response was handed over (`hand_over`).
            return self.handle_events()
        except OSError:
            self.close()
            return False
        waiting = self.data_received(data)
        if waiting and self.core.time_left(time.monotonic()) <= 0:
            # Bytes keep trickling in, but the request head is overdue (slowloris). The
            # acceptor's sweep only sees connections resting in its selector, and this one
            # leaves it each time a byte arrives: so the deadline is checked here too.
            self.close_idle()
            return False
        return waiting

    def serve_forever(self) -> None:
        """Thread per connection: block on this one socket until the client leaves or idles out."""
        while not self.closed:
            timeout = self.core.time_left(time.monotonic())
            if timeout <= 0:
                self.close_idle()
                return
            try:
                data = self.recv(timeout)
            except TimeoutError:
                self.close_idle()
                return
            except OSError:
                self.close()
                return
            self.data_received(data)

    # -- the core's events ---------------------------------------------------------------------

    def data_received(self, data: bytes) -> bool:
        """Hand bytes to the core and handle every complete event; True while open and waiting."""
        self.core.receive_data(data)
        return self.handle_events()

    def handle_events(self) -> bool:
        """Take every complete event the core can give from the bytes received so far; True
        while the connection stays open, waiting for more bytes.

        A request head comes here; then the start of its body (`early_body_arrived`); only then
        does the request run. The rest of a large body is read by its cycle, on demand, while
        the app runs.
        """
        core = self.core
        while True:
            if self.pending is not None:
                try:
                    if not self.early_body_arrived():
                        core.waiting_for(Wait.BODY)  # its body gets the silent-body deadline
                        return True
                except RequestBodyError as exc:
                    self.reject(exc.status, str(exc))
                    return False
                request, self.pending = self.pending, None
                if not self.handle_request(request):
                    return False
                if self.unsent is not None:
                    # The response was handed over: its bytes go out before the next one's,
                    # so a pipelined request waits (in h11's buffer) until they have.
                    return True
                continue
            event = core.next_event()
            if event is NEED_DATA:
                return True
            event_type = type(event)
            if event_type is h11.Request:
                self.pending = event  # run once the start of its body is here (just below)
            elif event_type is Refused:
                self.reject(event.status, event.reason)
                return False
            else:  # ConnectionClosed: the client is done with us
                self.close()
                return False

    def early_body_arrived(self) -> bool:
        """Has enough of the pending request's body arrived to hand the request to a worker?

        Yes when the whole body is here, or `config.wsgi_early_body_bytes` of it, or when the
        client waits for `100 Continue` before sending it (RFC 9110 §10.1.1: the app asks for
        it by reading `wsgi.input`). Until then the connection rests in the acceptor's
        selector like a slow request head, under the core's silent-body deadline: a client
        that sends its body a byte a second holds a socket, not one of the pool's threads. The
        events read here are replayed to the app by `RequestResponseCycle.read_body_chunk`.
        """
        core = self.core
        events = self.early_events
        while self.early_bytes < self.config.wsgi_early_body_bytes:
            event = core.next_event()
            if event is NEED_DATA:
                return self.conn.they_are_waiting_for_100_continue
            if type(event) is Refused:  # malformed, or a chunked body grown too big
                raise RequestBodyError(event.status, event.reason)
            events.append(event)
            if type(event) is h11.EndOfMessage:
                return True
            self.early_bytes += len(event.data)
        return True

    def handle_request(self, request: h11.Request) -> bool:
        """A request arrived (`early_body_arrived`): run its cycle to the end, then get ready
        for the next one."""
        self.core.waiting_for(Wait.APP)
        self.cycle = RequestResponseCycle(self, request)
        self.cycle.run()
        self.cycle = None
        return self.response_complete()

    def response_complete(self) -> bool:
        """The response is sent: close, or get ready for the next request (keep-alive)."""
        if self.closed:
            return False
        keep_alive = self.core.cycle_done()
        if self.unsent is not None:
            self.core.waiting_for(Wait.WRITE)  # the handed-over rest: the client must take it
        if not keep_alive:
            return self.close_when_sent()
        self.early_events.clear()
        self.early_bytes = 0
        return True

    def reject(self, status: int, reason: str = "") -> None:
        """Answer a request the app never sees (malformed, too large) and close."""
        try:
            self.sendall(self.core.refuse(status, reason))
        except ClientDisconnected:
            pass
        self.close()

    # -- timeouts --------------------------------------------------------------------------------

    def close_idle(self) -> None:
        """The core's deadline has passed (`ConnectionCore.time_left`): close, with a 408 if
        a request is waiting for its body."""
        try:
            self.sendall(self.core.expired())
        except ClientDisconnected:
            pass
        self.close()

    # -- the socket --------------------------------------------------------------------------

    def recv(self, timeout: float | None, flags: int = 0) -> bytes:
        """One recv(); raises TimeoutError after `timeout` seconds (None: block)."""
        self.set_timeout(timeout)
        return self.sock.recv(RECV_BUFFER, flags)

    def set_timeout(self, timeout: float | None) -> None:
        """`sock.settimeout(timeout)`, a system call, made only when the timeout changes.
        (Python waits in poll() before each call on a socket with a timeout, even a
        MSG_DONTWAIT one: so a read that must not wait needs `None`.)"""
        if timeout != self.socket_timeout:
            self.sock.settimeout(timeout)
            self.socket_timeout = timeout

    def sendall(self, data: bytes, last: bool = False) -> None:
        """Write everything, blocking while the client is slow to read: a slow reader holds
        its thread, which is part of what the lab shows. But not forever: a client that takes
        no bytes for `wsgi_timeout_write` seconds is cut off. (`socket.sendall` with a
        timeout would limit the whole transfer, cutting a slow but steady download; each
        `send()` here waits at most that long for room, and returns once some bytes went.)

        `last`: these are the last bytes of a response. If the kernel does not take them
        all at once, the rest may be handed over (`hand_over`) instead of waited for."""
        if not data:
            return
        self.prepare_write()
        try:
            try:
                sent = self.sock.send(data, MSG_DONTWAIT)  # usually everything, at once
            except BlockingIOError:  # the socket's buffer is full: the client reads slowly
                sent = 0
            if sent < len(data):
                view = memoryview(data)[sent:]
                if not (last and self.hand_over(view)):
                    self.send_blocking(view)
        except OSError as exc:  # TimeoutError included: the client stopped reading
            self.close()
            raise ClientDisconnected(f"client {self.client} disconnected: {exc}") from exc

    def send_blocking(self, view: memoryview) -> None:
        """Write `view` whole, each send() waiting at most `wsgi_timeout_write` for room."""
        self.set_timeout(self.config.wsgi_timeout_write)
        while view:
            view = view[self.sock.send(view):]

    # -- handing a finished response over (a client slow to read must not hold a worker) ------

    def hand_over(self, rest: memoryview) -> bool:
        """(worker) The response is complete, but the client has not taken all of it yet:
        leave `rest` to the acceptor thread, which writes it as the socket has room
        (`write_unsent`), and free the worker now. Eight clients that never read a large
        response would otherwise hold eight workers for `wsgi_timeout_write` each.

        Only a *finished* response, already in memory, is handed over: the app has returned,
        so nothing of the WSGI call waits on the client any more. Memory stays bounded by
        `wsgi_write_behind_bytes` over all connections (False: no room left, write it here).
        A streaming response is not finished while it streams, so it keeps its worker.
        """
        if not self.server.reserve_unsent(len(rest)):
            return False
        self.set_timeout(None)  # the acceptor's send() must not wait for room (see set_timeout)
        self.unsent = rest
        if self.tracer is not None:
            self.tracer.emit(self.id, "server", "hand_over", {"size": len(rest)})
        return True

    def write_unsent(self) -> bool:
        """(acceptor) The socket has room: send what the kernel takes of `unsent`, never
        waiting. True once all of it is sent; False while some is left (or the write failed
        and the connection is closed)."""
        try:
            sent = self.sock.send(self.unsent, MSG_DONTWAIT)
        except BlockingIOError:
            return False
        except OSError:  # the client left
            self.close()
            return False
        self.server.release_unsent(sent)
        self.unsent = self.unsent[sent:]
        if self.unsent:
            self.core.progress()  # the write deadline starts again
            return False
        self.unsent = None
        self.core.waiting_for(Wait.HEAD)  # idle now, waiting for the next request
        return True

    def close_when_sent(self) -> bool:
        """Close now; or, while a handed-over response is still being written, once it is
        sent (the acceptor closes it then). True if the connection is still open."""
        if self.unsent is None:
            self.close()
            return False
        self.keep_alive = False
        return True

    @property
    def request_buffered(self) -> bool:
        """Are bytes of a next (pipelined) request already read, waiting in h11's buffer?"""
        return self.core.request_buffered

    def finish_unsent(self) -> None:
        """(worker) Shutting down, the acceptor is gone: write the rest of a handed-over
        response here, blocking (until the grace period of shutdown cuts it), then close."""
        rest, self.unsent = self.unsent, None
        self.server.release_unsent(len(rest))
        try:
            self.send_blocking(rest)
        except OSError:
            pass
        self.close()

    def sendfile(self, region: FileRegion) -> None:
        """Like sendall(), for a file region: the kernel moves the bytes (socket.sendfile)."""
        if self.tracer is not None:
            self.tracer.emit(self.id, "socket", "bytes_out", {"file": getattr(region.file, "name", None),
                                                              "size": region.count})
        self.prepare_write()
        self.set_timeout(self.config.wsgi_timeout_write)  # socket.sendfile waits this long for room
        try:
            sent = self.sock.sendfile(region.file, region.offset, region.count)
        except OSError as exc:
            self.close()
            raise ClientDisconnected(f"client {self.client} disconnected: {exc}") from exc
        if sent < region.count:  # the file got shorter while we sent it
            raise RuntimeError(f"file ended after {sent} of {region.count} bytes")

    def prepare_write(self) -> None:
        """From a connection's second write on, no Nagle delay (`http11.no_delay`): the first
        write never waits, and a hello-world answer then closes with one system call less."""
        self.writes += 1
        if self.writes == 2:
            no_delay(self.sock)

    def close(self) -> None:
        """Close the socket (once) and tell the server this connection is gone."""
        if self.closed:
            return
        self.closed = True
        if self.unsent is not None:  # a handed-over response the client did not take in time
            self.server.release_unsent(len(self.unsent))
            self.unsent = None
        try:
            self.sock.close()
        finally:
            self.server.connection_closed(self)
            if self.tracer is not None:
                self.tracer.emit(self.id, "socket", "connection_lost", {})

    def has_bytes_waiting(self) -> bool:
        """Has the client sent bytes nobody has read yet? (`http11.bytes_waiting`)"""
        return bytes_waiting(self.sock)

    def shutdown(self, patient: bool = True) -> None:
        """(the server's `shutdown()`, from its thread) Graceful shutdown, as
        `HTTPProtocol.shutdown` in the ASGI shell: close after the response in flight. An
        idle connection with a thread of its own (threads=0) has that thread blocked in
        recv(): cut it now to wake it (with a pool, idle connections rest in the acceptor's
        selector, which closes them); but while `patient`, not one whose first request may be
        on its way (`core.FIRST_REQUEST_WAIT`). There is no way to tell a WSGI app to hurry."""
        self.keep_alive = False
        core = self.core
        if not self.config.threads and core.wait is Wait.HEAD and core.head_bytes == 0 \
                and not (patient and core.first_request_pending()):
            self.abort()

    def abort(self) -> None:
        """From another thread (shutdown): cut the connection so that a thread blocked in
        recv() or sendall() on it wakes up. The owning thread then closes the socket."""
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass


class RequestResponseCycle:
    """One request and its response, as the WSGI app sees them (PEP 3333).

    The app gets `environ` and `start_response`; this class checks that the app calls them
    as the PEP requires, and hands what it returns to the core, which makes h11 events of it.
    """

    __slots__ = ("connection", "core", "conn", "request", "tracer", "body_complete")  # one per request

    def __init__(self, connection: Connection, request: h11.Request) -> None:
        self.connection = connection
        self.core = connection.core      # its `state` is this response's (`ResponseState`)
        self.conn = connection.conn
        self.request = request
        self.tracer = connection.tracer
        self.body_complete = False       # h11 gave us the request's EndOfMessage

    @property
    def head_sent(self) -> bool:
        """Is the response head on the wire (too late for another status)?"""
        state = self.core.state
        return state is not NOT_STARTED and state is not STARTED

    # -- the app -----------------------------------------------------------------------------

    def run(self) -> None:
        """Call the app, send its response, and clean up after it, however it ends."""
        connection = self.connection
        tracer = self.tracer
        # `environ` is a local, not an attribute: its wsgi.input holds this cycle (through
        # `read_body_chunk`), so a cycle holding `environ` would make a reference cycle, and
        # every request's objects would wait for the garbage collector instead of being
        # freed when the request ends.
        environ = build_environ(self.request, RequestBody(self.read_body_chunk), connection.base_environ)
        upgrade = None
        if connection.config.wsgi_upgrade:  # the non-portable escape hatch, off by default
            upgrade = environ[UPGRADE_KEY] = Upgrade(self)
        if tracer is not None:
            tracer.emit(connection.id, "wsgi", "environ", environ_for_trace(environ))
        try:
            if tracer is not None:
                tracer.emit(connection.id, "wsgi", "app_call", {})
            result = connection.app(environ, self.start_response)
            if tracer is not None:
                tracer.emit(connection.id, "wsgi", "app_return", {"type": type(result).__name__})
            try:
                if upgrade is None or not upgrade.switched:  # switched: the app had the socket
                    self.send_response(result)
            finally:
                close = getattr(result, "close", None)
                if close is not None:  # PEP 3333: always, even if the client left half-way
                    if tracer is not None:
                        tracer.emit(connection.id, "wsgi", "close", {})
                    close()
            self.finish()
        except ClientDisconnected:
            connection.close()
        except RequestBodyError as exc:
            logger.info("Connection %s from %s: %s", connection.id, connection.client, exc)
            self.fail(exc.status)
        except BaseException as exc:  # a bad app must not take its thread with it (even sys.exit())
            if not connection.closed:  # after a disconnect, a failing write is expected
                logger.error("Exception in WSGI application", exc_info=exc)
            self.fail(500)

    def start_response(self, status: str, headers: list[tuple[str, str]], exc_info=None):
        """PEP 3333, "The start_response() Callable". Returns the `write()` callable.

        Nothing is sent yet: the head goes out with the first non-empty body chunk, so an app
        that fails before producing one can still call start_response again with `exc_info`
        to send an error page instead (or let us send a 500).
        """
        replacing = exc_info is not None
        if replacing:
            try:
                if self.head_sent:  # too late to change the status: re-raise, as the PEP says
                    raise exc_info[1].with_traceback(exc_info[2])
            finally:
                exc_info = None  # break the frame <-> traceback reference cycle
        elif self.core.state is not NOT_STARTED:
            raise RuntimeError("start_response() called twice without exc_info (PEP 3333: "
                               "only an error handler, passing exc_info, may call it again)")
        if self.tracer is not None:
            self.tracer.emit(self.connection.id, "wsgi", "start_response",
                             {"status": status, "headers": headers, "exc_info": replacing})
        heads = self.core.heads
        if type(headers) is not list:  # not what PEP 3333 asks for: _h11_response says so
            self.core.start(_h11_response(status, headers, heads))
        else:  # a bad status or header fails here, while a 500 can still be sent
            self.core.start(heads.head((status, tuple(headers)), _h11_response, status, headers, heads))
        return self.write

    def write(self, data: bytes) -> None:
        """PEP 3333, "The write() Callable": send `data` now (the imperative API of old apps)."""
        if self.core.state is NOT_STARTED:
            raise RuntimeError("write() called before start_response()")
        if self.tracer is not None:
            self.tracer.emit(self.connection.id, "wsgi", "write", {"data": data})
        if not isinstance(data, (bytes, bytearray)):
            raise _not_bytes(data)
        if data:
            self.send(data)

    # -- sending the response ------------------------------------------------------------------

    def send_response(self, result) -> None:
        """Send what the app returned, each non-empty chunk as soon as it is produced."""
        tracer = self.tracer
        if type(result) is FileWrapper and (region := result.region()) is not None:
            self.send_file(region)
            return
        if type(result) is list or type(result) is tuple:
            # Every chunk exists already: send them (and the head) with one write.
            if tracer is not None:
                for chunk in result:
                    tracer.emit(self.connection.id, "wsgi", "body_chunk", {"data": chunk})
            try:
                body = b"".join(result)
            except TypeError:
                raise _not_bytes(next(c for c in result if not isinstance(c, (bytes, bytearray)))) from None
            self.send(body, end=True)
            return
        if type(result) is types.CoroutineType or type(result) is types.AsyncGeneratorType:
            raise _async_app(result)
        for chunk in result:
            if tracer is not None:
                tracer.emit(self.connection.id, "wsgi", "body_chunk", {"data": chunk})
            if chunk:  # PEP 3333: no head before the first non-empty chunk
                if not isinstance(chunk, (bytes, bytearray)):
                    raise _not_bytes(chunk)
                self.send(chunk)

    def send_file(self, region: FileRegion) -> None:
        """PEP 3333, "Optional Platform-Specific File Handling": the app returned
        `wsgi.file_wrapper(file)`, so the kernel copies the file to the socket. h11 still
        frames it: the head, then (chunked or not) the file, then the end, in `finish()`."""
        if self.tracer is not None:
            self.tracer.emit(self.connection.id, "wsgi", "sendfile",
                             {"offset": region.offset, "count": region.count})
        if not self.head_sent:
            self.send(b"")  # the head alone
        if self.request.method == b"HEAD" or not region.count:
            return
        for piece in self.core.body_pieces(region):
            if piece is region:
                self.connection.sendfile(region)
            else:  # chunk framing around it
                self.connection.sendall(piece)

    def finish(self) -> None:
        """The iterable is exhausted (and closed): end the response."""
        if self.core.state is not COMPLETE:
            self.send(b"", end=True)

    def send(self, data: bytes, end: bool = False) -> None:
        """One write: the head if it has not gone yet, then `data`, then the end if `end`
        (the core frames them: `ConnectionCore.respond`)."""
        state = self.core.state
        if state is NOT_STARTED:
            raise RuntimeError("the app returned (or wrote) a body without calling start_response()")
        if state is COMPLETE:
            raise RuntimeError("the response is already complete")
        self.connection.sendall(self.core.respond(data, end), end)

    def fail(self, status: int) -> None:
        """Something broke: an error response if the head has not gone yet, otherwise cut the
        connection (never pretend an unfinished response was complete)."""
        connection = self.connection
        if connection.closed:
            return
        try:
            connection.sendall(self.core.refuse(status))
        except ClientDisconnected:
            pass
        connection.close()

    # -- reading the request body (for wsgi.input) -----------------------------------------------

    def read_body_chunk(self) -> bytes:
        """The next piece of the request body, b"" at its end. Blocks on the socket if needed."""
        connection = self.connection
        core = self.core
        early = connection.early_events  # read before the app started
        while not self.body_complete:
            event = early.popleft() if early else core.next_event()
            if event is NEED_DATA:
                # RFC 9110 §10.1.1: a client may wait for our go-ahead before sending its
                # body. We give it only now, when the app first reads wsgi.input.
                connection.sendall(core.go_ahead())
                self.receive_more()
                continue
            event_type = type(event)
            if event_type is h11.Data:
                return event.data
            if event_type is Refused:  # malformed, or a chunked body grown too big
                raise RequestBodyError(event.status, event.reason)
            self.body_complete = True  # EndOfMessage
        return b""

    def receive_more(self) -> None:
        """Block until more of the body arrives; a client that goes quiet past the core's
        silent-body deadline, or leaves, ends the request."""
        connection = self.connection
        core = self.core
        if connection.closed:
            raise ClientDisconnected(f"client {connection.client} disconnected")
        core.waiting_for(Wait.BODY)
        try:
            data = connection.recv(core.time_left(time.monotonic()))
        except TimeoutError:
            raise RequestBodyError(408, "request body too slow") from None
        except OSError as exc:
            connection.close()
            raise ClientDisconnected(f"client {connection.client} disconnected: {exc}") from None
        if not data:  # EOF: the body is cut short, but a half-closed client still reads, so
            # answer 400 as the ASGI server does (RFC 9112 §8: a server that receives an
            # incomplete request "MAY send an error response prior to closing the connection")
            raise RequestBodyError(400, "the client closed its side mid-body")
        core.receive_data(data)
        core.waiting_for(Wait.APP)


def _h11_response(status: str, headers: list[tuple[str, str]], heads) -> h11.Response:
    """"200 OK" and [("Content-Type", "text/plain")] -> an h11.Response, with our default
    headers first. PEP 3333 wants native strings, latin-1 encodable; anything else is an app
    error raised here, while a 500 can still be sent.

    So is a hop-by-hop header (`Connection`, `Transfer-Encoding`, `Upgrade`, ...): PEP 3333,
    "Other HTTP Features": "applications and middleware are forbidden from using HTTP/1.1
    'hop-by-hop' features or headers". The connection is the server's: h11 frames the body and
    decides keep-alive. We refuse with a logged 500, as wsgiref and waitress do (gunicorn
    drops the header with a warning), using the stdlib's own list, `wsgiref.util.is_hop_by_hop`.
    """
    if type(status) is not str:
        raise TypeError(f"status must be a str like '200 OK', not {type(status).__name__}")
    code, _, reason = status.partition(" ")
    if len(code) != 3 or not (code.isascii() and code.isdigit()):  # "٢٠٠".isdigit() is True
        raise ValueError(f"status must start with a three-digit code and a space: {status!r}")
    status_code, reason = int(code), reason.encode("latin-1")
    check_status(status_code, reason)
    if type(headers) is not list:
        raise TypeError(f"headers must be a list of (name, value) tuples, not {type(headers).__name__}")
    raw_headers = heads.default_headers()
    for header in headers:
        name, value = header  # a 2-tuple, or this raises
        if type(name) is not str or type(value) is not str:
            raise TypeError(f"header names and values must be str: {header!r}")
        if is_hop_by_hop(name):
            raise ValueError(f"{name!r} is a hop-by-hop header, which PEP 3333 forbids an app to set")
        raw_headers.append((name.encode("latin-1"), value.encode("latin-1")))
    return h11.Response(status_code=status_code, headers=raw_headers, reason=reason)


def _not_bytes(chunk) -> TypeError:
    return TypeError(f"the app produced a {type(chunk).__name__} in its response body ({chunk!r:.40}); "
                     "PEP 3333 bodies are bytes: encode text first")


def _async_app(result) -> TypeError:
    """The app is an `async def` function: calling it only created a coroutine (or an async
    generator), which a WSGI server cannot run. Its `close()` (PEP 3333) then discards it."""
    what = "a coroutine" if type(result) is types.CoroutineType else "an async generator"
    return TypeError(f"the WSGI app returned {what} ({result.__qualname__}), not an iterable of bytes: "
                     "it is an `async def` function, and a WSGI server calls the app without awaiting "
                     "it (PEP 3333). Serve it on an ASGI server, or wrap it in a bridge such as "
                     "asgiref.sync.async_to_sync")
