"""HTTP/1.1 for the WSGI server: h11 over a blocking socket, and one cycle per request.

Two classes, read them in this order (they mirror `asgi/http.py`, so compare them):

- `Connection` owns one TCP connection. A thread hands it the bytes it read from the
  socket (`data_received`); it feeds them to h11 and, for every complete request head, runs
  one `RequestResponseCycle` right there, on that thread, blocking until the response is
  sent. It answers pipelined requests in order and keeps the connection alive between them.
- `RequestResponseCycle` is the WSGI side of one request (PEP 3333): it builds the
  `environ`, calls the app with `start_response`, sends what the returned iterable yields,
  and always calls the iterable's `close()`. Its response state machine: head not sent ->
  head sent -> complete; or the client left.

Where the ASGI server awaits, this one blocks: reading the request body (`wsgi.input`) and
writing the response (`sendall`) hold the thread until the socket is ready. That is the whole
difference the lab measures. One exception, so that clients that never read cannot take the
whole pool: once the app has returned and its response is complete, the bytes the client has
not taken yet can be handed over to the acceptor thread (`hand_over`), freeing the worker.
Who calls `data_received`, and what happens between requests, is the server's business (see
`server.py`): a pooled worker hands an idle connection back to the acceptor's selector, a
thread-per-connection blocks in `serve_forever`.

h11 does all the parsing and framing (RFC 9112): we never read a header by hand.
"""

from __future__ import annotations

import logging
import socket
import time
import types
from collections import deque
from wsgiref.util import is_hop_by_hop

import h11

from ..http11 import (check_status, default_headers, event_name, new_h11_connection, origin_form,
                      refuse_request, response_head, send_error, status_for)
from ..trace import describe_event, preview
from .environ import build_environ, environ_base, environ_for_trace
from .streams import FileRegion, FileWrapper, RequestBody
from .upgrade import UPGRADE_KEY, Upgrade

logger = logging.getLogger("asgi_lab.error")
access_logger = logging.getLogger("asgi_lab.access")

RECV_BUFFER = 64 * 1024
"""Bytes asked of the socket per recv(): a whole small request (or many pipelined ones) at once."""

MSG_DONTWAIT = getattr(socket, "MSG_DONTWAIT", 0)
"""recv() flag: return at once if no bytes are there (POSIX; Windows lacks it, see server.py)."""


class ClientDisconnected(OSError):
    """The client went away: a write failed, or the body ended early. The app may see it
    raised from `wsgi.input.read()` (the ASGI server raises its own from `send()`)."""


