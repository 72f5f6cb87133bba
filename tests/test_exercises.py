"""The exercise checks: each catches the mistakes it names, and accepts any correct solution.

For every check: our solution, at least one correct solution written differently (often a real
framework: Flask, Starlette), and buggy apps, each asserted on the friendly message it gets.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys
import threading
import time
import traceback
import uuid
from urllib.parse import parse_qs

import pytest

from asgi_lab import db
from asgi_lab.apps.pitfalls import blocking_query
from asgi_lab.exercises import (ExerciseFailed, check_asgi_middleware,
                                check_async_bridge, check_asyncio_server, check_chat, prices, check_lifespan_middleware,
                                check_lifespan_state, check_sse, check_streamed_body,
                                check_streaming, check_unblocked, check_wsgi_app,
                                check_wsgi_middleware, reset_hints)


@pytest.fixture(autouse=True)
def fresh_hints():
    """Every test starts with no hint shown yet, as a fresh notebook kernel does."""
    reset_hints()
    yield
    reset_hints()


def fails_with(check, app, *fragments: str) -> str:
    """Run `check(app)`, expect ExerciseFailed, and find every fragment in its problem or in
    one of its three hint steps (which step a learner sees depends on their attempts: the
    graduated hints are tested on their own below)."""
    with pytest.raises(ExerciseFailed) as caught:
        check(app)
    message = str(caught.value)
    everything = f"{message}\n{caught.value.all_hints}"
    for fragment in fragments:
        assert fragment in everything, f"{fragment!r} not in:\n{everything}"
    assert "Traceback" not in message
    return message


def passes(check, app, capsys) -> str:
    check(app)
    out = capsys.readouterr().out
    assert "passed" in out
    return out


# == 1. WSGI app ====================================================================================

def greet(environ, start_response):
    name = parse_qs(environ["QUERY_STRING"]).get("name", ["world"])[0]
    body = f"Hello, {name}!".encode("utf-8")
    start_response("200 OK", [("Content-Type", "text/plain; charset=utf-8"),
                              ("Content-Length", str(len(body)))])
    return [body]


def greet_generator(environ, start_response):
    """Written differently: a generator, no Content-Length, parse_qsl."""
    from urllib.parse import parse_qsl
    params = dict(parse_qsl(environ.get("QUERY_STRING", "")))
    start_response("200 OK", [("Content-Type", "text/plain")])
    yield b"Hello, "
    yield params.get("name", "world").encode()
    yield b"!"


def test_wsgi_app_accepts_solutions(capsys):
    passes(check_wsgi_app, greet, capsys)
    passes(check_wsgi_app, greet_generator, capsys)


def test_wsgi_app_accepts_flask(capsys):
    flask = pytest.importorskip("flask")
    app = flask.Flask("greeter")

    @app.get("/")
    def index():
        name = flask.request.args.get("name", "world")
        return flask.Response(f"Hello, {name}!", mimetype="text/plain")

    passes(check_wsgi_app, app, capsys)


def test_wsgi_app_catches_mistakes():
    def returns_str(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain")])
        return ["Hello, world!"]

    def returns_bytes(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain")])
        return b"Hello, world!"

    def no_start_response(environ, start_response):
        return [b"Hello, world!"]

    def bytes_headers(environ, start_response):
        start_response("200 OK", [(b"Content-Type", b"text/plain")])
        return [b"Hello, world!"]

    def counts_characters(environ, start_response):
        name = parse_qs(environ["QUERY_STRING"]).get("name", ["world"])[0]
        text = f"Hello, {name}!"
        start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(text)))])
        return [text.encode()]

    def html(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/html")])
        return [b"Hello, world!"]

    def stub(environ, start_response):
        ...

    fails_with(check_wsgi_app, returns_str, "produced a str", "encode")
    fails_with(check_wsgi_app, returns_bytes, "returned a bytes", "[body]")
    fails_with(check_wsgi_app, no_start_response, "before calling start_response")
    fails_with(check_wsgi_app, bytes_headers, "tuple of two str")
    fails_with(check_wsgi_app, counts_characters, "Content-Length says 11 but the body is 12 bytes",
               "count bytes")
    fails_with(check_wsgi_app, html, "text/html")
    def raises(environ, start_response):
        name = environ["name"]
        return [name]

    def not_found(environ, start_response):
        start_response("404 Not Found", [("Content-Type", "text/plain")])
        return [b"Hello, world!"]

    def latin1_name(environ, start_response):
        from urllib.parse import unquote
        query = environ["QUERY_STRING"]
        name = unquote(query[5:], encoding="latin-1") if query.startswith("name=") else "world"
        start_response("200 OK", [("Content-Type", "text/plain; charset=utf-8")])
        return [f"Hello, {name}!".encode()]

    fails_with(check_wsgi_app, stub, "returned None")
    fails_with(check_wsgi_app, raises, "your app raised KeyError: 'name' (in raises, line",
               'name = environ["name"]')
    fails_with(check_wsgi_app, not_found, "'404 Not Found'; expected '200 OK'")
    fails_with(check_wsgi_app, latin1_name, "expected 'Hello, Zoë!'", "parse_qs")


def test_not_a_function():
    fails_with(check_wsgi_app, "app", "not a function")


# == 2. WSGI middleware =============================================================================

def request_id(app):
    def wrapped(environ, start_response):
        environ["request_id"] = environ.get("HTTP_X_REQUEST_ID") or uuid.uuid4().hex

        def start_response_with_id(status, headers, exc_info=None):
            return start_response(status, headers + [("X-Request-ID", environ["request_id"])],
                                  exc_info)
        return app(environ, start_response_with_id)
    return wrapped


class RequestIdMiddleware:
    """Written differently: a class, a counter for ids, the body wrapped in a generator that
    closes the inner iterable."""

    def __init__(self, app):
        self.app = app
        self.next_id = 0

    def __call__(self, environ, start_response):
        self.next_id += 1
        rid = environ.get("HTTP_X_REQUEST_ID", f"req-{self.next_id}")
        environ["request_id"] = rid

        def starter(status, headers, exc_info=None):
            headers.append(("X-Request-ID", rid))
            return start_response(status, headers, exc_info)

        inner = self.app(environ, starter)
        try:
            yield from inner
        finally:
            if hasattr(inner, "close"):
                inner.close()


def test_wsgi_middleware_accepts_solutions(capsys):
    passes(check_wsgi_middleware, request_id, capsys)
    passes(check_wsgi_middleware, RequestIdMiddleware, capsys)


def test_wsgi_middleware_catches_mistakes():
    def joins_body(app):
        def wrapped(environ, start_response):
            environ["request_id"] = environ.get("HTTP_X_REQUEST_ID") or uuid.uuid4().hex
            captured = {}

            def keep(status, headers, exc_info=None):
                captured.update(status=status, headers=headers)
            body = app(environ, keep)
            data = b"".join(body)
            if hasattr(body, "close"):
                body.close()
            start_response(captured["status"], captured["headers"] + [("X-Request-ID", environ["request_id"])])
            return [data]
        return wrapped

    def loses_close(app):
        def wrapped(environ, start_response):
            environ["request_id"] = environ.get("HTTP_X_REQUEST_ID") or uuid.uuid4().hex

            def starter(status, headers, exc_info=None):
                return start_response(status, headers + [("X-Request-ID", environ["request_id"])],
                                      exc_info)
            for chunk in app(environ, starter):
                yield chunk
        return wrapped

    def one_id(app):
        rid = uuid.uuid4().hex

        def wrapped(environ, start_response):
            environ["request_id"] = environ.get("HTTP_X_REQUEST_ID") or rid

            def starter(status, headers, exc_info=None):
                return start_response(status, headers + [("X-Request-ID", environ["request_id"])])
            return app(environ, starter)
        return wrapped

    def ignores_client_id(app):
        def wrapped(environ, start_response):
            environ["request_id"] = uuid.uuid4().hex

            def starter(status, headers, exc_info=None):
                return start_response(status, headers + [("X-Request-ID", environ["request_id"])])
            return app(environ, starter)
        return wrapped

    def forgets_header(app):
        def wrapped(environ, start_response):
            environ["request_id"] = environ.get("HTTP_X_REQUEST_ID") or uuid.uuid4().hex
            return app(environ, start_response)
        return wrapped

    def no_exc_info(app):
        def wrapped(environ, start_response):
            environ["request_id"] = environ.get("HTTP_X_REQUEST_ID") or uuid.uuid4().hex

            def starter(status, headers):
                return start_response(status, headers + [("X-Request-ID", environ["request_id"])])
            return app(environ, starter)
        return wrapped

    def drops_exc_info(app):
        def wrapped(environ, start_response):
            environ["request_id"] = environ.get("HTTP_X_REQUEST_ID") or uuid.uuid4().hex

            def starter(status, headers, exc_info=None):
                return start_response(status, headers + [("X-Request-ID", environ["request_id"])])
            return app(environ, starter)
        return wrapped

    fails_with(check_wsgi_middleware, no_exc_info, "your wrapper raised TypeError", "exc_info=None")
    fails_with(check_wsgi_middleware, drops_exc_info, "dropped it")
    fails_with(check_wsgi_middleware, joins_body, "joined them")
    fails_with(check_wsgi_middleware, loses_close, "close()", "nobody called it")
    fails_with(check_wsgi_middleware, one_id, "got the same id")
    fails_with(check_wsgi_middleware, ignores_client_id, "reuse the client's id", "HTTP_X_REQUEST_ID")
    fails_with(check_wsgi_middleware, forgets_header, "X-Request-ID is None")


# == 3. Streamed request body =======================================================================

async def count_body(scope, receive, send):
    size = newlines = 0
    more_body = True
    while more_body:
        message = await receive()
        body = message.get("body", b"")
        size, newlines = size + len(body), newlines + body.count(b"\n")
        more_body = message.get("more_body", False)
    payload = json.dumps({"bytes": size, "newlines": newlines}).encode()
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": payload})


def test_streamed_body_accepts_solutions(capsys):
    passes(check_streamed_body, count_body, capsys)


def test_streamed_body_accepts_starlette(capsys):
    from starlette.requests import Request
    from starlette.responses import JSONResponse

    async def app(scope, receive, send):
        request = Request(scope, receive)
        size = newlines = 0
        async for chunk in request.stream():
            size, newlines = size + len(chunk), newlines + chunk.count(b"\n")
        await JSONResponse({"bytes": size, "newlines": newlines})(scope, receive, send)

    passes(check_streamed_body, app, capsys)


def test_streamed_body_catches_mistakes():
    async def first_message_only(scope, receive, send):
        body = (await receive())["body"]
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body",
                    "body": json.dumps({"bytes": len(body), "newlines": body.count(b"\n")}).encode()})

    async def body_first(scope, receive, send):
        await send({"type": "http.response.body", "body": b"{}"})

    async def forgot_await(scope, receive, send):
        await receive()
        send({"type": "http.response.start", "status": 200, "headers": []})

    async def str_headers(scope, receive, send):
        await send({"type": "http.response.start", "status": 200,
                    "headers": [("content-type", "application/json")]})

    def not_async(scope, receive, send):
        return None

    async def plain_text(scope, receive, send):
        await receive()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"12 bytes"})

    fails_with(check_streamed_body, plain_text, "your app answered b'12 bytes'; expected JSON")
    fails_with(check_streamed_body, first_message_only, "only the first http.request message")
    fails_with(check_streamed_body, body_first,
               "your app sent http.response.body before http.response.start")
    fails_with(check_streamed_body, forgot_await, "never awaited", "`await send")
    fails_with(check_streamed_body, str_headers, "header names and values are bytes")
    fails_with(check_streamed_body, not_async, "plain `def`")


# == 4. SSE that stops ==============================================================================

async def sse(scope, receive, send):
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"text/event-stream")]})

    async def events():
        n = 0
        while True:
            n += 1
            await send({"type": "http.response.body", "body": f"data: {n}\n\n".encode(),
                        "more_body": True})
            await asyncio.sleep(0.05)

    async def until_disconnect():
        while (await receive())["type"] != "http.disconnect":
            pass

    tasks = {asyncio.ensure_future(events()), asyncio.ensure_future(until_disconnect())}
    _, pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    for task in pending:
        task.cancel()


async def sse_with_event(scope, receive, send):
    """Written differently: a watcher task sets an Event; the loop checks it and waits on it."""
    gone = asyncio.Event()

    async def watch():
        while (await receive())["type"] != "http.disconnect":
            pass
        gone.set()

    watcher = asyncio.create_task(watch())
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"text/event-stream; charset=utf-8"),
                            (b"cache-control", b"no-cache")]})
    n = 0
    while not gone.is_set():
        n += 1
        await send({"type": "http.response.body", "body": b"event: tick\ndata: %d\n\n" % n,
                    "more_body": True})
        try:
            await asyncio.wait_for(gone.wait(), 0.05)
        except asyncio.TimeoutError:
            pass
    watcher.cancel()


def test_sse_accepts_solutions(capsys):
    passes(check_sse, sse, capsys)
    passes(check_sse, sse_with_event, capsys)


def test_sse_accepts_starlette(capsys):
    from starlette.responses import StreamingResponse

    async def ticks():
        n = 0
        while True:
            n += 1
            yield f"data: {n}\n\n"
            await asyncio.sleep(0.05)

    async def app(scope, receive, send):
        await StreamingResponse(ticks(), media_type="text/event-stream")(scope, receive, send)

    passes(check_sse, app, capsys)


def test_sse_catches_mistakes():
    async def never_listens(scope, receive, send):
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"text/event-stream")]})
        n = 0
        while True:
            n += 1
            await send({"type": "http.response.body", "body": f"data: {n}\n\n".encode(),
                        "more_body": True})
            await asyncio.sleep(0.05)

    async def plain_text(scope, receive, send):
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"text/plain")]})
        await send({"type": "http.response.body", "body": b"data: 1\n\n"})

    async def ends_stream(scope, receive, send):
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"text/event-stream")]})
        await send({"type": "http.response.body", "body": b"data: 1\n\n"})

    message = fails_with(check_sse, never_listens,
                         "the client disconnected and your SSE loop kept sending for 1 s",
                         "http.disconnect")
    assert "events nobody will read" in message
    async def three_and_out(scope, receive, send):
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"text/event-stream")]})
        for n in range(3):
            await send({"type": "http.response.body", "body": b"data: %d\n\n" % n, "more_body": True})

    fails_with(check_sse, three_and_out, "returned after 3 events", "without ending the response")
    fails_with(check_sse, plain_text, "text/event-stream")
    async def silent(scope, receive, send):
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"text/event-stream")]})
        await asyncio.sleep(10)

    fails_with(check_sse, ends_stream, "after 1 event(s) your app sent more_body=False")
    fails_with(check_sse, silent, "got 0 in time")


# == 5. WebSocket chat ==============================================================================

room: set = set()


async def chat(scope, receive, send):
    await receive()  # websocket.connect
    await send({"type": "websocket.accept"})
    room.add(send)
    try:
        while True:
            message = await receive()
            if message["type"] == "websocket.disconnect":
                return
            for member in list(room):
                await member({"type": "websocket.send", "text": message.get("text")})
    finally:
        room.discard(send)


members: dict = {}


async def chat_gather(scope, receive, send):
    """Written differently: members by client address, a gather for the broadcast, and the
    loop driven by message type."""
    me = scope["client"]
    while True:
        message = await receive()
        if message["type"] == "websocket.connect":
            await send({"type": "websocket.accept"})
            members[me] = send
        elif message["type"] == "websocket.receive":
            out = {"type": "websocket.send", "text": message["text"]}
            await asyncio.gather(*(member(out) for member in list(members.values())))
        else:
            members.pop(me, None)
            break


def test_chat_accepts_solutions(capsys):
    passes(check_chat, chat, capsys)
    passes(check_chat, chat_gather, capsys)


def test_chat_accepts_starlette(capsys):
    from starlette.applications import Starlette
    from starlette.routing import WebSocketRoute
    from starlette.websockets import WebSocketDisconnect

    sockets = []

    async def endpoint(websocket):
        await websocket.accept()
        sockets.append(websocket)
        try:
            while True:
                text = await websocket.receive_text()
                for other in list(sockets):
                    await other.send_text(text)
        except WebSocketDisconnect:
            pass
        finally:
            sockets.remove(websocket)

    passes(check_chat, Starlette(routes=[WebSocketRoute("/chat", endpoint)]), capsys)


bad_room: set = set()


async def registers_before_accept(scope, receive, send):
    await receive()
    bad_room.add(send)  # the tutorial's order: in the room before the handshake is done
    await send({"type": "websocket.accept"})
    try:
        while True:
            message = await receive()
            if message["type"] == "websocket.disconnect":
                return
            for member in list(bad_room):
                await member({"type": "websocket.send", "text": message["text"]})
    finally:
        bad_room.discard(send)


leaky_room: list = []


async def never_leaves(scope, receive, send):
    await receive()
    await send({"type": "websocket.accept"})
    leaky_room.append(send)
    while True:
        message = await receive()
        if message["type"] == "websocket.disconnect":
            return
        for member in leaky_room:
            await member({"type": "websocket.send", "text": message["text"]})


others_room: set = set()


async def not_to_sender(scope, receive, send):
    await receive()
    await send({"type": "websocket.accept"})
    others_room.add(send)
    try:
        while (message := await receive())["type"] != "websocket.disconnect":
            for member in others_room - {send}:
                await member({"type": "websocket.send", "text": message["text"]})
    finally:
        others_room.discard(send)


def test_chat_catches_mistakes():
    fails_with(check_chat, registers_before_accept, "before his websocket.accept was done",
               "after `await send({'type': 'websocket.accept'})`")
    fails_with(check_chat, never_leaves, "already disconnected", "remove it from the room")
    fails_with(check_chat, not_to_sender, "Alice waited 1 s for 'hi from Alice'", "the sender too")


# == 6. Lifespan state ==============================================================================

async def visits(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                conn = db.connect()
                conn.execute("CREATE TEMP TABLE visits (at REAL)")
                scope["state"]["db"] = conn
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                scope["state"]["db"].close()
                await send({"type": "lifespan.shutdown.complete"})
                return
    elif scope["type"] == "http":
        conn = scope["state"]["db"]
        conn.execute("INSERT INTO visits VALUES (?)", (time.time(),))
        (count,) = conn.execute("SELECT count(*) FROM visits").fetchone()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": str(count).encode()})


async def visits_aiosqlite(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                conn = await db.connect_async()
                await conn.execute("CREATE TEMP TABLE visits (at REAL)")
                scope["state"]["db"] = conn
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await scope["state"]["db"].close()
                await send({"type": "lifespan.shutdown.complete"})
                return
    elif scope["type"] == "http":
        conn = scope["state"]["db"]
        await conn.execute("INSERT INTO visits VALUES (?)", (time.time(),))
        (count,) = await (await conn.execute("SELECT count(*) FROM visits")).fetchone()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": str(count).encode()})


def test_lifespan_state_accepts_solutions(capsys):
    passes(check_lifespan_state, visits, capsys)
    passes(check_lifespan_state, visits_aiosqlite, capsys)


def test_lifespan_state_accepts_starlette(capsys):
    import contextlib
    import itertools

    from starlette.applications import Starlette
    from starlette.responses import PlainTextResponse
    from starlette.routing import Route

    @contextlib.asynccontextmanager
    async def lifespan(app):
        conn = db.connect()
        conn.execute("CREATE TEMP TABLE visits (at REAL)")
        try:
            yield {"db": conn}
        finally:
            conn.close()

    async def index(request):
        request.state.db.execute("INSERT INTO visits VALUES (1)")
        (count,) = request.state.db.execute("SELECT count(*) FROM visits").fetchone()
        return PlainTextResponse(str(count))

    passes(check_lifespan_state, Starlette(routes=[Route("/", index)], lifespan=lifespan), capsys)


def test_lifespan_state_catches_mistakes():
    async def rebinds_int(scope, receive, send):
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    scope["state"]["visits"] = 0
                    await send({"type": "lifespan.startup.complete"})
                else:
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        scope["state"]["visits"] += 1
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": str(scope["state"]["visits"]).encode()})

    async def on_lifespan_scope(scope, receive, send):
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    scope["app_state"] = {"visits": 0}  # "the server passes this scope to everyone"
                    await send({"type": "lifespan.startup.complete"})
                else:
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        shared = scope["app_state"]
        shared["visits"] += 1
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": str(shared["visits"]).encode()})

    shared = {}

    async def module_global(scope, receive, send):  # one connection for every server
        if scope["type"] == "lifespan":
            if "db" not in shared:
                shared["db"] = db.connect()
                shared["db"].execute("CREATE TEMP TABLE visits (at REAL)")
            scope["state"]["db"] = shared["db"]
            while True:
                message = await receive()
                await send({"type": message["type"] + ".complete"})
                if message["type"] == "lifespan.shutdown":
                    return
        await visits(scope, receive, send)

    async def never_answers(scope, receive, send):
        if scope["type"] == "lifespan":
            await receive()
            await asyncio.sleep(10)

    fails_with(check_lifespan_state, rebinds_int, "every request answered 1", "shallow copy")
    fails_with(check_lifespan_state, on_lifespan_scope, "stored ['app_state'] on the lifespan scope",
               "KeyError: 'app_state'", "shared = scope[\"app_state\"]")
    fails_with(check_lifespan_state, module_global, "a second server", "module global")

    async def counts_without_a_database(scope, receive, send):
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    scope["state"]["visits"] = {"count": 0}
                await send({"type": message["type"] + ".complete"})
                if message["type"] == "lifespan.shutdown":
                    return
        scope["state"]["visits"]["count"] += 1
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body",
                    "body": str(scope["state"]["visits"]["count"]).encode()})

    async def connection_per_request(scope, receive, send):
        if scope["type"] == "lifespan":
            await visits(scope, receive, send)
            return
        conn = db.connect()
        conn.execute("CREATE TEMP TABLE IF NOT EXISTS visits (at REAL)")
        conn.execute("INSERT INTO visits VALUES (1)")
        (count,) = conn.execute("SELECT count(*) FROM visits").fetchone()
        conn.close()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": str(count).encode()})

    async def never_closes(scope, receive, send):
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    scope["state"]["db"] = db.connect()
                    scope["state"]["db"].execute("CREATE TEMP TABLE visits (at REAL)")
                await send({"type": message["type"] + ".complete"})
                if message["type"] == "lifespan.shutdown":
                    return
        await visits(scope, receive, send)

    fails_with(check_lifespan_state, counts_without_a_database,
               "expected an open database connection", "db.connect()")
    fails_with(check_lifespan_state, connection_per_request, "opened 3 database connection(s)",
               "scope['state']['db']")
    fails_with(check_lifespan_state, never_closes, "connection is still open", ".close()")
    async def forgets_shutdown(scope, receive, send):
        if scope["type"] == "lifespan":
            await receive()
            scope["state"]["db"] = db.connect()
            scope["state"]["db"].execute("CREATE TEMP TABLE visits (at REAL)")
            await send({"type": "lifespan.startup.complete"})
            await receive()
            scope["state"]["db"].close()
            return  # no lifespan.shutdown.complete
        await visits(scope, receive, send)

    fails_with(check_lifespan_state, never_answers, "never answered lifespan.startup")
    fails_with(check_lifespan_state, forgets_shutdown, "after lifespan.shutdown your app sent None",
               "lifespan.shutdown.complete")


# == 7. Unblock the loop ============================================================================

async def with_to_thread(scope, receive, send):
    name = await asyncio.to_thread(blocking_query)
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": name.encode()})


async def with_executor(scope, receive, send):
    loop = asyncio.get_running_loop()
    name = await loop.run_in_executor(None, blocking_query, 0.2)
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": name.encode() + b"\n"})


def test_unblocked_accepts_solutions(capsys):
    passes(check_unblocked, with_to_thread, capsys)
    passes(check_unblocked, with_executor, capsys)


def test_unblocked_catches_blocking():
    async def blocking(scope, receive, send):
        name = blocking_query()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": name.encode()})

    message = fails_with(check_unblocked, blocking, "your handler blocked the event loop for",
                         "other requests waited", "asyncio.to_thread")
    assert "for 0.0 s" not in message

    async def skips_the_query(scope, receive, send):
        await asyncio.sleep(0.2)
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"Ada Lovelace"})

    fails_with(check_unblocked, skips_the_query, "ran blocking_query() 0 times", "not to skip it")


# == 8. Streaming response ==========================================================================

async def streaming(scope, receive, send):
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"text/plain")]})
    for i in range(10):
        await send({"type": "http.response.body", "body": f"chunk {i}\n".encode(), "more_body": True})
    await send({"type": "http.response.body"})


def test_streaming_accepts_solutions(capsys):
    out = passes(check_streaming, streaming, capsys)
    assert "transfer-encoding: chunked" in out


def test_streaming_accepts_starlette(capsys):
    from starlette.responses import StreamingResponse

    async def chunks():
        for i in range(10):
            yield f"chunk {i}\n"

    async def app(scope, receive, send):
        await StreamingResponse(chunks(), media_type="text/plain")(scope, receive, send)

    passes(check_streaming, app, capsys)


def test_streaming_passes_a_transfer_encoding_header_with_the_spec_quoted(capsys):
    """The ASGI spec allows the header (the server must ignore it): not a failure, a note."""
    async def sets_transfer_encoding(scope, receive, send):
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"text/plain"), (b"transfer-encoding", b"chunked")]})
        for i in range(10):
            await send({"type": "http.response.body", "body": f"chunk {i}\n".encode(), "more_body": True})
        await send({"type": "http.response.body", "body": b""})

    out = passes(check_streaming, sets_transfer_encoding, capsys)
    assert "Note: your Transfer-Encoding header changed nothing" in out
    assert "but the server must ignore it" in out and "version 2.5" in out


def frames_by_hand(scope, receive, send):
    """The tutorial's mistake: the app writes the chunked framing itself."""
    async def app(scope, receive, send):
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"transfer-encoding", b"chunked")]})
        for i in range(10):
            data = f"chunk {i}\n".encode()
            await send({"type": "http.response.body", "body": b"%x\r\n%s\r\n" % (len(data), data),
                        "more_body": True})
        await send({"type": "http.response.body", "body": b"0\r\n\r\n"})
    return app(scope, receive, send)


