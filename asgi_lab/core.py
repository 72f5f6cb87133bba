"""One HTTP/1.1 connection, sans-IO: every rule both servers share, and nothing else.

No socket, no event loop, no thread: bytes go in, events and bytes come out, and time is a
clock the caller passes in (a fake one in the tests). h11 parses and frames (RFC 9112); this
core adds what a *server* decides around h11, once for both servers. The two shells differ
only in how they wait, which is the lab's whole point:

    ASGI shell (asgi/http.py)                       WSGI shell (wsgi/connection.py)
    loop calls data_received(bytes) ─┐        ┌── sock.recv() blocks, returns bytes
                                     ▼        ▼
                core.receive_data(bytes) · core.next_event()
                  -> Request | Data | EndOfMessage | Refused | ConnectionClosed | NEED_DATA
                                     │        │
    push the body into receive()  ◀──┘        └──▶  pull the body through wsgi.input
    await send(...)             ──┐        ┌──  start_response + the iterable
                                  ▼        ▼
                core.start(head) · core.respond(data, end) · core.go_ahead() · core.refuse(status)
                  -> bytes (traced as h11 events, then socket bytes_out)
    transport.write(bytes)     ◀──┘        └──▶  sock.sendall(bytes)
                core.cycle_done() -> keep alive (True) or close (False)
                core.past_deadline(now) / core.time_left(now): the deadlines

What the core owns: the `h11.Connection`; the refusals of `http11.refuse_request` (400, 413,
414, 431, 501, 505), of a head h11 cannot parse (`http11.refusal_for`: 400, 431, 501) and of a
body that grows over the limit; 100 Continue; the response head
(default headers first, a head checked by h11 once per second, see `ResponseHeads`); HEAD
requests (no body sent); the keep-alive decision; the deadlines (idle, slow head, silent body,
a client not reading) and the one "overdue" rule; the access-log line; and the tracer's
"socket" and "h11" events in both directions.
"""

from __future__ import annotations

import enum
import logging
import time
from email.utils import formatdate
from urllib.parse import quote

import h11

from .config import Config
from .http11 import (SERVER_HEADER, new_h11_connection, origin_form, reason_phrase, refuse_request,
                     refusal_for, send_error)
from .trace import describe_event, preview

logger = logging.getLogger("asgi_lab.error")
access_logger = logging.getLogger("asgi_lab.access")

NEED_DATA = h11.NEED_DATA
PAUSED = h11.PAUSED
END_OF_MESSAGE = h11.EndOfMessage()  # immutable, so one serves every response


class ClientDisconnected(OSError):
    """The client has gone: raised by the ASGI server's `send()` (ASGI www spec 2.4,
    "Disconnected Client - send exception": "the server should raise a server-specific
    subclass of OSError") and by the WSGI server's `wsgi.input.read()` or a failed write."""


class Refused:
    """An event of ours, not h11's: the request must be answered with `status` and the
    connection closed (malformed, too large, a form we do not serve). The app never sees it."""

    __slots__ = ("status", "reason")

    def __init__(self, status: int, reason: str) -> None:
        self.status = status
        self.reason = reason

    def __repr__(self) -> str:
        return f"Refused({self.status}, {self.reason!r})"


class Wait(enum.Enum):
    """What the connection waits for, which decides its deadline (see `ConnectionCore.time_left`)."""

    HEAD = "head"    # the next request head: `timeout_keep_alive` idle, `timeout_request_header` once begun
    BODY = "body"    # more of the request body: `timeout_request_header` of silence
    WRITE = "write"  # the client to take the bytes we wrote: `wsgi_timeout_write` without progress
    APP = "app"      # the app: no deadline (an SSE stream may last an hour)


_HEAD, _BODY, _WRITE, _APP = Wait.HEAD, Wait.BODY, Wait.WRITE, Wait.APP


class ResponseState(enum.Enum):
    r"""How far the response to the current request has come (both servers' apps alike).

        NOT_STARTED --start()--> STARTED --respond()--> SENDING --respond(end)--> COMPLETE
             \                      \_______________respond(end)_____________/^
              \________________________refuse() (an error response)__________/

    STARTED: the app gave its head (ASGI `http.response.start`, WSGI `start_response`), but
    it is not on the wire yet: it goes out with the first piece of body, in one write, and
    until then a failing app can still get a clean 500 (and a WSGI app may call
    `start_response` again with `exc_info`: STARTED -> STARTED).
    """

    NOT_STARTED = "not started"
    STARTED = "started"
    SENDING = "sending"
    COMPLETE = "complete"


