"""One check per exercise: run the student's callable, say in plain words what is wrong.

Each `check_*` function either prints "✓ ... passed" or raises `ExerciseFailed` with the
problem and a hint. They use two instruments:

- the in-process harness (`harness.py`) where the *order and shape of messages* is the
  point: it sees every message and knows the spec, so it can say "http.response.body before
  http.response.start" rather than "connection reset";
- our real servers over loopback where the *network* is the point: a client that vanishes
  (SSE), requests that must not wait for each other (a blocking handler), bytes on the wire
  (chunked framing).

The exercises are in `notebooks/exercises/`; every check accepts any correct solution, not
only ours (see `tests/test_exercises.py` for the alternatives it is tested with).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import sys
import threading
import time

from ..background import serve_in_background
from . import client
from .fakes import FakeDatabase
from .feedback import ExerciseFailed, fail, passed
from .harness import (ASGIDriver, AppTimeout, NotAsync, call_wsgi, describe_exception,
                      http_request, http_scope, lifespan_scope, run, websocket_scope)

__all__ = ["check_wsgi_app", "check_wsgi_middleware", "check_streamed_body", "check_sse",
           "check_chat", "check_lifespan_state", "check_unblocked", "check_streaming",
           "check_lifespan_middleware", "ExerciseFailed"]


# -- shared helpers --------------------------------------------------------------------------------

def _require_callable(exercise: str, app, what: str = "app") -> None:
    if not callable(app):
        fail(exercise, f"the {what} you passed is a {type(app).__name__}, not a function.",
             f"pass the {what} itself: check(my_{what}), not check(my_{what}())")


def _unawaited_note(unawaited: list[str]) -> str:
    names = ", ".join(sorted(set(unawaited)))
    return (f"Python warned that a coroutine was never awaited ({names}): a send(...) or "
            "receive() without `await` does nothing at all")


def _explain_http(exercise: str, result, unawaited: list[str], hint: str) -> None:
    """Fail with the most useful explanation of what went wrong in one HTTP exchange."""
    if result.problems:
        fail(exercise, result.problems[0], hint)
    if result.error is not None:
        error = result.error
        if isinstance(error, NotAsync):
            fail(exercise, f"{error}.", "write `async def app(scope, receive, send):`")
        fail(exercise, f"your app raised {describe_exception(error)}.", hint)
    if unawaited and (result.status is None or result.timed_out):
        fail(exercise, _unawaited_note(unawaited) + ", so your response was never sent.",
             "write `await send({...})` and `await receive()`")
    if result.timed_out:
        fail(exercise, "your app sent nothing more for 2 s and did not finish its response.",
             "the last http.response.body must have more_body=False (or leave more_body out)")
    if result.status is None:
        fail(exercise, "your app returned without sending http.response.start.", hint)
    if not result.driver.complete:
        fail(exercise, "your app returned before its response was complete: the last "
                       "http.response.body must have more_body=False.", hint)


def _http(app, **request) -> tuple:
    outcome = run(lambda: http_request(app, **request))
    return outcome.value, outcome.unawaited


@contextlib.contextmanager
def _server_errors():
    """Collect what our server logs about the app ("Exception in ASGI application"), instead
    of letting it print a traceback into the student's notebook."""
    records: list[logging.LogRecord] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    logger = logging.getLogger("asgi_lab.error")
    handler, propagate = Collect(logging.WARNING), logger.propagate
    logger.addHandler(handler)
    logger.propagate = False
    try:
        yield records
    finally:
        logger.removeHandler(handler)
        logger.propagate = propagate


def _describe_log(records: list[logging.LogRecord]) -> str:
    for record in records:
        if record.exc_info and record.exc_info[1] is not None:
            return f"your app raised {describe_exception(record.exc_info[1])}"
    return f"the server said: {records[0].getMessage()}" if records else ""


def _serve(app, name: str, **settings):
    return serve_in_background(app, name=f"exercise:{name}", lifespan=settings.pop("lifespan", "off"),
                               access_log=False, timeout_graceful_shutdown=0.5, **settings)


# == 1. A WSGI app ====================================================================================

WSGI_APP = "WSGI app"
_GREETINGS = [("name=Ada", "Hello, Ada!"), ("", "Hello, world!"), ("name=Zo%C3%AB", "Hello, Zoë!")]