def test_streaming_catches_mistakes():
    async def all_at_once(scope, receive, send):
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body",
                    "body": b"".join(f"chunk {i}\n".encode() for i in range(10))})

    message = fails_with(check_streaming, frames_by_hand, "your body begins b'8\\r\\nchunk 0",
                         "framed twice", "but the server must ignore it", "'body': f'chunk {i}")
    assert "but the server must ignore it" in message  # the spec quote is the first hint
    fails_with(check_streaming, all_at_once, "in 1 message(s)")


# == 9. Lifespan middleware =========================================================================

class DatabaseMiddleware:
    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "lifespan":
            return await self.app(scope, receive, send)

        async def receive_and_open():
            message = await receive()
            if message["type"] == "lifespan.startup":
                scope["state"]["db"] = db.connect()
            return message

        await self.app(scope, receive_and_open, send)
        scope["state"]["db"].close()


def database_middleware(app):
    """Written differently: a closure that closes the database when the inner app's
    lifespan.shutdown.complete goes by in send()."""
    async def wrapped(scope, receive, send):
        if scope["type"] != "lifespan":
            await app(scope, receive, send)
            return

        async def receive_wrapper():
            message = await receive()
            if message["type"] == "lifespan.startup":
                scope["state"]["db"] = db.connect()
            return message

        async def send_wrapper(message):
            if message["type"] == "lifespan.shutdown.complete":
                scope["state"]["db"].close()
            await send(message)

        await app(scope, receive_wrapper, send_wrapper)
    return wrapped


