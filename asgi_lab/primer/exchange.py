"""The one request every primer server answers, and its answer, with h11 (no socket here).

    GET /?ms=300      "work" for 300 ms, then answer 200 "waited 300 ms\\n"
    GET /block?ms=300 the same on a blocking server; on the event loop, the mistake of
                      notebook 05 (a real `time.sleep` inside a task: see `loop_server.py`)

The primer is about *who waits*: a thread, or an event loop. The HTTP side is deliberately
small and done by h11, the project's HTTP/1.1 engine, in its sans-IO style: bytes go in with
`feed()`, bytes come out of `answer()`, and whoever owns the socket (a blocking server, a
generator task) moves them. Every connection carries one request and is then closed
(`connection: close`, RFC 9112 section 9.6), so nobody has to think about keep-alive yet.

Bad input gets a clear answer, never an exception that takes a server down: a request h11
cannot parse, or a `ms` that is not a whole number of milliseconds, is answered with 400.
"""

from __future__ import annotations

from http import HTTPStatus
from urllib.parse import parse_qs, urlsplit

import h11

MAX_WORK_MS = 10_000
"""A request cannot ask for more than 10 s of "work" (a server must not be that easy to hold)."""


class BadRequest(Exception):
    """The request cannot be served; `str(exc)` says why, and `answer()` turns it into a 400."""


class Exchange:
    """One request and its answer on one connection, as h11 sees them (RFC 9112 via h11)."""

    def __init__(self) -> None:
        self.conn = h11.Connection(h11.SERVER)
        self.request: h11.Request | None = None

    def feed(self, data: bytes) -> bool:
        """Give h11 the bytes that arrived (`b""` when the client closed its side).

        Returns True once the whole request is in. Raises `BadRequest` for what h11 cannot
        parse, and `ConnectionError` if the client left before its request was complete.
        """
        self.conn.receive_data(data)
        while True:
            try:
                event = self.conn.next_event()
            except h11.RemoteProtocolError as exc:
                raise BadRequest(f"not a valid HTTP/1.1 request: {exc}") from None
            if event is h11.NEED_DATA:
                return False
            if isinstance(event, h11.Request):
                self.request = event
            elif isinstance(event, h11.EndOfMessage):
                return True
            elif isinstance(event, h11.ConnectionClosed):
                raise ConnectionError("the client left before its request was complete")
            # h11.Data: a request body, which these servers do not need; dropped.

    @property
    def path(self) -> str:
        return urlsplit(self.request.target.decode("latin-1")).path

    def work_seconds(self) -> float:
        """How long the client asked the server to "work": `?ms=N`, 0 if absent."""
        query = parse_qs(urlsplit(self.request.target.decode("latin-1")).query)
        text = query.get("ms", ["0"])[-1]
        if not text.isdigit() or int(text) > MAX_WORK_MS:
            raise BadRequest(f"ms must be a whole number from 0 to {MAX_WORK_MS}, not {text!r}")
        return int(text) / 1000

    def answer(self, work_seconds: float) -> bytes:
        """The bytes of a 200 response saying how long the server worked."""
        return self._respond(200, f"waited {work_seconds * 1000:.0f} ms\n")

    def reject(self, problem: Exception) -> bytes:
        """The bytes of a 400 response saying what was wrong (h11 still lets a server answer
        after the client broke the protocol)."""
        return self._respond(400, f"{problem}\n")

    def _respond(self, status: int, text: str) -> bytes:
        body = text.encode()
        headers = [("content-type", "text/plain; charset=utf-8"),
                   ("content-length", str(len(body))), ("connection", "close")]
        response = h11.Response(status_code=status, headers=headers,
                                reason=HTTPStatus(status).phrase)
        return (self.conn.send(response)
                + self.conn.send(h11.Data(data=body)) + self.conn.send(h11.EndOfMessage()))
