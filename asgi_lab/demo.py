"""Trace real requests through both servers, without a browser: `make demo`.

    python -m asgi_lab demo --out demo-output

starts the ASGI server and the WSGI server in the background, each with a `Tracer`, sends
each of them the same GET and the same POST over a plain socket, and writes:

- `asgi-get.png`, `asgi-post.png`, `wsgi-get.png`, `wsgi-post.png`: sequence diagrams;
- `post-side-by-side.png`: the WSGI and the ASGI POST next to each other;
- `timeline.png`: eight concurrent slow requests on each server: which thread works on
  which connection when (four WSGI workers, one ASGI event loop);
- `asgi-trace.json`, `wsgi-trace.json`: every event recorded, for `Tracer.load(...)`;

and prints each trace as a listing. The notebooks use the same helpers: `exchange` sends raw
bytes and reads the answer; `trace_exchange` does it with a tracer and returns the events of
that one connection, complete (it waits until the server has closed the connection too);
`time_to_first_byte` measures when the answer starts; `leave_early` is a client that hangs
up half-way and says when.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from pathlib import Path

from .background import serve_in_background
from .trace import TraceEvent, Tracer

#: The two requests of the demo and of the first notebooks. `Connection: close` makes the
#: end of each exchange part of the trace: the server closes after its response.
GET_REQUEST = b"GET /hello HTTP/1.1\r\nHost: lab\r\nConnection: close\r\n\r\n"
POST_REQUEST = (b"POST /echo HTTP/1.1\r\nHost: lab\r\nContent-Type: text/plain\r\n"
                b"Content-Length: 11\r\nConnection: close\r\n\r\nhello there")


# -- the demo's apps: the same behaviour, once per interface --------------------------------

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


# -- talking to a server -------------------------------------------------------------------------

def exchange(address: tuple[str, int], request: bytes, timeout: float = 5.0,
             until: bytes | None = None) -> bytes:
    """Send `request` in one `sendall` and read until the server closes; return what came back.

    With `until`, stop reading as soon as those bytes have arrived and close the connection
    ourselves: a client that leaves in the middle of a (streamed) response.
    """
    with socket.create_connection(address, timeout=timeout) as sock:
        sock.sendall(request)
        received = bytearray()
        while chunk := sock.recv(65536):
            received += chunk
            if until is not None and until in received:
                break
    return bytes(received)


def time_to_first_byte(address: tuple[str, int], request: bytes,
                       timeout: float = 5.0) -> tuple[float, bytes]:
    """Send `request`; return how many seconds passed before the first byte of the answer
    arrived, and the whole answer (read until the server closes)."""
    with socket.create_connection(address, timeout=timeout) as sock:
        sent = time.monotonic()
        sock.sendall(request)
        received = bytearray(sock.recv(65536))
        first = time.monotonic() - sent
        while chunk := sock.recv(65536):
            received += chunk
    return first, bytes(received)


def leave_early(address: tuple[str, int], request: bytes, *, until: bytes | None = None,
                after: float | None = None, timeout: float = 5.0) -> float:
    """A client that goes away before its answer is complete: send `request`, read until
    `until` has arrived (or wait `after` seconds), then close the socket. Returns the
    `time.monotonic()` of the close, to measure how long the server takes to notice."""
    with socket.create_connection(address, timeout=timeout) as sock:
        sock.sendall(request)
        received = bytearray()
        while until is not None and until not in received and (chunk := sock.recv(65536)):
            received += chunk
        if after is not None:
            time.sleep(after)
    return time.monotonic()


def trace_exchange(server, tracer: Tracer, request: bytes, timeout: float = 5.0,
                   until: bytes | None = None) -> list[TraceEvent]:
    """`exchange` with a traced server: return the events of that connection, complete.

    The server runs on other threads; after the client has its answer, the server may still
    be closing its side. We wait for `connection_lost`, so nothing arrives after we return.
    """
    mark = len(tracer.events)
    exchange(server.address, request, timeout, until)
    opened = [e for e in tracer.events[mark:] if e.kind == "connection_made"]
    if not opened:
        raise RuntimeError("the server recorded no connection_made: is the tracer its tracer?")
    conn = opened[0].conn
    tracer.wait_for(conn=conn, kind="connection_lost", timeout=timeout)
    return tracer.filter(conn=conn)


def concurrent_requests(server, count: int = 8, request: bytes = GET_REQUEST,
                        timeout: float = 10.0) -> None:
    """`count` clients at once, one thread each, every one with its own connection. With a
    traced server, returns once the server has closed all of them (the trace is complete)."""
    tracer = getattr(server, "tracer", None)
    mark = len(tracer.events) if tracer is not None else 0
    clients = [threading.Thread(target=exchange, args=(server.address, request, timeout))
               for _ in range(count)]
    for client in clients:
        client.start()
    for client in clients:
        client.join(timeout)
    deadline = time.monotonic() + timeout
    while tracer is not None and time.monotonic() < deadline:
        if sum(e.kind == "connection_lost" for e in tracer.events[mark:]) >= count:
            break
        time.sleep(0.005)


# -- the demo -------------------------------------------------------------------------------------

def run_demo(out: str | Path = "demo-output") -> int:
    """Serve, trace and draw; print the listings and the files written. Returns 0."""
    from .viz import sequence_diagram, side_by_side
    from .viz.timeline import compare_timelines

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    traces: dict[str, dict[str, list[TraceEvent]]] = {}

    for kind, app in (("asgi", asgi_app), ("wsgi", wsgi_app)):
        tracer = Tracer()
        with serve_in_background(app, kind, name=f"demo-{kind}", tracer=tracer, access_log=False) as server:
            traces[kind] = {"GET": trace_exchange(server, tracer, GET_REQUEST),
                            "POST": trace_exchange(server, tracer, POST_REQUEST)}
        path = out / f"{kind}-trace.json"
        tracer.save(path)
        written.append(path)
        for method, events in traces[kind].items():
            title = f"{method} through the {kind.upper()} server"
            print(f"\n{title}\n{'-' * len(title)}")
            print(Tracer(events).listing(times=True))
            fig = sequence_diagram(events, title=title,
                                   lane_titles={"app": f"{kind.upper()} app"})
            path = out / f"{kind}-{method.lower()}.png"
            fig.savefig(path, dpi=110)
            written.append(path)

    fig = side_by_side({"WSGI": traces["wsgi"]["POST"], "ASGI": traces["asgi"]["POST"]},
                       lane_titles={"WSGI": {"app": "WSGI app"}, "ASGI": {"app": "ASGI app"}})
    path = out / "post-side-by-side.png"
    fig.savefig(path, dpi=100)
    written.append(path)

    # Many connections at once: threads (WSGI) against tasks (ASGI).
    busy = {}
    for kind, app in (("wsgi", slow_wsgi_app), ("asgi", slow_asgi_app)):
        tracer = busy[f"{kind.upper()}: 8 clients, one row per thread"] = Tracer()
        with serve_in_background(app, kind, name=f"demo-slow-{kind}", tracer=tracer,
                                 access_log=False, threads=4) as server:
            concurrent_requests(server, 8)
    fig = compare_timelines(busy, by="thread")
    path = out / "timeline.png"
    fig.savefig(path, dpi=100)
    written.append(path)

    print("\nwritten:")
    for path in written:
        print(f"  {path}")
    return 0