def test_lifespan_middleware_accepts_solutions(capsys):
    passes(check_lifespan_middleware, DatabaseMiddleware, capsys)
    passes(check_lifespan_middleware, database_middleware, capsys)


def test_lifespan_middleware_catches_mistakes():
    class SwallowsStartup:
        """The tutorial's DatabaseMiddleware: reads lifespan.startup itself."""

        def __init__(self, app):
            self.app = app

        async def __call__(self, scope, receive, send):
            if scope["type"] == "lifespan":
                message = await receive()
                if message["type"] == "lifespan.startup":
                    scope["state"]["db"] = db.connect()
            await self.app(scope, receive, send)

    class AnswersForTheApp:
        def __init__(self, app):
            self.app = app

        async def __call__(self, scope, receive, send):
            if scope["type"] == "lifespan":
                async def receive_and_answer():
                    message = await receive()
                    if message["type"] == "lifespan.startup":
                        scope["state"]["db"] = db.connect()
                        await send({"type": "lifespan.startup.complete"})
                    return message
                await self.app(scope, receive_and_answer, send)
            else:
                await self.app(scope, receive, send)

    class ClosesTooEarly:
        def __init__(self, app):
            self.app = app

        async def __call__(self, scope, receive, send):
            if scope["type"] != "lifespan":
                return await self.app(scope, receive, send)

            async def wrapper():
                message = await receive()
                if message["type"] == "lifespan.startup":
                    scope["state"]["db"] = db.connect()
                elif message["type"] == "lifespan.shutdown":
                    scope["state"]["db"].close()
                return message
            await self.app(scope, wrapper, send)

    fails_with(check_lifespan_middleware, SwallowsStartup,
               "the inner app never received lifespan.startup", "kept it")
    fails_with(check_lifespan_middleware, AnswersForTheApp, "answered twice")
    class NeverCloses(DatabaseMiddleware):
        async def __call__(self, scope, receive, send):
            if scope["type"] != "lifespan":
                return await self.app(scope, receive, send)

            async def wrapper():
                message = await receive()
                if message["type"] == "lifespan.startup":
                    scope["state"]["db"] = db.connect()
                return message
            await self.app(scope, wrapper, send)

    fails_with(check_lifespan_middleware, ClosesTooEarly, "closed before the inner app's shutdown")
    fails_with(check_lifespan_middleware, NeverCloses, "still open after shutdown")