def check_wsgi_app(app) -> None:
    """Exercise 1: `GET /?name=Ada` answers 200, text/plain, "Hello, Ada!" (UTF-8);
    without a name, "Hello, world!"."""
    _require_callable(WSGI_APP, app)
    for query, expected in _GREETINGS:
        target = "/?" + query if query else "/"
        result = call_wsgi(app, query_string=query)
        if result.problems:
            fail(WSGI_APP, f"for GET {target}, " + result.problems[0],
                 "start_response('200 OK', [('Content-Type', 'text/plain; charset=utf-8')]) "
                 "then return [body_bytes]")
        if result.error is not None:
            fail(WSGI_APP, f"for GET {target}, your app raised {describe_exception(result.error)}.",
                 "the query string is in environ['QUERY_STRING']; urllib.parse.parse_qs reads it")
        if result.status_code != 200:
            fail(WSGI_APP, f"GET {target} answered {result.status!r}; expected '200 OK'.")
        content_type = result.header("content-type") or ""
        if not content_type.startswith("text/plain"):
            fail(WSGI_APP, f"the Content-Type is {content_type or 'missing'!r}; expected text/plain.",
                 "add ('Content-Type', 'text/plain; charset=utf-8') to the headers")
        text = result.body.decode("utf-8", "replace")
        if text.strip() != expected:
            hint = ("urllib.parse.parse_qs(environ['QUERY_STRING']) decodes %C3%AB for you; "
                    "then encode the body with .encode('utf-8')") if "%" in query else \
                   "without ?name=..., greet the world"
            fail(WSGI_APP, f"GET {target} answered {text!r}; expected {expected!r}.", hint)
        length = result.header("content-length")
        if length is not None and length != str(len(result.body)):
            fail(WSGI_APP, f"Content-Length says {length} but the body is {len(result.body)} bytes "
                           f"(for GET {target}).",
                 "count bytes, not characters: len(body_bytes), after .encode('utf-8')")
    with _server_errors() as errors, _serve(app, "wsgi-app", kind="wsgi") as server:
        response = client.request(server.address, target="/?name=Ada")
    if response.status != 200 or response.body.decode("utf-8", "replace").strip() != "Hello, Ada!":
        fail(WSGI_APP, f"over a real socket our WSGI server got {response.status} "
                       f"{response.body[:80]!r}. {_describe_log(errors)}")
    passed(WSGI_APP, "3 greetings right in process, and over loopback on our WSGI server.")


# == 2. WSGI middleware ===============================================================================

WSGI_MIDDLEWARE = "WSGI middleware"


class _StreamingBody:
    """An inner app's response body that streams (three pieces) and must be closed."""

    def __init__(self) -> None:
        self.closed = False

    def __iter__(self):
        yield b"one "
        yield b"two "
        yield b"three"

    def close(self) -> None:
        self.closed = True


