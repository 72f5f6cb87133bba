"""Exercise 4: Server-Sent Events that stop when the client leaves."""

from __future__ import annotations

import asyncio
import threading
import time

from ...background import server_errors
from .. import client
from ..feedback import fail, passed, register
from ..harness import AppTimeout, ASGIDriver, describe_exception, http_scope, run
from .common import require_callable, serve, unawaited_note


# == 4. Server-Sent Events that stop when the client leaves ========================================

SSE = "SSE that stops"
register(
    SSE, "check_sse",
    concept="an event stream never ends by itself, and a server older than ASGI spec 2.4 does not "
            "tell you through send() that the client has gone: your app must listen while it "
            "talks.",
    api="receive() returns {'type': 'http.disconnect'} once the client has gone; run it in a task "
        "of its own (asyncio.create_task) beside the loop that sends, and stop when it finishes.",
    code="await receive()  # the request; left = asyncio.create_task(receive()); while not "
         "left.done(): send one event; await asyncio.wait([left], timeout=0.05)")
SSE_EVENTS = 3        # events read before the client leaves
SSE_PATIENCE = 1.0    # seconds an app may take to notice
_SSE_FIELDS = ("data:", "event:", "id:", "retry:", ":")  # WHATWG HTML, "Server-sent events"


class _SpecTwoThreeApp:
    """Run an app as a server implementing ASGI spec 2.3 would: after the client has left,
    `send()` neither delivers nor raises. The app must learn it from `receive()`."""

    def __init__(self, app) -> None:
        self.app = app
        self.sends: list[float] = []
        self.sends_after_disconnect = 0
        self.finished_at: float | None = None
        self.stop = threading.Event()

    async def __call__(self, scope, receive, send):
        scope = dict(scope, asgi={**scope.get("asgi", {}), "spec_version": "2.3"})

        async def quiet_send(message):
            if self.stop.is_set():
                raise asyncio.CancelledError  # the check is over: end an app that never stops
            self.sends.append(time.monotonic())
            try:
                await send(message)
            except OSError:
                self.sends_after_disconnect += 1

        try:
            await self.app(scope, receive, quiet_send)
        finally:
            self.finished_at = time.monotonic()


def check_sse(app) -> None:
    """Exercise 4: `GET /` answers 200 with content-type text/event-stream and sends one
    event (`data: ...` then a blank line) about every 0.05 s, until the client leaves. It must
    notice, through receive() returning http.disconnect, within a second."""
    require_callable(SSE, app)
    hint = ("run a task that awaits receive() until it returns http.disconnect, and stop "
            "sending events then (asyncio.wait(..., return_when=FIRST_COMPLETED), or an "
            "asyncio.Event the sending loop checks)")

    async def in_process():
        driver = ASGIDriver(app, _spec_2_3_scope()).start()
        await driver.send_input({"type": "http.request", "body": b"", "more_body": False})
        bodies = []
        try:
            while len(bodies) < SSE_EVENTS:
                message = await driver.receive_output(1.0)
                if message is None:
                    break
                if message["type"] == "http.response.body":
                    bodies.append(message)
        except AppTimeout:
            pass
        await asyncio.sleep(0.01)
        ended_early = driver.done  # before the client left
        driver.disconnect()
        finished = await driver.wait(SSE_PATIENCE)
        await driver.stop()
        return driver, bodies, ended_early, finished

    outcome = run(in_process)
    driver, bodies, ended_early, finished = outcome.value
    if driver.problems:
        fail(SSE, driver.problems[0], "http.response.start first, then each event as an "
                                      "http.response.body with more_body=True")
    if driver.error is not None and not isinstance(driver.error, asyncio.CancelledError):
        fail(SSE, f"your app raised {describe_exception(driver.error)}.", hint)
    if outcome.unawaited and not bodies:
        fail(SSE, unawaited_note(outcome.unawaited) + ".", "await every send() and receive()")
    starts = driver.sent("http.response.start")
    if not starts:
        fail(SSE, "your app sent no http.response.start within a second.")
    content_type = dict(starts[0].get("headers", [])).get(b"content-type", b"")
    if not content_type.startswith(b"text/event-stream"):
        fail(SSE, f"the content-type is {content_type.decode('latin-1') or 'missing'!r}; an "
                  "EventSource needs text/event-stream.",
             "headers=[(b'content-type', b'text/event-stream'), (b'cache-control', b'no-cache')]")
    if len(bodies) < SSE_EVENTS and driver.complete:
        fail(SSE, f"after {len(bodies)} event(s) your app sent more_body=False: that ends the "
                  "response, and the stream with it.", "send every event with more_body=True")
    if len(bodies) < SSE_EVENTS:
        fail(SSE, f"we waited for {SSE_EVENTS} events and got {len(bodies)} in time "
                  "(expected one about every 0.05 s).",
             "await asyncio.sleep(0.05) between events, and send each with more_body=True")
    text = b"".join(body.get("body", b"") for body in bodies).decode("utf-8", "replace")
    events = [event.split("\n") for event in text.split("\n\n") if event.strip()]
    if not text.endswith("\n\n") or not all(
            any(line.startswith("data:") for line in lines)
            and all(line.startswith(_SSE_FIELDS) for line in lines) for lines in events):
        fail(SSE, f"the stream so far is {text[:120]!r}: each event is one or more lines "
                  "'data: ...' (and maybe 'event:', 'id:') and ends with a blank line.",
             "body = f'data: {n}\\n\\n'.encode()")
    if ended_early:
        fail(SSE, f"your app returned after {len(bodies)} events, with the client still there"
                  + ("" if driver.complete else " and without ending the response") + ": an "
                  "event stream runs until the client leaves.",
             "loop until receive() returns http.disconnect")
    if not finished:
        kept = driver.sends_after_disconnect
        fail(SSE, f"the client disconnected and your SSE loop kept sending for {SSE_PATIENCE:g} s "
                  f"({kept} event{'s' if kept != 1 else ''} nobody will read), and had not "
                  "stopped when we gave up.", hint)

    # Now over a real socket: the client vanishes (TCP reset) after three events.
    wrapped = _SpecTwoThreeApp(app)
    with server_errors(), serve(wrapped, "sse") as server:
        stream = client.EventStream(server.address, "/")
        events = stream.read_events(SSE_EVENTS, timeout=2.0)
        left_at = time.monotonic()
        stream.abort()
        deadline = left_at + SSE_PATIENCE
        while wrapped.finished_at is None and time.monotonic() < deadline:
            time.sleep(0.01)
        finished_at = wrapped.finished_at
        wrapped.stop.set()
    if len(events) < SSE_EVENTS:
        fail(SSE, f"over a real socket we received {len(events)} event(s) in 2 s; expected "
                  f"{SSE_EVENTS}.")
    if finished_at is None:
        late = [t for t in wrapped.sends if t > left_at]
        span = (late[-1] - left_at) if late else SSE_PATIENCE
        fail(SSE, f"over a real socket, the client disconnected and your SSE loop kept sending "
                  f"for {span:.1f} s ({len(late)} events nobody will read).", hint)
    passed(SSE, f"{SSE_EVENTS} events, then the client left: your app stopped "
                f"{(finished_at - left_at) * 1000:.0f} ms later (over loopback).")


def _spec_2_3_scope() -> dict:
    return http_scope("GET", "/", headers=[(b"accept", b"text/event-stream")], spec_version="2.3")