# == the failure itself ===============================================================================

def test_exercise_failed_is_short_and_friendly():
    error = ExerciseFailed("WSGI app", "your app returned None.", "return [body]")
    assert isinstance(error, AssertionError)
    assert str(error) == "WSGI app: your app returned None.\nHint: return [body]"
    lines = error._render_traceback_()  # what IPython prints instead of a traceback
    assert lines[0] == "✗ WSGI app" and "Hint: return [body]" in lines
    try:
        try:
            {}["x"]
        except KeyError:
            check_wsgi_app(lambda environ, start_response: None)
    except ExerciseFailed as failed:
        assert failed.__suppress_context__  # raised `from None`: no chained traceback


# == the course path ==================================================================================

def test_course_tables_list_only_notebooks_that_exist(tmp_path):
    from asgi_lab.exercises import course

    notebook = {"cells": [{"cell_type": "markdown", "source": ["word " * 2000]},
                          {"cell_type": "code", "source": ["x = 1"]}], "metadata": {}}
    (tmp_path / "01-the-wsgi-call.ipynb").write_text(json.dumps(notebook))
    (tmp_path / "exercises").mkdir()
    (tmp_path / "exercises" / "01-wsgi-app.ipynb").write_text(json.dumps(notebook))

    assert course.study_minutes(tmp_path / "01-the-wsgi-call.ipynb") == 15  # 10 + 1, rounded up
    table = course.course_markdown(tmp_path)
    assert "(01-the-wsgi-call.ipynb)" in table and "02-asgi-events" not in table
    exercises = course.exercises_markdown(tmp_path)
    assert "(exercises/01-wsgi-app.ipynb)" in exercises and "02-wsgi-middleware" not in exercises
    assert "[01 The WSGI call](01-the-wsgi-call.ipynb)" in exercises


