"""Async code on a WSGI server: what happens, and the bridges people build.

A WSGI server calls the app and uses what it returns (PEP 3333, "The Application/Framework
Side"): `result = app(environ, start_response)`, then `for chunk in result`. Nothing in that
call can `await`. Calling an `async def` function only creates a coroutine object, so an
`async def app(environ, start_response)` hands the server a coroutine instead of an iterable;
its code never runs (`asgi_lab/wsgi/connection.py` answers 500 and logs why).

To run async code under WSGI anyway, something must drive the coroutine to its end before
the call returns. Two kinds of bridge, both here so that the notebook can measure them:

- *per request*: a fresh event loop for each call, `asyncio.run(coro)` or asgiref's
  `async_to_sync(app)` (which runs that loop on a helper thread while the caller waits).
- *one loop thread*: one event loop, forever, on a thread of its own (`LoopThread`); each
  call hands its coroutine over with `asyncio.run_coroutine_threadsafe` and waits for the
  result. The coroutines of all requests then share one loop (one connection pool, say).

Either way the WSGI worker thread that made the call is blocked until the coroutine is done:
a server with N worker threads still has at most N requests in progress, whatever the
coroutines await. And a call that must return its iterable cannot stream what a coroutine
produces later, nor learn that the client left while the coroutine waits. The measurements
below show each point on our WSGI server, next to the same logic on our ASGI server.
"""

from __future__ import annotations

import asyncio
import gc
import socket
import threading
import time
import warnings
from dataclasses import dataclass, field
from urllib.parse import parse_qs

import h11

from .background import serve_in_background, server_errors
from .exercises.client import abort, request
from .trace import Tracer

DEFAULT_WAIT_MS = 200


def _wait_ms(query: str) -> float:
    """`?ms=N` from a query string (the time the app awaits), default 200 ms."""
    values = parse_qs(query).get("ms")
    return float(values[0]) if values else DEFAULT_WAIT_MS


# -- the apps: the same logic, as an `async def` WSGI-shaped app and as an ASGI app ------------

started: list[str] = []
"""The paths `async_hello` has started on: proof that its code ran (or never did)."""


async def async_hello(environ, start_response):
    """An `async def` app with WSGI's signature: awaits `?ms=N` (a database query, say), answers.
    Served as it is by a WSGI server, its code never runs; behind a bridge, it does."""
    started.append(environ.get("PATH_INFO", ""))
    ms = _wait_ms(environ.get("QUERY_STRING", ""))
    await asyncio.sleep(ms / 1000)
    body = f"Hello after {ms:g} ms of awaiting\n".encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]


async def asgi_hello(scope, receive, send):
    """The same logic as an ASGI app (ASGI HTTP spec: Response Start, Response Body)."""
    if scope["type"] != "http":
        return
    ms = _wait_ms(scope["query_string"].decode("latin-1"))
    await asyncio.sleep(ms / 1000)
    body = f"Hello after {ms:g} ms of awaiting\n".encode()
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"text/plain"),
                            (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


# -- the bridges ----------------------------------------------------------------------------------

def asyncio_run_bridge(async_app):
    """A WSGI app that runs `async_app` to its end in a new event loop, per call."""
    def wsgi_app(environ, start_response):
        return asyncio.run(async_app(environ, start_response))
    wsgi_app.__qualname__ = f"asyncio_run_bridge({async_app.__qualname__})"
    return wsgi_app


def async_to_sync_bridge(async_app):
    """The same with asgiref: `async_to_sync` starts a new loop on a helper thread per call
    (when the calling thread has no loop of its own) and blocks the caller until it is done."""
    from asgiref.sync import async_to_sync

    bridged = async_to_sync(async_app)

    def wsgi_app(environ, start_response):
        return bridged(environ, start_response)
    wsgi_app.__qualname__ = f"async_to_sync_bridge({async_app.__qualname__})"
    return wsgi_app


class LoopThread:
    """One event loop running forever on a thread of its own: the shared loop of a bridge.

    `run(coro)` may be called from any thread: it hands `coro` to the loop
    (`asyncio.run_coroutine_threadsafe`) and blocks the calling thread until it is done.
    """

    def __init__(self, name: str = "bridge-loop") -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name=name, daemon=True)
        self.thread.start()

    def run(self, coro, timeout: float | None = None):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def stop(self) -> None:
        if self.thread.is_alive():
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(5)
            self.loop.close()

    def __enter__(self) -> "LoopThread":
        return self

    def __exit__(self, *exc_info) -> None:
        self.stop()