NOT_STARTED, STARTED, SENDING, COMPLETE = (ResponseState.NOT_STARTED, ResponseState.STARTED,
                                           ResponseState.SENDING, ResponseState.COMPLETE)

ALLOWED = {
    NOT_STARTED: (STARTED, COMPLETE),
    STARTED: (STARTED, SENDING, COMPLETE),
    SENDING: (COMPLETE,),
    COMPLETE: (),
}
"""The transitions `ResponseState` allows; any other raises `IllegalTransition`."""


class IllegalTransition(RuntimeError):
    """A state machine was asked for a transition it does not allow: a bug in the caller
    (an app that sends after completing its response gets its own, clearer error first)."""


def advance(state: enum.Enum, new: enum.Enum, allowed: dict) -> enum.Enum:
    """`new` if `allowed[state]` lists it, else IllegalTransition."""
    if new not in allowed[state]:
        raise IllegalTransition(f"{type(state).__name__}: {state.value} -> {new.value} is not allowed")
    return new


FIRST_REQUEST_WAIT = 0.5
"""At shutdown, how long (seconds) a connection that has not sent its first request yet stays
open for it. Its client connected before the server stopped listening, so its request may be
on its way (a client sends it right after connecting): closing at once would lose a request
already sent, which a reload under load shows (`gunicorn -HUP`, tests/test_workers.py). A
connection that has been answered and waits for its next request is idle: it is closed at
once, and RFC 9112 §9.3.1 lets its client retry on a new connection."""


def tick_interval(config: Config) -> float:
    """How often a server checks the deadlines of its idle connections: a quarter of the
    shortest timeout, from 50 ms to 1 s. A connection is closed one to two ticks late
    (see `ConnectionCore.past_deadline`)."""
    interval = min(config.timeout_keep_alive, config.timeout_request_header) / 4
    return min(max(interval, 0.05), 1.0)


class ResponseHeads:
    """The `date` header and the cache of checked response heads: one per server.

    h11 checks every header of every Response it is given: about 5 us for a small head, a
    tenth of a hello-world request. Most apps answer with a few identical heads ("200 OK", the
    same Content-Type...), and an h11 event is immutable, so a head checked once can be sent
    again and again. Each carries the current second's `date` header (RFC 9110 §6.6.1), so
    the cache is emptied when the date changes (and when it holds 64 heads: varied heads gain
    nothing here). `clock` is wall-clock time (`time.time`), replaceable in tests.
    """

    __slots__ = ("clock", "second", "date", "heads", "heads_date")

    def __init__(self, clock=time.time) -> None:
        self.clock = clock
        self.second = -1
        self.date = (b"date", b"")
        self.heads: dict = {}
        self.heads_date = None

    def default_headers(self) -> list[tuple[bytes, bytes]]:
        """`server` and `date` for a response; the date is formatted once per second."""
        now = int(self.clock())
        if now != self.second:
            self.second = now
            self.date = (b"date", formatdate(now, usegmt=True).encode("ascii"))
        return [SERVER_HEADER, self.date]

    def head(self, key, build, *args) -> h11.Response:
        """`build(*args)`, an h11.Response, made at most once per second for each `key` (the
        app's status and headers). An unhashable key is simply built every time."""
        date = self.default_headers()[1]  # the same tuple object for a whole second
        heads = self.heads
        if date is not self.heads_date or len(heads) >= 64:
            heads.clear()
            self.heads_date = date
        try:
            head = heads.get(key)
        except TypeError:
            return build(*args)
        if head is None:
            head = heads[key] = build(*args)  # a bad status or header raises here, uncached
        return head


def with_close(head: h11.Response) -> h11.Response:
    """`head` with `Connection: close`: "the sender will close this connection after
    completion of the response" (RFC 9112 §9.6), so the client does not send another request
    on it. (h11 then closes its side too.)"""
    headers = head.headers.raw_items()
    if any(name.lower() == b"connection" and b"close" in value.lower() for name, value in headers):
        return head
    return h11.Response(status_code=head.status_code, headers=[*headers, (b"connection", b"close")],
                        reason=head.reason)