def test_grading_from_the_command_line(tmp_path, capsys):
    from asgi_lab.exercises.__main__ import main

    submission = tmp_path / "alice.py"
    submission.write_text("async def app(scope, receive, send):\n"
                          "    await send({'type': 'http.response.body', 'body': b'{}'})\n")
    assert main(["streamed_body", f"{submission}:app"]) == 1
    out = capsys.readouterr().out
    assert out.startswith("✗ Streamed request body") and "before http.response.start" in out
    solved = tmp_path / "bob.py"
    solved.write_text("import json\n\n"
                      "async def app(scope, receive, send):\n"
                      "    size, lines, more = 0, 0, True\n"
                      "    while more:\n"
                      "        message = await receive()\n"
                      "        size += len(message.get('body', b''))\n"
                      "        lines += message.get('body', b'').count(b'\\n')\n"
                      "        more = message.get('more_body', False)\n"
                      "    await send({'type': 'http.response.start', 'status': 200})\n"
                      "    await send({'type': 'http.response.body', 'body': json.dumps(\n"
                      "        {'bytes': size, 'newlines': lines}).encode()})\n")
    assert main(["check_streamed_body", f"{solved}:app"]) == 0
    assert "passed" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["no_such_check", f"{submission}:app"])


# == graduated hints ==================================================================================

def stub_wsgi_app(environ, start_response):
    ...


def test_first_failure_shows_only_the_idea_then_the_api_then_the_code():
    from asgi_lab.exercises.checks.wsgi import WSGI_APP
    from asgi_lab.exercises.feedback import _find

    steps = _find(WSGI_APP).hints
    messages = []
    for _ in range(4):
        with pytest.raises(ExerciseFailed) as caught:
            check_wsgi_app(stub_wsgi_app)
        messages.append(str(caught.value))
    first, second, third, fourth = messages
    assert "returned None" in first                  # the problem, in the learner's terms
    assert f"Hint 1/3, the idea: {steps.concept}" in first
    assert steps.api not in first and steps.code not in first and "start_response('200" not in first
    assert "hint(check_wsgi_app)" in first           # where the next step is
    assert f"Hint 2/3, the API: {steps.api}" in second and steps.code not in second
    assert f"Hint 3/3, the code: " in third and "Next:" not in third
    assert "Hint 3/3" in fourth                      # the code stays available


def test_hint_reveals_the_next_step_on_request(capsys):
    from asgi_lab.exercises import hint
    from asgi_lab.exercises.checks.sse import SSE
    from asgi_lab.exercises.feedback import _find

    steps = _find(SSE).hints
    hint(check_sse)
    out = capsys.readouterr().out
    assert f"Hint 1/3, the idea: {steps.concept}"[:60] in out and "Hint 2/3" not in out
    hint("check_sse")
    out = capsys.readouterr().out
    assert "Hint 1/3" in out and "Hint 2/3, the API" in out and "Hint 3/3" not in out
    hint(check_sse)
    hint(check_sse)                                  # no fourth step: the code stays
    out = capsys.readouterr().out
    assert out.count("Hint 3/3, the code") == 2 and "Next:" not in out.splitlines()[-1]
    with pytest.raises(KeyError, match="check_sse"):
        hint("no such exercise")


