"""The soak app: every kind of traffic a server meets in a day, once for each interface.

`benchmarks/soak.py`, `benchmarks/floods.py` and `tests/test_hardening.py` point load at it:

    python -m asgi_lab asgi asgi_lab.apps.soak:app --port 0
    python -m asgi_lab wsgi asgi_lab.apps.soak:wsgi_app --port 0 --threads 16

Routes (the same for both, except WebSocket, which WSGI cannot do):

    GET  /                       a tiny response: the keep-alive fast path
    GET  /stream?chunks=N&size=S N chunks of S bytes, streamed
    GET  /big?size=S             S bytes in 64 KiB chunks (for slow readers)
    GET  /sse?interval=T         a Server-Sent Event every T seconds, until the client leaves
    GET  /sleep?s=T              answers after T seconds (a request "in flight")
    POST /echo                   reads the whole body, answers its length
    POST /slow-read?delay=T      reads the body one message at a time, T seconds apart
    GET  /debug                  what the process holds right now, as JSON (see below)
    WS   /ws                     echoes every message until the client leaves (ASGI only)

`/debug` is how a soak run checks that everything went back to idle: open file descriptors,
threads, RSS, and for ASGI the asyncio tasks and the loop's scheduled timers (a timer left
armed after a connection closed is a leak the other numbers would not show). It also says
how many requests are inside `/sleep` right now (`sleeping`): a test waits for its requests
to be in flight, inside the app, before it stops the server.

The ASGI app speaks lifespan and prints one line on startup and one on shutdown, so a test
can see that a graceful shutdown reached the app's cleanup. SOAK_SHUTDOWN_SECONDS makes that
cleanup slow (for "a second Ctrl-C exits at once, even during a slow cleanup").
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import threading
import time
from urllib.parse import parse_qs

from .echo import websocket_echo

CHUNK = 64 * 1024
TEXT = [(b"content-type", b"text/plain")]


def query(query_string: bytes | str) -> dict[str, str]:
    if isinstance(query_string, bytes):
        query_string = query_string.decode("latin-1")
    return {name: values[0] for name, values in parse_qs(query_string).items()}


sleeping = 0
"""Requests inside /sleep right now, in this process (both apps; see /debug)."""
_sleeping_lock = threading.Lock()


@contextlib.contextmanager
def counted_as_sleeping():
    """Count the request in `sleeping` while the block runs."""
    global sleeping
    with _sleeping_lock:
        sleeping += 1
    try:
        yield
    finally:
        with _sleeping_lock:
            sleeping -= 1


def process_figures() -> dict:
    """Open fds, threads and resident memory of this process (Linux /proc, no psutil needed),
    and the requests inside /sleep."""
    figures = {"fds": len(os.listdir("/proc/self/fd")), "threads": threading.active_count(),
               "sleeping": sleeping}
    with open("/proc/self/statm") as statm:
        figures["rss_bytes"] = int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    return figures


# -- ASGI ---------------------------------------------------------------------------------------


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        await lifespan(receive, send)
    elif scope["type"] == "websocket":
        await websocket_echo(receive, send)
    else:
        await http(scope, receive, send)


async def lifespan(receive, send):
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            print("soak: lifespan startup complete", flush=True)
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            # A cleanup that takes a while (closing a pool...): SOAK_SHUTDOWN_SECONDS=5.
            await asyncio.sleep(float(os.environ.get("SOAK_SHUTDOWN_SECONDS", 0)))
            print("soak: lifespan shutdown complete", flush=True)
            await send({"type": "lifespan.shutdown.complete"})
            return


async def respond(send, body: bytes, status: int = 200, headers=TEXT):
    await send({"type": "http.response.start", "status": status,
                "headers": headers + [(b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


async def http(scope, receive, send):
    path, params = scope["path"], query(scope["query_string"])
    if path == "/":
        await respond(send, b"ok")
    elif path == "/stream":
        chunks, size = int(params.get("chunks", 10)), int(params.get("size", 1024))
        await send({"type": "http.response.start", "status": 200, "headers": TEXT})
        for _ in range(chunks):
            await send({"type": "http.response.body", "body": b"x" * size, "more_body": True})
        await send({"type": "http.response.body", "body": b""})
    elif path == "/big":
        size = int(params.get("size", 1024 * 1024))
        await send({"type": "http.response.start", "status": 200,
                    "headers": TEXT + [(b"content-length", str(size).encode())]})
        chunk = b"x" * CHUNK
        while size > 0:
            piece = chunk[:size]
            size -= len(piece)
            await send({"type": "http.response.body", "body": piece, "more_body": size > 0})
    elif path == "/sse":
        await server_sent_events(float(params.get("interval", 0.05)), send)
    elif path == "/sleep":
        with counted_as_sleeping():
            await asyncio.sleep(float(params.get("s", 0.5)))
        await respond(send, b"slept")
    elif path in ("/echo", "/slow-read"):
        delay = float(params.get("delay", 0)) if path == "/slow-read" else 0
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            size += len(message.get("body", b""))
            if not message.get("more_body", False):
                break
            if delay:
                await asyncio.sleep(delay)
        await respond(send, str(size).encode())
    elif path == "/debug":
        figures = process_figures()
        figures["tasks"] = len(asyncio.all_tasks())
        # The loop's timer heap: private, but it is exactly the leak we want to see.
        figures["timers"] = len(getattr(asyncio.get_running_loop(), "_scheduled", ()))
        await respond(send, json.dumps(figures).encode(), headers=[(b"content-type", b"application/json")])
    else:
        await respond(send, b"not found", status=404)


async def server_sent_events(interval: float, send):
    """An endless stream. It ends when send() raises because the client left (ASGI www spec
    2.4: it *should* raise an OSError subclass, and ours does) or the server is shutting down."""
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache")]})
    number = 0
    try:
        while True:
            number += 1
            await send({"type": "http.response.body", "body": b"data: %d\n\n" % number, "more_body": True})
            await asyncio.sleep(interval)
    except OSError:
        return


# -- WSGI -----------------------------------------------------------------------------------------


def wsgi_app(environ, start_response):
    path, params = environ["PATH_INFO"], query(environ.get("QUERY_STRING", ""))
    text = [("Content-Type", "text/plain")]

    def respond_with(body: bytes, status: str = "200 OK", headers=text):
        start_response(status, headers + [("Content-Length", str(len(body)))])
        return [body]

    if path == "/":
        return respond_with(b"ok")
    if path == "/stream":
        chunks, size = int(params.get("chunks", 10)), int(params.get("size", 1024))
        start_response("200 OK", text)
        return (b"x" * size for _ in range(chunks))
    if path == "/big":
        size = int(params.get("size", 1024 * 1024))
        start_response("200 OK", text + [("Content-Length", str(size))])
        return big_body(size)
    if path == "/sse":
        start_response("200 OK", [("Content-Type", "text/event-stream"), ("Cache-Control", "no-cache")])
        return wsgi_events(float(params.get("interval", 0.05)))
    if path == "/sleep":
        with counted_as_sleeping():
            time.sleep(float(params.get("s", 0.5)))
        return respond_with(b"slept")
    if path in ("/echo", "/slow-read"):
        delay = float(params.get("delay", 0)) if path == "/slow-read" else 0
        stream, size = environ["wsgi.input"], 0
        while True:
            piece = stream.read(CHUNK)
            if not piece:
                break
            size += len(piece)
            if delay:
                time.sleep(delay)
        return respond_with(str(size).encode())
    if path == "/debug":
        return respond_with(json.dumps(process_figures()).encode(),
                            headers=[("Content-Type", "application/json")])
    return respond_with(b"not found", "404 Not Found")


def big_body(size: int):
    chunk = b"x" * CHUNK
    while size > 0:
        piece = chunk[:size]
        size -= len(piece)
        yield piece


def wsgi_events(interval: float):
    """Endless: the server stops iterating (and calls close()) when the client leaves."""
    number = 0
    while True:
        number += 1
        yield b"data: %d\n\n" % number
        time.sleep(interval)
