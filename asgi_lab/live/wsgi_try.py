"""Try the chat on the WSGI server, and see what a WebSocket client gets.

    wsgi = serve_in_background(wsgi_chat, kind="wsgi", name="chat-wsgi")
    print(try_chat_on_wsgi(wsgi.url))

`wsgi_chat` is the chat written the only way PEP 3333 allows. The page at `/` is ordinary
HTTP, and WSGI serves it perfectly well. The WebSocket at `/ws/{room}` is where it ends:

1. The app sees the upgrade request: `environ["HTTP_UPGRADE"] == "websocket"`, the client's
   `Sec-WebSocket-Key`, everything it needs to compute the answer (RFC 6455 §4.2.2).
2. It answers the only way it can, `start_response("101 Switching Protocols", [...])`. But
   PEP 3333 ("Other HTTP Features") forbids an application to use hop-by-hop features such
   as `Connection: Upgrade`, and a server built on h11 cannot send 101 as a final response
   at all: a 1xx status is informational, the real response is still to come. The WSGI
   server reports the app's error and answers **500**.
3. Suppose a server let the 101 through. Then the conversation begins, and WSGI has no
   place for it: `wsgi.input` is the request *body* (empty for this GET), the response is an
   iterable the server drains and finishes, and nothing in `environ` is the socket. To chat,
   the app would have to read frames the client sends whenever it likes, and write frames
   whenever *another* member speaks, for as long as the connection lives: a call that never
   returns, holding a worker thread per member, with no way to be woken by a broadcast.

So the client's wsproto reports `RejectConnection(status_code=500)`; a browser's WebSocket
fires `onclose` with code 1006 and no frames ever arrive.
"""

from __future__ import annotations

import base64
import hashlib
import logging
from dataclasses import dataclass, field

from ..apps.chat import ROOM_PATH, chat_page
from ..background import server_errors
from .chat_client import ChatClient
from .client import HandshakeRejected

#: RFC 6455 §1.3: the GUID every server appends to the client's key.
WEBSOCKET_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


def wsgi_chat(environ, start_response):
    """The chat as a WSGI app: the page works, the WebSocket cannot (see the module docstring)."""
    path = environ.get("PATH_INFO", "/")
    if path == "/":
        body = chat_page()
        start_response("200 OK", [("Content-Type", "text/html; charset=utf-8"),
                                  ("Content-Length", str(len(body)))])
        return [body]
    if ROOM_PATH.match(path) and environ.get("HTTP_UPGRADE", "").lower() == "websocket":
        key = environ.get("HTTP_SEC_WEBSOCKET_KEY", "").encode("latin-1")
        accept = base64.b64encode(hashlib.sha1(key + WEBSOCKET_GUID).digest()).decode("ascii")
        # The handshake answer, exactly as RFC 6455 §4.2.2 wants it. The server refuses it.
        start_response("101 Switching Protocols", [("Upgrade", "websocket"),
                                                   ("Connection", "Upgrade"),
                                                   ("Sec-WebSocket-Accept", accept)])
        return []  # ...and even if it had gone out, the WSGI call now ends, and so does the chat
    body = b"404 Not Found\n"
    start_response("404 Not Found", [("Content-Type", "text/plain"),
                                     ("Content-Length", str(len(body)))])
    return [body]


@dataclass
class WSGIAttempt:
    """What a WebSocket client saw when it tried to join the chat on a WSGI server."""

    url: str
    request: bytes          # the upgrade request the client sent
    response: bytes         # what came back, byte for byte
    status_code: int | None  # the HTTP status of that answer
    opened: bool            # did the WebSocket open? (on WSGI: never)
    error: str = ""
    server_log: list[str] = field(default_factory=list)  # what the server logged meanwhile

    def __str__(self) -> str:
        lines = [f"The client asked for a WebSocket at {self.url}:", ""]
        lines += ["  > " + line for line in self.request.decode("latin-1").splitlines() if line]
        lines += ["", "The server answered:", ""]
        head, _, body = self.response.partition(b"\r\n\r\n")
        lines += ["  < " + line for line in head.decode("latin-1").splitlines()
                  if not line.lower().startswith("date:")]
        if body:
            lines += ["  <", "  < " + body.decode("utf-8", "replace").strip()]
        lines.append("")
        for entry in self.server_log:
            lines.append(f"The server logged: {entry}")
        if self.opened:
            lines.append("The WebSocket opened.")
        else:
            lines.append(f"wsproto on the client: RejectConnection(status_code={self.status_code})"
                         if self.status_code else f"The handshake failed: {self.error}")
            lines.append("No 101 Switching Protocols, so no WebSocket: not one frame can be sent.")
        return "\n".join(lines)


def try_chat_on_wsgi(url: str, room: str = "lobby", name: str = "ada",
                     timeout: float = 5.0) -> WSGIAttempt:
    """Open a chat WebSocket against `url` (an http:// URL) and report what happened,
    with what the server (if it runs in this process) logged meanwhile."""
    ws_url = "ws" + url[len("http"):] + f"/ws/{room}?name={name}"
    with server_errors(logging.ERROR) as records:
        attempt = _attempt(ws_url, timeout)
    attempt.server_log = [_one_line(record) for record in records]
    return attempt


def _attempt(ws_url: str, timeout: float) -> WSGIAttempt:
    try:
        client = ChatClient.connect(ws_url, timeout=timeout)
    except HandshakeRejected as exc:
        return WSGIAttempt(ws_url, exc.request_bytes, exc.response_bytes, exc.status_code, False)
    except (ConnectionError, OSError) as exc:
        return WSGIAttempt(ws_url, b"", b"", None, False, error=repr(exc))
    attempt = WSGIAttempt(ws_url, client.client.request_bytes, client.client.response_bytes, 101, True)
    client.close()
    return attempt


def _one_line(record: logging.LogRecord) -> str:
    """A log record as one line: its message and the exception's last line, no traceback."""
    error = record.exc_info[1] if record.exc_info else None
    return record.getMessage() + (f": {type(error).__name__}: {error}" if error is not None else "")