def check_wsgi_middleware(middleware) -> None:
    """Exercise 2: `middleware(app)` gives every request an id: the incoming X-Request-ID
    header if there is one, a new unique one otherwise; the inner app finds it in
    `environ["request_id"]` and the response carries it as X-Request-ID. Streaming bodies
    pass through piece by piece, and the inner body's close() is called."""
    _require_callable(WSGI_MIDDLEWARE, middleware, "middleware")
    seen: list = []
    bodies: list[_StreamingBody] = []

    def inner(environ, start_response):
        seen.append(environ.get("request_id"))
        if environ["PATH_INFO"] == "/fails":
            try:
                raise RuntimeError("the inner app failed")
            except RuntimeError:  # PEP 3333: start_response's third argument, after an error
                start_response("500 Internal Server Error", [("Content-Type", "text/plain")],
                               sys.exc_info())
            return [b"failed"]
        start_response("201 Created", [("Content-Type", "text/plain"), ("X-Inner", "yes")])
        bodies.append(_StreamingBody())
        return bodies[-1]

    try:
        wrapped = middleware(inner)
    except Exception as exc:
        fail(WSGI_MIDDLEWARE, f"calling middleware(app) raised {describe_exception(exc)}.",
             "middleware(app) returns a new WSGI app (a function of environ, start_response)")
    _require_callable(WSGI_MIDDLEWARE, wrapped, "middleware(app) result")
    hint = ("def wrapped(environ, start_response): set environ['request_id'], then call "
            "app(environ, my_start_response) where my_start_response adds the header and calls "
            "the real start_response")

    results = []
    for headers in ([], [], [("X-Request-ID", "abc123")]):
        result = call_wsgi(wrapped, headers=headers)
        if result.problems:
            fail(WSGI_MIDDLEWARE, result.problems[0], hint)
        if result.error is not None:
            fail(WSGI_MIDDLEWARE, f"your middleware raised {describe_exception(result.error)}.", hint)
        results.append(result)

    if len(seen) != 3:
        fail(WSGI_MIDDLEWARE, f"for 3 requests the inner app was called {len(seen)} times.",
             "call the inner app exactly once per request")
    if not all(isinstance(value, str) and value for value in seen[:2]):
        fail(WSGI_MIDDLEWARE, f"the inner app found environ['request_id'] = {seen[0]!r}; "
                              "expected a non-empty str.",
             "set environ['request_id'] before calling the inner app, e.g. to uuid.uuid4().hex")
    if seen[0] == seen[1]:
        fail(WSGI_MIDDLEWARE, f"two requests got the same id {seen[0]!r}; each needs its own.",
             "make the id inside the per-request function, not once when the middleware is built")
    if seen[2] != "abc123":
        fail(WSGI_MIDDLEWARE, f"a request that came with X-Request-ID: abc123 got the id "
                              f"{seen[2]!r}; reuse the client's id when it sends one.",
             "the incoming header is environ.get('HTTP_X_REQUEST_ID')")
    for result, expected in zip(results, seen):
        if result.status != "201 Created" or result.header("X-Inner") != "yes":
            fail(WSGI_MIDDLEWARE, f"the inner app answered 201 Created with an X-Inner header, "
                                  f"but the client got {result.status!r} with headers {result.headers!r}.",
                 "pass the inner app's status and headers on, adding yours to the list")
        if result.header("X-Request-ID") != expected:
            fail(WSGI_MIDDLEWARE, f"the response's X-Request-ID is {result.header('X-Request-ID')!r}; "
                                  f"expected the request's id {expected!r}.", hint)
        if result.body != b"one two three":
            fail(WSGI_MIDDLEWARE, f"the body arrived as {result.body!r}; the inner app sent "
                                  "b'one two three'.")
        if len([c for c in result.chunks if c]) != 3:
            fail(WSGI_MIDDLEWARE, "the inner app streamed its body in 3 pieces, but the client got "
                                  f"{len([c for c in result.chunks if c])}: your middleware joined them, "
                                  "so a streaming app would stop streaming.",
                 "return the inner iterable as it is (or yield its items one by one)")
    failing = call_wsgi(wrapped, path="/fails")
    if isinstance(failing.error, TypeError) and "argument" in str(failing.error):
        fail(WSGI_MIDDLEWARE, "when the inner app reported an error with start_response(status, "
                              f"headers, exc_info), your wrapper raised {describe_exception(failing.error)}.",
             "PEP 3333 lets an app pass a third argument after an error: write "
             "def my_start_response(status, headers, exc_info=None) and pass exc_info on")
    if failing.problems or failing.error is not None:
        fail(WSGI_MIDDLEWARE, "for an inner app that fails: " + (failing.problems[:1] or
             [f"your middleware raised {describe_exception(failing.error)}"])[0] + ".")
    if failing.exc_info is None:
        fail(WSGI_MIDDLEWARE, "the inner app passed exc_info to start_response and your wrapper "
                              "dropped it: the server can no longer tell an error response from "
                              "a normal one (nor re-raise if headers were already sent).",
             "pass exc_info on: start_response(status, headers, exc_info)")
    if not all(body.closed for body in bodies):
        fail(WSGI_MIDDLEWARE, "the inner app's body has a close() method and nobody called it: "
                              "PEP 3333 says the server calls close(), and your middleware stood "
                              "in between.",
             "return the inner iterable itself, or, if you wrap it, call its close() in your "
             "own close() (or in a finally: around the loop)")
    with _server_errors() as errors, _serve(wrapped, "wsgi-middleware", kind="wsgi") as server:
        response = client.request(server.address, headers=[("X-Request-ID", "wire-1")])
    if response.status != 201 or response.header(b"x-request-id") != b"wire-1":
        fail(WSGI_MIDDLEWARE, f"over a real socket our WSGI server answered {response.status} "
                              f"with X-Request-ID {response.header(b'x-request-id')!r}. "
                              f"{_describe_log(errors)}")
    passed(WSGI_MIDDLEWARE, "ids made, reused and echoed; streaming, close() and exc_info "
                            "preserved; and over loopback on our WSGI server.")


# == 3. An ASGI app that reads a streamed request body ==============================================

STREAMED_BODY = "Streamed request body"
_UPLOAD = [b"first line\n", b"second ", b"line\n", b"third line, no newline"]


def _expected_counts(chunks) -> dict:
    data = b"".join(chunks)
    return {"bytes": len(data), "newlines": data.count(b"\n")}


def _read_counts(exercise: str, body: bytes, where: str) -> dict:
    try:
        counts = json.loads(body)
        return {"bytes": int(counts["bytes"]), "newlines": int(counts["newlines"])}
    except (ValueError, KeyError, TypeError):
        fail(exercise, f"{where}, your app answered {body[:100]!r}; expected JSON like "
                       '{"bytes": 12, "newlines": 2}.',
             'body = json.dumps({"bytes": n, "newlines": k}).encode()')