def test_hint_without_an_exercise_continues_the_last_failure(capsys):
    from asgi_lab.exercises import hint

    hint()
    assert "No check has failed yet" in capsys.readouterr().out
    with pytest.raises(ExerciseFailed):
        check_wsgi_app(stub_wsgi_app)               # shows step 1
    hint()                                          # step 2, for the WSGI app
    out = capsys.readouterr().out
    assert out.startswith("WSGI app: hints so far") and "Hint 2/3, the API" in out
    with pytest.raises(ExerciseFailed) as third:
        check_wsgi_app(stub_wsgi_app)
    assert third.value.level == 3


def test_hints_count_per_exercise_and_start_again():
    async def stub_app(scope, receive, send):
        pass

    for _ in range(2):
        with pytest.raises(ExerciseFailed):
            check_streamed_body(stub_app)
    with pytest.raises(ExerciseFailed) as other:
        check_wsgi_app(stub_wsgi_app)
    assert other.value.level == 1                    # another exercise starts at the idea
    with pytest.raises(ExerciseFailed) as third:
        check_streamed_body(stub_app)
    assert third.value.level == 3
    reset_hints(check_streamed_body)
    with pytest.raises(ExerciseFailed) as again:
        check_streamed_body(stub_app)
    assert again.value.level == 1


def test_every_exercise_has_three_different_steps():
    from asgi_lab.exercises import checks
    from asgi_lab.exercises.feedback import _EXERCISES

    names = {entry.check for entry in _EXERCISES.values()}
    assert names == {name for name in checks.__all__ if name.startswith("check_")}
    for title, entry in _EXERCISES.items():
        concept, api, code = entry.hints.concept, entry.hints.api, entry.hints.code
        assert concept and api and code and len({concept, api, code}) == 3, title
        assert code not in concept and "await send(" not in concept, title


def test_the_stored_stub_failures_show_only_the_first_hint():
    """What nbval compares: each exercise notebook's failing check cell, run on its stub in
    a fresh kernel, shows the idea and never the code."""
    from pathlib import Path

    folder = Path(__file__).parent.parent / "notebooks" / "exercises"
    seen = 0
    for path in sorted(folder.glob("*.ipynb")):
        for cell in json.loads(path.read_text(encoding="utf-8"))["cells"]:
            if cell["cell_type"] != "code" or "NBVAL_RAISES_EXCEPTION" not in "".join(cell["source"]):
                continue
            errors = [output for output in cell.get("outputs", []) if output["output_type"] == "error"]
            assert errors, f"{path.name}: a check cell without its stored failure"
            text = "\n".join(errors[0]["traceback"])
            assert "Hint 1/3, the idea" in text, f"{path.name}: {text}"
            assert "Hint 2/3" not in text and "Hint 3/3" not in text, path.name
            seen += 1
    assert seen >= 11


def test_grading_script_can_show_all_hints(tmp_path, capsys):
    from asgi_lab.exercises.__main__ import main

    submission = tmp_path / "carol.py"
    submission.write_text("def app(environ, start_response):\n    pass\n")
    assert main(["wsgi_app", f"{submission}:app", "--all-hints"]) == 1
    out = capsys.readouterr().out
    assert "Hint 1/3, the idea" in out and "All hints:" in out and "the code: " in out


# == 9. (stretch) ASGI middleware that wraps send ======================================================

class ServedBy:
    """The solution: a class; a new headers list; the report after the last body message."""

    def __init__(self, app, report):
        self.app = app
        self.report = report

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status, size = None, 0

        async def send_wrapper(message):
            nonlocal status, size
            if message["type"] == "http.response.start":
                status = message["status"]
                message = {**message, "headers": [*message.get("headers", []), (b"x-served-by", b"asgi-lab")]}
            elif message["type"] == "http.response.body":
                size += len(message.get("body", b""))
            await send(message)
            if message["type"] == "http.response.body" and not message.get("more_body", False):
                self.report(scope["path"], status, size)

        await self.app(scope, receive, send_wrapper)


def served_by(app, report):
    """Written differently: a function and a closure (the inner app is `app`, not self.app);
    every scope goes through the wrapper, which changes only HTTP messages."""
    async def middleware(scope, receive, send):
        counted = {"size": 0}

        async def send_wrapper(message):
            if message["type"] == "http.response.start":
                counted["status"] = message["status"]
                message = dict(message, headers=list(message.get("headers", [])) + [(b"x-served-by", b"asgi-lab")])
            elif message["type"] == "http.response.body":
                counted["size"] += len(message.get("body", b""))
                if not message.get("more_body"):
                    await send(message)
                    report(scope["path"], counted["status"], counted["size"])
                    return
            await send(message)

        await app(scope, receive, send_wrapper)
    return middleware


def test_asgi_middleware_accepts_solutions(capsys):
    passes(check_asgi_middleware, ServedBy, capsys)
    out = passes(check_asgi_middleware, served_by, capsys)
    assert "lifespan and WebSocket untouched" in out and "real server" in out


class _Broken(ServedBy):
    """Each subclass makes one realistic mistake in __call__."""


