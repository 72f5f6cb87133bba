"""The two long-lived workloads of the threads-vs-coroutines experiment, for both interfaces.

    python -m asgi_lab asgi asgi_lab.apps.sse:app                  # coroutines
    python -m asgi_lab wsgi asgi_lab.apps.sse:wsgi_app --threads 0  # one thread per client
    python -m uvicorn asgi_lab.apps.sse:app --http h11              # the same app, elsewhere

Three routes, the same on both sides:

- `GET /events` streams Server-Sent Events (WHATWG HTML, "Server-sent events"): one event
  every `interval` seconds (query `?interval=1`, default 1 s; `?events=N` ends the stream
  after N events). Each client has its own clock, started when its request arrives, so load
  is spread over the second instead of arriving all at once. Every event carries three
  numbers: `data: SEQ DUE SENT`, its sequence number, when it was due and when the server
  actually sent it (wall clock, `time.time()`, comparable between processes on one machine).
  SENT - DUE is how late the server was; the client's receive time - SENT is delivery lag.
- `GET /poll` is long polling: the request is held until the next message is published, or
  up to `?timeout=30` seconds (then 204 No Content). A publisher on a timer publishes a
  message every `PUBLISH_PERIOD` seconds (`?period=` on the first request changes it) at
  wall-clock multiples of the period, so every server publishes at the same moments. The body
  is `SEQ PUBLISHED SENT`.
- `GET /ready` answers `ready` at once: the experiment runner polls it before measuring.
- `GET /block?ms=500` spends `ms` milliseconds in one blocking call inside C (libc's
  `usleep` through ctypes, as a C database driver waits on its own socket) and then answers.
  `asgi_lab/experiments/stall.py` measures what the *other* clients see meanwhile: nothing on a
  thread per client, a stall of every stream under gevent or on an event loop.

The point of the lab is what each side spends while a client waits. The ASGI app waits in
`await` (a suspended coroutine: a few hundred bytes); the WSGI app waits in `time.sleep()` or
on a `threading.Condition` (a whole thread with its stack, for as long as the client stays).
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import threading
import time
import weakref
from itertools import count
from urllib.parse import parse_qs

INTERVAL = 1.0
"""Seconds between two events of one SSE stream."""
PUBLISH_PERIOD = 2.0
"""Seconds between two long-polling messages."""
POLL_TIMEOUT = 30.0
"""How long a long-polling request is held at most, waiting for a message."""

SSE_HEADERS = [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache")]
TEXT_HEADERS = [(b"content-type", b"text/plain")]


def sse_event(seq: int, due: float, sent: float) -> bytes:
    """One event in the text/event-stream format: `id:` and `data:` lines, a blank line."""
    return b"id: %d\ndata: %d %.6f %.6f\n\n" % (seq, seq, due, sent)


def query_number(query: str, name: str, default: float) -> float:
    """A positive number from the query string, or `default` (missing or unreadable)."""
    values = parse_qs(query).get(name)
    try:
        value = float(values[0]) if values else default
    except ValueError:
        return default
    return value if value > 0 else default


def stream_params(query: str) -> tuple[float, int]:
    """`?interval=` (seconds between events) and `?events=` (0: no end) of an SSE request."""
    return query_number(query, "interval", INTERVAL), int(query_number(query, "events", 0))


def poll_params(query: str) -> tuple[float, float]:
    """`?timeout=` (how long to hold the request) and `?period=` of a long-polling request."""
    return query_number(query, "timeout", POLL_TIMEOUT), query_number(query, "period", PUBLISH_PERIOD)


def blocking_c_call(ms: float) -> None:
    """Block in C for `ms` milliseconds: libc's `usleep`, called through ctypes.

    Neither gevent's monkey-patching nor asyncio can see inside a C function: until it
    returns, the thread that called it runs nothing else. (ctypes releases the GIL during
    the call, so *other OS threads* run on, as they do on a free-threaded CPython without a
    GIL; greenlets and coroutines share this one thread, GIL or not.)
    """
    _libc().usleep(int(ms * 1000))


_libc_handle = None


def _libc():
    global _libc_handle
    if _libc_handle is None:
        _libc_handle = ctypes.CDLL(ctypes.util.find_library("c") or None)
    return _libc_handle


def block_ms(query: str) -> float:
    """`?ms=` of a `/block` request, at most 10 s (default 500 ms)."""
    return min(query_number(query, "ms", 500.0), 10_000.0)


def next_publication(period: float, now: float) -> float:
    """Messages are published at wall-clock multiples of `period`: the next one after `now`."""
    return (now // period + 1) * period


# == ASGI =====================================================================================


async def app(scope, receive, send):
    """The ASGI side: one coroutine per request, suspended in `await` while it waits.

    `/events` streams right here, in this coroutine, not in a helper coroutine it would
    await: every coroutine of an `await` chain stays alive as long as the stream does, and
    with thousands of clients one more suspended frame each costs about 0.4 KB per client
    (measured with `benchmarks/sse_clients.py`). Memory per waiting client is the whole point
    of the experiment, so the app keeps its own share small.
    """
    if scope["type"] != "http":
        return  # lifespan: nothing to set up
    path = scope["path"]
    if path == "/poll":
        await long_poll(send, *poll_params(scope["query_string"].decode("latin-1")))
        return
    if path == "/block":  # a blocking call in a coroutine: the whole loop waits (notebook 05)
        ms = block_ms(scope["query_string"].decode("latin-1"))
        blocking_c_call(ms)
        await small_response(send, path, b"blocked %.0f ms" % ms)
        return
    if path != "/events":
        await small_response(send, path)
        return

    # Server-Sent Events: an event every `interval` seconds until the client leaves (or
    # `limit` events). How does the app learn that the client left? It depends on the
    # server's ASGI spec version (the way Starlette's StreamingResponse decides too):
    # - 2.4 and later: send() on a closed connection raises an OSError subclass. Between two
    #   events the coroutine just sleeps; the next send() tells it the client has gone.
    #   Waiting costs this suspended coroutine, one future and one timer (`sleep_until`).
    # - before 2.4 (uvicorn says 2.3): send() after a disconnect may be a silent no-op, so an
    #   app that only sends would stream to nobody forever. It must listen too: between two
    #   events it waits for whichever comes first, the next tick or receive() returning
    #   http.disconnect. `asyncio.timeout_at` gives both in one `await`, without a second
    #   task per client; it costs a pending receive() per client on top of the timer.
    interval, limit = stream_params(scope["query_string"].decode("latin-1"))
    send_raises = spec_version(scope) >= (2, 4)
    await receive()  # http.request: the (empty) body of the GET
    await send({"type": "http.response.start", "status": 200, "headers": SSE_HEADERS})
    loop = asyncio.get_running_loop()
    started, wall_started = loop.time(), time.time()
    for seq in count():
        if limit and seq >= limit:
            break
        if seq:  # the first event goes out at once
            due = started + seq * interval
            if send_raises:
                await sleep_until(loop, due)
            else:
                try:
                    async with asyncio.timeout_at(due):
                        while (await receive())["type"] != "http.disconnect":
                            pass
                    return  # the client left
                except TimeoutError:
                    pass  # the usual case: time for the next event
        try:
            await send({"type": "http.response.body", "more_body": True,
                        "body": sse_event(seq, wall_started + seq * interval, time.time())})
        except OSError:
            return  # the client left (ASGI www spec 2.4)
    await send({"type": "http.response.body", "body": b""})


def spec_version(scope) -> tuple[int, ...]:
    """The server's ASGI www spec version, e.g. (2, 4); "2.0" if it does not say."""
    return tuple(int(part) for part in scope.get("asgi", {}).get("spec_version", "2.0").split("."))


