"""Small blocking clients the checks use against our real servers, over loopback only.

One plain socket each, with a timeout on every read; h11 parses the responses and wsproto
frames WebSocket messages (we never do either by hand). They are deliberately simple: a check
opens a handful of connections, not thousands (for load, see `asgi_lab.load`).
"""

from __future__ import annotations

import socket
import struct
import time
from dataclasses import dataclass

import h11
import wsproto
from wsproto.events import (AcceptConnection, CloseConnection, Message, Ping, RejectConnection,
                            Request, TextMessage)

LOOPBACK = "127.0.0.1"


def _connect(address: tuple[str, int], timeout: float) -> socket.socket:
    host, port = address
    if host not in (LOOPBACK, "localhost", "::1"):
        raise ValueError(f"the exercise clients only talk to loopback, not {host!r}")
    sock = socket.create_connection((host, port), timeout=timeout)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def abort(sock: socket.socket) -> None:
    """Close with a TCP reset (SO_LINGER 0): the client vanishes at once, like a closed tab
    on a dropped network, and the server's next read or write learns it immediately."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except OSError:
        pass
    sock.close()


@dataclass
class Response:
    status: int
    headers: list[tuple[bytes, bytes]]
    body: bytes
    raw: bytes = b""
    """Every byte the server sent, framing included: to look at what is really on the wire."""
    elapsed: float = 0.0

    def header(self, name: bytes) -> bytes | None:
        for key, value in self.headers:
            if key == name:
                return value
        return None


def request(address: tuple[str, int], method: str = "GET", target: str = "/", headers=(),
            body_chunks=(), chunk_delay: float = 0.0, timeout: float = 5.0) -> Response:
    """One HTTP/1.1 request; the body (if any) goes out chunked, one chunk per item, with
    `chunk_delay` seconds between them so the server sees them arrive one by one."""
    started = time.monotonic()
    conn = h11.Connection(h11.CLIENT)
    all_headers = [("host", f"{address[0]}:{address[1]}"), ("connection", "close"), *headers]
    body_chunks = list(body_chunks)
    if body_chunks:
        all_headers.append(("transfer-encoding", "chunked"))
    with _connect(address, timeout) as sock:
        sock.sendall(conn.send(h11.Request(method=method, target=target, headers=all_headers)))
        for chunk in body_chunks:
            if chunk_delay:
                time.sleep(chunk_delay)
            sock.sendall(conn.send(h11.Data(data=chunk)))
        if body_chunks or method in ("POST", "PUT", "PATCH"):
            sock.sendall(conn.send(h11.EndOfMessage()))
        raw, body, response = bytearray(), bytearray(), None
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                data = sock.recv(65536)
                raw += data
                conn.receive_data(data)
            elif isinstance(event, h11.Response):
                response = event
            elif isinstance(event, h11.Data):
                body += event.data
            elif isinstance(event, (h11.EndOfMessage, h11.ConnectionClosed)):
                break
    return Response(response.status_code, list(response.headers), bytes(body), bytes(raw),
                    time.monotonic() - started)


class EventStream:
    """A Server-Sent Events client: `GET target`, then read events as they come."""

    def __init__(self, address: tuple[str, int], target: str = "/", timeout: float = 5.0) -> None:
        self.conn = h11.Connection(h11.CLIENT)
        self.sock = _connect(address, timeout)
        self.sock.sendall(self.conn.send(h11.Request(
            method="GET", target=target,
            headers=[("host", f"{address[0]}:{address[1]}"), ("accept", "text/event-stream")])))
        self.sock.sendall(self.conn.send(h11.EndOfMessage()))
        self.status: int | None = None
        self.headers: list = []
        self.buffer = b""
        self.events: list[str] = []
        self.arrivals: list[float] = []
        self.ended = False

    def read_events(self, count: int, timeout: float = 2.0) -> list[str]:
        """Wait for `count` events in all (fewer if the response ends or time runs out)."""
        deadline = time.monotonic() + timeout
        while len(self.events) < count and not self.ended:
            event = self.conn.next_event()
            if event is h11.NEED_DATA:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self.sock.settimeout(remaining)
                try:
                    data = self.sock.recv(65536)
                except (socket.timeout, TimeoutError):
                    break
                self.conn.receive_data(data)
            elif isinstance(event, h11.Response):
                self.status, self.headers = event.status_code, list(event.headers)
            elif isinstance(event, h11.Data):
                self.buffer += event.data
                while b"\n\n" in self.buffer:  # SSE: an event ends with a blank line
                    text, self.buffer = self.buffer.split(b"\n\n", 1)
                    self.events.append(text.decode("utf-8", "replace"))
                    self.arrivals.append(time.monotonic())
            elif isinstance(event, (h11.EndOfMessage, h11.ConnectionClosed)):
                self.ended = True
        return self.events

    def header(self, name: bytes) -> bytes | None:
        return next((value for key, value in self.headers if key == name), None)

    def abort(self) -> None:
        abort(self.sock)


class WebSocketClient:
    """A WebSocket client over one socket; wsproto does the handshake and the framing."""

    def __init__(self, address: tuple[str, int], path: str = "/", timeout: float = 5.0) -> None:
        self.ws = wsproto.WSConnection(wsproto.ConnectionType.CLIENT)
        self.sock = _connect(address, timeout)
        self.sock.sendall(self.ws.send(Request(host=f"{address[0]}:{address[1]}", target=path)))
        self.accepted = False
        self.closed_code: int | None = None
        self.inbox: list[str] = []
        deadline = time.monotonic() + timeout
        while not self.accepted and self.closed_code is None and time.monotonic() < deadline:
            self._pump(deadline - time.monotonic())

    def _pump(self, timeout: float) -> None:
        self.sock.settimeout(max(timeout, 0.001))
        try:
            data = self.sock.recv(65536)
        except (socket.timeout, TimeoutError):
            return
        self.ws.receive_data(data or None)
        for event in self.ws.events():
            if isinstance(event, AcceptConnection):
                self.accepted = True
            elif isinstance(event, RejectConnection):
                self.closed_code = 403
            elif isinstance(event, TextMessage):
                self.inbox.append(event.data)
            elif isinstance(event, Message):
                self.inbox.append(event.data)
            elif isinstance(event, Ping):
                self.sock.sendall(self.ws.send(event.response()))
            elif isinstance(event, CloseConnection):
                self.closed_code = event.code
                try:
                    self.sock.sendall(self.ws.send(event.response()))
                except Exception:
                    pass
        if not data and self.closed_code is None:
            self.closed_code = 1006

    def send_text(self, text: str) -> None:
        self.sock.sendall(self.ws.send(Message(data=text)))

    def receive(self, count: int = 1, timeout: float = 2.0) -> list[str]:
        """Wait until `count` messages have arrived in all; returns them (maybe fewer)."""
        deadline = time.monotonic() + timeout
        while len(self.inbox) < count and self.closed_code is None and time.monotonic() < deadline:
            self._pump(deadline - time.monotonic())
        return list(self.inbox)

    def close(self, code: int = 1000) -> None:
        try:
            if self.ws.state is wsproto.connection.ConnectionState.OPEN:
                self.sock.sendall(self.ws.send(CloseConnection(code=code)))
        except Exception:
            pass
        self.sock.close()