def test_asgi_middleware_catches_mistakes():
    class Stub(_Broken):
        async def __call__(self, scope, receive, send):
            await self.app(scope, receive, send)

    class MutatesHeaders(_Broken):
        async def __call__(self, scope, receive, send):
            if scope["type"] != "http":
                return await self.app(scope, receive, send)
            size = 0

            async def send_wrapper(message):
                nonlocal size
                if message["type"] == "http.response.start":
                    message["headers"].append((b"x-served-by", b"asgi-lab"))
                size += len(message.get("body", b""))
                await send(message)
                if message["type"] == "http.response.body" and not message.get("more_body"):
                    self.report(scope["path"], 201, size)
            await self.app(scope, receive, send_wrapper)

    class HeaderOnEveryMessage(_Broken):
        async def __call__(self, scope, receive, send):
            async def send_wrapper(message):
                if "headers" in message:
                    message = {**message, "headers": [*message["headers"], (b"x-served-by", b"asgi-lab")]}
                await send(message)
                if message["type"] == "http.response.body" and not message.get("more_body"):
                    self.report(scope["path"], 201, 37)
            await self.app(scope, receive, send_wrapper)

    class PathOfEveryScope(ServedBy):
        async def __call__(self, scope, receive, send):
            path = scope["path"]
            await super().__call__(scope, receive, send)

    class HoldsTheBody(_Broken):
        async def __call__(self, scope, receive, send):
            if scope["type"] != "http":
                return await self.app(scope, receive, send)
            held = []

            async def send_wrapper(message):
                held.append(message)
                if message["type"] == "http.response.body" and not message.get("more_body"):
                    start = {**held[0], "headers": [*held[0]["headers"], (b"x-served-by", b"asgi-lab")]}
                    body = b"".join(m.get("body", b"") for m in held[1:])
                    await send(start)
                    await send({"type": "http.response.body", "body": body})
                    self.report(scope["path"], start["status"], len(body))
            await self.app(scope, receive, send_wrapper)

    class ReportsAtStart(_Broken):
        async def __call__(self, scope, receive, send):
            if scope["type"] != "http":
                return await self.app(scope, receive, send)

            async def send_wrapper(message):
                if message["type"] == "http.response.start":
                    message = {**message, "headers": [*message["headers"], (b"x-served-by", b"asgi-lab")]}
                    self.report(scope["path"], message["status"], 0)
                await send(message)
            await self.app(scope, receive, send_wrapper)

    class KeepsTheBody(_Broken):
        async def __call__(self, scope, receive, send):
            if scope["type"] != "http":
                return await self.app(scope, receive, send)

            async def send_wrapper(message):
                if message["type"] == "http.response.start":
                    await send({**message, "headers": [*message["headers"], (b"x-served-by", b"asgi-lab")]})
            await self.app(scope, receive, send_wrapper)

    class ForgetsAwait(ServedBy):
        async def __call__(self, scope, receive, send):
            if scope["type"] != "http":
                return await self.app(scope, receive, send)

            async def send_wrapper(message):
                if message["type"] == "http.response.start":
                    message = {**message, "headers": [*message["headers"], (b"x-served-by", b"asgi-lab")]}
                send(message)
            await self.app(scope, receive, send_wrapper)

    def self_in_a_closure(app, report):  # the book's erratum
        async def middleware(scope, receive, send):
            await self.app(scope, receive, send)  # noqa: F821
        return middleware

    fails_with(check_asgi_middleware, Stub, "no x-served-by: asgi-lab")
    fails_with(check_asgi_middleware, MutatesHeaders, "second response carried x-served-by 2 times",
               "inner app's own headers list", "change a copy")
    fails_with(check_asgi_middleware, HeaderOnEveryMessage, "on a websocket scope",
               "through untouched", "every kind of scope")
    fails_with(check_asgi_middleware, PathOfEveryScope, "on a lifespan scope your middleware raised "
               "KeyError: 'path'", "if scope['type'] != 'http'")
    fails_with(check_asgi_middleware, HoldsTheBody, "streamed 4 body messages", "the server got 1",
               "would stop streaming")
    fails_with(check_asgi_middleware, ReportsAtStart, "report got ('/one', 201, 0)",
               "expected ('/one', 201, 37)")
    fails_with(check_asgi_middleware, KeepsTheBody, "your middleware kept", "never ends",
               "never reaches the server")
    fails_with(check_asgi_middleware, ForgetsAwait, "never awaited", "await send(message)")
    fails_with(check_asgi_middleware, self_in_a_closure, "NameError: name 'self' is not defined",
               "`self.app` is for a class")
    fails_with(check_asgi_middleware, lambda app: app, "middleware(app, report) raised TypeError")


# == 10. (stretch) an HTTP server on asyncio.start_server =============================================

def _answer(conn, request) -> bytes:
    import h11
    body = f"{request.method.decode()} {request.target.decode()}\n".encode()
    return (conn.send(h11.Response(status_code=200, headers=[("content-type", "text/plain"),
                                                             ("content-length", str(len(body)))]))
            + conn.send(h11.Data(data=body)) + conn.send(h11.EndOfMessage()))


async def handle_connection(reader, writer):
    """The solution: keep-alive with h11, a 400 for garbage, quiet when the client leaves."""
    import h11
    conn = h11.Connection(h11.SERVER)
    try:
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                conn.receive_data(await reader.read(65536))
            elif isinstance(event, h11.Request):
                request = event
            elif isinstance(event, h11.EndOfMessage):
                writer.write(_answer(conn, request))
                await writer.drain()
                if conn.our_state is h11.MUST_CLOSE:
                    break
                conn.start_next_cycle()
            elif isinstance(event, h11.ConnectionClosed):
                break
    except h11.RemoteProtocolError as exc:
        if conn.our_state in (h11.IDLE, h11.SEND_RESPONSE):
            writer.write(conn.send(h11.Response(status_code=exc.error_status_hint,
                                                headers=[("content-length", "0"), ("connection", "close")])))
            writer.write(conn.send(h11.EndOfMessage()))
    finally:
        writer.close()


class IdleTimeoutHandler:
    """Written differently: a class per connection, an idle timeout on every read, and no 400
    for garbage (it just closes: allowed, with a note)."""

    def __init__(self, reader, writer):
        import h11
        self.reader, self.writer, self.conn = reader, writer, h11.Connection(h11.SERVER)

    async def run(self):
        import h11
        try:
            while self.conn.our_state is not h11.MUST_CLOSE:
                event = self.conn.next_event()
                if event is h11.NEED_DATA:
                    self.conn.receive_data(await asyncio.wait_for(self.reader.read(4096), 10))
                elif isinstance(event, h11.Request):
                    self.request = event
                elif isinstance(event, h11.EndOfMessage):
                    self.writer.write(_answer(self.conn, self.request))
                    await self.writer.drain()
                    if self.conn.our_state is h11.DONE:
                        self.conn.start_next_cycle()
                elif isinstance(event, h11.ConnectionClosed):
                    return
        except (h11.RemoteProtocolError, asyncio.TimeoutError):
            return
        finally:
            self.writer.close()


async def idle_timeout_handler(reader, writer):
    await IdleTimeoutHandler(reader, writer).run()


def test_asyncio_server_accepts_solutions(capsys):
    out = passes(check_asyncio_server, handle_connection, capsys)
    assert "Note" not in out
    out = passes(check_asyncio_server, idle_timeout_handler, capsys)
    assert "Note: a garbage request got its connection closed" in out


def test_asyncio_server_catches_mistakes():
    import h11

    async def stub(reader, writer):
        writer.close()

    async def one_request_per_connection(reader, writer):
        conn = h11.Connection(h11.SERVER)
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                conn.receive_data(await reader.read(65536))
            elif isinstance(event, h11.Request):
                request = event
            elif isinstance(event, h11.EndOfMessage):
                break
        writer.write(_answer(conn, request))
        await writer.drain()
        writer.close()

    async def never_leaves(reader, writer):  # ConnectionClosed is not handled: a busy loop
        conn = h11.Connection(h11.SERVER)
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                conn.receive_data(await reader.read(65536))
            elif isinstance(event, h11.Request):
                request = event
            elif isinstance(event, h11.EndOfMessage):
                writer.write(_answer(conn, request))
                await writer.drain()
                conn.start_next_cycle()

    async def lets_errors_escape(reader, writer):
        conn = h11.Connection(h11.SERVER)
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                conn.receive_data(await reader.read(65536))
            elif isinstance(event, h11.Request):
                request = event
            elif isinstance(event, h11.EndOfMessage):
                writer.write(_answer(conn, request))
                await writer.drain()
                if conn.our_state is h11.MUST_CLOSE:
                    break
                conn.start_next_cycle()
            elif isinstance(event, h11.ConnectionClosed):
                break
        writer.close()

    async def ignores_close(reader, writer):
        conn = h11.Connection(h11.SERVER)
        try:
            while True:
                event = conn.next_event()
                if event is h11.NEED_DATA:
                    conn.receive_data(await reader.read(65536))
                elif isinstance(event, h11.Request):
                    request = event
                elif isinstance(event, h11.EndOfMessage):
                    writer.write(_answer(conn, request))
                    await writer.drain()
                    if conn.our_state is h11.MUST_CLOSE:
                        await reader.read()  # waits for the client instead of closing
                        break
                    conn.start_next_cycle()
                elif isinstance(event, h11.ConnectionClosed):
                    break
        except h11.RemoteProtocolError:
            pass
        finally:
            writer.close()

    def not_async(reader, writer):
        pass

    fails_with(check_asyncio_server, stub, "closed the connection without answering GET /first")
    fails_with(check_asyncio_server, one_request_per_connection, "second request on the same "
               "connection (keep-alive)", "closed the connection without answering")
    fails_with(check_asyncio_server, never_leaves, "the event loop itself was stuck",
               "without ever awaiting")
    fails_with(check_asyncio_server, lets_errors_escape, "when a client left half-way through its "
               "request, your handler raised RemoteProtocolError", "(in lets_errors_escape, line",
               "answer 400")
    fails_with(check_asyncio_server, ignores_close, "sent 'Connection: close'", "kept the connection "
               "open", "h11.MUST_CLOSE")
    fails_with(check_asyncio_server, not_async, "plain `def`")


