"""A WebSocket client that shows its work: wsproto over an asyncio transport.

    client = await WebSocketClient.open("ws://127.0.0.1:8000/ws/lobby?name=ada")
    client.send_text("hello")
    message = await client.receive()           # the next text message (a str)
    await client.close(1000)

The same sans-IO-plus-shell shape as our server: `wsproto.WSConnection` does the handshake
and the framing, this class only moves bytes between it and the socket. Because every byte
passes through here, the client can keep a record of its connection:

- `frames`: every `WireFrame` sent and received (FIN, opcode, mask, length, payload),
  decoded from the bytes on the wire by wsproto's frame parser (see `frames.py`);
- `events`: every wsproto event, both the ones we sent and the ones wsproto gave us,
  including the handshake, pings and pongs and the closing handshake.

Recording is on by default (`record=True`); the load benchmark turns it off.

A client that asked for a WebSocket but got an ordinary HTTP response (a 403, or a WSGI
server answering the upgrade as a plain GET) raises `HandshakeRejected` with the status,
headers and body the server sent.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any, Callable
from urllib.parse import urlsplit

import h11
from wsproto import ConnectionType, WSConnection
from wsproto.connection import ConnectionState
from wsproto.events import (AcceptConnection, BytesMessage, CloseConnection, Message, Ping, Pong,
                            RejectConnection, RejectData, Request, TextMessage)
from wsproto.utilities import LocalProtocolError

from ..trace import describe_event
from .frames import FrameTap, WireFrame

#: RFC 6455 §7.1.5: the close code a client reports when the TCP connection ended without a
#: Close frame (it is never sent on the wire).
CLOSE_ABNORMAL = 1006


class HandshakeRejected(ConnectionError):
    """The server answered the opening handshake with something other than 101."""

    def __init__(self, status_code: int, headers: list[tuple[bytes, bytes]], body: bytes,
                 request_bytes: bytes = b"", response_bytes: bytes = b"") -> None:
        self.status_code = status_code
        self.headers = headers
        self.body = body
        self.request_bytes = request_bytes    # the upgrade request, as sent
        self.response_bytes = response_bytes  # the answer, as received
        super().__init__(f"WebSocket handshake rejected: HTTP {status_code}")


@dataclass(frozen=True, slots=True)
class ClientEvent:
    """One wsproto event at the client: one we sent, or one wsproto gave us."""

    t: float
    direction: str        # "sent" or "received"
    name: str             # the wsproto event's class name: TextMessage, Ping, CloseConnection...
    fields: dict[str, Any] = field(default_factory=dict)


class WebSocketClient(asyncio.Protocol):
    """One WebSocket connection, client side (RFC 6455), as an `asyncio.Protocol`."""

    def __init__(self, url: str, *, record: bool = True,
                 on_event: Callable[["WebSocketClient", ClientEvent | WireFrame], None] | None = None
                 ) -> None:
        parts = urlsplit(url)
        if parts.scheme != "ws":
            raise ValueError(f"only ws:// URLs are supported, not {url!r}")
        self.url = url
        self.host = parts.hostname or "127.0.0.1"
        self.port = parts.port or 80
        self.target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        self.record = record
        self.on_event = on_event
        self.ws = WSConnection(ConnectionType.CLIENT)
        self.transport: asyncio.Transport | None = None
        self.local_address: tuple[str, int] | None = None
        # What arrived: complete text/bytes messages, in order.
        self.inbox: asyncio.Queue = asyncio.Queue()
        self.frames: list[WireFrame] = []
        self.events: list[ClientEvent] = []
        self.close_code: int | None = None   # the peer's code once closed (1006: no Close frame)
        self.close_reason: str = ""
        self._opened: asyncio.Future | None = None   # the handshake's outcome
        self._closed: asyncio.Future | None = None   # set when the TCP connection has ended
        self._reject: RejectConnection | None = None
        self._reject_body = bytearray()
        self._partial: list = []
        self._pings: list[tuple[bytes, asyncio.Future]] = []  # pings still waiting for their pong
        # Wire taps: what we write is masked client frames after the request head; what we
        # read is the 101 response head and then server frames (see data_received).
        self._tap_out = FrameTap("sent", frames_from_client=True)
        self._tap_in = FrameTap("received", frames_from_client=False)
        self._head_in: bytearray | None = bytearray()  # what arrives until the handshake ends
        self.accepted = False       # the server answered 101 Switching Protocols
        self.request_bytes = b""    # the handshake, byte for byte: our upgrade request...
        self.response_bytes = b""   # ...and the server's answer (its head, for a 101)

    # -- opening -------------------------------------------------------------------------

    @classmethod
    async def open(cls, url: str, timeout: float = 5.0, sock=None, **kwargs) -> "WebSocketClient":
        """Connect and complete the opening handshake (RFC 6455 §4.1). `sock`: an already
        connected socket to use (a test may want one with a tiny receive buffer)."""
        client = cls(url, **kwargs)
        loop = asyncio.get_running_loop()
        client._opened = loop.create_future()
        client._closed = loop.create_future()
        where = {"sock": sock} if sock is not None else {"host": client.host, "port": client.port}
        await asyncio.wait_for(loop.create_connection(lambda: client, **where), timeout)
        try:
            await asyncio.wait_for(asyncio.shield(client._opened), timeout)
        except BaseException:
            client._opened.cancel()  # nobody will look at it again
            client.abort()
            raise
        return client

    def connection_made(self, transport: asyncio.Transport) -> None:
        self.transport = transport
        self.local_address = transport.get_extra_info("sockname")[:2]
        request = Request(host=f"{self.host}:{self.port}", target=self.target)
        try:
            data = self.ws.send(request)  # the HTTP/1.1 upgrade request: no frames yet
        except (LocalProtocolError, h11.LocalProtocolError) as exc:  # e.g. a space in the path
            self._fail(exc)
            return
        self._note("sent", request)
        self.request_bytes = data
        transport.write(data)

    # -- bytes in ------------------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        if self._head_in is not None:
            self._head_in += data  # the handshake's answer: an HTTP response
        elif self.record:
            self._tap(self._tap_in, data)
        self._receive(data)
        if self._head_in is not None and self.accepted:
            # A 101 has no body (RFC 9110 §15.2.2): after its empty line come frames.
            head, _, frames = bytes(self._head_in).partition(b"\r\n\r\n")
            self.response_bytes = head + b"\r\n\r\n"
            self._head_in = None
            if self.record:
                self._tap(self._tap_in, frames)

    def eof_received(self) -> bool:
        self._receive(None)  # wsproto learns the peer closed its side
        return False         # and asyncio closes the transport

    def _receive(self, data: bytes | None) -> None:
        try:
            self.ws.receive_data(data)
        except Exception as exc:  # wsproto's RemoteProtocolError: a malformed handshake
            self._fail(exc)
            return
        self._handle_events()

    def _tap(self, tap: FrameTap, data: bytes) -> None:
        for frame in tap.feed(data):
            self.frames.append(frame)
            if self.on_event is not None:
                self.on_event(self, frame)

    def _handle_events(self) -> None:
        for event in self.ws.events():
            if isinstance(event, CloseConnection) and self.close_code is not None:
                continue  # wsproto adds a 1006 when TCP ends after a completed close: not news
            self._note("received", event)
            if isinstance(event, AcceptConnection):
                self.accepted = True
                if not self._opened.done():  # (cancelled if open() gave up waiting)
                    self._opened.set_result(None)
            elif isinstance(event, RejectConnection):
                self._reject = event
                if not event.has_body:
                    self._rejected()
            elif isinstance(event, RejectData):
                self._reject_body += event.data
                if event.body_finished:
                    self._rejected()
            elif isinstance(event, (TextMessage, BytesMessage)):
                self._partial.append(event.data)
                if event.message_finished:
                    data = "".join(self._partial) if isinstance(event, TextMessage) else b"".join(self._partial)
                    self._partial.clear()
                    self.inbox.put_nowait(data)
            elif isinstance(event, Ping):
                self._send(event.response())  # RFC 6455 §5.5.2: answer a ping with a pong
            elif isinstance(event, Pong):
                self._ponged(bytes(event.payload))
            elif isinstance(event, CloseConnection):
                self.close_code, self.close_reason = int(event.code), event.reason or ""
                if self.ws.state is ConnectionState.REMOTE_CLOSING:
                    self._send(event.response())  # echo the Close (§5.5.1)
                # The server should now end the TCP connection (§7.1.1); if it does not, we do.
                asyncio.get_running_loop().call_later(2.0, self.abort)

    def _rejected(self) -> None:
        self.response_bytes = bytes(self._head_in or b"")
        exc = HandshakeRejected(self._reject.status_code, list(self._reject.headers),
                                bytes(self._reject_body), self.request_bytes, self.response_bytes)
        if not self._opened.done():
            self._opened.set_exception(exc)
        self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._reject is not None and not self._opened.done():
            self._rejected()  # a rejection whose body ended with the connection
        if self._opened is not None and not self._opened.done():
            self._opened.set_exception(ConnectionError(
                "the server closed the connection during the handshake"))
        if self.close_code is None:
            self.close_code = CLOSE_ABNORMAL  # no Close frame came: 1006
        if self._closed is not None and not self._closed.done():
            self._closed.set_result(self.close_code)
        for _payload, waiter in self._pings:
            if not waiter.done():
                waiter.set_exception(ConnectionError("the connection closed before the pong came"))
        self._pings.clear()
        self.inbox.put_nowait(None)  # wakes a receive(): the connection is over

    def _fail(self, exc: Exception) -> None:
        if self._opened is not None and not self._opened.done():
            self._opened.set_exception(exc)
        self.abort()

    # -- bytes out -----------------------------------------------------------------------

    def _send(self, event) -> None:
        if self.transport is None or self.transport.is_closing():
            return
        try:
            data = self.ws.send(event)
        except LocalProtocolError:
            return  # e.g. a message after we started closing: wsproto refuses, so do we
        self._note("sent", event)
        if self.record:
            self._tap(self._tap_out, data)
        self.transport.write(data)

    def send_text(self, text: str) -> None:
        """Send one text message (one frame, FIN set)."""
        self._send(Message(data=text))

    def send_bytes(self, data: bytes) -> None:
        self._send(Message(data=data))

    def ping(self, payload: bytes = b"") -> None:
        self._send(Ping(payload=payload))

    async def ping_pong(self, payload: bytes = b"", timeout: float = 5.0) -> float:
        """Send a ping and wait for its pong, the one that echoes `payload` (RFC 6455 §5.5.3:
        "identical Application data"). Returns the round trip in seconds."""
        if not self.is_open:
            raise ConnectionError("the connection is closed: no ping can be sent")
        waiter = asyncio.get_running_loop().create_future()
        self._pings.append((payload, waiter))
        start = time.perf_counter()
        self.ping(payload)
        try:
            await asyncio.wait_for(waiter, timeout)
        finally:
            self._pings = [(p, w) for p, w in self._pings if w is not waiter]
        return time.perf_counter() - start

    def _ponged(self, payload: bytes) -> None:
        """A pong arrived: it answers the oldest ping with the same payload (§5.5.3). An
        unsolicited pong (§5.5.3 allows one, as a heartbeat) answers nothing."""
        for echoed, waiter in self._pings:
            if echoed == payload and not waiter.done():
                waiter.set_result(None)
                return

    async def receive(self, timeout: float | None = None) -> str | bytes | None:
        """The next message; None once the connection is closed and nothing is left."""
        item = await asyncio.wait_for(self.inbox.get(), timeout)
        if item is None:
            self.inbox.put_nowait(None)  # stay closed for the next caller
        return item

    async def close(self, code: int = 1000, reason: str = "", timeout: float = 2.0) -> int | None:
        """The closing handshake, client first (RFC 6455 §7.1.2): send Close, then wait for the
        server's Close and for the server to end the TCP connection. Returns the server's code."""
        if self.ws.state is ConnectionState.OPEN:
            self._send(CloseConnection(code=code, reason=reason))
        try:
            await asyncio.wait_for(asyncio.shield(self._closed), timeout)
        except asyncio.TimeoutError:
            self.abort()
            await asyncio.shield(self._closed)
        return self.close_code

    async def wait_closed(self, timeout: float | None = None) -> int | None:
        await asyncio.wait_for(asyncio.shield(self._closed), timeout)
        return self.close_code

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()

    @property
    def is_open(self) -> bool:
        return self.ws.state is ConnectionState.OPEN

    @property
    def closed(self) -> bool:
        """True once the TCP connection has ended."""
        return self._closed is not None and self._closed.done()

    # -- the record ----------------------------------------------------------------------

    def _note(self, direction: str, event) -> None:
        if self.record:
            item = ClientEvent(time.monotonic(), direction, type(event).__name__, describe_event(event))
            self.events.append(item)
            if self.on_event is not None:
                self.on_event(self, item)
