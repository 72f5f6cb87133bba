"""WebSocket for the ASGI server: an asyncio transport around wsproto, one session per connection.

A WebSocket starts life as an HTTP/1.1 request (RFC 6455 §4). `HTTPProtocol` spots the
`Upgrade: websocket` request and calls `upgrade_to_websocket()`, which swaps the
connection's protocol for a `WebSocketProtocol`. From then on the same TCP connection
carries WebSocket frames, and this module owns it.

wsproto does all of the WebSocket work, sans-IO: it checks the opening handshake, builds the
`101 Switching Protocols` (or the rejection), parses and unmasks frames, validates UTF-8 and
close codes, and frames what we send. `wsproto.WSConnection` is two objects in one: an
`H11Handshake` for the opening handshake and, once we accept, a `wsproto.Connection` for
frames. We use the first for the handshake and then talk to the `Connection` directly.

What is left for us is the ASGI side (ASGI www spec, "WebSocket"), read top to bottom:

    websocket.connect  ->  app sends websocket.accept | websocket.close (403)
                                    | websocket.http.response.start/body (denial extension)
    websocket.receive  <->  websocket.send          (as many as they like, both ways)
    websocket.close (app) or a Close frame (client)  ->  websocket.disconnect (with its code)

and the things wsproto deliberately leaves to the server: answering pings, sending the Close
frame for a protocol violation it detected, the maximum message size, keep-alive pings,
back-pressure in both directions, and closing the TCP connection.

Close codes the app sees in `websocket.disconnect` (RFC 6455 §7.1.5 and §7.4):
the peer's code when a Close frame came, 1005 when the Close frame had no code, 1006 when
the TCP connection ended without one, our own code (1002, 1007, 1009) when we failed the
connection because the peer broke the protocol, and 1001 when the server shuts down.
"""

from __future__ import annotations

import asyncio
import enum
import io
import logging
from collections import deque

from wsproto import ConnectionType, WSConnection
from wsproto.connection import ConnectionState
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    Message,
    Ping,
    Pong,
    RejectConnection,
    RejectData,
    TextMessage,
)
from wsproto.utilities import RemoteProtocolError

from ..core import ClientDisconnected, advance, log_access
from ..http11 import error_response
from ..trace import describe_event, preview
from .scope import build_websocket_scope

logger = logging.getLogger("asgi_lab.error")



class SessionState(enum.Enum):
    r"""The session, as the ASGI app sees it (ASGI www spec, "WebSocket"):

        CONNECTING --accept--> ACCEPTED --Close sent/received--> CLOSING --TCP gone--> CLOSED
            |  \--websocket.http.response.start--> RESPONDING --last body--> CLOSING
            \--websocket.close (403) / bad handshake--> CLOSING
    (and from any state straight to CLOSED when the TCP connection is lost)."""

    CONNECTING = "connecting"  # websocket.connect delivered; waiting for the app's answer
    ACCEPTED = "accepted"      # 101 sent: messages flow both ways
    RESPONDING = "responding"  # denial extension: an HTTP response instead of the WebSocket
    CLOSING = "closing"        # we sent a Close frame (or a rejection) and wait for the end
    CLOSED = "closed"          # the TCP connection is gone


CONNECTING, ACCEPTED, RESPONDING, CLOSING, CLOSED = SessionState

ALLOWED = {
    CONNECTING: (ACCEPTED, RESPONDING, CLOSING, CLOSED),
    ACCEPTED: (CLOSING, CLOSED),
    RESPONDING: (CLOSING, CLOSED),
    CLOSING: (CLOSING, CLOSED),
    CLOSED: (CLOSED,),
}
"""The transitions `SessionState` allows; any other raises `core.IllegalTransition`."""

MAX_QUEUED_MESSAGES = 64
"""Received messages waiting for the app's receive(). Above this (or above
`config.read_high_water` bytes of payload) we stop reading from the socket."""