def address(sockname) -> tuple[str, int | None] | None:
    """(host, port) from a socket address; (path, None) for a Unix socket's path (ASGI www
    spec: a `server` "for unix sockets, this can be [path, None]"); None for an unknown peer,
    or a Unix-socket client, whose socket has no name ("")."""
    if type(sockname) is tuple:
        if len(sockname) == 2:
            return sockname  # IPv4: already (host, port); shared, not copied, per connection
        if len(sockname) > 2:
            return (str(sockname[0]), int(sockname[1]))  # IPv6: (host, port, flowinfo, scope_id)
    elif type(sockname) is str and sockname:
        return (sockname, None)
    return None


def url(address: tuple[str, int | None], scheme: str = "http") -> str:
    """"http://127.0.0.1:8000", with brackets around an IPv6 host (RFC 3986 §3.2.2); scheme
    "https" for a server with TLS. A Unix socket's address is (path, None), as in the ASGI
    scope: "http+unix://%2Ftmp%2Fapp.sock", the path percent-encoded as the authority (the
    form of the `requests-unixsocket` package and of Docker's clients)."""
    host, port = address
    if port is None:
        return f"{scheme}+unix://{quote(host, safe='')}"
    return f"{scheme}://{host}:{port}" if ":" not in host else f"{scheme}://[{host}]:{port}"


def log_access(client, method: bytes, target: bytes, http_version: bytes, status,
               size: int | None = None, seconds: float | None = None) -> None:
    """The access-log line, the same for both servers (and WebSocket sessions):
    `127.0.0.1:50312 - "GET /path?q=1 HTTP/1.1" 200 OK 152 B 0.4 ms`: the client, the request
    line as the client sent it, the status (an int gets its reason phrase), then the bytes
    written and the time from the request head to the response's end, when known."""
    if access_logger.isEnabledFor(logging.INFO):
        if type(status) is int:
            status = f"{status} {reason_phrase(status).decode('ascii')}".rstrip()
        if size is not None:
            status = f"{status} {size} B {seconds * 1000:.1f} ms"
        access_logger.info('%s:%s - "%s %s HTTP/%s" %s', client[0] if client else "-",
                           client[1] if client else "-", method.decode("latin-1"),
                           target.decode("latin-1"), http_version.decode("latin-1"), status)


