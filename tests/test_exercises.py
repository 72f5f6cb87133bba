"""The exercise checks: each catches the mistakes it names, and accepts any correct solution.

For every check: our solution, at least one correct solution written differently (often a real
framework: Flask, Starlette), and buggy apps, each asserted on the friendly message it gets.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from urllib.parse import parse_qs

import pytest

from asgi_lab.apps.pitfalls import blocking_query
from asgi_lab.exercises import (ExerciseFailed, FakeDatabase, check_chat, check_lifespan_middleware,
                                check_lifespan_state, check_sse, check_streamed_body,
                                check_streaming, check_unblocked, check_wsgi_app,
                                check_wsgi_middleware)


def fails_with(check, app, *fragments: str) -> str:
    """Run `check(app)`, expect ExerciseFailed, and find every fragment in its message."""
    with pytest.raises(ExerciseFailed) as caught:
        check(app)
    message = str(caught.value)
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in:\n{message}"
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
                scope["state"]["visits"] = {"count": 0}
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    elif scope["type"] == "http":
        counter = scope["state"]["visits"]
        counter["count"] += 1
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": str(counter["count"]).encode()})


def test_lifespan_state_accepts_solutions(capsys):
    passes(check_lifespan_state, visits, capsys)


def test_lifespan_state_accepts_starlette(capsys):
    import contextlib
    import itertools

    from starlette.applications import Starlette
    from starlette.responses import PlainTextResponse
    from starlette.routing import Route

    @contextlib.asynccontextmanager
    async def lifespan(app):
        yield {"counter": itertools.count(1)}

    async def index(request):
        return PlainTextResponse(str(next(request.state.counter)))

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

    counter = {"visits": 0}

    async def module_global(scope, receive, send):
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                await send({"type": message["type"] + ".complete"})
                if message["type"] == "lifespan.shutdown":
                    return
        counter["visits"] += 1
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": str(counter["visits"]).encode()})

    async def never_answers(scope, receive, send):
        if scope["type"] == "lifespan":
            await receive()
            await asyncio.sleep(10)

    fails_with(check_lifespan_state, rebinds_int, "every request answered 1", "shallow copy")
    fails_with(check_lifespan_state, on_lifespan_scope, "stored ['app_state'] on the lifespan scope",
               "KeyError: 'app_state'", "shared = scope[\"app_state\"]")
    fails_with(check_lifespan_state, module_global, "a second server", "module global")
    async def forgets_shutdown(scope, receive, send):
        if scope["type"] == "lifespan":
            await receive()
            scope["state"]["visits"] = {"count": 0}
            await send({"type": "lifespan.startup.complete"})
            await receive()
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
    name = await loop.run_in_executor(None, blocking_query, "SELECT name FROM users")
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


def test_streaming_catches_mistakes():
    async def sets_transfer_encoding(scope, receive, send):
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"text/plain"), (b"transfer-encoding", b"chunked")]})
        for i in range(10):
            await send({"type": "http.response.body", "body": f"chunk {i}\n".encode(), "more_body": True})
        await send({"type": "http.response.body", "body": b""})

    async def frames_by_hand(scope, receive, send):
        await send({"type": "http.response.start", "status": 200, "headers": []})
        for i in range(10):
            data = f"chunk {i}\n".encode()
            await send({"type": "http.response.body", "body": b"%x\r\n%s\r\n" % (len(data), data),
                        "more_body": True})
        await send({"type": "http.response.body", "body": b"0\r\n\r\n"})

    async def all_at_once(scope, receive, send):
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body",
                    "body": b"".join(f"chunk {i}\n".encode() for i in range(10))})

    fails_with(check_streaming, sets_transfer_encoding, "set transfer-encoding: chunked itself",
               "HTTP/1.0", "HTTP/2")
    fails_with(check_streaming, frames_by_hand, "framed the chunks by hand")
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
                scope["state"]["db"] = await FakeDatabase().connect()
            return message

        await self.app(scope, receive_and_open, send)
        await scope["state"]["db"].close()


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
                db = FakeDatabase()
                await db.connect()
                scope["state"]["db"] = db
            return message

        async def send_wrapper(message):
            if message["type"] == "lifespan.shutdown.complete":
                await scope["state"]["db"].close()
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
                    scope["state"]["db"] = await FakeDatabase().connect()
            await self.app(scope, receive, send)

    class AnswersForTheApp:
        def __init__(self, app):
            self.app = app

        async def __call__(self, scope, receive, send):
            if scope["type"] == "lifespan":
                async def receive_and_answer():
                    message = await receive()
                    if message["type"] == "lifespan.startup":
                        scope["state"]["db"] = await FakeDatabase().connect()
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
                    scope["state"]["db"] = await FakeDatabase().connect()
                elif message["type"] == "lifespan.shutdown":
                    await scope["state"]["db"].close()
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
                    scope["state"]["db"] = await FakeDatabase().connect()
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
