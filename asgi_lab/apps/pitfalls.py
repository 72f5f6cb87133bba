"""Async pitfalls as small ASGI apps: one mistake each, next to its fixes.

Every app answers `GET /?ms=N` after N milliseconds of "work" (100 by default) with a short
text body. What differs is *how* the work is done, and so what happens to every other request
the same event loop is serving meanwhile:

    blocking_sleep        time.sleep(N) in a coroutine: the whole server stops for N ms
    blocking_database     a sync database driver (our stand-in: `blocking_query`): the same
    with_asyncio_sleep    fix for waiting: await asyncio.sleep(N); the loop serves others
    with_to_thread        fix for a blocking call: await asyncio.to_thread(blocking_query, ...)
    with_run_in_executor  the same, spelled the older way: loop.run_in_executor(None, ...)
    cpu_bound             pure-Python computation in the coroutine: the loop stops too
    cpu_bound_in_thread   ...in a thread: the loop breathes, but the GIL lets one thread compute
    cpu_bound_in_process  ...in a process pool: other cores do the work
    forgotten_await       send(...) without await: nothing is sent, Python only warns

`asgi_lab.experiments.blocking_loop` measures them under concurrent requests.
"""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import multiprocessing
import threading
import time
from urllib.parse import parse_qs

DEFAULT_MS = 100.0


queries_run = 0
"""How many times `blocking_query` has run in this process (an exercise check counts them)."""
_queries_lock = threading.Lock()  # several worker threads may finish a query at once


def blocking_query(sql: str = "SELECT name FROM users WHERE id = 1", delay: float = 0.2) -> str:
    """A stand-in for a synchronous database driver (psycopg2, sqlite3, requests...): the
    calling thread waits `delay` seconds for the "database" and gets a row back."""
    global queries_run
    time.sleep(delay)
    with _queries_lock:
        queries_run += 1
    return "Ada Lovelace"


# -- CPU work: a fixed amount of pure-Python computation ------------------------------------------

_iterations_per_ms: float | None = None


def _spin(iterations: int) -> int:
    total = 0
    for i in range(iterations):
        total += i * i % 7
    return total


def iterations_per_ms() -> float:
    """How many `_spin` iterations take one millisecond here, measured once (best of 3)."""
    global _iterations_per_ms
    if _iterations_per_ms is None:
        best = float("inf")
        for _ in range(3):
            started = time.perf_counter()
            _spin(50_000)
            best = min(best, time.perf_counter() - started)
        _iterations_per_ms = 50_000 / (best * 1000)
    return _iterations_per_ms


def cpu_work(ms: float, rate: float | None = None) -> int:
    """About `ms` milliseconds of computation on an idle core: a *fixed amount of work*, not a
    deadline, so running it on a busy core or beside other threads takes longer, as real
    computation (parsing, resizing an image, hashing in Python) does."""
    return _spin(int(ms * (rate or iterations_per_ms())))


_pool: concurrent.futures.ProcessPoolExecutor | None = None


def process_pool() -> concurrent.futures.ProcessPoolExecutor:
    """A small pool of worker processes, started on first use ("spawn": safe beside the
    server's threads) and shut down when the interpreter exits."""
    global _pool
    if _pool is None:
        _pool = concurrent.futures.ProcessPoolExecutor(
            max_workers=2, mp_context=multiprocessing.get_context("spawn"))
        atexit.register(shutdown_process_pool)
    return _pool


def shutdown_process_pool() -> None:
    """Stop the worker processes (a notebook does it in its last cell)."""
    global _pool
    if _pool is not None:
        _pool.shutdown(cancel_futures=True)
        _pool = None


def warm_up_process_pool() -> None:
    """Start the pool's workers now, so that a measurement does not include their start-up."""
    pool = process_pool()
    for future in [pool.submit(_spin, 1) for _ in range(pool._max_workers)]:
        future.result()


