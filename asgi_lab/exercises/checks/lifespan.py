"""Exercise 6 and two spot-the-bugs: lifespan state, and middleware around lifespan
(asgiref `specs/lifespan.rst`)."""

from __future__ import annotations

import time

from ...background import server_errors
from .. import client
from ..fakes import FakeDatabase
from ..feedback import fail, passed, register
from ..harness import (ASGIDriver, AppTimeout, describe_exception, http_request,
                       lifespan_scope, run)
from .common import describe_log, explain_http, require_callable, serve


# == 6. Lifespan and shared state ==================================================================

LIFESPAN_STATE = "Lifespan state"
register(
    LIFESPAN_STATE, "check_lifespan_state",
    concept="every request gets a new scope; only scope['state'] links it to startup, and each "
            "request gets a shallow copy of it: the keys are copied, the objects inside are "
            "shared.",
    api="at lifespan.startup, put a mutable object (a dict, a Counter) in scope['state']; in a "
        "request, change that object in place instead of assigning to the key.",
    code="startup: scope['state']['visits'] = {'count': 0}; request: visits = "
         "scope['state']['visits']; visits['count'] += 1; body = str(visits['count']).encode()")
_STANDARD_LIFESPAN_KEYS = {"type", "asgi", "state"}


def check_lifespan_state(app) -> None:
    """Exercise 6: at lifespan startup, put what requests share into scope["state"]; each
    `GET /` answers the number of visits so far ("1", "2", ...) as text, counted in that
    shared state; answer startup and shutdown."""
    require_callable(LIFESPAN_STATE, app)
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
            explain_http(LIFESPAN_STATE, result, [], hint)
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
                     "keep the count in scope['state'], created at startup",
                     concept="each server start runs lifespan startup afresh, so state made there "
                             "starts afresh too; a module-level global is shared by every server "
                             "in the process.")
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
    with server_errors() as errors, serve(app, "lifespan-state", lifespan="on") as server:
        answers = [client.request(server.address).body.decode("utf-8", "replace").strip()
                   for _ in range(2)]
    if answers != ["1", "2"]:
        fail(LIFESPAN_STATE, f"on our real server (lifespan on) two requests answered {answers}; "
                             f"expected ['1', '2']. {describe_log(errors)}")
    passed(LIFESPAN_STATE, "startup, 1-2-3 across requests, a fresh server starts at 1, "
                           "shutdown; and on our real server.")


# == 9. Middleware around lifespan =================================================================

LIFESPAN_MIDDLEWARE = "Lifespan middleware"
register(
    LIFESPAN_MIDDLEWARE, "check_lifespan_middleware",
    concept="a message taken from receive() is gone: what your middleware reads, the inner app "
            "never sees. A middleware that wants to look at messages wraps receive and hands "
            "every message on.",
    api="give the inner app your own `async def receive_wrapper()` that awaits the real "
        "receive(), opens the database when it sees lifespan.startup, and returns the message; "
        "the inner app returns after shutdown, so close the database after `await self.app(...)`.",
    code="async def receive_wrapper(): message = await receive(); if message['type'] == "
         "'lifespan.startup': scope['state']['db'] = await FakeDatabase().connect(); return "
         "message. Then: await self.app(scope, receive_wrapper, send); await "
         "scope['state']['db'].close()")


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
    require_callable(LIFESPAN_MIDDLEWARE, middleware, "middleware")
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
