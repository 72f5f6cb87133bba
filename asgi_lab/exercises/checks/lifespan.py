"""Exercise 6 and two spot-the-bugs: lifespan state, and middleware around lifespan
(asgiref `specs/lifespan.rst`)."""

from __future__ import annotations

import sqlite3
import time

from ...background import server_errors
from .. import client
from ..feedback import fail, passed, register
from ..harness import (ASGIDriver, AppTimeout, describe_exception, http_request,
                       lifespan_scope, run)
from .common import describe_log, explain_http, require_callable, serve


# == 6. Lifespan and shared state ==================================================================

LIFESPAN_STATE = "Lifespan state"
register(
    LIFESPAN_STATE, "check_lifespan_state",
    concept="what an app opens once (a database connection, a pool) belongs to lifespan: open it "
            "at startup, close it at shutdown. Every request gets a new scope; only "
            "scope['state'] links it to startup, and each request gets a shallow copy of it: the "
            "keys are copied, the objects inside (the connection) are shared.",
    api="at lifespan.startup: conn = db.connect(); conn.execute('CREATE TEMP TABLE visits (at "
        "REAL)'); scope['state']['db'] = conn. A request uses scope['state']['db']; at "
        "lifespan.shutdown, conn.close().",
    code="request: conn = scope['state']['db']; conn.execute('INSERT INTO visits VALUES (?)', "
         "(time.time(),)); (count,) = conn.execute('SELECT count(*) FROM visits').fetchone(); "
         "body = str(count).encode()")
_STANDARD_LIFESPAN_KEYS = {"type", "asgi", "state"}


def _is_open(conn) -> bool | None:
    """Whether a database connection is open: True, False, or None when `conn` is not a
    connection we know (sqlite3, aiosqlite, psycopg)."""
    if isinstance(conn, sqlite3.Connection):
        try:
            conn.execute("SELECT 1")
            return True
        except sqlite3.ProgrammingError:  # "Cannot operate on a closed database."
            return False
    module = type(conn).__module__
    if module.startswith("aiosqlite"):
        return getattr(conn, "_connection", None) is not None
    if module.startswith("psycopg"):
        return not conn.closed
    return None


async def _close_quietly(conn) -> None:
    """Close what an app left open (an aiosqlite connection's thread would keep the process
    alive); a check must not leak the learner's mistakes."""
    if _is_open(conn):
        try:
            closing = conn.close()
            if hasattr(closing, "__await__"):
                await closing
        except Exception:
            pass


def _require_open_db(state: dict) -> None:
    conn = state.get("db")
    if _is_open(conn) is None:
        fail(LIFESPAN_STATE, f"after startup, scope['state']['db'] is {conn!r}; expected an open "
                             "database connection (from asgi_lab.db.connect()).",
             "at startup: conn = db.connect(); scope['state']['db'] = conn")
    if not _is_open(conn):
        fail(LIFESPAN_STATE, "after startup, scope['state']['db'] is already closed.",
             "open the connection at startup and close it only at shutdown")