class ConnectionCore:
    """The server side of one HTTP/1.1 connection, without its socket."""

    # One per open connection, thousands at once: slots, and the whole state in one place.
    __slots__ = ("config", "tracer", "id", "client", "clock", "heads", "conn", "wait", "since",
                 "head_bytes", "head_data", "body_bytes", "overdue", "keep_alive", "request_line", "state",
                 "head", "status", "started", "sent", "last_request")

    def __init__(self, config: Config, heads: ResponseHeads, tracer=None, conn_id: int = 0,
                 client: tuple[str, int] | None = None, clock=time.monotonic) -> None:
        self.config = config
        self.heads = heads
        self.tracer = tracer
        self.id = conn_id
        self.client = client
        self.clock = clock               # monotonic seconds: the deadlines' time
        self.conn = new_h11_connection(config)
        self.wait = _HEAD                # what we wait for (`Wait`), since `since`
        self.since = clock()
        self.head_bytes = 0              # bytes of the current request head so far,
        # ... and the bytes themselves, until h11 has parsed it (a Transfer-Encoding h11 refuses
        # gets its status from them); None while none came, not even EOF: then `next_event`
        # knows, without asking h11, that there is nothing to parse (and an idle stream holds
        # no list)
        self.head_data: list[bytes] | None = None
        self.body_bytes = 0              # bytes of the current request body so far
        self.overdue = False             # a sweep found the deadline passed (see `past_deadline`)
        self.keep_alive = True           # False: close after this response (shutdown)
        self.last_request = False        # the client's request said it is its last
        # The request being answered: its method, target and version, for the access log and
        # HEAD (not the h11.Request, whose headers would stay alive as long as a stream lasts).
        self.request_line: tuple[bytes, bytes, bytes] | None = None
        self.state = NOT_STARTED         # of its response (`ResponseState`)
        self.head: h11.Response | None = None  # STARTED: the head to send with the first body
        self.status = 0                  # for the access log: the response's status code,
        self.started = 0.0               # when its request head was complete,
        self.sent = 0                    # and how many bytes of it went out

    def first_request_pending(self) -> bool:
        """No request has arrived on this connection yet (h11 has seen no request line): at
        shutdown, not an idle connection but one whose request may be on its way."""
        return self.conn.their_http_version is None

    # -- bytes in, events out ---------------------------------------------------------------

    def receive_data(self, data: bytes) -> None:
        """Bytes from the client; b"" for EOF."""
        if self.tracer is not None and data:
            self.tracer.emit(self.id, "socket", "bytes_in", {"bytes": preview(data), "size": len(data)})
        wait = self.wait
        if wait is _HEAD:
            self.head_bytes += len(data)
            if self.head_data is None:
                self.head_data = [data]
            else:
                self.head_data.append(data)
        elif wait is _BODY:
            self.since = self.clock()  # a silent body's deadline counts from the last bytes
        self.conn.receive_data(data)

    def next_event(self):
        """The next event from the bytes received so far: an h11 event (`Request`, `Data`,
        `EndOfMessage`, `ConnectionClosed`), `NEED_DATA` (or h11's `PAUSED`: the request is
        complete and we are still answering it), or `Refused`. A `Request` has passed
        `refuse_request` and has an origin-form target (`http11.origin_form`)."""
        if self.last_request:
            return NEED_DATA  # it said "Connection: close" (or HTTP/1.0): ignore the rest
        if self.head_data is None and self.wait is _HEAD:
            return NEED_DATA  # not a byte of the next request yet, nor EOF: nothing to parse
        conn = self.conn
        try:
            event = conn.next_event()
        except h11.RemoteProtocolError as exc:
            return Refused(*refusal_for(exc, self.head_data or []))
        if event is NEED_DATA or event is PAUSED:  # "wait for more" sentinels, not messages: untraced
            return event
        event_type = type(event)
        if self.tracer is not None:
            self.tracer.emit(self.id, "h11", event_type.__name__, describe_event(event))
        if event_type is h11.Request:
            refusal = refuse_request(event, self.head_bytes, self.config)
            if refusal is not None:
                self.request_line = (event.method, event.target, event.http_version)
                return Refused(*refusal)
            self.wait = _APP
            self.head_bytes = self.body_bytes = 0
            self.head_data = None
            if self.config.access_log:
                self.started = self.clock()
            event = origin_form(event)
            self.request_line = (event.method, event.target, event.http_version)
        elif event_type is h11.Data:
            self.body_bytes += len(event.data)
            limit = self.config.max_body_bytes
            if limit is not None and self.body_bytes > limit:  # a chunked body grown too big
                return Refused(413, "request body over the limit")
        elif event_type is h11.EndOfMessage and conn.their_state is h11.MUST_CLOSE:
            self.last_request = True  # checked once a request, not at every call
        return event

    # -- what we send: bytes out ------------------------------------------------------------

    def start(self, head: h11.Response) -> None:
        """The app's response head, to be sent with the first piece of body (`respond`)."""
        state = self.state
        if state is not NOT_STARTED and state is not STARTED:  # `advance`, inlined: hot path
            advance(state, STARTED, ALLOWED)
        self.state = STARTED
        self.head = head

    def respond(self, data=b"", end: bool = False) -> bytes:
        """The bytes for the head (if not sent yet), a piece of body, and its end (if
        `end`), in one string for one write. h11 frames the body: Content-Length if the head
        has one, chunked for HTTP/1.1, until the close for HTTP/1.0. A HEAD request's body is
        not sent (RFC 9110 §9.3.2)."""
        state = self.state
        if state is not STARTED and state is not SENDING:  # `advance`, inlined: the hot path;
            advance(state, SENDING, ALLOWED)  # raises, before h11 would (less clearly)
        self.state = COMPLETE if end else SENDING
        send = self.conn.send
        tracer = self.tracer
        pieces = []
        head = self.head
        if head is not None:
            self.head = None
            if not self.keep_alive:  # shutting down: say that we close (RFC 9112 §9.6)
                head = with_close(head)
            if tracer is not None:
                tracer.emit(self.id, "h11", "Response", describe_event(head))
            pieces.append(send(head))
            self.status = head.status_code
        if data and self.request_line[0] != b"HEAD":
            event = h11.Data(data=data)
            if tracer is not None:
                tracer.emit(self.id, "h11", "Data", describe_event(event))
            pieces.append(send(event))
        if end:
            if tracer is not None:
                tracer.emit(self.id, "h11", "EndOfMessage", describe_event(END_OF_MESSAGE))
            pieces.append(send(END_OF_MESSAGE))
        out = b"".join(pieces)
        if tracer is not None and out:
            tracer.emit(self.id, "socket", "bytes_out", {"bytes": preview(out), "size": len(out)})
        if self.config.access_log:
            self.sent += len(out)
            if end:
                self.log_access()
        return out

    def body_pieces(self, data):
        """h11's framing around `data` sent as is (a file region for `socket.sendfile`): the
        pieces to write in order, `data` itself among them (h11's data passthrough)."""
        event = h11.Data(data=data)
        if self.tracer is not None:
            self.tracer.emit(self.id, "h11", "Data", {"data": f"<{len(data)} bytes sent by the kernel>"})
        return self.conn.send_with_data_passthrough(event)

    def switch_protocols(self, headers: list[tuple[bytes, bytes]]) -> bytes:
        """`101 Switching Protocols` (RFC 9110 §15.2.2): the connection is no longer HTTP/1.1."""
        event = h11.InformationalResponse(status_code=101, headers=headers, reason=b"Switching Protocols")
        out = self.conn.send(event)
        self.state = advance(self.state, COMPLETE, ALLOWED)
        self.keep_alive = False
        self.status = 101
        self.sent = len(out)
        if self.tracer is not None:
            self.tracer.emit(self.id, "h11", "InformationalResponse", describe_event(event))
            self.tracer.emit(self.id, "socket", "bytes_out", {"bytes": preview(out), "size": len(out)})
        if self.config.access_log:
            self.log_access()
        return out

    def go_ahead(self) -> bytes:
        """`100 Continue` if the client waits for it before sending its body (RFC 9110
        §10.1.1), else b"". The shells call this when the app first asks for the body, not
        before: an app that answers without reading it spares the client the upload. (h11
        stops waiting once any response head has been sent.)"""
        conn = self.conn
        if not conn.they_are_waiting_for_100_continue:
            return b""
        event = h11.InformationalResponse(status_code=100, headers=[], reason=b"Continue")
        if self.tracer is not None:
            self.tracer.emit(self.id, "h11", "InformationalResponse", describe_event(event))
        out = conn.send(event)
        if self.tracer is not None:
            self.tracer.emit(self.id, "socket", "bytes_out", {"bytes": preview(out), "size": len(out)})
        return out

    def refuse(self, status: int, reason: str = "") -> bytes:
        """The bytes of an error response the server makes itself (`http11.error_response`),
        or b"" when one can no longer be sent (the head is already on the wire): either way
        the caller closes the connection next."""
        if reason:
            logger.info("Connection %s from %s: %s", self.id, self.client, reason)
        self.keep_alive = False
        if self.state is SENDING or self.state is COMPLETE:
            return b""
        out = send_error(self.conn, status, self.heads.default_headers(), self.tracer, self.id)
        self.state = advance(self.state, COMPLETE, ALLOWED)
        self.head = None
        if out:
            self.status = status
            self.sent = len(out)
            if self.tracer is not None:
                self.tracer.emit(self.id, "socket", "bytes_out", {"bytes": preview(out), "size": len(out)})
            if self.config.access_log:
                self.log_access()
        return out

    def log_access(self) -> None:
        """The access-log line for the response just completed (`log_access`), including
        those the server makes itself (`refuse`). A request refused before its head could be
        parsed shows as "- -"."""
        method, target, version = self.request_line or (b"-", b"-", b"1.1")
        seconds = self.clock() - self.started if self.started else 0.0
        log_access(self.client, method, target, version, self.status, self.sent, seconds)

    # -- after a response: keep alive or close ----------------------------------------------

    def cycle_done(self) -> bool:
        """The response has been sent. True: keep the connection and wait for the next
        request (h11 is ready for it, perhaps already holding it: `request_buffered`).
        False: close it, because h11 says so (`Connection: close`, HTTP/1.0, a body framed
        by the close), the server is shutting down, or the app answered without reading the
        whole request body and the rest is still on its way (reading and discarding an
        unknown amount is not worth it; the client sees the close)."""
        conn = self.conn
        if conn.our_state is h11.MUST_CLOSE or not self.keep_alive:
            return False
        if conn.their_state is not h11.DONE and not self.discard_body():
            return False
        conn.start_next_cycle()
        self.request_line = None
        self.state = NOT_STARTED
        self.sent = 0
        self.started = 0.0
        self.wait = _HEAD
        self.since = self.clock()
        self.overdue = False
        buffered, closed = conn.trailing_data  # a pipelined request may have begun (or EOF)
        self.head_bytes = len(buffered)
        self.head_data = [buffered] if buffered or closed else None
        return True

    def discard_body(self) -> bool:
        """Skip the unread part of the request body that h11 already holds; True if that was
        all of it. Never waits for more."""
        while self.conn.their_state is h11.SEND_BODY:
            event = self.next_event()
            if type(event) is not h11.Data:
                return type(event) is h11.EndOfMessage
        return True

    @property
    def request_buffered(self) -> bool:
        """Are bytes of a next (pipelined) request already read, waiting in h11's buffer?"""
        return bool(self.conn.trailing_data[0])

    # -- deadlines ----------------------------------------------------------------------------

    def waiting_for(self, wait: Wait) -> None:
        """The shell starts (or, for `Wait.APP`, stops) waiting on the client: the deadline
        for `wait` counts from now."""
        self.wait = wait
        if wait is not _APP:  # the app's wait has no deadline: no need to read the clock
            self.since = self.clock()
        self.overdue = False

    def progress(self) -> None:
        """The client took some of our bytes (`Wait.WRITE`): its deadline starts again."""
        self.since = self.clock()

    def time_left(self, now: float) -> float:
        """Seconds until the current wait is over its deadline (negative: past it).

        - the next request head: `timeout_keep_alive` while no byte of it has come (an idle
          keep-alive connection, or a new one that sends nothing), `timeout_request_header`
          from the same start once it has begun (slow headers, "slowloris");
        - the request body: `timeout_request_header` from the last bytes that came;
        - the client to take our bytes: `wsgi_timeout_write` from the last bytes it took;
        - the app: no deadline.
        """
        wait = self.wait
        config = self.config
        if wait is _HEAD:
            limit = config.timeout_keep_alive if self.head_bytes == 0 else config.timeout_request_header
        elif wait is _BODY:
            limit = config.timeout_request_header
        elif wait is _WRITE:
            limit = config.wsgi_timeout_write
        else:
            return float("inf")
        return self.since + limit - now

    def past_deadline(self, now: float) -> bool:
        """For a periodic sweep (the servers' tick): is the deadline missed? The one
        "overdue" rule: True only at the second sweep that finds it past.

        A server checks its sockets and its deadlines in turns. If the whole server stalled
        (a paused VM, swapping) past a deadline while a keep-alive client sent its next
        request, closing at the first sweep would close a socket with a request unread in
        it: the kernel resets such a connection, and the client loses a request it had
        already sent. Between two sweeps the server reads every ready socket, so the
        request is read first, which ends this wait."""
        if self.time_left(now) > 0:
            return False
        if not self.overdue:
            self.overdue = True
            return False
        return True

    def expired(self) -> bytes:
        """The deadline was missed: trace why, and the bytes to send before closing (408
        for a request still waiting for its body, RFC 9110 §15.5.9; nothing otherwise)."""
        wait = self.wait
        if wait is _HEAD:
            why = "idle" if self.head_bytes == 0 else "request head too slow"
        elif wait is _BODY:
            why = "request body too slow"
        else:
            why = "client not reading"
        if self.tracer is not None:
            self.tracer.emit(self.id, "server", "timeout", {"reason": why})
        return self.refuse(408, why) if wait is _BODY else b""
