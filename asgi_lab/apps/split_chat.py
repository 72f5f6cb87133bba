"""A separate WebSocket server beside the WSGI app: the chat split over two processes.

    ASGI_LAB_RELAY_URL=http://127.0.0.1:8001 python -m asgi_lab wsgi asgi_lab.apps.split_chat:poster --port 8000
    python -m asgi_lab asgi asgi_lab.apps.split_chat:relay --port 8001

The classic way to add WebSockets to a WSGI site without leaving WSGI:

- **The WSGI app** (`poster`, any WSGI server): the site itself. Members *send* here, with
  `POST /rooms/{room}/messages` and a JSON body `{"name": ..., "text": ...}`: this is where a
  real site checks the session and writes to its database. It keeps no chat state.
- **The WebSocket server** (`relay`, here our ASGI server running the chat of `apps/chat.py`):
  members *listen* on `/ws/{room}`; it holds who is in which room. It also takes
  `POST /publish/{room}` from the WSGI app and broadcasts the message to the room.
- **Between them**, something else carries the message: here one HTTP request over loopback
  from the WSGI app to the relay (`ASGI_LAB_RELAY_URL`). In production this is often a
  message broker (Redis pub/sub) or a hosted service's HTTP API (Pusher, Centrifugo).

Two processes, two ports, two servers to deploy and keep in step, and one more hop per
message (client -> WSGI -> relay -> members, where the ASGI chat has client -> server ->
members). Only the relay speaks WebSocket, so the WSGI app stays plain PEP 3333, on any server.
"""

from __future__ import annotations

import json
import os
import re
import urllib.error
import urllib.request

from .chat import NAME, ChatApp

PUBLISH_PATH = re.compile(r"^/publish/([A-Za-z0-9_-]{1,32})$")
POST_PATH = re.compile(r"^/rooms/([A-Za-z0-9_-]{1,32})/messages$")
MAX_TEXT = 4096


class Relay(ChatApp):
    """The chat of `apps/chat.py`, for listening only, plus `POST /publish/{room}`."""

    async def http(self, scope, receive, send) -> None:
        match = PUBLISH_PATH.match(scope["path"])
        if scope["path"] == "/ready":
            return await _reply(send, 200, {"ready": True})
        if match is None or scope["method"] != "POST":
            return await super().http(scope, receive, send)
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        posted = json.loads(body)
        room = self.rooms.get(match.group(1))
        if room is not None:
            room.broadcast({"type": "message", "name": posted["name"], "text": posted["text"]})
        await _reply(send, 200, {"members": len(room.members) if room else 0})

    async def read_messages(self, room, member, receive, send) -> None:
        """Members only listen here: what they say goes through the WSGI app."""
        while (await receive())["type"] != "websocket.disconnect":
            pass


async def _reply(send, status: int, data: dict) -> None:
    body = json.dumps(data).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


def poster(environ, start_response):
    """The WSGI side (PEP 3333): `POST /rooms/{room}/messages`, forwarded to the relay."""
    path, method = environ.get("PATH_INFO", ""), environ.get("REQUEST_METHOD")
    if path == "/ready":
        return _json(start_response, "200 OK", {"ready": True})
    match = POST_PATH.match(path)
    if match is None or method != "POST":
        return _json(start_response, "404 Not Found", {"error": "POST /rooms/{room}/messages"})
    try:
        posted = json.loads(environ["wsgi.input"].read())
        name, text = str(posted["name"]), str(posted["text"])
    except (ValueError, KeyError, TypeError):
        return _json(start_response, "400 Bad Request", {"error": 'send {"name": ..., "text": ...}'})
    if not NAME.match(name) or not text or len(text) > MAX_TEXT:
        return _json(start_response, "400 Bad Request", {"error": "bad name or text"})
    # ...a real site would check the session and store the message here...
    relay = os.environ.get("ASGI_LAB_RELAY_URL", "http://127.0.0.1:8001")
    forward = urllib.request.Request(f"{relay}/publish/{match.group(1)}", method="POST",
                                     data=json.dumps({"name": name, "text": text}).encode(),
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(forward, timeout=5) as answer:  # the extra hop
            delivered = json.loads(answer.read())["members"]
    except (OSError, ValueError, KeyError) as exc:
        return _json(start_response, "502 Bad Gateway", {"error": f"relay: {exc}"})
    return _json(start_response, "202 Accepted", {"relayed_to": delivered})


def _json(start_response, status: str, data: dict):
    body = json.dumps(data).encode()
    start_response(status, [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
    return [body]


#: `python -m asgi_lab asgi asgi_lab.apps.split_chat:relay`
relay = Relay()
