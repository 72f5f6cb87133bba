"""The demo's apps: the same behaviour written once per interface, to compare on the wire.

- `asgi_app` / `wsgi_app`: GET answers a greeting, POST echoes its body. ASGI reads the body
  with `receive()` and answers with `send()` (ASGI HTTP spec); WSGI reads `wsgi.input` and
  returns an iterable (PEP 3333).
- `slow_asgi_app` / `slow_wsgi_app`: wait 50 ms, then answer; the ASGI one gives the event
  loop back while it waits, the WSGI one holds its worker thread (the timeline's lesson).

`python -m asgi_lab demo` (`asgi_lab/demo.py`) and notebooks 00-02 serve them.
"""

from __future__ import annotations

import asyncio
import time


async def asgi_app(scope, receive, send):
    """GET: a greeting. POST: the body back. ASGI: read the body with receive(), answer with send()."""
    if scope["type"] != "http":
        return
    body = b""
    if scope["method"] == "POST":
        more_body = True
        while more_body:
            message = await receive()
            body += message.get("body", b"")
            more_body = message.get("more_body", False)
    else:
        body = b"Hello, world!"
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"text/plain"),
                            (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


def wsgi_app(environ, start_response):
    """GET: a greeting. POST: the body back. WSGI: read wsgi.input, return an iterable."""
    if environ["REQUEST_METHOD"] == "POST":
        body = environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))
    else:
        body = b"Hello, world!"
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]


async def slow_asgi_app(scope, receive, send):
    """Waits 50 ms before answering, without holding the thread (for the timeline)."""
    if scope["type"] != "http":
        return
    await asyncio.sleep(0.05)
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"done"})


def slow_wsgi_app(environ, start_response):
    """Waits 50 ms before answering, holding its worker thread all along."""
    time.sleep(0.05)
    start_response("200 OK", [("Content-Length", "4")])
    return [b"done"]