def check_streamed_body(app) -> None:
    """Exercise 3: for a POST, read the whole body, however many http.request messages it
    comes in, and answer JSON {"bytes": <length>, "newlines": <count of b"\\n">}."""
    _require_callable(STREAMED_BODY, app)
    hint = ("loop: message = await receive(); count message.get('body', b''); stop when "
            "message.get('more_body') is false")
    for chunks in (_UPLOAD, [b""]):
        result, unawaited = _http(app, method="POST", path="/upload", body_chunks=chunks,
                                  headers=[(b"content-type", b"text/plain")])
        _explain_http(STREAMED_BODY, result, unawaited, hint)
        where = f"for a body of {sum(map(len, chunks))} bytes in {len(chunks)} message(s)"
        counts, expected = _read_counts(STREAMED_BODY, result.body, where), _expected_counts(chunks)
        if counts != expected:
            if len(chunks) > 1 and counts == _expected_counts(chunks[:1]):
                fail(STREAMED_BODY, f"your app counted only the first http.request message "
                                    f"({counts['bytes']} bytes); the body came in {len(chunks)} "
                                    f"messages, {expected['bytes']} bytes in all.", hint)
            fail(STREAMED_BODY, f"{where} your app answered {counts}; expected {expected}.", hint)
        if result.status != 200:
            fail(STREAMED_BODY, f"your app answered status {result.status}; expected 200.")
    with _server_errors() as errors, _serve(app, "streamed-body") as server:
        try:
            response = client.request(server.address, "POST", "/upload", body_chunks=_UPLOAD,
                                      chunk_delay=0.01, timeout=5.0)
        except OSError as exc:
            fail(STREAMED_BODY, f"over a real socket the request failed ({exc}). {_describe_log(errors)}")
    if response.status != 200:
        fail(STREAMED_BODY, f"over a real socket, with the body arriving chunk by chunk, our server "
                            f"answered {response.status}. {_describe_log(errors)}", hint)
    counts = _read_counts(STREAMED_BODY, response.body, "over a real socket")
    if counts != _expected_counts(_UPLOAD):
        fail(STREAMED_BODY, f"over a real socket, with the body arriving chunk by chunk, your app "
                            f"answered {counts}; expected {_expected_counts(_UPLOAD)}.", hint)
    passed(STREAMED_BODY, f"read {len(_UPLOAD)} messages in process, and a chunked upload over "
                          "loopback.")


# == 4. Server-Sent Events that stop when the client leaves ========================================

SSE = "SSE that stops"
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
    _require_callable(SSE, app)
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
        fail(SSE, _unawaited_note(outcome.unawaited) + ".", "await every send() and receive()")
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
                  "'data: ...' (and maybe 'event:', 'id:') and ends with a blank line.", "body = f'data: {n}\\n\\n'.encode()")
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
    with _server_errors(), _serve(wrapped, "sse") as server:
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


# == 5. A WebSocket chat ===============================================================================

CHAT = "WebSocket chat"
REGISTERED_TOO_EARLY = ("Bob's connection was being accepted when Alice spoke, and your chat sent "
                        "him her message before his websocket.accept was done: it registered him "
                        "before accepting. (A real server refuses that send, and a client that is "
                        "then rejected stays in the room.)")