# == 11. (stretch) a WSGI-to-asyncio bridge ===========================================================

_bridge_loop = asyncio.new_event_loop()
threading.Thread(target=_bridge_loop.run_forever, name="test-bridge-loop", daemon=True).start()


def _item(environ) -> str:
    return parse_qs(environ["QUERY_STRING"]).get("item", ["tea"])[0]


def bridged(environ, start_response):
    """The solution: one loop thread, run_coroutine_threadsafe, a 500 and a logged traceback."""
    item = _item(environ)
    try:
        text = asyncio.run_coroutine_threadsafe(prices.fetch(item), _bridge_loop).result(timeout=5)
    except Exception:
        logging.getLogger("prices").exception("fetching the price of %r failed", item)
        start_response("500 Internal Server Error", [("Content-Type", "text/plain")], sys.exc_info())
        return [b"the price service failed\n"]
    start_response("200 OK", [("Content-Type", "text/plain; charset=utf-8")])
    return [text.encode()]


class LazyLoop:
    """Written differently: the loop thread starts on the first request (under a lock), errors
    go to environ['wsgi.errors'] with their traceback."""

    def __init__(self):
        self.loop, self.lock = None, threading.Lock()

    def run(self, coroutine):
        with self.lock:
            if self.loop is None:
                self.loop = asyncio.new_event_loop()
                threading.Thread(target=self.loop.run_forever, daemon=True).start()
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout=5)


def lazily_bridged(app_loop=LazyLoop()):
    def app(environ, start_response):
        try:
            text = app_loop.run(prices.fetch(_item(environ)))
        except Exception:
            traceback.print_exc(file=environ["wsgi.errors"])
            start_response("500 Internal Server Error", [("Content-Type", "text/plain")])
            return [b"error\n"]
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [text.encode()]
    return app


def lets_it_propagate(environ, start_response):
    """Written differently again: no try at all; the WSGI server answers 500 and logs it."""
    text = asyncio.run_coroutine_threadsafe(prices.fetch(_item(environ)), _bridge_loop).result(timeout=5)
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [text.encode()]


def test_async_bridge_accepts_solutions(capsys):
    out = passes(check_async_bridge, bridged, capsys)
    assert "logged with its traceback" in out
    passes(check_async_bridge, lazily_bridged(), capsys)
    passes(check_async_bridge, lets_it_propagate, capsys)


def test_async_bridge_catches_mistakes():
    def answers(text):
        return lambda start_response: (start_response("200 OK", [("Content-Type", "text/plain")]),
                                       [text.encode()])[1]

    def stub(environ, start_response):
        return answers(str(prices.fetch(_item(environ))))(start_response)

    def asyncio_run_per_request(environ, start_response):
        return answers(asyncio.run(prices.fetch(_item(environ))))(start_response)

    def async_to_sync_per_request(environ, start_response):
        from asgiref.sync import async_to_sync
        return answers(async_to_sync(prices.fetch)(_item(environ)))(start_response)

    lock = threading.Lock()

    def one_at_a_time(environ, start_response):
        with lock:
            text = asyncio.run_coroutine_threadsafe(prices.fetch(_item(environ)), _bridge_loop).result(5)
        return answers(text)(start_response)

    def quiet_500(environ, start_response):
        try:
            text = asyncio.run_coroutine_threadsafe(prices.fetch(_item(environ)), _bridge_loop).result(5)
        except Exception:
            start_response("500 Internal Server Error", [("Content-Type", "text/plain")])
            return [b"error"]
        return answers(text)(start_response)

    def hides_the_error(environ, start_response):
        try:
            text = asyncio.run_coroutine_threadsafe(prices.fetch(_item(environ)), _bridge_loop).result(5)
        except Exception:
            text = "unknown"
        return answers(text)(start_response)

    fails_with(check_async_bridge, stub, "text of a coroutine object", "never awaited",
               "cannot await", "run_coroutine_threadsafe")
    fails_with(check_async_bridge, asyncio_run_per_request, "different event loops ran prices.fetch",
               "a new loop per request")
    fails_with(check_async_bridge, async_to_sync_per_request, "different event loops")
    fails_with(check_async_bridge, one_at_a_time, "ran one after the other")
    fails_with(check_async_bridge, quiet_500, "nothing was logged", ".exception(")
    fails_with(check_async_bridge, hides_the_error, "answered 200 b'unknown'", "hidden")


def test_every_read_first_is_a_notebook_that_exists():
    from pathlib import Path

    from asgi_lab.exercises import course

    notebooks = Path(__file__).parent.parent / "notebooks"
    for step in course.EXERCISES:
        assert (notebooks / step.path).exists(), step.path
        assert (notebooks / step.path.replace("exercises/", "exercises/solutions/")).exists(), step.path
        assert step.read_first, step.path
        for path in step.read_first:
            assert (notebooks / path).exists(), f"{step.path}: read first {path}"


def test_the_stretch_checks_grade_from_the_command_line(tmp_path, capsys):
    from asgi_lab.exercises.__main__ import main

    submission = tmp_path / "dan.py"
    submission.write_text("async def handle(reader, writer):\n    writer.close()\n")
    assert main(["asyncio_server", f"{submission}:handle"]) == 1
    out = capsys.readouterr().out
    assert out.startswith("✗ asyncio HTTP server") and "Hint 1/3, the idea" in out


def test_each_exercise_notebook_links_what_to_read_first():
    from pathlib import Path

    from asgi_lab.exercises import course

    notebooks = Path(__file__).parent.parent / "notebooks"
    for step in course.EXERCISES:
        cells = json.loads((notebooks / step.path).read_text(encoding="utf-8"))["cells"]
        intro = "".join(cells[0]["source"])
        assert "**Read first:**" in intro, step.path
        for path in step.read_first:
            target = "../" + path if not path.startswith("exercises/") else path.split("/", 1)[1]
            assert f"]({target})" in intro, f"{step.path} does not link {target}"