class RequestBodyError(OSError):
    """The request body cannot be read: malformed (400), too large (413), too slow (408).
    Raised from `wsgi.input.read()`; the server answers with `status` if it still can."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class Connection:
    """One client connection: bytes in from the socket, h11 events out, one cycle per request."""

    def __init__(self, server, sock: socket.socket, client: tuple[str, int] | None, conn_id: int) -> None:
        self.server = server            # the WSGIServer: app, config, tracer, address
        self.app = server.app
        self.config = server.config
        self.tracer = server.tracer
        self.sock = sock
        self.fd = sock.fileno()         # its number, still known after close (see watchlist.py)
        self.client = client
        self.id = conn_id
        self.conn = new_h11_connection(self.config)
        self.base_environ = environ_base(server.address, client, self.config.root_path)
        self.cycle: RequestResponseCycle | None = None
        self.keep_alive = True          # False once the server shuts down
        self.closed = False
        self.socket_timeout: float | None = None  # what sock.settimeout() was last given
        self.writes = 0
        # Timeouts (the same rules as the ASGI server): `waiting_since` is when we started
        # waiting for the next request head (None while a request is being handled),
        # `head_bytes` how many bytes of that head have arrived.
        self.waiting_since: float | None = time.monotonic()
        self.head_bytes = 0
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
        if waiting and self.time_left(time.monotonic()) <= 0:
            # Bytes keep trickling in, but the request head is overdue (slowloris). The
            # acceptor's sweep only sees connections resting in its selector, and this one
            # leaves it each time a byte arrives: so the deadline is checked here too.
            self.close_idle()
            return False
        return waiting

    def serve_forever(self) -> None:
        """Thread per connection: block on this one socket until the client leaves or idles out."""
        while not self.closed:
            timeout = self.time_left(time.monotonic())
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

    # -- h11 events ----------------------------------------------------------------------------

    def data_received(self, data: bytes) -> bool:
        """Feed bytes to h11 and handle every complete event; True while open and waiting."""
        if self.tracer is not None:
            self.tracer.emit(self.id, "socket", "bytes_in", {"bytes": preview(data), "size": len(data)})
        self.head_bytes += len(data)
        if self.pending is not None:
            self.waiting_since = time.monotonic()  # the body's deadline counts silence
        self.conn.receive_data(data)
        return self.handle_events()

    def handle_events(self) -> bool:
        """Take every complete event h11 can give from the bytes received so far; True while
        the connection stays open, waiting for more bytes.

        A request head comes here; then the start of its body (`early_body_arrived`); only then
        does the request run. The rest of a large body is read by its cycle, on demand, while
        the app runs.
        """
        while True:
            if self.pending is not None:
                try:
                    if not self.early_body_arrived():
                        return True
                except h11.RemoteProtocolError as exc:
                    self.reject(status_for(exc), f"malformed request body: {exc}")
                    return False
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
            try:
                event = self.conn.next_event()
            except h11.RemoteProtocolError as exc:
                self.reject(status_for(exc), f"malformed request: {exc}")
                return False
            if event is h11.NEED_DATA:
                return True
            if self.tracer is not None:
                self.tracer.emit(self.id, "h11", event_name(event), describe_event(event))
            if type(event) is h11.Request:
                refusal = refuse_request(event, self.head_bytes, self.config)
                if refusal is not None:
                    self.reject(*refusal)
                    return False
                self.pending = origin_form(event)
                self.waiting_since = time.monotonic()
            else:  # ConnectionClosed: the client is done with us
                self.close()
                return False

    def early_body_arrived(self) -> bool:
        """Has enough of the pending request's body arrived to hand the request to a worker?

        Yes when the whole body is here, or `config.wsgi_early_body_bytes` of it, or when the
        client waits for `100 Continue` before sending it (RFC 9110 §10.1.1: the app asks for
        it by reading `wsgi.input`). Until then the connection rests in the acceptor's
        selector like a slow request head, under the same deadline: a client that sends its
        body a byte a second holds a socket, not one of the pool's threads. The h11 events
        read here are replayed to the app by `RequestResponseCycle.read_body_chunk`.
        """
        conn = self.conn
        events = self.early_events
        while self.early_bytes < self.config.wsgi_early_body_bytes:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                return conn.they_are_waiting_for_100_continue
            if self.tracer is not None:
                self.tracer.emit(self.id, "h11", event_name(event), describe_event(event))
            events.append(event)
            if type(event) is h11.EndOfMessage:
                return True
            self.early_bytes += len(event.data)
            limit = self.config.max_body_bytes
            if limit is not None and self.early_bytes > limit:  # a chunked body grown too big
                raise RequestBodyError(413, "request body over the limit")
        return True

    def handle_request(self, request: h11.Request) -> bool:
        """A request arrived (`early_body_arrived`): run its cycle to the end, then get ready
        for the next one."""
        self.waiting_since = None
        self.cycle = RequestResponseCycle(self, request)
        self.cycle.run()
        self.cycle = None
        return self.response_complete()

    def response_complete(self) -> bool:
        """The response is sent: close, or get ready for the next request (keep-alive)."""
        conn = self.conn
        if self.closed:
            return False
        if conn.our_state is h11.MUST_CLOSE or not self.keep_alive:
            return self.close_when_sent()
        if conn.their_state is h11.SEND_BODY and not self.discard_buffered_body():
            # The app answered without reading the whole request body, and the rest has not
            # arrived yet. Rather than wait for and discard an unknown amount, close (the
            # ASGI server does the same).
            return self.close_when_sent()
        conn.start_next_cycle()
        self.early_events.clear()
        self.early_bytes = 0
        self.waiting_since = time.monotonic()
        self.head_bytes = len(conn.trailing_data[0])  # a pipelined request may have begun
        return True

    def discard_buffered_body(self) -> bool:
        """Skip the unread part of the request body that h11 already holds; True if that was
        all of it. Never reads the socket. (A GET's empty body ends here, too.)"""
        if self.conn.their_state is not h11.SEND_BODY:
            return True  # the end of the body was among the early events
        while True:
            try:
                event = self.conn.next_event()
            except h11.RemoteProtocolError:
                return False
            if self.tracer is not None and event is not h11.NEED_DATA:
                self.tracer.emit(self.id, "h11", event_name(event), describe_event(event))
            if type(event) is h11.EndOfMessage:
                return True
            if type(event) is not h11.Data:  # NEED_DATA: the rest is still on the wire
                return False

    def reject(self, status: int, reason: str = "") -> None:
        """Answer a request the app never sees (malformed, too large) and close."""
        if reason:
            logger.info("Connection %s from %s: %s", self.id, self.client, reason)
        try:
            self.sendall(send_error(self.conn, status))
        except ClientDisconnected:
            pass
        self.close()

    # -- timeouts --------------------------------------------------------------------------------

    def time_left(self, now: float) -> float:
        """Seconds until this connection has waited too long for its next request head.

        One that never sends a byte, or idles between requests, gets `timeout_keep_alive`;
        one that started a head gets `timeout_request_header` to finish it (slow headers);
        one whose request waits for its body gets `timeout_request_header` from the last bytes
        that arrived (a silent body, as `RequestResponseCycle.receive_more` counts it); one
        whose response was handed over gets `wsgi_timeout_write` from the last bytes the
        client took.
        """
        if self.unsent is not None:  # a handed-over response: time since the client last took bytes
            return self.waiting_since + self.config.wsgi_timeout_write - now
        if self.waiting_since is None:
            return float("inf")
        if self.head_bytes == 0:
            return self.waiting_since + self.config.timeout_keep_alive - now
        return self.waiting_since + self.config.timeout_request_header - now

    def close_idle(self) -> None:
        """The deadline of `time_left` has passed: close, with a 408 if a request is waiting
        for its body (the same answer `receive_more` gives once the app reads it)."""
        if self.unsent is not None:
            why = "client not reading"
        elif self.pending is not None:
            why = "request body too slow"
        else:
            why = "idle" if self.head_bytes == 0 else "request head too slow"
        if self.tracer is not None:
            self.tracer.emit(self.id, "server", "timeout", {"reason": why})
        if self.pending is not None:
            self.reject(408, why)
        else:
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
        if self.tracer is not None:
            self.tracer.emit(self.id, "socket", "bytes_out", {"bytes": preview(data), "size": len(data)})
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
        self.waiting_since = time.monotonic()  # `time_left` counts from the last progress
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
        self.waiting_since = time.monotonic()  # progress: the write timeout starts again
        if self.unsent:
            return False
        self.unsent = None
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
        return bool(self.conn.trailing_data[0])

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
        """From a connection's second write on, no Nagle delay."""
        self.writes += 1
        if self.writes == 2:
            _no_delay(self.sock)

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
        """Has the client sent bytes nobody has read yet? A peek: they stay in the socket."""
        if not MSG_DONTWAIT:
            return False  # no non-blocking peek on this platform: treat it as idle
        try:
            return bool(self.sock.recv(1, socket.MSG_PEEK | MSG_DONTWAIT))
        except OSError:  # nothing there (BlockingIOError), or the connection failed
            return False

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
    as the PEP requires, and turns what it returns into h11 events.
    """

    def __init__(self, connection: Connection, request: h11.Request) -> None:
        self.connection = connection
        self.conn = connection.conn
        self.request = request
        self.tracer = connection.tracer
        self.head_only = request.method == b"HEAD"
        self.body_size = 0
        self.body_complete = False       # h11 gave us the request's EndOfMessage
        # Response state machine: not started -> started (start_response called) ->
        # head sent (first non-empty chunk) -> complete; `connection.closed` if the client left.
        self.status: str | None = None
        self.response: h11.Response | None = None
        self.head_sent = False
        self.complete = False
        self.environ: dict = {}

    # -- the app -----------------------------------------------------------------------------

    def run(self) -> None:
        """Call the app, send its response, and clean up after it, however it ends."""
        connection = self.connection
        tracer = self.tracer
        environ = self.environ = build_environ(
            self.request, RequestBody(self.read_body_chunk), connection.base_environ)
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
        elif self.status is not None:
            raise RuntimeError("start_response() called twice without exc_info (PEP 3333: "
                               "only an error handler, passing exc_info, may call it again)")
        if self.tracer is not None:
            self.tracer.emit(self.connection.id, "wsgi", "start_response",
                             {"status": status, "headers": headers, "exc_info": replacing})
        self.response = _cached_response(status, headers)  # a bad status or header fails here
        self.status = status
        return self.write

    def write(self, data: bytes) -> None:
        """PEP 3333, "The write() Callable": send `data` now (the imperative API of old apps)."""
        if self.status is None:
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
        if self.head_only or not region.count:
            return
        for piece in self.conn.send_with_data_passthrough(h11.Data(data=region)):
            if piece is region:
                self.connection.sendfile(region)
            else:  # chunk framing around it
                self.connection.sendall(piece)

    def finish(self) -> None:
        """The iterable is exhausted (and closed): end the response."""
        if not self.complete:
            self.send(b"", end=True)

    def send(self, data: bytes, end: bool = False) -> None:
        """One write: the head if it has not gone yet, then `data`, then the end if `end`.

        h11 frames the body: Content-Length if the app gave one, otherwise chunked for
        HTTP/1.1 and "until the connection closes" for HTTP/1.0.
        """
        conn = self.conn
        if self.response is None:
            raise RuntimeError("the app returned (or wrote) a body without calling start_response()")
        if self.complete:
            raise RuntimeError("the response is already complete")
        pieces = []
        if not self.head_sent:
            pieces.append(conn.send(self.response))
            self.head_sent = True
            if self.connection.config.access_log:
                self.log_access(self.response.status_code)
        if data and not self.head_only:
            pieces.append(conn.send(h11.Data(data=data)))
        if end:
            pieces.append(conn.send(h11.EndOfMessage()))
            self.complete = True
        self.connection.sendall(b"".join(pieces), end)

    def fail(self, status: int) -> None:
        """Something broke: an error response if the head has not gone yet, otherwise cut the
        connection (never pretend an unfinished response was complete)."""
        connection = self.connection
        if connection.closed:
            return
        if not self.head_sent:
            self.head_sent = True
            if connection.config.access_log:
                self.log_access(status)
            try:
                connection.sendall(send_error(self.conn, status))
            except ClientDisconnected:
                pass
        connection.close()

    # -- reading the request body (for wsgi.input) -----------------------------------------------

    def read_body_chunk(self) -> bytes:
        """The next piece of the request body, b"" at its end. Blocks on the socket if needed."""
        connection = self.connection
        conn = self.conn
        early = connection.early_events  # read before the app started (already traced)
        while not self.body_complete:
            if early:
                event = early.popleft()
            else:
                try:
                    event = conn.next_event()
                except h11.RemoteProtocolError as exc:
                    raise RequestBodyError(status_for(exc), f"malformed request body: {exc}") from None
                if self.tracer is not None and event is not h11.NEED_DATA:
                    self.tracer.emit(connection.id, "h11", event_name(event), describe_event(event))
            if event is h11.NEED_DATA:
                if conn.they_are_waiting_for_100_continue and not self.head_sent:
                    # RFC 9110 §10.1.1: the client waits for our go-ahead before sending its
                    # body. We give it only now, when the app first reads wsgi.input.
                    connection.sendall(conn.send(h11.InformationalResponse(status_code=100, headers=[])))
                self.receive_more()
                continue
            if type(event) is h11.Data:
                self.body_size += len(event.data)
                limit = connection.config.max_body_bytes
                if limit is not None and self.body_size > limit:  # a chunked body grown too big
                    raise RequestBodyError(413, "request body over the limit")
                return event.data
            self.body_complete = True  # EndOfMessage
        return b""

    def receive_more(self) -> None:
        """Block until more of the body arrives; a client that goes quiet for
        `timeout_request_header` seconds, or leaves, ends the request."""
        connection = self.connection
        if connection.closed:
            raise ClientDisconnected(f"client {connection.client} disconnected")
        try:
            data = connection.recv(connection.config.timeout_request_header)
        except TimeoutError:
            raise RequestBodyError(408, "request body too slow") from None
        except OSError as exc:
            connection.close()
            raise ClientDisconnected(f"client {connection.client} disconnected: {exc}") from None
        if not data:  # EOF: the body is cut short, but a half-closed client still reads, so
            # answer 400 as the ASGI server does (RFC 9112 §8: a server that receives an
            # incomplete request "MAY send an error response prior to closing the connection")
            raise RequestBodyError(400, "the client closed its side mid-body")
        if self.tracer is not None:
            self.tracer.emit(connection.id, "socket", "bytes_in", {"bytes": preview(data), "size": len(data)})
        self.conn.receive_data(data)

    def log_access(self, status: int) -> None:
        if access_logger.isEnabledFor(logging.INFO):
            environ = self.environ
            access_logger.info('%s:%s - "%s %s %s" %d', environ.get("REMOTE_ADDR", "-"),
                               environ.get("REMOTE_PORT", "-"), environ.get("REQUEST_METHOD"),
                               environ.get("PATH_INFO"), environ.get("SERVER_PROTOCOL"), status)


def _cached_response(status: str, headers: list[tuple[str, str]]) -> h11.Response:
    """`_h11_response(status, headers)`, built and checked by h11 once per second for each
    distinct head (see `http11.response_head`: most apps send the same few heads)."""
    if type(headers) is not list:  # not what PEP 3333 asks for: _h11_response says so
        return _h11_response(status, headers)
    return response_head((status, tuple(headers)), _h11_response, status, headers)


def _h11_response(status: str, headers: list[tuple[str, str]]) -> h11.Response:
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
    raw_headers = default_headers()
    for header in headers:
        name, value = header  # a 2-tuple, or this raises
        if type(name) is not str or type(value) is not str:
            raise TypeError(f"header names and values must be str: {header!r}")
        if is_hop_by_hop(name):
            raise ValueError(f"{name!r} is a hop-by-hop header, which PEP 3333 forbids an app to set")
        raw_headers.append((name.encode("latin-1"), value.encode("latin-1")))
    return h11.Response(status_code=status_code, headers=raw_headers, reason=reason)


def _no_delay(sock: socket.socket) -> None:
    """Nagle's algorithm holds back a small write while an earlier one is not yet acknowledged.
    The first write of a connection never waits; from the second on (the next chunk of a
    stream, the next SSE event, a pipelined response) it could, for up to the client's
    delayed-ACK time (40 ms or more). So before its second write a connection switches it off."""
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    except OSError:  # not a TCP socket: no Nagle there
        pass


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