def loop_thread_bridge(async_app, loop_thread: LoopThread):
    """A WSGI app that hands each call's coroutine to the one `loop_thread` and waits."""
    def wsgi_app(environ, start_response):
        return loop_thread.run(async_app(environ, start_response))
    wsgi_app.__qualname__ = f"loop_thread_bridge({async_app.__qualname__})"
    return wsgi_app


# -- 1. an `async def` app on the WSGI server, as it is ------------------------------------------

def serve_async_app_unbridged(app=async_hello) -> dict:
    """Serve `app` (an `async def`) on our WSGI server and GET it once. Returns what the client
    got, what the server logged (the records, kept out of stderr), whether the app's code ran,
    and the server's trace of the exchange as a listing."""
    tracer = Tracer()
    before = len(started)
    with server_errors() as records:
        with serve_in_background(app, "wsgi", name="bridges:unbridged", tracer=tracer,
                                 access_log=False, threads=1) as server:
            response = request(server.address, target="/unbridged")
            tracer.wait_for(kind="connection_lost", timeout=5)
    return {
        "status": response.status, "body": response.body.decode("latin-1"),
        "server_log": [record.getMessage() for record in records],
        "error": [str(record.exc_info[1]) for record in records if record.exc_info],
        "app_code_ran": len(started) > before,
        "listing": tracer.listing(),
    }