FRAME_SIZE = 256 * 1024
"""Messages larger than this are sent as several frames of this size (see `send_fragmented`)."""

KEEPALIVE_PAYLOAD = b"asgi_lab keep-alive"


def upgrade_to_websocket(http_protocol, request) -> "WebSocketProtocol | None":
    """Take over an HTTP/1.1 connection whose request asked for a WebSocket (RFC 6455 §4.2).

    Called by `HTTPProtocol.handle_events()`. From here on the transport delivers its bytes
    to a `WebSocketProtocol`, and the server's connection set holds that instead.
    """
    if request.http_version == b"1.0":  # RFC 6455 §4.1: "HTTP/1.1 or higher"
        http_protocol.reject(400, "WebSocket upgrade needs HTTP/1.1")
        return None
    server = http_protocol.server
    protocol = WebSocketProtocol(http_protocol)
    server.connections.discard(http_protocol)
    server.connections.add(protocol)
    http_protocol.transport.set_protocol(protocol)
    trailing_data, closed = http_protocol.conn.trailing_data  # bytes after the request head
    protocol.start(request, trailing_data)
    if closed:  # the client half-closed right after its request: nothing can follow
        protocol.transport.close()
    return protocol


class WebSocketProtocol(asyncio.Protocol):
    """One WebSocket connection: bytes in from the socket, wsproto events, ASGI messages out.

    It is both the transport shell (the `asyncio.Protocol` callbacks) and the session the app
    talks to (`receive` and `send`): a WebSocket connection carries exactly one session.
    """

    def __init__(self, http_protocol) -> None:
        server = http_protocol.server
        self.server = server
        self.app = server.app
        self.config = server.config
        self.tracer = server.tracer
        self.loop = server.loop
        self.transport: asyncio.Transport = http_protocol.transport
        self.id = http_protocol.id
        self.client = http_protocol.client
        self.server_addr = http_protocol.server_addr
        self.scope: dict = {}
        self.request = None  # the h11.Request that asked for the upgrade (for the access log)
        self.started = http_protocol.core.started  # when it came (the core's, for the access log)
        self.state = CONNECTING  # see SessionState: changed only through `advance`
        # wsproto: the handshake object until the app accepts, then the frame `Connection`.
        self.handshake = WSConnection(ConnectionType.SERVER)
        self.conn = None
        self.early_data = bytearray()  # bytes that arrived before the app accepted
        # Received messages the app has not taken yet, as (message, payload size) pairs.
        self.queue: deque[tuple[dict, int]] = deque()
        self.queued_bytes = 0
        self.waiter: asyncio.Future | None = None  # a receive() waiting for a message
        self.disconnect: dict | None = None  # the websocket.disconnect message, once known
        # A message arriving in several frames (or several reads) is assembled here: a
        # StringIO or BytesIO, compact however small the pieces (a list of a million 1-byte
        # pieces would cost 50 times their size).
        self.partial: io.StringIO | io.BytesIO | None = None
        self.message_size = 0
        self.max_message_size = self.config.ws_max_message_bytes
        # Back-pressure, both ways (same names as HTTPProtocol).
        self.reading_paused = http_protocol.reading_paused
        self.writing_paused = http_protocol.writing_paused
        self.drain_waiter: asyncio.Future | None = None
        self.unanswered_ping = None  # the latest Ping that came while writing was paused
        # Timers: the close handshake gets `ws_close_timeout`; keep-alive pings are driven by
        # the server's housekeeping tick (`check_timeouts`).
        self.close_timer: asyncio.TimerHandle | None = None
        self.ping_sent_at: float | None = None
        self.last_pong_at = 0.0
        self.transport.set_write_buffer_limits(high=self.config.ws_write_high_water)

    # -- the opening handshake ----------------------------------------------------------------

    def start(self, request, trailing_data: bytes) -> None:
        """Hand the request to wsproto's handshake, then start the app with websocket.connect."""
        self.resume_reading()
        self.request = request
        try:
            self.handshake.initiate_upgrade_connection(request.headers, request.target)
            for event in self.handshake.events():  # the validated wsproto `Request`
                if self.tracer is not None:
                    self.tracer.emit(self.id, "wsproto", type(event).__name__, describe_event(event))
        except (RemoteProtocolError, UnicodeError) as exc:  # no Sec-WebSocket-Key, wrong version,
            # ... or a Host header that is not a valid name (wsproto's IDNA decoding raises that)
            logger.info("Connection %s from %s: bad WebSocket handshake: %s", self.id, self.client, exc)
            hint = getattr(exc, "event_hint", None)
            self.reject(hint.status_code if hint else 400, list(hint.headers) if hint else [])
            self.state = advance(self.state, CLOSING, ALLOWED)
            self.session_ended(1006, "")
            return
        self.early_data += trailing_data
        self.scope = build_websocket_scope(request, self.client, self.server_addr,
                                           self.config.root_path, self.server.ws_scheme,
                                           self.server.state)
        self.queue.append(({"type": "websocket.connect"}, 0))
        self.server.run_app(self.run_asgi())

    def reject(self, status: int, extra_headers=()) -> None:
        """Answer the handshake with a plain HTTP error (400, 403, 503...) and close. Its
        access line is that of the server's other error responses (`ConnectionCore.refuse`):
        status, bytes and time."""
        response, body = error_response(status, self.server.heads.default_headers())
        size = self.send_event(self.handshake, RejectConnection(
            status_code=status, headers=list(response.headers) + list(extra_headers), has_body=True))
        size += self.send_event(self.handshake, RejectData(data=body))
        self.transport.close()
        if self.config.access_log:
            request = self.request
            log_access(self.client, request.method, request.target, request.http_version, status, size,
                       self.loop.time() - self.started)

    # -- asyncio.Protocol callbacks -------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        if self.tracer is not None:
            self.tracer.emit(self.id, "socket", "bytes_in", {"bytes": preview(data), "size": len(data)})
        conn = self.conn
        if conn is None:  # not accepted yet: keep the bytes for the frame parser
            if self.state is CONNECTING:
                self.early_data += data
                if len(self.early_data) > self.config.read_high_water:
                    self.pause_reading()
            return
        if conn.state is ConnectionState.CLOSED:
            return  # the closing handshake is over; anything more is noise
        conn.receive_data(data)
        self.handle_events()

    def eof_received(self) -> bool:
        return False  # the peer will send nothing more: let asyncio close the transport

    def connection_lost(self, exc: Exception | None) -> None:
        self.server.connections.discard(self)
        if self.tracer is not None:
            self.tracer.emit(self.id, "socket", "connection_lost", {"error": repr(exc) if exc else None})
        self.state = advance(self.state, CLOSED, ALLOWED)
        if self.close_timer is not None:
            self.close_timer.cancel()
            self.close_timer = None
        self.session_ended(1006, "")  # no effect if a Close frame already ended the session
        self.resume_writing()  # wake a send() waiting on the buffer, so it can raise

    def pause_writing(self) -> None:
        """The transport's write buffer is above `ws_write_high_water`: make send() wait."""
        self.writing_paused = True

    def resume_writing(self) -> None:
        self.writing_paused = False
        ping, self.unanswered_ping = self.unanswered_ping, None
        if ping is not None and self.conn.state is ConnectionState.OPEN \
                and not self.transport.is_closing():
            self.send_event(self.conn, ping.response())
        waiter = self.drain_waiter
        if waiter is not None:
            self.drain_waiter = None
            if not waiter.done():
                waiter.set_result(None)

    # -- wsproto events --------------------------------------------------------------------------

    def handle_events(self) -> None:
        """Act on every event wsproto could parse from the bytes received so far."""
        for event in self.conn.events():
            if self.tracer is not None:
                self.tracer.emit(self.id, "wsproto", type(event).__name__, describe_event(event))
            event_type = type(event)
            if event_type is TextMessage or event_type is BytesMessage:
                self.message_received(event)
            elif event_type is Ping:
                if self.writing_paused:
                    # The peer does not read what we send. RFC 6455 §5.5.3 lets us answer only
                    # the most recent ping: keep it for when the buffer drains, so that a ping
                    # flood cannot grow our write buffer without bound.
                    self.unanswered_ping = event
                elif self.conn.state is ConnectionState.OPEN:
                    self.send_event(self.conn, event.response())  # RFC 6455 §5.5.3
            elif event_type is Pong:
                if event.payload == KEEPALIVE_PAYLOAD:
                    self.ping_sent_at = None
                    self.last_pong_at = self.loop.time()
            elif event_type is CloseConnection:
                self.close_received(event)

    def message_received(self, event) -> None:
        """A data frame, or part of one: assemble whole messages, enforce the size limit."""
        if self.state is not ACCEPTED:
            return  # we are closing: RFC 6455 §1.4 lets us discard data after our Close
        data = event.data
        # The limit counts bytes on the wire; text arrives decoded, ASCII is one byte a char.
        size = len(data) if type(data) is bytes or data.isascii() else len(data.encode("utf-8"))
        self.message_size += size
        if self.message_size > self.max_message_size:
            self.fail(1009, f"message larger than {self.max_message_size} bytes")
            return
        if self.partial is not None or not event.message_finished:
            if self.partial is None:
                self.partial = io.StringIO() if type(data) is str else io.BytesIO()
            self.partial.write(data)
            if not event.message_finished:
                return
            data = self.partial.getvalue()  # the last piece: deliver the message whole
            self.partial = None
        size = self.message_size
        self.message_size = 0
        if type(data) is str:
            message = {"type": "websocket.receive", "bytes": None, "text": data}
        else:
            message = {"type": "websocket.receive", "bytes": data, "text": None}
        self.queue.append((message, size))
        self.queued_bytes += size
        if self.waiter is not None:
            self.wake()
        elif len(self.queue) > MAX_QUEUED_MESSAGES or self.queued_bytes > self.config.read_high_water:
            self.pause_reading()  # back-pressure: the app is not receiving

    def close_received(self, event: CloseConnection) -> None:
        """wsproto reports two different things as `CloseConnection`; its state tells which."""
        code, reason = int(event.code), event.reason or ""
        state = self.conn.state
        if state is ConnectionState.REMOTE_CLOSING:
            # The peer started the closing handshake: answer with the same code, then close
            # the TCP connection (RFC 6455 §7.1.1: the server closes it first).
            self.send_event(self.conn, event.response())
            self.close_transport()
            self.session_ended(code, reason)
        elif state is ConnectionState.CLOSED:
            # The peer answered the Close we sent: the closing handshake is complete.
            self.close_transport()
            self.session_ended(code, reason)
        else:
            # wsproto found a protocol violation (bad frame, invalid UTF-8...) and tells us
            # which code to fail the connection with. It does not send the Close: we do.
            self.fail(code, reason)

    def fail(self, code: int, reason: str) -> None:
        """Fail the WebSocket connection (RFC 6455 §7.1.7): send Close with `code`, drop TCP."""
        logger.info("Connection %s from %s: closing with %d: %s", self.id, self.client, code, reason)
        if self.conn.state is ConnectionState.OPEN:
            self.send_event(self.conn, CloseConnection(code=code, reason=reason))
        self.close_transport()
        self.session_ended(code, reason)

    # -- the session's end ---------------------------------------------------------------------

    def session_ended(self, code: int, reason: str) -> None:
        """Decide the websocket.disconnect the app gets (once) and wake a waiting receive()."""
        if self.disconnect is None:
            self.disconnect = {"type": "websocket.disconnect", "code": code, "reason": reason}
            if self.state is not CLOSED:
                self.state = advance(self.state, CLOSING, ALLOWED)
            self.partial = None
            self.resume_reading()
            self.wake()

    def close_transport(self) -> None:
        """Close the TCP connection (after the write buffer drains); abort if it never does."""
        self.transport.close()
        self.start_close_timer()

    def start_close_timer(self) -> None:
        if self.close_timer is None and self.state is not CLOSED:
            self.close_timer = self.loop.call_later(self.config.ws_close_timeout, self.transport.abort)

    def send_close(self, code: int, reason: str) -> None:
        """Start the closing handshake (RFC 6455 §7.1.2): Close now, TCP close after the reply."""
        if self.conn.state is ConnectionState.OPEN:
            self.send_event(self.conn, CloseConnection(code=code, reason=reason))
        self.state = advance(self.state, CLOSING, ALLOWED)
        self.resume_reading()  # the peer's answering Close must get through
        self.start_close_timer()

    # -- the server's housekeeping ---------------------------------------------------------------

    def check_timeouts(self, now: float) -> None:
        """Called by the server's tick. A WebSocket has no idle timeout; when
        `ws_ping_interval` is set, we ping and drop a peer whose pong does not come back."""
        interval = self.config.ws_ping_interval
        if interval is None or self.state is not ACCEPTED:
            return
        if self.ping_sent_at is None:
            if now - self.last_pong_at >= interval:
                self.ping_sent_at = now
                self.send_event(self.conn, Ping(payload=KEEPALIVE_PAYLOAD))
        elif now - self.ping_sent_at > self.config.ws_ping_timeout and not self.reading_paused:
            # (while we do not read, a missing pong is our doing, not the peer's)
            if self.tracer is not None:
                self.tracer.emit(self.id, "server", "timeout", {"reason": "no pong"})
            logger.info("Connection %s from %s: no pong within %s s, dropping it",
                        self.id, self.client, self.config.ws_ping_timeout)
            self.send_event(self.conn, CloseConnection(code=1011, reason="keep-alive ping timeout"))
            self.session_ended(1006, "")  # the peer sent no Close: for the app, it just vanished
            self.transport.abort()

    def shutdown(self) -> None:
        """Graceful shutdown: Close 1001 (going away) and websocket.disconnect 1001 to the app;
        the TCP connection closes when the peer answers, or after `ws_close_timeout`."""
        if self.state is CONNECTING:
            self.reject(503)
            self.session_ended(1001, "server shutting down")
            self.start_close_timer()
        elif self.state is ACCEPTED:
            self.send_close(1001, "server shutting down")
            self.session_ended(1001, "server shutting down")
        elif self.state is RESPONDING or self.state is CLOSING:
            self.start_close_timer()

    # -- the app -------------------------------------------------------------------------------

    async def run_asgi(self) -> None:
        """Run the app for this session and clean up after it, however it ends."""
        try:
            await self.app(self.scope, self.receive, self.send)
        except BaseException as exc:
            if self.disconnect is None or not isinstance(exc, ClientDisconnected):
                logger.error("Exception in ASGI application", exc_info=exc)
            self.app_finished(1011, 500)
            if not isinstance(exc, Exception):
                raise  # KeyboardInterrupt, CancelledError...: not ours to swallow
        else:
            if self.state is CONNECTING:
                logger.error("ASGI app returned without accepting or rejecting the WebSocket")
            elif self.state is RESPONDING:
                logger.error("ASGI app returned without completing its denial response")
            self.app_finished(1000, 500)

    def app_finished(self, close_code: int, status: int) -> None:
        """The app is done. Whatever it left open, end it: a Close frame if the WebSocket is
        open, an HTTP error if it never answered the handshake."""
        if self.state is ACCEPTED:
            self.send_close(close_code, "")
            self.session_ended(close_code, "")
        elif self.state is CONNECTING:
            self.reject(status)
            self.state = advance(self.state, CLOSING, ALLOWED)
            self.session_ended(1006, "")
        elif self.state is RESPONDING:
            self.close_transport()
            self.session_ended(1006, "")

    async def receive(self) -> dict:
        """ASGI www spec: "Connect", "Receive" and "Disconnect" receive events."""
        queue = self.queue
        while not queue:
            if self.disconnect is not None:
                if self.tracer is not None:
                    self.tracer.emit(self.id, "asgi", "receive", self.disconnect)
                return self.disconnect
            self.waiter = self.loop.create_future()
            await self.waiter
        message, size = queue.popleft()
        if size:
            self.queued_bytes -= size
            if self.reading_paused and self.queued_bytes <= self.config.read_high_water // 2 \
                    and len(queue) <= MAX_QUEUED_MESSAGES // 2:
                self.resume_reading()
        if self.tracer is not None:
            self.tracer.emit(self.id, "asgi", "receive", message)
        return message

    def wake(self) -> None:
        waiter = self.waiter
        if waiter is not None:
            self.waiter = None
            if not waiter.done():
                waiter.set_result(None)

    async def send(self, message: dict) -> None:
        """ASGI www spec: "Accept", "Send" and "Close" send events, and the
        `websocket.http.response` extension's "Response Start" and "Response Body"."""
        if self.tracer is not None:
            self.tracer.emit(self.id, "asgi", "send", message)
        message_type = message["type"]
        if message_type == "websocket.send" and self.state is ACCEPTED:
            if self.writing_paused:
                await self.drain()  # back-pressure: the client is not reading fast enough
                if self.state is not ACCEPTED:
                    raise ClientDisconnected(f"client {self.client} disconnected")
            if self.transport.is_closing():
                # The socket already failed; connection_lost runs only when the loop gets
                # control, and an app that never waits would keep writing into a dead transport.
                self.session_ended(1006, "")
                raise ClientDisconnected(f"client {self.client} disconnected")
            data = message.get("bytes")
            if data is None:
                data = message.get("text")
                if data is None:
                    raise TypeError("websocket.send needs 'bytes' or 'text' that is not None")
            if len(data) <= FRAME_SIZE:
                self.send_event(self.conn, Message(data=data))
            else:
                self.send_fragmented(data)
        elif self.state is CONNECTING:
            self.send_handshake_answer(message)
        elif self.state is RESPONDING:
            self.send_response_body(message)
        elif message_type == "websocket.close":
            code = message.get("code") or 1000
            if not (1000 <= code <= 1003 or 1007 <= code <= 1014 or 3000 <= code <= 4999):
                raise ValueError(f"{code} is not a close code an endpoint may send (RFC 6455 §7.4)")
            if self.state is ACCEPTED:
                self.send_close(code, message.get("reason") or "")
            # else: already closing or closed; a second close is harmless
        elif self.state is CLOSING or self.state is CLOSED:
            raise ClientDisconnected(f"client {self.client} disconnected")
        else:
            raise RuntimeError(f"Expected 'websocket.send' or 'websocket.close', but got {message_type!r}")

    def send_fragmented(self, data) -> None:
        """A large message goes out as several frames (RFC 6455 §5.4, fragmentation).

        wsproto builds a frame with a few copies of its payload. Copying 256 KiB pieces, which
        stay in memory the allocator already has, is much faster than copying one fresh 1 MiB
        buffer again and again; and the kernel can start sending the first frame while we
        build the next. (Smaller pieces cost the receiving client more: with 64 KiB frames a
        1 MiB round trip was 3% slower than uvicorn's, with 256 KiB 16% faster.) All frames
        are written before send() returns, so no other message can slip in between them.
        """
        if type(data) is not str:
            data = memoryview(data)  # slices of a memoryview do not copy
        conn, size = self.conn, len(data)
        for start in range(0, size, FRAME_SIZE):
            end = start + FRAME_SIZE
            self.send_event(conn, Message(data=data[start:end], message_finished=end >= size))

    def send_handshake_answer(self, message: dict) -> None:
        """The app's answer to websocket.connect: accept, close (403) or an HTTP response."""
        message_type = message["type"]
        if message_type == "websocket.accept":
            headers = self.server.heads.default_headers()
            for name, value in message.get("headers") or ():
                if name.lower() == b"sec-websocket-protocol":
                    raise ValueError("set the subprotocol with 'subprotocol', not a header")
                headers.append((name, value))
            self.send_event(self.handshake, AcceptConnection(
                subprotocol=message.get("subprotocol"), extra_headers=headers))
            self.conn = self.handshake.connection
            self.handshake = None  # its work is done: free its h11 state (idle sockets add up)
            self.state = advance(self.state, ACCEPTED, ALLOWED)
            self.last_pong_at = self.loop.time()
            self.log_access("[accepted]")
            if self.early_data:  # frames the client sent before our 101 arrived
                data, self.early_data = bytes(self.early_data), bytearray()
                self.resume_reading()
                self.conn.receive_data(data)
                self.handle_events()
        elif message_type == "websocket.close":
            self.reject(403)
            self.state = advance(self.state, CLOSING, ALLOWED)
            self.session_ended(1006, "")
        elif message_type == "websocket.http.response.start":
            status = message["status"]
            headers = self.server.heads.default_headers()
            headers.extend(message.get("headers") or ())
            self.send_event(self.handshake, RejectConnection(
                status_code=status, headers=headers, has_body=True))
            self.state = advance(self.state, RESPONDING, ALLOWED)
            self.log_access(str(status))
        else:
            raise RuntimeError(f"Expected 'websocket.accept', 'websocket.close' or "
                               f"'websocket.http.response.start', but got {message_type!r}")

    def send_response_body(self, message: dict) -> None:
        """Denial extension: the body of the HTTP response that replaces the WebSocket."""
        if message["type"] != "websocket.http.response.body":
            raise RuntimeError(f"Expected 'websocket.http.response.body', but got {message['type']!r}")
        more_body = message.get("more_body", False)
        self.send_event(self.handshake, RejectData(data=message.get("body", b""),
                                                  body_finished=not more_body))
        if not more_body:
            self.state = advance(self.state, CLOSING, ALLOWED)
            self.close_transport()
            self.session_ended(1006, "")

    # -- small helpers ---------------------------------------------------------------------------

    def send_event(self, machine, event) -> int:
        """Hand `event` to wsproto (`machine`: the handshake, or the frame connection once
        accepted), trace it as an outgoing wsproto event, and write the bytes it makes;
        returns how many."""
        if self.tracer is not None:
            self.tracer.emit(self.id, "wsproto", type(event).__name__, describe_event(event))
        data = machine.send(event)
        self.write(data)
        return len(data)

    def write(self, data: bytes) -> None:
        if self.tracer is not None:
            self.tracer.emit(self.id, "socket", "bytes_out", {"bytes": preview(data), "size": len(data)})
        self.transport.write(data)

    async def drain(self) -> None:
        """Wait until the socket's write buffer has room again (or the client is gone)."""
        while self.writing_paused and self.state is not CLOSED:
            if self.drain_waiter is None:
                self.drain_waiter = self.loop.create_future()
            await self.drain_waiter

    def pause_reading(self) -> None:
        if not self.reading_paused:
            self.reading_paused = True
            self.transport.pause_reading()

    def resume_reading(self) -> None:
        if self.reading_paused:
            self.reading_paused = False
            if not self.transport.is_closing():
                self.transport.resume_reading()

    def log_access(self, outcome: str) -> None:
        if self.config.access_log:
            request = self.request
            log_access(self.client, request.method, request.target, request.http_version, outcome)