def check_chat(app) -> None:
    """Exercise 5: a chat room. Accept each client; every text message a client sends goes
    to every client connected (the sender too); a client that leaves is no longer sent to."""
    _require_callable(CHAT, app)
    hint_register = ("add the client to the room only after `await send({'type': "
                     "'websocket.accept'})` has returned")

    async def scenario():
        drivers = []

        def connect(port: int, send_hook=None) -> ASGIDriver:
            driver = ASGIDriver(app, websocket_scope("/chat", client=("127.0.0.1", port)),
                                send_hook=send_hook).start()
            drivers.append(driver)
            return driver

        async def expect(driver: ASGIDriver, who: str, text: str, context: str):
            try:
                message = await driver.receive_output(1.0)
            except AppTimeout:
                message = "timeout"
            for other in drivers:
                if other.problems and "not accepted yet" in other.problems[0]:
                    fail(CHAT, REGISTERED_TOO_EARLY, hint_register)
                if other.problems:
                    fail(CHAT, other.problems[0],
                         "when a client leaves (websocket.disconnect), remove it from the room")
            for other in drivers:
                if other.error is not None:
                    fail(CHAT, f"your app raised {describe_exception(other.error)}.")
            if message == "timeout":
                fail(CHAT, f"{context}, {who} waited 1 s for {text!r} and got nothing.",
                     "send each message to every client in the room, the sender too")
            if message is None:
                fail(CHAT, f"{context}, {who}'s handler returned; it should keep receiving.")
            if message.get("type") != "websocket.send" or message.get("text") != text:
                fail(CHAT, f"{context}, {who} got {message!r}; expected the text {text!r}.")

        try:
            alice = connect(50001)
            await alice.send_input({"type": "websocket.connect"})
            try:
                first = await alice.receive_output(1.0)
            except AppTimeout:
                first = "timeout"
            if alice.problems:
                fail(CHAT, alice.problems[0], "accept first: await send({'type': 'websocket.accept'})")
            if first == "timeout" or first is None or first.get("type") != "websocket.accept":
                error = f" (your app raised {describe_exception(alice.error)})" if alice.error else ""
                fail(CHAT, f"after websocket.connect your app sent {first!r}{error}; expected "
                           "websocket.accept.", "await send({'type': 'websocket.accept'})")

            # Bob's accept takes a while to reach him (a real server's send() may wait for the
            # network). Until it has, nothing may be sent to him.
            accept_sent = asyncio.Event()

            async def slow_accept(message):
                if message["type"] == "websocket.accept":
                    await accept_sent.wait()

            bob = connect(50002, slow_accept)
            await bob.send_input({"type": "websocket.connect"})
            await asyncio.sleep(0.05)
            await alice.send_input({"type": "websocket.receive", "text": "hi from Alice"})
            await expect(alice, "Alice", "hi from Alice", "Alice sent 'hi from Alice'")
            await asyncio.sleep(0.05)
            if bob.problems:
                fail(CHAT, REGISTERED_TOO_EARLY, hint_register)
            accept_sent.set()
            accept = await bob.receive_output(1.0)
            if accept is None or accept.get("type") != "websocket.accept":
                fail(CHAT, f"Bob got {accept!r} first; expected websocket.accept.")

            await bob.send_input({"type": "websocket.receive", "text": "hello from Bob"})
            await expect(alice, "Alice", "hello from Bob", "Bob sent 'hello from Bob'")
            await expect(bob, "Bob", "hello from Bob", "Bob sent 'hello from Bob'")

            await bob.send_input({"type": "websocket.disconnect", "code": 1001})
            bob.disconnect()
            if not await bob.wait(1.0):
                fail(CHAT, "Bob left (websocket.disconnect) and his handler kept running for 1 s.",
                     "when receive() returns websocket.disconnect, remove the client and return")
            await alice.send_input({"type": "websocket.receive", "text": "bye"})
            await expect(alice, "Alice", "bye", "after Bob left, Alice sent 'bye'")
            await asyncio.sleep(0.02)
            if bob.problems:
                fail(CHAT, bob.problems[0], "remove the client from the room when it disconnects "
                                            "(a try/finally around the receive loop is the safe way)")
            await alice.send_input({"type": "websocket.disconnect", "code": 1000})
            alice.disconnect()
            await alice.wait(1.0)
        finally:
            for driver in drivers:
                driver.disconnect()
                await driver.stop()

    run(scenario)
    with _server_errors() as errors, _serve(app, "chat") as server:
        alice = client.WebSocketClient(server.address, "/chat")
        bob = client.WebSocketClient(server.address, "/chat")
        try:
            time.sleep(0.1)  # both handlers have passed their accept and joined the room
            alice.send_text("over the wire")
            got_alice, got_bob = alice.receive(1, 2.0), bob.receive(1, 2.0)
        finally:
            alice.close()
            bob.close()
    if got_alice[-1:] != ["over the wire"] or got_bob[-1:] != ["over the wire"]:
        fail(CHAT, f"over real sockets, Alice sent 'over the wire'; Alice got {got_alice!r} "
                   f"and Bob got {got_bob!r}. {_describe_log(errors)}")
    passed(CHAT, "two clients in process (accept first, broadcast, leaving), and two real "
                 "WebSocket clients over loopback on our server.")


# == 6. Lifespan and shared state ======================================================================

LIFESPAN_STATE = "Lifespan state"
_STANDARD_LIFESPAN_KEYS = {"type", "asgi", "state"}