async def small_response(send, path: str, body: bytes = b"ready") -> None:
    """`/ready` (the experiment runner waits for it), `/block`'s answer, or 404."""
    status = 200 if path in ("/ready", "/block") else 404
    if status == 404:
        body = b"not found: try /events or /poll"
    await send({"type": "http.response.start", "status": status, "headers": TEXT_HEADERS})
    await send({"type": "http.response.body", "body": body})


def sleep_until(loop: asyncio.AbstractEventLoop, when: float) -> asyncio.Future:
    """`await sleep_until(loop, t)` is `await asyncio.sleep(t - loop.time())` without the
    `sleep` coroutine: a future and a timer that resolves it. With thousands of clients
    waiting at once, the coroutine frame we skip is a few hundred bytes each."""
    future = loop.create_future()
    loop.call_at(when, _wake, future)
    return future


def _wake(future: asyncio.Future) -> None:
    if not future.done():  # cancelled meanwhile: the task was stopped
        future.set_result(None)


class AsyncPublisher:
    """Long polling, ASGI side: every waiting request awaits one shared `asyncio.Event`.

    A timer on the event loop (no thread, no task) publishes at the next multiple of `period`:
    it records the message, wakes every waiter by setting the event, and starts a fresh one.
    """

    def __init__(self, period: float) -> None:
        self.period = period
        self.seq = 0
        self.message = (0, 0.0)
        self.event = asyncio.Event()
        self._schedule()

    def _schedule(self) -> None:
        delay = next_publication(self.period, time.time()) - time.time()
        asyncio.get_running_loop().call_later(delay, self.publish)

    def publish(self) -> None:
        self.seq += 1
        self.message = (self.seq, time.time())
        self.event.set()
        self.event = asyncio.Event()
        self._schedule()

    async def wait(self, timeout: float) -> tuple[int, float] | None:
        """The next message, or None after `timeout` seconds."""
        event = self.event
        try:
            async with asyncio.timeout(timeout):
                await event.wait()
        except TimeoutError:
            return None
        return self.message


