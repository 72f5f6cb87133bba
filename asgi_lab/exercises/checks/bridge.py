"""Stretch exercise 11: a WSGI app that needs an async function, bridged into one event loop.

A WSGI server calls the app as a plain function (PEP 3333) on one of its threads: the app
cannot `await`. To use an async client it hands the coroutine to an event loop running in a
thread of its own, with `asyncio.run_coroutine_threadsafe(coro, loop)` (Python docs,
"Scheduling From Other Threads"), and waits for the result. One long-lived loop, shared by
every request: `asyncio.run()` per request makes a new loop each time, and async clients (an
aiohttp session, an asyncpg pool, our `PriceService`) belong to the loop they started on.
"""

from __future__ import annotations

import concurrent.futures
import io
import logging
import re
import threading
import warnings

from ...background import server_errors
from .. import client
from ..fakes import prices
from ..feedback import fail, passed, register
from ..harness import describe_exception
from .common import require_callable, serve

BRIDGE = "WSGI-to-asyncio bridge"
CONCURRENT = 6
register(
    BRIDGE, "check_async_bridge",
    concept="a WSGI app is a plain function on a server thread: it cannot await. An event loop "
            "running in a thread of its own can run the coroutine for it, while the request "
            "thread waits for the answer. Start that loop once and share it: every request hands "
            "its coroutine to the same loop.",
    api="loop = asyncio.new_event_loop(), run by threading.Thread(target=loop.run_forever, "
        "daemon=True).start() once, outside the app; in the app, future = "
        "asyncio.run_coroutine_threadsafe(prices.fetch(item), loop) and future.result(timeout=5), "
        "which returns the value or raises the coroutine's exception in the request thread.",
    code="text = asyncio.run_coroutine_threadsafe(prices.fetch(item), loop).result(timeout=5); "
         "and for errors: except Exception: logging.getLogger('prices').exception('fetch failed'); "
         "start_response('500 Internal Server Error', [('Content-Type', 'text/plain')], "
         "sys.exc_info()); return [b'price service failed\\n']")


class _Watched:
    """The student's app as our WSGI server calls it: we note each request's thread, and give
    the app a `wsgi.errors` stream we can read (PEP 3333: "a text-mode output stream")."""

    def __init__(self, app) -> None:
        self.app = app
        self.request_threads: set[int] = set()
        self.errors = io.StringIO()
        self.lock = threading.Lock()

    def __call__(self, environ, start_response):
        with self.lock:
            self.request_threads.add(threading.get_ident())
        environ["wsgi.errors"] = _LockedStream(self.errors, self.lock)
        return self.app(environ, start_response)


class _LockedStream:
    """A text stream several request threads may write to."""

    def __init__(self, stream: io.StringIO, lock: threading.Lock) -> None:
        self.stream, self.lock = stream, lock

    def write(self, text: str) -> int:
        with self.lock:
            return self.stream.write(text)

    def writelines(self, lines) -> None:
        for line in lines:
            self.write(line)

    def flush(self) -> None:
        pass