def never_awaited_warnings(async_function, *args) -> list[str]:
    """Call `async_function(*args)` the way synchronous code does (no await), drop what it
    returned, and return the RuntimeWarnings Python issued as strings (not on stderr)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", RuntimeWarning)
        async_function(*args)  # a coroutine object, dropped at once: never awaited
        gc.collect()
    return [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)]


# -- 2. concurrency: how long do N requests at once take? -----------------------------------------

@dataclass
class Run:
    """N requests sent at once to one server; every latency as the clients measured it."""

    name: str
    threads: int | None          # the WSGI server's worker threads; None for the ASGI server
    wait_ms: float
    latencies: list[float]
    elapsed: float               # from the first request sent to the last answer received
    statuses: list[int]
    tracer: Tracer | None = field(default=None, repr=False)

    @property
    def requests(self) -> int:
        return len(self.latencies)

    @property
    def at_once(self) -> float:
        """How many waits overlapped, on average: N x wait / elapsed (1.0 = one at a time)."""
        return self.requests * self.wait_ms / 1000 / self.elapsed


def concurrent_gets(address, count: int, target: str, timeout: float = 30.0):
    """`count` clients at once, one thread and one connection each (they only wait on their
    sockets, so threads are fine here). Returns (latencies, statuses, elapsed)."""
    results: list = [None] * count
    gate = threading.Barrier(count + 1)

    def client(index: int) -> None:
        gate.wait()
        response = request(address, target=target, timeout=timeout)
        results[index] = (response.elapsed, response.status)

    clients = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(count)]
    for thread in clients:
        thread.start()
    gate.wait()
    started_at = time.monotonic()
    for thread in clients:
        thread.join(timeout)
    elapsed = time.monotonic() - started_at
    if any(result is None for result in results):
        raise TimeoutError(f"not every client got an answer within {timeout} s")
    return [r[0] for r in results], [r[1] for r in results], elapsed


def measure(app, kind: str = "wsgi", *, name: str, threads: int = 1, requests: int = 10,
            wait_ms: float = DEFAULT_WAIT_MS, trace: bool = False) -> Run:
    """Serve `app` (`kind` "wsgi" with `threads` workers, or "asgi"), send `requests` GETs
    at once, each asking the app to await `wait_ms`, and time them."""
    tracer = Tracer() if trace else None
    settings = {"threads": threads} if kind == "wsgi" else {"lifespan": "off"}
    with serve_in_background(app, kind, name=f"bridges:{name}", tracer=tracer, access_log=False,
                             **settings) as server:
        latencies, statuses, elapsed = concurrent_gets(server.address, requests,
                                                       f"/?ms={wait_ms:g}")
        if tracer is not None:  # every connection closed: the trace is complete
            deadline = time.monotonic() + 5
            while (len(tracer.filter(kind="connection_lost")) < requests
                   and time.monotonic() < deadline):
                time.sleep(0.01)
    return Run(name, threads if kind == "wsgi" else None, wait_ms, latencies, elapsed, statuses,
               tracer)


def table(runs: list[Run]) -> str:
    """The runs as a table: server, worker threads, total time, and how many waits overlapped."""
    lines = [f"{'how the async app is served':<38} {'threads':>7} {'requests':>8} "
             f"{'total':>9} {'waits at once':>13}"]
    for run in runs:
        threads = "-" if run.threads is None else str(run.threads)
        lines.append(f"{run.name:<38} {threads:>7} {run.requests:>8} "
                     f"{run.elapsed * 1000:>6.0f} ms {run.at_once:>13.1f}")
    return "\n".join(lines)


# -- 3. what the one-loop bridge still cannot do: stream ------------------------------------------

async def ticks(count: int = 5, interval: float = 0.1):
    """An async source of data: one line every `interval` seconds (a feed, a slow query)."""
    for n in range(count):
        await asyncio.sleep(interval)
        yield f"tick {n}\n".encode()


async def _collect(source) -> bytes:
    return b"".join([chunk async for chunk in source])


def collected_wsgi_app(loop_thread: LoopThread, count: int = 5, interval: float = 0.1):
    """The one-loop bridge around `ticks()`: the call must return an iterable, so it waits for
    the whole body, then returns it in one piece."""
    def wsgi_app(environ, start_response):
        body = loop_thread.run(_collect(ticks(count, interval)))
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [body]
    return wsgi_app


def pulling_wsgi_app(loop_thread: LoopThread, count: int = 5, interval: float = 0.1):
    """The one-loop bridge, pulling chunk by chunk: a generator whose every `next()` blocks
    its worker thread on the loop until the next tick. It streams, but holds the worker
    for the whole stream: a thread per stream again."""
    def wsgi_app(environ, start_response):
        source = ticks(count, interval)

        def chunks():
            while True:
                try:
                    yield loop_thread.run(source.__anext__())
                except StopAsyncIteration:
                    return
        start_response("200 OK", [("Content-Type", "text/plain")])
        return chunks()
    return wsgi_app


def streaming_asgi_app(count: int = 5, interval: float = 0.1):
    """The same `ticks()` on ASGI: each chunk goes out when it exists (`more_body=True`)."""
    async def app(scope, receive, send):
        if scope["type"] != "http":
            return
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"text/plain")]})
        async for chunk in ticks(count, interval):
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
        await send({"type": "http.response.body", "body": b""})
    return app


def chunk_arrivals(address, target: str = "/", timeout: float = 10.0) -> list[tuple[float, bytes]]:
    """GET `target` and note when each piece of the body arrived: [(seconds, bytes), ...]."""
    conn = h11.Connection(h11.CLIENT)
    arrivals = []
    with socket.create_connection(address, timeout=timeout) as sock:
        started_at = time.monotonic()
        sock.sendall(conn.send(h11.Request(method="GET", target=target, headers=[
            ("host", "lab"), ("connection", "close")])) + conn.send(h11.EndOfMessage()))
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                conn.receive_data(sock.recv(65536))
            elif type(event) is h11.Data:
                arrivals.append((time.monotonic() - started_at, bytes(event.data)))
            elif type(event) in (h11.EndOfMessage, h11.ConnectionClosed):
                return arrivals


def streaming_demo(count: int = 5, interval: float = 0.1, clients: int = 2
                   ) -> dict[str, list[list[tuple[float, bytes]]]]:
    """`ticks()` served three ways (the WSGI server with one worker thread), to `clients`
    clients at once; for each way and each client, when each piece of the body arrived."""
    results = {}
    with LoopThread() as loop_thread:
        for name, app, kind in (
                ("WSGI, one-loop bridge", collected_wsgi_app(loop_thread, count, interval), "wsgi"),
                ("WSGI, one-loop bridge pulling each chunk",
                 pulling_wsgi_app(loop_thread, count, interval), "wsgi"),
                ("ASGI", streaming_asgi_app(count, interval), "asgi")):
            with serve_in_background(app, kind, name=f"bridges:stream:{kind}", access_log=False,
                                     threads=1, lifespan="off") as server:
                arrivals: list = [None] * clients

                def client(index: int, address=server.address) -> None:
                    arrivals[index] = chunk_arrivals(address)
                threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
                for thread in threads:
                    thread.start()
                for thread in threads:
                    thread.join(count * interval * clients + 10)
                results[name] = arrivals
    return results


def streaming_table(results: dict[str, list[list[tuple[float, bytes]]]]) -> str:
    """When each client got its first and its last byte, and in how many pieces."""
    lines = [f"{'served as':<42} {'client':>6} {'first byte':>11} {'last byte':>10} {'pieces':>7}"]
    for name, per_client in results.items():
        for index, arrivals in enumerate(per_client, 1):
            lines.append(f"{name:<42} {index:>6} {arrivals[0][0] * 1000:>8.0f} ms "
                         f"{arrivals[-1][0] * 1000:>7.0f} ms {len(arrivals):>7}")
    return "\n".join(lines)


# -- 4. ... nor notice that the client left ------------------------------------------------------

@dataclass
class Outcome:
    """What a waiting app knew about a client that left early (seconds since the request)."""

    client_left: float
    app_done: float | None = None        # the app stopped waiting (finished, or gave up)
    app_learned: float | None = None     # the app was told the client had gone


def waiting_async_app(outcomes: dict, wait: float):
    """An `async def` WSGI-shaped app that waits `wait` s for news, then answers."""
    async def app(environ, start_response):
        outcome = outcomes[environ["PATH_INFO"]]
        await asyncio.sleep(wait)                   # waiting for news; nobody can interrupt it
        outcome.app_done = time.monotonic()
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"news\n"]
    return app


def waiting_asgi_app(outcomes: dict, wait: float):
    """The same wait on ASGI, listening to `receive()` meanwhile: `http.disconnect` ends it
    (ASGI HTTP spec: Disconnected Client)."""
    async def app(scope, receive, send):
        if scope["type"] != "http":
            return
        outcome = outcomes[scope["path"]]
        await receive()                             # http.request: the (empty) body
        news = asyncio.ensure_future(asyncio.sleep(wait))
        gone = asyncio.ensure_future(receive())     # the next message can only be http.disconnect
        await asyncio.wait({news, gone}, return_when=asyncio.FIRST_COMPLETED)
        outcome.app_done = time.monotonic()
        if gone.done() and gone.result()["type"] == "http.disconnect":
            outcome.app_learned = outcome.app_done
            news.cancel()
            return
        gone.cancel()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"news\n"})
    return app


def leave_early(address, target: str, after: float, timeout: float = 5.0) -> float:
    """Send a GET, wait `after` s, vanish (TCP reset). Returns when it sent the request."""
    sock = socket.create_connection(address, timeout=timeout)
    sent_at = time.monotonic()
    sock.sendall(f"GET {target} HTTP/1.1\r\nHost: lab\r\n\r\n".encode())
    time.sleep(after)
    abort(sock)
    return sent_at


def disconnect_demo(wait: float = 1.0, leave_after: float = 0.1) -> dict[str, Outcome]:
    """A client that leaves after `leave_after` s, while the app waits `wait` s for news:
    through the one-loop bridge on WSGI, and on ASGI. Times are relative to the request."""
    results = {}
    with LoopThread() as loop_thread:
        for name, kind in (("WSGI, one-loop bridge", "wsgi"), ("ASGI", "asgi")):
            outcomes: dict[str, Outcome] = {"/wait": Outcome(client_left=leave_after)}
            app = (loop_thread_bridge(waiting_async_app(outcomes, wait), loop_thread)
                   if kind == "wsgi" else waiting_asgi_app(outcomes, wait))
            with server_errors(), serve_in_background(
                    app, kind, name=f"bridges:disconnect:{kind}", access_log=False, threads=1,
                    lifespan="off", timeout_graceful_shutdown=wait + 1) as server:
                sent_at = leave_early(server.address, "/wait", leave_after)
                deadline = time.monotonic() + wait + 5
                while outcomes["/wait"].app_done is None and time.monotonic() < deadline:
                    time.sleep(0.01)
            outcome = outcomes["/wait"]
            for key in ("app_done", "app_learned"):
                if getattr(outcome, key) is not None:
                    setattr(outcome, key, getattr(outcome, key) - sent_at)
            results[name] = outcome
    return results