_async_publishers: "weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, AsyncPublisher]" = \
    weakref.WeakKeyDictionary()


def async_publisher(period: float) -> AsyncPublisher:
    """The publisher of the running event loop, started on first use (one per server; the
    entry goes away with its loop)."""
    loop = asyncio.get_running_loop()
    publisher = _async_publishers.get(loop)
    if publisher is None:
        publisher = _async_publishers[loop] = AsyncPublisher(period)
    return publisher


async def long_poll(send, timeout: float, period: float) -> None:
    """Hold the request until the next message (200) or until `timeout` (204)."""
    message = await async_publisher(period).wait(timeout)
    if message is None:
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})
        return
    seq, published = message
    body = b"%d %.6f %.6f" % (seq, published, time.time())
    await send({"type": "http.response.start", "status": 200, "headers": TEXT_HEADERS})
    await send({"type": "http.response.body", "body": body})


# == WSGI =====================================================================================


def wsgi_app(environ, start_response):
    """The WSGI side (PEP 3333): the same routes; a waiting client holds a whole thread."""
    path = environ.get("PATH_INFO", "")
    query = environ.get("QUERY_STRING", "")
    if path == "/events":
        start_response("200 OK", [("Content-Type", "text/event-stream"), ("Cache-Control", "no-cache")])
        return event_stream(*stream_params(query))
    if path == "/poll":
        timeout, period = poll_params(query)
        message = thread_publisher(period).wait(timeout)
        if message is None:
            start_response("204 No Content", [])
            return []
        seq, published = message
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"%d %.6f %.6f" % (seq, published, time.time())]
    if path == "/ready":
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"ready"]
    if path == "/block":
        ms = block_ms(query)
        blocking_c_call(ms)
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"blocked %.0f ms" % ms]
    start_response("404 Not Found", [("Content-Type", "text/plain")])
    return [b"not found: try /events or /poll"]


def event_stream(interval: float, limit: int):
    """SSE as a WSGI iterable: the server's thread runs this generator, sleeping between events.

    The thread learns that the client left only when writing an event fails; the server then
    calls `close()` on the generator (PEP 3333), which ends it at its `yield`.
    """
    started = time.time()
    for seq in count():
        if limit and seq >= limit:
            return
        due = started + seq * interval
        delay = due - time.time()
        if delay > 0:
            time.sleep(delay)
        yield sse_event(seq, due, time.time())


class ThreadPublisher:
    """Long polling, WSGI side: every waiting request blocks its thread on one Condition.

    A daemon thread publishes at each multiple of `period` and wakes all waiters.
    """

    def __init__(self, period: float) -> None:
        self.period = period
        self.seq = 0
        self.message = (0, 0.0)
        self.condition = threading.Condition()
        threading.Thread(target=self._run, name="publisher", daemon=True).start()

    def _run(self) -> None:
        while True:
            time.sleep(max(0.0, next_publication(self.period, time.time()) - time.time()))
            with self.condition:
                self.seq += 1
                self.message = (self.seq, time.time())
                self.condition.notify_all()

    def wait(self, timeout: float) -> tuple[int, float] | None:
        with self.condition:
            seq = self.seq
            self.condition.wait_for(lambda: self.seq != seq, timeout)
            return self.message if self.seq != seq else None


_thread_publisher: ThreadPublisher | None = None
_thread_publisher_lock = threading.Lock()


def thread_publisher(period: float) -> ThreadPublisher:
    """The process's publisher thread, started on first use."""
    global _thread_publisher
    with _thread_publisher_lock:
        if _thread_publisher is None:
            _thread_publisher = ThreadPublisher(period)
        return _thread_publisher
