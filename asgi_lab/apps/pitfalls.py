"""Async pitfalls as small ASGI apps: one mistake each, next to its fixes.

Every app answers `GET /?ms=N` after N milliseconds of "work" (100 by default) with a short
text body. For the database apps, the work is a real query (`asgi_lab.db`: SQLite by default,
PostgreSQL when `ASGI_LAB_DB` is a `postgresql://` URL) over as many rows as take about N ms. What differs is *how* the work is done, and so what happens to every other request
the same event loop is serving meanwhile:

    blocking_sleep        time.sleep(N) in a coroutine: the whole server stops for N ms
    with_asyncio_sleep    fix for waiting: await asyncio.sleep(N); the loop serves others
    blocking_database     a real query through a blocking driver (sqlite3, psycopg): the same
    with_to_thread        fix for a blocking driver: await asyncio.to_thread(blocking_query, ...)
    with_run_in_executor  the same on the app's own thread pool: loop.run_in_executor(pool, ...)
    with_async_driver     fix with an async driver: aiosqlite, psycopg.AsyncConnection
    cpu_bound             pure-Python computation in the coroutine: the loop stops too
    cpu_bound_in_thread   ...in a thread: the loop breathes, but the GIL lets one thread compute
                          (on free-threaded CPython, 3.13t/3.14t, the threads compute in parallel)
    cpu_bound_in_process  ...in a process pool: other cores do the work
    forgotten_await       send(...) without await: nothing is sent, Python only warns
    fire_and_forget       asyncio.create_task(...) and forget it: its exception reaches only
                          asyncio's log ("Task exception was never retrieved"), without the request
    with_task_group       fix: the handler waits for its task in an asyncio.TaskGroup
    with_kept_task        fix, when the work must outlive the response: keep the task, and look
                          at its result in a done callback that names the request

`asgi_lab.experiments.blocking_loop` measures the first ones under concurrent requests;
`asgi_lab.experiments.async_costs` runs the task apps and collects what gets logged.
"""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import logging
import multiprocessing
import os
import threading
import time
from urllib.parse import parse_qs

from .. import db

DEFAULT_MS = 100.0


queries_run = 0
"""How many times `blocking_query` has run in this process (an exercise check counts them)."""
_queries_lock = threading.Lock()  # several worker threads may finish a query at once


def blocking_query(delay: float = 0.2) -> str:
    """A real query through a blocking driver (`sqlite3`, or `psycopg` when `ASGI_LAB_DB` is a
    PostgreSQL URL): the shop's report "who spent most over the latest N orders?", over as
    many orders as take about `delay` seconds here (`asgi_lab.db.rows_for`). The calling
    thread waits for the database; returns the top customer's name ("Ada Lovelace")."""
    global queries_run
    name = db.report(db.thread_connection(), db.rows_for(delay * 1000))[0]
    with _queries_lock:
        queries_run += 1
    return name


async def async_query(delay: float = 0.2) -> str:
    """The same query through an async driver (`aiosqlite`, or `psycopg.AsyncConnection`):
    awaiting it gives the loop back while the database works. A connection per request keeps
    it short; an app would open a pool at lifespan startup (exercise 6)."""
    async with db.async_connection() as conn:
        return (await db.report_async(conn, db.rows_for(delay * 1000)))[0]


def warm_up_database() -> str:
    """Create the shop if needed and calibrate the report (`rows_for`) before measuring, so
    that no measurement includes either. Returns the database's name ("SQLite 3.40.1")."""
    db.ensure_shop()
    db.rows_per_ms()
    return db.describe()


_db_pool: concurrent.futures.ThreadPoolExecutor | None = None


def database_threads() -> concurrent.futures.ThreadPoolExecutor:
    """The app's own pool of 4 threads for blocking database calls (`thread pool` variant):
    its size bounds how many queries run at once, whatever the default executor does."""
    global _db_pool
    if _db_pool is None:
        _db_pool = concurrent.futures.ThreadPoolExecutor(4, thread_name_prefix="database")
    return _db_pool


# -- CPU work: a fixed amount of pure-Python computation ------------------------------------------

_iterations_per_ms: float | None = None


def _spin(iterations: int) -> int:
    total = 0
    for i in range(iterations):
        total += i * i % 7
    return total


def iterations_per_ms() -> float:
    """How many `_spin` iterations take one millisecond of CPU here, measured once.

    It counts the CPU time of this thread (`time.thread_time`), not the wall clock, so a busy
    machine that takes the core away for a moment does not shrink the work; best of 5."""
    global _iterations_per_ms
    if _iterations_per_ms is None:
        best = float("inf")
        for _ in range(5):
            started = time.thread_time()
            _spin(200_000)
            best = min(best, time.thread_time() - started)
        _iterations_per_ms = 200_000 / (max(best, 1e-6) * 1000)
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


def _worker_pid(seconds: float) -> int:
    time.sleep(seconds)  # long enough for the other workers to take the other jobs
    return os.getpid()


def warm_up_process_pool(timeout: float = 30.0) -> int:
    """Start every worker of the pool now and have each import this module, so that a
    measurement includes neither a process start nor an import. Returns the worker count."""
    pool = process_pool()
    workers = pool._max_workers
    seen: set[int] = set()
    deadline = time.monotonic() + timeout
    while len(seen) < workers and time.monotonic() < deadline:
        jobs = [pool.submit(_worker_pid, 0.05) for _ in range(workers)]
        seen.update(job.result(timeout) for job in jobs)
    return len(seen)


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
    """The same mistake, as it usually looks: a real query through a blocking driver (sqlite3,
    psycopg) in the coroutine. The loop waits with the thread."""
    if scope["type"] == "http":
        ms = milliseconds(scope)
        await respond(send, blocking_query(ms / 1000) if ms else "no query")