# -- the apps -------------------------------------------------------------------------------------

def milliseconds(scope: dict) -> float:
    """The `ms` query parameter: how long the request's work takes."""
    values = parse_qs(scope["query_string"].decode("latin-1")).get("ms")
    return float(values[0]) if values else DEFAULT_MS


async def respond(send, text: str) -> None:
    body = text.encode()
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"text/plain"),
                            (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


async def blocking_sleep(scope, receive, send):
    """The mistake: a blocking call inside a coroutine. Nothing else runs meanwhile."""
    if scope["type"] == "http":
        time.sleep(milliseconds(scope) / 1000)
        await respond(send, "slept")


async def blocking_database(scope, receive, send):
    """The same mistake, as it usually looks: a synchronous database driver."""
    if scope["type"] == "http":
        name = blocking_query(delay=milliseconds(scope) / 1000)
        await respond(send, name)


async def with_asyncio_sleep(scope, receive, send):
    """Fix, when the wait is only a wait: the loop runs other requests until the timer fires."""
    if scope["type"] == "http":
        await asyncio.sleep(milliseconds(scope) / 1000)
        await respond(send, "slept")


async def with_to_thread(scope, receive, send):
    """Fix, when the library is blocking: run it on a worker thread and await the result."""
    if scope["type"] == "http":
        name = await asyncio.to_thread(blocking_query, delay=milliseconds(scope) / 1000)
        await respond(send, name)


async def with_run_in_executor(scope, receive, send):
    """The same fix, the pre-3.9 way: the loop's default ThreadPoolExecutor."""
    if scope["type"] == "http":
        loop = asyncio.get_running_loop()
        delay = milliseconds(scope) / 1000
        name = await loop.run_in_executor(None, blocking_query, "SELECT 1", delay)
        await respond(send, name)


async def cpu_bound(scope, receive, send):
    """Computation in the coroutine: it never awaits, so the loop is stuck until it ends."""
    if scope["type"] == "http":
        cpu_work(milliseconds(scope))
        await respond(send, "computed")


async def cpu_bound_in_thread(scope, receive, send):
    """Computation on a worker thread: the loop gets the GIL back every few milliseconds
    (sys.getswitchinterval()), so other requests are served; but only one thread computes
    at a time, so the work itself is no faster."""
    if scope["type"] == "http":
        ms = milliseconds(scope)
        if ms:  # a request with nothing to compute does not queue for a worker
            await asyncio.to_thread(cpu_work, ms, iterations_per_ms())
        await respond(send, "computed")


async def cpu_bound_in_process(scope, receive, send):
    """Computation in another process: other cores do it; the loop only waits for the answer."""
    if scope["type"] == "http":
        ms = milliseconds(scope)
        if ms:  # a request with nothing to compute does not queue for a worker
            loop = asyncio.get_running_loop()
            await loop.run_in_executor(process_pool(), cpu_work, ms, iterations_per_ms())
        await respond(send, "computed")


async def forgotten_await(scope, receive, send):
    """The mistake: `send(...)` without `await` creates a coroutine object and drops it.
    Nothing is sent; Python warns "coroutine ... was never awaited" when it is collected,
    and the server, seeing the app return without a response, answers 500."""
    if scope["type"] == "http":
        send({"type": "http.response.start", "status": 200, "headers": []})  # noqa: missing await
        send({"type": "http.response.body", "body": b"never sent"})  # noqa: missing await


VARIANTS = {
    "time.sleep": blocking_sleep,
    "asyncio.sleep": with_asyncio_sleep,
    "asyncio.to_thread": with_to_thread,
    "run_in_executor": with_run_in_executor,
}
"""The blocking wait and its fixes, by the name a chart shows."""

CPU_VARIANTS = {
    "in the coroutine": cpu_bound,
    "asyncio.to_thread": cpu_bound_in_thread,
    "process pool": cpu_bound_in_process,
}