def check_lifespan_state(app) -> None:
    """Exercise 6: at lifespan startup, open one database connection and put it in
    scope["state"]["db"]; each `GET /` records a visit in it and answers the number of visits
    so far ("1", "2", ...) as text; at shutdown, close the connection. Checked against the
    real connection: it must be open while requests run, used by them (one connection, not
    one per request), and closed after shutdown."""
    from ... import db as shop_db

    require_callable(LIFESPAN_STATE, app)
    hint = ("at startup, open one connection and keep it in the state (scope['state']['db'] = "
            "conn, with a TEMP table of visits); each request uses that connection")

    async def scenario():
        servers, states = [], []

        async def start_server() -> tuple[ASGIDriver, dict]:
            state: dict = {}
            lifespan = ASGIDriver(app, lifespan_scope(state)).start()
            servers.append(lifespan)
            states.append(state)
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
            opened_before = shop_db.shop.opened
            counts = [await visit(state, lifespan) for _ in range(3)]
            per_request = shop_db.shop.opened - opened_before
            if per_request:
                fail(LIFESPAN_STATE, f"three requests opened {per_request} database "
                                     "connection(s): opening one per request costs a connect "
                                     "each time (a network round trip and a login, for a "
                                     "server database), and a TEMP table lives only as long as "
                                     "its connection.",
                     "use the connection opened at startup: conn = scope['state']['db']")
            if counts == ["1", "1", "1"]:
                fail(LIFESPAN_STATE, "every request answered 1: each request's scope['state'] is "
                                     "a shallow copy of the startup state, so assigning "
                                     "state['visits'] = n (or += 1 on an int) changes only this "
                                     "request's copy. The copy shares the *objects* inside, not "
                                     "the keys.", hint)
            if counts != ["1", "2", "3"]:
                fail(LIFESPAN_STATE, f"three requests answered {counts}; expected ['1', '2', '3'].",
                     hint)
            _require_open_db(state)
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
            for server, state_ in zip(servers, states):
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
                if _is_open(state_.get("db")):
                    fail(LIFESPAN_STATE, "after lifespan.shutdown.complete the database "
                                         "connection is still open: every server start (every "
                                         "reload, every test) would leak one.",
                         "at lifespan.shutdown: scope['state']['db'].close(), then answer")
        finally:
            for server, state_ in zip(servers, states):
                await server.stop()
                await _close_quietly(state_.get("db"))

    run(scenario)
    with server_errors() as errors, serve(app, "lifespan-state", lifespan="on") as server:
        answers = [client.request(server.address).body.decode("utf-8", "replace").strip()
                   for _ in range(2)]
    if answers != ["1", "2"]:
        fail(LIFESPAN_STATE, f"on our real server (lifespan on) two requests answered {answers}; "
                             f"expected ['1', '2']. {describe_log(errors)}")
    passed(LIFESPAN_STATE, "one connection opened at startup, 1-2-3 across requests on it, a "
                           "fresh server starts at 1, the connection closed at shutdown; and on "
                           "our real server.")


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
         "'lifespan.startup': scope['state']['db'] = db.connect(); return message. Then: "
         "await self.app(scope, receive_wrapper, send); scope['state']['db'].close()")


class _RecordingLifespanApp:
    """The inner app of the middleware check: writes down what it receives and sees."""

    def __init__(self) -> None:
        self.received: list[str] = []
        self.db_at_startup = None
        self.db_open_at_shutdown: bool | None = None

    async def __call__(self, scope, receive, send):
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                self.received.append(message["type"])
                if message["type"] == "lifespan.startup":
                    self.db_at_startup = scope.get("state", {}).get("db")
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    self.db_open_at_shutdown = _is_open(scope.get("state", {}).get("db"))
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        elif scope["type"] == "http":
            db = scope.get("state", {}).get("db")
            body = b"db open" if _is_open(db) else b"no db"
            await send({"type": "http.response.start", "status": 200,
                        "headers": [(b"content-type", b"text/plain")]})
            await send({"type": "http.response.body", "body": body})


def check_lifespan_middleware(middleware) -> None:
    """Spot the bug: `middleware(app)` opens a database connection at startup, puts it in
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
            if not _is_open(db):
                fail(LIFESPAN_MIDDLEWARE, f"after startup, scope['state']['db'] is {db!r}; expected "
                                          "an open database connection.",
                     "scope['state']['db'] = db.connect() (from asgi_lab import db)")
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
            if _is_open(db):
                fail(LIFESPAN_MIDDLEWARE, "the database is still open after shutdown.",
                     "close it after the inner app has shut down: after `await self.app(...)` "
                     "returns, or when you see lifespan.shutdown.complete go by in send()")
            if inner.db_open_at_shutdown is False:
                fail(LIFESPAN_MIDDLEWARE, "the database was closed before the inner app's shutdown "
                                          "ran: the inner app may still need it to finish.",
                     "close it after the inner app answered lifespan.shutdown.complete")
        finally:
            await lifespan.stop()
            await _close_quietly(state.get("db"))

    run(scenario)
    passed(LIFESPAN_MIDDLEWARE, "the inner app got startup and shutdown, found the open database, "
                                "and the database closed last.")
