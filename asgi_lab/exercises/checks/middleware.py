"""Stretch exercise 9: an ASGI middleware that wraps `send`.

An ASGI middleware is an ASGI app that calls another one, handing it its own `receive` or
`send` to look at the messages as they go by (asgiref docs, "ASGI Specification",
"Middleware": "it is possible to have ASGI 'middleware' - code that plays the role of both
server and application"). The exercise: add a header to `http.response.start`, count the body
bytes, and let every other message, and every lifespan and websocket scope, through untouched.
"""

from __future__ import annotations

import asyncio

from ...background import server_errors
from .. import client
from ..feedback import fail, passed, register
from ..harness import AppTimeout, ASGIDriver, describe_exception, http_scope, lifespan_scope, run
from ..harness import websocket_scope
from .common import describe_log, require_callable, serve

ASGI_MIDDLEWARE = "ASGI middleware"
HEADER = (b"x-served-by", b"asgi-lab")
register(
    ASGI_MIDDLEWARE, "check_asgi_middleware",
    concept="an ASGI middleware is an app that calls the inner app, and hands it a send of its "
            "own: every message the inner app sends passes through your function on its way to "
            "the server, where you may look at it, change a copy, and must pass it on.",
    api="for scope['type'] == 'http', define `async def send_wrapper(message)` inside __call__: on "
        "http.response.start add the header to a new headers list; on http.response.body add "
        "len(message.get('body', b'')); always `await send(message)`; when more_body is false, "
        "call report. Every other scope: `await self.app(scope, receive, send)` as it is.",
    code="headers = [*message.get('headers', []), (b'x-served-by', b'asgi-lab')]; message = "
         "{**message, 'headers': headers}; ... size += len(message.get('body', b'')); await "
         "send(message); if not message.get('more_body', False): self.report(scope['path'], "
         "status, size); and then `await self.app(scope, receive, send_wrapper)`")

_CHUNKS = [b"first chunk, ", b"second chunk, ", b"last chunk"]
_INNER_HEADERS = [(b"content-type", b"text/plain"), (b"x-inner", b"yes")]