def check_lifespan_state(app) -> None:
    """Exercise 6: at lifespan startup, put what requests share into scope["state"]; each
    `GET /` answers the number of visits so far ("1", "2", ...) as text, counted in that
    shared state; answer startup and shutdown."""
    _require_callable(LIFESPAN_STATE, app)
    hint = ("at startup, put a mutable object in the state (scope['state']['visits'] = "
            "{'count': 0}, or a Counter); each request changes that object")

    async def scenario():
        servers = []

        async def start_server() -> tuple[ASGIDriver, dict]:
            state: dict = {}
            lifespan = ASGIDriver(app, lifespan_scope(state)).start()
            servers.append(lifespan)
            await lifespan.send_input({"type": "lifespan.startup"})
            try:
                answer = await lifespan.receive_output(1.0)
            except AppTimeout:
                fail(LIFESPAN_STATE, "your app never answered lifespan.startup (we waited 1 s): "
                                     "a server would wait forever before serving anyone.",
                     "after the startup work, await send({'type': 'lifespan.startup.complete'})")
            if lifespan.problems:
                fail(LIFESPAN_STATE, lifespan.problems[0])
            if answer is None:
                why = (f"raised {describe_exception(lifespan.error)}" if lifespan.error
                       else "returned without answering")
                fail(LIFESPAN_STATE, f"on the lifespan scope your app {why}.",
                     "when scope['type'] == 'lifespan', receive lifespan.startup, set up the "
                     "state, answer lifespan.startup.complete, then wait for lifespan.shutdown")
            if answer["type"] == "lifespan.startup.failed":
                fail(LIFESPAN_STATE, f"your app reported lifespan.startup.failed: "
                                     f"{answer.get('message', '')!r}.")
            return lifespan, state

        async def visit(state: dict, lifespan: ASGIDriver) -> str:
            result = await http_request(app, "GET", "/", state=state)
            extra = set(lifespan.scope) - _STANDARD_LIFESPAN_KEYS
            if result.error is not None and extra:
                fail(LIFESPAN_STATE, f"at startup your app stored {sorted(extra)} on the lifespan "
                                     f"scope itself, and a request then raised "
                                     f"{describe_exception(result.error)}: every connection gets "
                                     "a new scope of its own, so nothing put on the lifespan scope "
                                     "reaches a request. Only scope['state'] is passed on (a "
                                     "shallow copy for each request).",
                     "store it in scope['state'] at startup and read scope['state'] in requests")
            _explain_http(LIFESPAN_STATE, result, [], hint)
            return result.body.decode("utf-8", "replace").strip()

        try:
            lifespan, state = await start_server()
            counts = [await visit(state, lifespan) for _ in range(3)]
            if counts == ["1", "1", "1"]:
                fail(LIFESPAN_STATE, "every request answered 1: each request's scope['state'] is "
                                     "a shallow copy of the startup state, so assigning "
                                     "state['visits'] = n (or += 1 on an int) changes only this "
                                     "request's copy. The copy shares the *objects* inside, not "
                                     "the keys.", hint)
            if counts != ["1", "2", "3"]:
                fail(LIFESPAN_STATE, f"three requests answered {counts}; expected ['1', '2', '3'].",
                     hint)
            lifespan2, state2 = await start_server()
            again = await visit(state2, lifespan2)
            if again != "1":
                fail(LIFESPAN_STATE, f"a second server, started afresh, answered {again!r} to its "
                                     "first request: the count lives outside the state (a module "
                                     "global?), so two servers share it.",
                     "keep the count in scope['state'], created at startup")
            for server in servers:
                await server.send_input({"type": "lifespan.shutdown"})
                try:
                    answer = await server.receive_output(1.0)
                except AppTimeout:
                    answer = None
                if answer is None or answer["type"] != "lifespan.shutdown.complete":
                    fail(LIFESPAN_STATE, f"after lifespan.shutdown your app sent {answer!r}; "
                                         "expected lifespan.shutdown.complete.",
                         "after receiving lifespan.shutdown, clean up and "
                         "await send({'type': 'lifespan.shutdown.complete'})")
        finally:
            for server in servers:
                await server.stop()

    run(scenario)
    with _server_errors() as errors, _serve(app, "lifespan-state", lifespan="on") as server:
        answers = [client.request(server.address).body.decode("utf-8", "replace").strip()
                   for _ in range(2)]
    if answers != ["1", "2"]:
        fail(LIFESPAN_STATE, f"on our real server (lifespan on) two requests answered {answers}; "
                             f"expected ['1', '2']. {_describe_log(errors)}")
    passed(LIFESPAN_STATE, "startup, 1-2-3 across requests, a fresh server starts at 1, "
                           "shutdown; and on our real server.")


# == 7. Unblock the event loop ========================================================================

UNBLOCKED = "Unblock the loop"
UNBLOCKED_REQUESTS = 4
MAX_STALL = 0.15  # seconds the loop may be stuck (one blocking query stalls it 0.2 s)