class _CollectLogs(logging.Handler):
    """Every log record of the app's own loggers during the check, formatted with its traceback."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.text: list[str] = []
        self.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        self.text.append(self.format(record))


def _get(address, item: str):
    return client.request(address, target=f"/?item={item}", timeout=10.0)


def _coroutine_text(body: bytes) -> bool:
    return b"<coroutine object" in body


def check_async_bridge(app) -> None:
    """Stretch 11: the WSGI `app` answers `GET /?item=tea` with 200 and the text
    `await prices.fetch("tea")` returns ("tea: 3.20 EUR"), running the coroutine on one
    long-lived event loop in its own thread, shared by every request; when the coroutine
    raises, the answer is a 500 and the log says what happened."""
    require_callable(BRIDGE, app)
    prices.reset()
    watched = _Watched(app)
    logs = _CollectLogs()
    root = logging.getLogger()
    root.addHandler(logs)
    try:
        with warnings.catch_warnings(record=True) as caught, server_errors() as server_log, \
                serve(watched, "async-bridge", kind="wsgi", threads=CONCURRENT + 2) as server:
            warnings.simplefilter("always", RuntimeWarning)
            first = _get(server.address, "tea")
            items = ["tea", "coffee", "cake"] * (CONCURRENT // 3)
            with concurrent.futures.ThreadPoolExecutor(CONCURRENT) as pool:
                many = list(pool.map(lambda item: _get(server.address, item), items))
            most_in_flight = prices.most_in_flight
            failing = _get(server.address, "boom")
            after = _get(server.address, "cake")
    finally:
        root.removeHandler(logs)
    log_text = "\n".join([*(logging.Formatter().format(r) for r in server_log), *logs.text,
                          watched.errors.getvalue()])
    unawaited = [str(w.message) for w in caught if "never awaited" in str(w.message)]

    if _coroutine_text(first.body) or (unawaited and prices.calls == 0):
        fail(BRIDGE, "your app answered with the text of a coroutine object (<coroutine object "
                     "PriceService.fetch ...>): calling an async function only makes a coroutine, "
                     "and nothing ran it (Python warns: \"coroutine ... was never awaited\"). A "
                     "WSGI server calls your app as a plain function, which cannot await.",
             api="asyncio.run_coroutine_threadsafe(coro, loop) runs a coroutine on a loop in "
                 "another thread and returns a concurrent.futures.Future; .result(timeout=...) "
                 "waits for it.")
    _expect_price(first, "tea", "for GET /?item=tea", log_text)
    if len(prices.loops) > 1:
        fail(BRIDGE, f"{len(prices.loops)} different event loops ran prices.fetch for "
                     f"{3 + len(items)} requests: a new loop per request (asyncio.run, or "
                     "async_to_sync, makes one each time). That costs a loop per request, and an "
                     "async client that belongs to one loop (prices, an aiohttp session, a "
                     "database pool) then fails with 'belongs to another event loop'.",
             concept="one event loop, started once and living as long as the app, runs every "
                     "request's coroutine; the request threads only hand coroutines to it.")
    loop_thread = next(iter(prices.threads))
    if loop_thread in watched.request_threads:
        fail(BRIDGE, "prices.fetch ran on one of the server's request threads: that thread was "
                     "busy running an event loop instead of waiting for it, so the loop only "
                     "ran while that request lasted.",
             "start the loop in a thread of its own: threading.Thread(target=loop.run_forever, "
             "daemon=True).start()")
    for response, item in zip(many, items):
        _expect_price(response, item, f"with {CONCURRENT} requests at once, GET /?item={item}",
                      log_text)
    if most_in_flight < 2:
        fail(BRIDGE, f"{CONCURRENT} requests came at once, and their fetches ran one after the "
                     "other (never two at the same time): something serialises them, such as a "
                     "lock held while waiting, or loop.run_until_complete guarded by one.",
             "let each request thread wait on its own future: "
             "asyncio.run_coroutine_threadsafe(...).result(timeout=5), with no lock around it",
             concept="the loop can run many coroutines at once, each paused at its await; the "
                     "request threads must only hand them over and wait, each for its own.")
    if failing.status == 200:
        fail(BRIDGE, f"for GET /?item=boom prices.fetch raised LookupError, and your app answered "
                     f"200 {failing.body[:60]!r}: the error was hidden from the client.",
             "except Exception: log it, then start_response('500 Internal Server Error', ..., "
             "sys.exc_info())",
             concept="an error must reach the client as an error (a 500), or a cache, a retry or "
                     "a person will take the made-up answer for the real one.")
    if failing.status != 500:
        fail(BRIDGE, f"for GET /?item=boom (prices.fetch raised LookupError) your app answered "
                     f"{failing.status}; expected 500.")
    if "LookupError" not in log_text or "boom" not in log_text:
        fail(BRIDGE, "for GET /?item=boom your app answered 500, and nothing was logged about "
                     "why: whoever runs the service sees the 500 and cannot tell what failed.",
             "logging.getLogger(__name__).exception('fetching %r failed', item) inside the "
             "except block (or let the exception propagate: the server answers 500 and logs it "
             "with its traceback)",
             concept="an error answer is for the client; the log is for the person who runs the "
                     "service: it needs the exception, its message and where it happened.")
    _expect_price(after, "cake", "after the error, GET /?item=cake", log_text)
    where = "with its traceback" if "Traceback" in log_text else "(without a traceback)"
    passed(BRIDGE, f"{2 + len(items)} prices fetched on one event loop in its own thread; "
                   f"{CONCURRENT} requests at once overlapped (up to {most_in_flight} fetches in "
                   f"flight); the error became a 500, logged {where}.")


def _expect_price(response, item: str, when: str, log_text: str) -> None:
    expected = f"{item}: {prices_text(item)}"
    if response.status == 200 and response.body.decode("utf-8", "replace").strip() == expected:
        return
    if response.status == 500:
        found = _last_error(log_text)
        fail(BRIDGE, f"{when} your app answered 500" + (f"; the log says: {found}" if found else
                                                        ", and nothing was logged") + ".")
    fail(BRIDGE, f"{when} your app answered {response.status} {response.body[:60]!r}; expected "
                 f"200 {expected!r}.")


def prices_text(item: str) -> str:
    from ..fakes import PRICES
    return PRICES[item]


def _last_error(log_text: str) -> str:
    """The last 'SomeError: message' line of a log (the bottom line of a traceback)."""
    found = re.findall(r"^(\w+(?:Error|Exception|Warning)\b.*)$", log_text, re.MULTILINE)
    return found[-1][:300] if found else ""