async def with_asyncio_sleep(scope, receive, send):
    """Fix, when the wait is only a wait: the loop runs other requests until the timer fires."""
    if scope["type"] == "http":
        await asyncio.sleep(milliseconds(scope) / 1000)
        await respond(send, "slept")


async def with_to_thread(scope, receive, send):
    """Fix, when the driver is blocking: run the query on a worker thread and await it."""
    if scope["type"] == "http":
        ms = milliseconds(scope)
        await respond(send, await asyncio.to_thread(blocking_query, ms / 1000) if ms else "no query")


async def with_run_in_executor(scope, receive, send):
    """The same fix on a thread pool of the app's own (`loop.run_in_executor(pool, ...)`):
    at most 4 queries at once, whatever else uses the loop's default executor."""
    if scope["type"] == "http":
        ms = milliseconds(scope)
        if ms:
            loop = asyncio.get_running_loop()
            name = await loop.run_in_executor(database_threads(), blocking_query, ms / 1000)
        await respond(send, name if ms else "no query")


async def with_async_driver(scope, receive, send):
    """Fix, with an async driver (aiosqlite, psycopg.AsyncConnection): the query is awaited."""
    if scope["type"] == "http":
        ms = milliseconds(scope)
        await respond(send, await async_query(ms / 1000) if ms else "no query")


async def cpu_bound(scope, receive, send):
    """Computation in the coroutine: it never awaits, so the loop is stuck until it ends."""
    if scope["type"] == "http":
        cpu_work(milliseconds(scope))
        await respond(send, "computed")


async def cpu_bound_in_thread(scope, receive, send):
    """Computation on a worker thread: the loop gets the GIL back every few milliseconds
    (sys.getswitchinterval()), so other requests are served; but only one thread computes
    at a time, so the work itself is no faster. On a free-threaded build (3.13t, 3.14t;
    PEP 703) there is no GIL: the threads compute on several cores at once."""
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


# -- work that outlives the response: a background task ------------------------------------------

logger = logging.getLogger(__name__)
"""Where `with_kept_task` reports a failed background task (the app's own log, not the server's)."""


async def smtp_deliver(address: str) -> None:
    """A stand-in for a mail client: after a moment, the mail server refuses the connection.
    Like a real one, its error says what failed, not for which request."""
    await asyncio.sleep(0.01)
    raise ConnectionRefusedError(111, "Connection refused")


async def send_welcome_email(user: str) -> None:
    """The background work a sign-up starts: it fails (see `smtp_deliver`)."""
    await smtp_deliver(f"{user}@example.org")


def user_of(scope: dict) -> str:
    """The `user` query parameter (`ada` by default)."""
    values = parse_qs(scope["query_string"].decode("latin-1")).get("user")
    return values[0] if values else "ada"


async def fire_and_forget(scope, receive, send):
    """The mistake: start the e-mail with `create_task` and drop the task. The client gets 200;
    the failure reaches only asyncio's log, when the task object is destroyed, and that log
    does not say which request (or which line) started the task."""
    if scope["type"] == "http":
        asyncio.create_task(send_welcome_email(user_of(scope)))  # the mistake: task dropped
        await respond(send, "welcome!")


async def with_task_group(scope, receive, send):
    """Fix, when the answer depends on the work: wait for it in an `asyncio.TaskGroup`
    (Python 3.11+). Its failure is raised here, in the handler: the server logs it with the
    handler in the traceback, and the client gets a 500 instead of a false "welcome!"."""
    if scope["type"] == "http":
        async with asyncio.TaskGroup() as group:
            group.create_task(send_welcome_email(user_of(scope)))
        await respond(send, "welcome!")


background_tasks: set[asyncio.Task] = set()
"""Tasks started by `with_kept_task` and not finished yet: asyncio itself keeps only weak
references to tasks, so a task nobody holds can be destroyed before it is done."""


def _report(task: asyncio.Task) -> None:
    """Done callback: forget the finished task, and log its failure under the task's name."""
    background_tasks.discard(task)
    if not task.cancelled() and task.exception() is not None:
        logger.error("Background task %r failed", task.get_name(), exc_info=task.exception())


async def with_kept_task(scope, receive, send):
    """Fix, when the work must outlive the response: keep a reference to the task and look at
    its result when it ends; name the task after the request, so that the log says which."""
    if scope["type"] == "http":
        target = scope["path"] + ("?" + scope["query_string"].decode("latin-1")
                                  if scope["query_string"] else "")
        task = asyncio.create_task(send_welcome_email(user_of(scope)),
                                   name=f"welcome e-mail for {scope['method']} {target}")
        background_tasks.add(task)
        task.add_done_callback(_report)
        await respond(send, "welcome!")


VARIANTS = {
    "time.sleep": blocking_sleep,
    "asyncio.sleep": with_asyncio_sleep,
}
"""The blocking wait and its fix, by the name a chart shows."""

DB_VARIANTS = {
    "blocking driver": blocking_database,
    "asyncio.to_thread": with_to_thread,
    "thread pool": with_run_in_executor,
    "async driver": with_async_driver,
}
"""A real query through a blocking driver, and its three fixes, by the name a chart shows."""

CPU_VARIANTS = {
    "in the coroutine": cpu_bound,
    "asyncio.to_thread": cpu_bound_in_thread,
    "process pool": cpu_bound_in_process,
}

"""A CPU-bound handler and its two ways out, by the name a chart shows."""

TASK_VARIANTS = {
    "fire and forget": fire_and_forget,
    "asyncio.TaskGroup": with_task_group,
    "kept task": with_kept_task,
}
"""Background work that fails: the mistake and its two fixes."""