def check_unblocked(app, expected_body: bytes = b"Ada Lovelace") -> None:
    """Exercise 7: the app answers `GET /` with the name `blocking_query()` returns, without
    stopping the event loop while the query runs: 4 requests at once must not wait for each
    other."""
    from ..apps import pitfalls
    from ..experiments.blocking_loop import measure_server

    _require_callable(UNBLOCKED, app)
    queries_before = pitfalls.queries_run
    hint = ("name = await asyncio.to_thread(blocking_query): the query runs on a worker thread "
            "while the loop serves everyone else")
    with _server_errors() as errors, _serve(app, "unblocked") as server:
        # UNBLOCKED_REQUESTS at once, then one more while they run; a loop-lag probe watches.
        run_ = measure_server(server, "yours", 0, UNBLOCKED_REQUESTS, probe_delay=0.02, timeout=10.0)
        response = client.request(server.address, target="/")
    statuses = run_.statuses + [response.status]
    if any(status != 200 for status in statuses):
        fail(UNBLOCKED, f"the requests answered {statuses}. {_describe_log(errors)}", hint)
    if response.body.strip() != expected_body:
        fail(UNBLOCKED, f"your app answered {response.body[:60]!r}; expected the query's result "
                        f"{expected_body!r}.", "send the value blocking_query() returns, encoded")
    queries = pitfalls.queries_run - queries_before
    if queries < len(statuses):
        fail(UNBLOCKED, f"{len(statuses)} requests ran blocking_query() {queries} times: the "
                        "exercise is to call it without blocking the loop, not to skip it.",
             hint)
    if run_.loop_lag > MAX_STALL:
        fail(UNBLOCKED, f"your handler blocked the event loop for {run_.loop_lag:.1f} s: other "
                        f"requests waited ({UNBLOCKED_REQUESTS} requests at once took "
                        f"{run_.slowest:.1f} s; one more, sent while they ran, waited "
                        f"{run_.probe_latency:.1f} s).", hint)
    passed(UNBLOCKED, f"{UNBLOCKED_REQUESTS + 1} requests at once: the loop never stalled more "
                      f"than {run_.loop_lag * 1000:.0f} ms; all done in "
                      f"{max(run_.slowest, run_.probe_latency):.2f} s.")


# == 8. A streaming response: framing is the server's job ============================================

STREAMING = "Streaming response"
STREAM_CHUNKS = [f"chunk {i}\n".encode() for i in range(10)]


def check_streaming(app) -> None:
    """Spot the bug: `GET /` streams b"chunk 0\\n" ... b"chunk 9\\n", one http.response.body
    message each. The app must not set transfer-encoding: framing is the server's job."""
    _require_callable(STREAMING, app)
    expected = b"".join(STREAM_CHUNKS)
    result, unawaited = _http(app)
    _explain_http(STREAMING, result, unawaited, "send http.response.start, then one "
                                                "http.response.body per chunk with more_body=True")
    if result.header(b"transfer-encoding") is not None:
        fail(STREAMING, f"your app set transfer-encoding: {result.header(b'transfer-encoding').decode()} "
                        "itself. Framing belongs to the server: it chunks a body of unknown length "
                        "for an HTTP/1.1 client, must not for HTTP/1.0 (no chunked there: it closes "
                        "the connection instead), and HTTP/2 forbids the header altogether. Only "
                        "the server knows which one it is talking to.",
             "leave transfer-encoding (and content-length) out; send the chunks with more_body=True")
    if b"\r\n" in result.body and result.body != expected:
        fail(STREAMING, "your body contains chunk-size lines and CRLFs: you framed the chunks by "
                        "hand, so the client gets them framed twice.",
             "send the plain bytes; the server (h11, for us) frames them")
    if result.body != expected:
        fail(STREAMING, f"the body is {result.body[:80]!r}...; expected b'chunk 0\\nchunk 1\\n...chunk 9\\n'.")
    if result.body_messages < len(STREAM_CHUNKS):
        fail(STREAMING, f"your app sent the body in {result.body_messages} message(s); a stream "
                        f"sends each chunk as it is ready ({len(STREAM_CHUNKS)} messages).",
             "one await send({'type': 'http.response.body', 'body': chunk, 'more_body': True}) "
             "per chunk, then a last one with more_body=False")
    with _server_errors() as errors, _serve(app, "streaming") as server:
        response = client.request(server.address)
    if response.status != 200 or response.body != expected:
        fail(STREAMING, f"over a real socket our server answered {response.status} with "
                        f"{response.body[:80]!r}. {_describe_log(errors)}")
    framing = response.header(b"transfer-encoding")
    passed(STREAMING, f"{len(STREAM_CHUNKS)} messages; on the wire our server framed them as "
                      f"transfer-encoding: {framing.decode() if framing else 'none (content-length)'}.")


# == 9. Middleware around lifespan =====================================================================

LIFESPAN_MIDDLEWARE = "Lifespan middleware"


class _RecordingLifespanApp:
    """The inner app of the middleware check: writes down what it receives and sees."""

    def __init__(self) -> None:
        self.received: list[str] = []
        self.db_at_startup = None
        self.shutdown_done_at: float | None = None

    async def __call__(self, scope, receive, send):
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                self.received.append(message["type"])
                if message["type"] == "lifespan.startup":
                    self.db_at_startup = scope.get("state", {}).get("db")
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    self.shutdown_done_at = time.monotonic()
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        elif scope["type"] == "http":
            db = scope.get("state", {}).get("db")
            body = b"db open" if isinstance(db, FakeDatabase) and db.open else b"no db"
            await send({"type": "http.response.start", "status": 200,
                        "headers": [(b"content-type", b"text/plain")]})
            await send({"type": "http.response.body", "body": body})


