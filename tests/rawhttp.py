"""Raw-socket helpers for tests: send exact bytes, read exact responses (with h11, client side)."""

from __future__ import annotations

import asyncio
import socket
import time

import h11


def connect(address, timeout: float = 5.0) -> socket.socket:
    sock = socket.create_connection(address, timeout=timeout)
    return sock


def read_until_closed(sock: socket.socket, timeout: float = 5.0) -> bytes:
    """Everything the server sends until it closes the connection (bounded by `timeout`)."""
    sock.settimeout(timeout)
    data = b""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            break
        if not chunk:
            break
        data += chunk
    return data


def exchange(address, data: bytes, timeout: float = 5.0) -> bytes:
    """Send `data`, then read until the server closes."""
    with connect(address, timeout) as sock:
        sock.sendall(data)
        return read_until_closed(sock, timeout)


class Client:
    """A tiny HTTP/1.1 client on one socket, using h11: responses as (Response, body, events)."""

    def __init__(self, address, timeout: float = 5.0) -> None:
        self.sock = connect(address, timeout)
        self.conn = h11.Connection(h11.CLIENT)

    def send(self, *events) -> None:
        self.sock.sendall(b"".join(self.conn.send(e) for e in events))

    def request(self, method="GET", target="/", headers=(), body=b"") -> "Client":
        headers = [("host", "test")] + list(headers)
        if body:
            headers.append(("content-length", str(len(body))))
        self.send(h11.Request(method=method, target=target, headers=headers),
                  *([h11.Data(data=body)] if body else []), h11.EndOfMessage())
        return self

    def next_event(self):
        while True:
            event = self.conn.next_event()
            if event is h11.NEED_DATA:
                self.conn.receive_data(self.sock.recv(65536))
                continue
            return event

    def response(self):
        """(h11.Response, body bytes) of the next complete response."""
        response = None
        body = b""
        while True:
            event = self.next_event()
            if type(event) is h11.Response:
                response = event
            elif type(event) is h11.Data:
                body += event.data
            elif type(event) is h11.EndOfMessage:
                if self.conn.our_state is h11.DONE and self.conn.their_state is h11.DONE:
                    self.conn.start_next_cycle()
                return response, body
            elif type(event) is h11.ConnectionClosed:
                raise ConnectionError("server closed the connection before the response ended")

    def get(self, target="/", headers=()):
        self.request("GET", target, headers)
        return self.response()

    def close(self) -> None:
        self.sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def status_of(raw: bytes) -> int:
    """The status code of the first response in raw bytes."""
    return int(raw.split(b" ", 2)[1])


async def read_body(receive) -> bytes | None:
    """An ASGI test app's whole request body (ASGI www spec: `http.request` messages until
    `more_body` is false), or None if the client left first (`http.disconnect`)."""
    body, more_body = b"", True
    while more_body:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        body += message.get("body", b"")
        more_body = message.get("more_body", False)
    return body


def on_loop(background, function, *args, timeout: float = 5.0):
    """`function(*args)` run on a background ASGI server's event loop (where the server's
    own methods must run, e.g. `server.check_deadlines`), and its result."""
    async def call():
        return function(*args)
    return asyncio.run_coroutine_threadsafe(call(), background.loop).result(timeout)


def app_tasks_done(background, timeout: float = 5.0) -> bool:
    """Wait (on the server's loop, without polling) until every app task of a background ASGI
    server has ended and the server has dropped it; True if none is left."""
    server = background.server

    async def wait() -> bool:
        if server.tasks:
            await asyncio.wait(set(server.tasks), timeout=timeout)
        await asyncio.sleep(0)  # the tasks' own done-callbacks (which drop them) ran first
        return not server.tasks
    return asyncio.run_coroutine_threadsafe(wait(), background.loop).result(timeout + 1)


def wait_until(condition, timeout: float = 5.0, what: str = "condition") -> None:
    """For server state that no event announces (a connection given back to a selector, a
    send() waiting on a full buffer): check `condition()` until true, failing after
    `timeout` seconds. Not a sleep to let time pass: it returns as soon as the state is there."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out after {timeout} s waiting for {what}"
        time.sleep(0.002)
