"""WSGI demo apps for the notebooks and tests: what a thread-per-request interface looks like
when you ask it to stream, to wait, or to speak WebSocket.

    python -m asgi_lab wsgi asgi_lab.apps.wsgi_demo:environ_app
    python -m asgi_lab wsgi asgi_lab.apps.wsgi_demo:sse_clock --threads 2

Each app is a plain PEP 3333 callable; none depends on a framework.
"""

from __future__ import annotations

import json
import threading
import time
from urllib.parse import parse_qs


def environ_app(environ, start_response):
    """Answers with the environ it received, as JSON (its str, int, bool and tuple entries)."""
    shown = {key: value for key, value in environ.items()
             if isinstance(value, (str, int, bool, tuple))}
    body = json.dumps(shown, indent=1, sort_keys=True).encode("utf-8")
    start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
    return [body]


def echo(environ, start_response):
    """Sends the request body back: reads all of wsgi.input (chunked bodies too)."""
    body = environ["wsgi.input"].read()
    start_response("200 OK", [("Content-Type", environ.get("CONTENT_TYPE") or "application/octet-stream"),
                              ("Content-Length", str(len(body)))])
    return [body]


def sse_clock(environ, start_response):
    """Server-Sent Events: one `data:` line per tick (`?interval=0.5&count=10`; count 0 = forever).

    A generator: the server sends each event as it is produced. Note what the thread does in
    between: it sleeps inside this generator, so it can serve nobody else for as long as the
    stream lasts. With a pool of N threads, N such clients fill the server.
    """
    query = parse_qs(environ.get("QUERY_STRING", ""))
    interval = float(query.get("interval", ["1"])[0])
    count = int(query.get("count", ["0"])[0])
    start_response("200 OK", [("Content-Type", "text/event-stream"), ("Cache-Control", "no-cache")])

    def events():
        number = 0
        while count == 0 or number < count:
            number += 1
            yield f"id: {number}\ndata: {time.strftime('%H:%M:%S')} from {threading.current_thread().name}\n\n".encode()
            if count == 0 or number < count:
                time.sleep(interval)

    return events()


def long_poll(environ, start_response):
    """Waits `?wait=2` seconds before answering, as a long-polling endpoint does when there is
    no news: the thread is blocked for the whole wait."""
    wait = float(parse_qs(environ.get("QUERY_STRING", "")).get("wait", ["2"])[0])
    time.sleep(wait)
    body = f"no news after {wait:g} s ({threading.current_thread().name})\n".encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]


def websocket_attempt(environ, start_response):
    """What a portable WSGI app can honestly do with a WebSocket handshake: answer with HTTP.

    It sees a plain GET with `HTTP_UPGRADE: websocket` and could compute the handshake's
    answer (RFC 6455 §4.2.2). But the answer is a `101` with hop-by-hop headers, which PEP 3333
    reserves to the server, and after it nothing in `environ` reads or writes a frame: a WSGI
    response flows one way, from the app's iterable to the client, and then the call ends. So
    it says so, with 426 Upgrade Required (RFC 9110 §15.5.22) and a reason. (What servers do
    if the app tries the 101 anyway, and our non-portable way out: `apps/wsgi_chat.py`.)
    """
    if environ.get("HTTP_UPGRADE", "").lower() == "websocket":
        body = (b"This is a WSGI app: PEP 3333 gives it no way to read or write WebSocket frames, "
                b"so it cannot switch this connection to WebSocket.\n")
        status = "426 Upgrade Required"
    else:
        body = b"Try connecting with a WebSocket client.\n"
        status = "200 OK"
    start_response(status, [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