def check_lifespan_middleware(middleware) -> None:
    """Spot the bug: `middleware(app)` opens a FakeDatabase at startup, puts it in
    scope["state"]["db"] *before* the inner app starts, passes lifespan.startup on to the inner
    app (which answers it), and closes the database after the inner app has shut down."""
    _require_callable(LIFESPAN_MIDDLEWARE, middleware, "middleware")
    inner = _RecordingLifespanApp()
    try:
        wrapped = middleware(inner)
    except Exception as exc:
        fail(LIFESPAN_MIDDLEWARE, f"calling middleware(app) raised {describe_exception(exc)}.")
    hint = ("wrap receive: async def receive_wrapper(): message = await receive(); if it is "
            "lifespan.startup, open the database first; return message (always hand it on)")

    async def scenario():
        state: dict = {}
        lifespan = ASGIDriver(wrapped, lifespan_scope(state)).start()
        try:
            await lifespan.send_input({"type": "lifespan.startup"})
            try:
                answer = await lifespan.receive_output(1.0)
            except AppTimeout:
                answer = "timeout"
            if lifespan.problems:
                fail(LIFESPAN_MIDDLEWARE, lifespan.problems[0],
                     "let the inner app answer lifespan.startup; your middleware only hands it on")
            if "lifespan.startup" not in inner.received:
                fail(LIFESPAN_MIDDLEWARE, "the inner app never received lifespan.startup: your "
                                          "middleware read it with receive() and kept it, so the "
                                          "inner app's startup never ran"
                     + (" and nobody answered the server (it would wait forever)." if answer == "timeout"
                        else f" (the server got {answer!r} without it)."), hint)
            if answer == "timeout" or answer is None:
                why = f"your middleware raised {describe_exception(lifespan.error)}" if lifespan.error \
                    else "nothing came back"
                fail(LIFESPAN_MIDDLEWARE, f"after lifespan.startup, {why}.", hint)
            if answer["type"] != "lifespan.startup.complete":
                fail(LIFESPAN_MIDDLEWARE, f"the server got {answer!r}; expected "
                                          "lifespan.startup.complete from the inner app.")
            db = state.get("db")
            if not isinstance(db, FakeDatabase) or not db.open:
                fail(LIFESPAN_MIDDLEWARE, f"after startup, scope['state']['db'] is {db!r}; expected "
                                          "an open FakeDatabase.",
                     "db = await FakeDatabase().connect(); scope['state']['db'] = db")
            if inner.db_at_startup is not db:
                fail(LIFESPAN_MIDDLEWARE, "the inner app's startup ran before the database was in "
                                          "scope['state']: open it first, then hand "
                                          "lifespan.startup on.", hint)
            result = await http_request(wrapped, state=state)
            if result.error is not None or result.body != b"db open":
                fail(LIFESPAN_MIDDLEWARE, f"a request through your middleware got {result.body!r}"
                     + (f" and raised {describe_exception(result.error)}" if result.error else "")
                     + "; the inner app should find the open database in scope['state'].",
                     "pass http scopes straight on: await self.app(scope, receive, send)")
            await lifespan.send_input({"type": "lifespan.shutdown"})
            try:
                answer = await lifespan.receive_output(1.0)
            except AppTimeout:
                answer = None
            if "lifespan.shutdown" not in inner.received:
                fail(LIFESPAN_MIDDLEWARE, "the inner app never received lifespan.shutdown: your "
                                          "middleware kept it.", "hand every lifespan message on")
            if answer is None or answer["type"] != "lifespan.shutdown.complete" or lifespan.problems:
                fail(LIFESPAN_MIDDLEWARE, (lifespan.problems or [f"after lifespan.shutdown the "
                                           f"server got {answer!r}; expected "
                                           "lifespan.shutdown.complete."])[0])
            await lifespan.wait(0.5)
            if db.open:
                fail(LIFESPAN_MIDDLEWARE, "the database is still open after shutdown.",
                     "close it after the inner app has shut down: after `await self.app(...)` "
                     "returns, or when you see lifespan.shutdown.complete go by in send()")
            if inner.shutdown_done_at is not None and db.closed_at < inner.shutdown_done_at:
                fail(LIFESPAN_MIDDLEWARE, "the database was closed before the inner app's shutdown "
                                          "ran: the inner app may still need it to finish.",
                     "close it after the inner app answered lifespan.shutdown.complete")
        finally:
            await lifespan.stop()

    run(scenario)
    passed(LIFESPAN_MIDDLEWARE, "the inner app got startup and shutdown, found the open database, "
                                "and the database closed last.")