class _InnerApp:
    """The app inside the middleware: a small real app for all three scope types. It writes
    down every message it sends, so the check can compare them with what the server got."""

    def __init__(self) -> None:
        self.sent: list[dict] = []
        self.headers = list(_INNER_HEADERS)
        """One list, reused for every response, as real apps reuse a module-level constant."""
        self.started = False
        self.stopped = False

    async def __call__(self, scope, receive, send):
        async def send_and_note(message):
            self.sent.append(message)
            await send(message)

        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    self.started = True
                    await send_and_note({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    self.stopped = True
                    await send_and_note({"type": "lifespan.shutdown.complete"})
                    return
        elif scope["type"] == "http":
            await receive()
            await send_and_note({"type": "http.response.start", "status": 201,
                                 "headers": self.headers})
            for chunk in _CHUNKS:
                await send_and_note({"type": "http.response.body", "body": chunk,
                                     "more_body": True})
                await asyncio.sleep(0.01)  # a streaming app: the chunks are ready one by one
            await send_and_note({"type": "http.response.body", "body": b"", "more_body": False})
        elif scope["type"] == "websocket":
            await receive()  # websocket.connect
            await send_and_note({"type": "websocket.accept", "headers": [(b"x-ws", b"1")]})
            while True:
                message = await receive()
                if message["type"] != "websocket.receive":
                    return
                await send_and_note({"type": "websocket.send", "text": message.get("text")})


def _explain_error(error: BaseException, where: str, **steps) -> None:
    if isinstance(error, NameError) and "'self'" in str(error):
        fail(ASGI_MIDDLEWARE, f"{where} your middleware raised {describe_exception(error)}: a "
                              "function has no `self`. In a function-style middleware the inner "
                              "app is the `app` argument of the outer function (the inner function "
                              "sees it as a closure variable); `self.app` is for a class.",
             "def middleware(app): async def wrapped(scope, receive, send): await app(scope, "
             "receive, send); return wrapped")
    fail(ASGI_MIDDLEWARE, f"{where} your middleware raised {describe_exception(error)}.", **steps)


def check_asgi_middleware(middleware) -> None:
    """Stretch 9: `middleware(app, report)` returns an ASGI app. Every HTTP response goes out
    with the inner app's status, headers and body, plus the header `x-served-by: asgi-lab`;
    when the response is complete, `report(path, status, body_bytes)` is called once. Lifespan
    and websocket scopes, and every other message, pass through untouched."""
    require_callable(ASGI_MIDDLEWARE, middleware, "middleware")
    reports: list[tuple] = []
    inner = _InnerApp()
    try:
        wrapped = middleware(inner, lambda *args: reports.append(args))
    except TypeError as exc:
        fail(ASGI_MIDDLEWARE, f"middleware(app, report) raised {describe_exception(exc)}.",
             "def __init__(self, app, report): self.app = app; self.report = report")
    except Exception as exc:
        _explain_error(exc, "when it was built,")
    require_callable(ASGI_MIDDLEWARE, wrapped, "middleware(app, report) result")

    async def one_request(path: str):
        driver = ASGIDriver(wrapped, http_scope("GET", path)).start()
        await driver.send_input({"type": "http.request", "body": b"", "more_body": False})
        first_body_at = None
        try:
            while not driver.complete:
                message = await driver.receive_output(2.0)
                if message is None:
                    break
                if message["type"] == "http.response.body" and first_body_at is None:
                    first_body_at = len([m for m in inner.sent if m["type"] == "http.response.body"])
        except AppTimeout:
            pass
        await driver.wait(0.5)
        await driver.stop()
        # What the server got, as it was then: a middleware that changes the inner app's own
        # lists in place would otherwise change this record too.
        got = [{**m, "headers": list(m["headers"])} if isinstance(m.get("headers"), list) else dict(m)
               for m in driver.sent()]
        return driver, got, first_body_at

    async def http_scenario():
        results = []
        for path in ("/one", "/two"):
            inner.sent.clear()
            driver, got, first_body_at = await one_request(path)
            results.append((driver, got, list(inner.sent), first_body_at))
        return results

    outcome = run(http_scenario)
    expected_size = sum(map(len, _CHUNKS))
    for number, (driver, got, inner_sent, first_body_at) in enumerate(outcome.value, 1):
        which = "the first request" if number == 1 else "a second request"
        if driver.problems:
            fail(ASGI_MIDDLEWARE, f"for {which}: {driver.problems[0]}.")
        if driver.error is not None:
            _explain_error(driver.error, f"for {which}")
        if outcome.unawaited:
            fail(ASGI_MIDDLEWARE, f"Python warned that a coroutine was never awaited "
                                  f"({', '.join(sorted(set(outcome.unawaited)))}): a send(...) "
                                  "without `await` sends nothing.",
                 "await send(message) in your send wrapper, and await self.app(...)")
        kinds = [m["type"] for m in got]
        if len(got) < len(inner_sent) and not driver.complete:
            missing = [m["type"] for m in inner_sent][len(got):]
            fail(ASGI_MIDDLEWARE, f"the inner app sent {len(inner_sent)} messages and the server "
                                  f"got {len(got)} ({kinds}): your middleware kept {missing} "
                                  "instead of passing them on, so the client waits for a response "
                                  "that never ends.",
                 concept="a message your send wrapper does not pass on with `await send(message)` "
                         "never reaches the server: the middleware must hand on every message, "
                         "whatever it does with it.")
        start = got[0] if got and got[0]["type"] == "http.response.start" else None
        headers = list(start.get("headers", [])) if start else []
        served_by = [value for name, value in headers if name.lower() == HEADER[0]]
        if start is None:
            fail(ASGI_MIDDLEWARE, f"for {which} the server got {kinds}, not an "
                                  "http.response.start first.")
        if start["status"] != 201 or not set(_INNER_HEADERS) <= set(map(tuple, headers)):
            fail(ASGI_MIDDLEWARE, f"the inner app answered 201 with headers {_INNER_HEADERS}; the "
                                  f"server got {start['status']} with {headers}: a middleware "
                                  "changes only what it means to change.")
        if number == 2 and len(served_by) > 1:
            fail(ASGI_MIDDLEWARE, f"the second response carried x-served-by {len(served_by)} "
                                  "times: your middleware appended to the inner app's own headers "
                                  "list. The inner app reuses that list for every response (a "
                                  "module-level constant, as many apps have), so each request added "
                                  "one more.",
                 "build a new list: headers = [*message.get('headers', []), (b'x-served-by', "
                 "b'asgi-lab')], and send {**message, 'headers': headers}",
                 concept="the messages belong to the inner app: change a copy, never the "
                         "message or its headers list in place.")
        if served_by != [HEADER[1]]:
            fail(ASGI_MIDDLEWARE, f"the response reached the server with headers {headers}: no "
                                  "x-served-by: asgi-lab."
                 if not served_by else
                 f"x-served-by is {served_by}; expected exactly [b'asgi-lab'].")
        bodies = [m for m in got if m["type"] == "http.response.body"]
        inner_bodies = [m for m in inner_sent if m["type"] == "http.response.body"]
        if b"".join(m.get("body", b"") for m in bodies) != b"".join(_CHUNKS):
            fail(ASGI_MIDDLEWARE, f"the body reached the server as "
                                  f"{b''.join(m.get('body', b'') for m in bodies)!r}; the inner "
                                  f"app sent {b''.join(_CHUNKS)!r}.")
        if len(bodies) != len(inner_bodies) or first_body_at not in (1, None):
            fail(ASGI_MIDDLEWARE, f"the inner app streamed {len(inner_bodies)} body messages, one "
                                  f"by one; the server got {len(bodies)}"
                                  + (f", the first only after the inner app had sent "
                                     f"{first_body_at}" if first_body_at and first_body_at > 1 else "")
                                  + ": your middleware held the body back, so a streaming "
                                    "response (SSE, a large download) would stop streaming.",
                 "pass each http.response.body on as it comes; count its bytes on the way",
                 concept="a middleware that only counts must not buffer: every message goes on "
                         "at once, so the client gets each chunk when the app has it.")
        if [bool(m.get("more_body", False)) for m in bodies] != \
                [bool(m.get("more_body", False)) for m in inner_bodies]:
            fail(ASGI_MIDDLEWARE, "the more_body flags the server got differ from the inner "
                                  "app's: only the last body message may end the response.")
    path_reports = [r for r in reports]
    if len(path_reports) != 2:
        fail(ASGI_MIDDLEWARE, f"for 2 responses, report was called {len(path_reports)} times "
                              f"({path_reports[:4]}); expected once per response, when it is "
                              "complete.",
             "call self.report(...) in the send wrapper when an http.response.body with "
             "more_body false goes by",
             concept="a response is complete when its last http.response.body (more_body false) "
                     "has gone out: that, not http.response.start, is when its size is known.")
    for got_report, path in zip(path_reports, ("/one", "/two")):
        if tuple(got_report) != (path, 201, expected_size):
            fail(ASGI_MIDDLEWARE, f"for GET {path} (status 201, {expected_size} body bytes) report "
                                  f"got {tuple(got_report)}; expected {(path, 201, expected_size)}.",
                 "report(scope['path'], the status from http.response.start, the sum of "
                 "len(message.get('body', b'')))")

    _check_passthrough(wrapped, inner, reports)

    # On our real server, with lifespan on: a request and a WebSocket through the middleware.
    reports.clear()
    try:
        with server_errors() as errors, serve(wrapped, "asgi-middleware", lifespan="on") as server:
            response = client.request(server.address, target="/wire")
            ws = client.WebSocketClient(server.address, "/ws")
            try:
                ws.send_text("ping over the wire")
                echoed = ws.receive(1, 2.0)
            finally:
                ws.close()
    except Exception as exc:
        fail(ASGI_MIDDLEWARE, f"our server could not start your middleware with lifespan on: "
                              f"{describe_exception(exc)}.")
    if response.status != 201 or response.header(HEADER[0]) != HEADER[1]:
        fail(ASGI_MIDDLEWARE, f"over a real socket our server answered {response.status} with "
                              f"x-served-by {response.header(HEADER[0])!r}. {describe_log(errors)}")
    if echoed != ["ping over the wire"]:
        fail(ASGI_MIDDLEWARE, f"over a real socket a WebSocket client sent 'ping over the wire' and "
                              f"got back {echoed!r}. {describe_log(errors)}")
    if reports != [("/wire", 201, len(response.body))]:
        fail(ASGI_MIDDLEWARE, f"over a real socket the client got {len(response.body)} body bytes "
                              f"and report got {reports}.")
    passed(ASGI_MIDDLEWARE, f"header added, {expected_size} bytes counted and reported once per "
                            "response, chunks streamed through one by one; lifespan and WebSocket "
                            "untouched; and on our real server (lifespan on, one HTTP request, "
                            "one WebSocket echo).")


_PASS_ON = "if scope['type'] != 'http': await self.app(scope, receive, send); return"
_OTHER_SCOPES = ("one ASGI app receives every kind of scope (http, websocket, lifespan); a "
                 "middleware that means to change HTTP responses hands every other scope to the "
                 "inner app exactly as it came, with the server's own receive and send.")


def _check_passthrough(wrapped, inner: _InnerApp, reports: list) -> None:
    """Lifespan and websocket scopes: what the inner app sends, the server gets, unchanged."""
    reports_before = len(reports)

    async def scenario():
        inner.sent.clear()
        lifespan = ASGIDriver(wrapped, lifespan_scope({})).start()
        await lifespan.send_input({"type": "lifespan.startup"})
        try:
            await lifespan.receive_output(1.0)
            await lifespan.send_input({"type": "lifespan.shutdown"})
            await lifespan.receive_output(1.0)
        except AppTimeout:
            pass
        await lifespan.wait(0.5)
        await lifespan.stop()
        lifespan_inner = list(inner.sent)
        inner.sent.clear()
        ws = ASGIDriver(wrapped, websocket_scope("/ws")).start()
        await ws.send_input({"type": "websocket.connect"})
        await ws.send_input({"type": "websocket.receive", "text": "hello"})
        try:
            for _ in range(2):
                await ws.receive_output(1.0)
        except AppTimeout:
            pass
        ws.disconnect()
        await ws.wait(0.5)
        await ws.stop()
        return lifespan, lifespan_inner, ws, list(inner.sent)

    lifespan, lifespan_inner, ws, ws_inner = run(scenario).value
    for name, driver, inner_sent in (("lifespan", lifespan, lifespan_inner),
                                     ("websocket", ws, ws_inner)):
        if driver.error is not None:
            _explain_error(driver.error, f"on a {name} scope", hint=_PASS_ON, concept=_OTHER_SCOPES)
        if driver.problems:
            fail(ASGI_MIDDLEWARE, f"on a {name} scope: {driver.problems[0]}.")
        if driver.sent() != inner_sent or not inner_sent:
            fail(ASGI_MIDDLEWARE, f"on a {name} scope the inner app sent "
                                  f"{[m['type'] for m in inner_sent] or 'nothing'} and the server "
                                  f"got {driver.sent()}: a middleware for HTTP responses must let "
                                  f"a {name} scope through untouched.",
                 _PASS_ON, concept=_OTHER_SCOPES)
    if not inner.started or not inner.stopped:
        fail(ASGI_MIDDLEWARE, "the inner app never received lifespan.startup and "
                              "lifespan.shutdown through your middleware.")
    if len(reports) != reports_before:
        fail(ASGI_MIDDLEWARE, f"report was called for a lifespan or websocket scope "
                              f"({reports[reports_before:]}); it is for HTTP responses only.")
