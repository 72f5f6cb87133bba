"""Exercises 1 and 2: a WSGI app, and WSGI middleware (PEP 3333)."""

from __future__ import annotations

import sys

from ...background import server_errors
from .. import client
from ..feedback import fail, passed, register
from ..harness import call_wsgi, describe_exception
from .common import describe_log, require_callable, serve


# == 1. A WSGI app =================================================================================

WSGI_APP = "WSGI app"
register(
    WSGI_APP, "check_wsgi_app",
    concept="a WSGI app is one function call: the server hands you the request as a dict "
            "(environ) and a function that announces the response (start_response); you return "
            "the body as bytes, not text, and the server sends it.",
    api="the query string is environ['QUERY_STRING'], still percent-encoded (urllib.parse.parse_qs "
        "decodes it); start_response(status, headers) takes a str like '200 OK' and a list of "
        "(name, value) str tuples; the return value is an iterable of bytes, such as a list.",
    code="name = parse_qs(environ['QUERY_STRING']).get('name', ['world'])[0]; "
         "start_response('200 OK', [('Content-Type', 'text/plain; charset=utf-8')]); "
         "return [f'Hello, {name}!'.encode('utf-8')]")
_GREETINGS = [("name=Ada", "Hello, Ada!"), ("", "Hello, world!"), ("name=Zo%C3%AB", "Hello, Zoë!")]


def check_wsgi_app(app) -> None:
    """Exercise 1: `GET /?name=Ada` answers 200, text/plain, "Hello, Ada!" (UTF-8);
    without a name, "Hello, world!"."""
    require_callable(WSGI_APP, app)
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
            fail(WSGI_APP, f"GET {target} answered {text!r}; expected {expected!r}.", hint,
                 concept="the query string arrives percent-encoded, and %C3%AB is two bytes that "
                         "UTF-8 reads as one letter, 'ë'" if "%" in query else None)
        length = result.header("content-length")
        if length is not None and length != str(len(result.body)):
            fail(WSGI_APP, f"Content-Length says {length} but the body is {len(result.body)} bytes "
                           f"(for GET {target}).",
                 "count bytes, not characters: len(body_bytes), after .encode('utf-8')",
                 concept="Content-Length counts the bytes on the wire, and UTF-8 spends two bytes "
                         "on 'ë': the length of the text is not the length of the body.")
    with server_errors() as errors, serve(app, "wsgi-app", kind="wsgi") as server:
        response = client.request(server.address, target="/?name=Ada")
    if response.status != 200 or response.body.decode("utf-8", "replace").strip() != "Hello, Ada!":
        fail(WSGI_APP, f"over a real socket our WSGI server got {response.status} "
                       f"{response.body[:80]!r}. {describe_log(errors)}")
    passed(WSGI_APP, "3 greetings right in process, and over loopback on our WSGI server.")


# == 2. WSGI middleware ============================================================================

WSGI_MIDDLEWARE = "WSGI middleware"
register(
    WSGI_MIDDLEWARE, "check_wsgi_middleware",
    concept="middleware is an app that wraps an app: it sees environ on the way in, and sees the "
            "status and headers on the way out by handing the inner app a start_response of its "
            "own. The body should pass through untouched.",
    api="the incoming header is environ.get('HTTP_X_REQUEST_ID'); your start_response takes "
        "(status, headers, exc_info=None) and calls the real one with your header added; return "
        "the inner app's iterable itself.",
    code="def wrapped(environ, start_response): rid = environ.get('HTTP_X_REQUEST_ID') or "
         "uuid.uuid4().hex; environ['request_id'] = rid; def start(status, headers, exc_info=None): "
         "return start_response(status, headers + [('X-Request-ID', rid)], exc_info); "
         "return app(environ, start)")


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
    require_callable(WSGI_MIDDLEWARE, middleware, "middleware")
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
    require_callable(WSGI_MIDDLEWARE, wrapped, "middleware(app) result")
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
             "make the id inside the per-request function, not once when the middleware is built",
             concept="code in middleware(app) runs once, when the app is built; code in the "
                     "function it returns runs for every request.")
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
                 "return the inner iterable as it is (or yield its items one by one)",
                 concept="a WSGI body is an iterable the server sends piece by piece as the app "
                         "produces it; joining it waits for the last piece before the first "
                         "goes out.")
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
             "pass exc_info on: start_response(status, headers, exc_info)",
             concept="PEP 3333 lets an app call start_response with exc_info after an error, to "
                     "replace a response not yet sent (or have the server re-raise if it was); "
                     "a wrapper must keep that door open.")
    if not all(body.closed for body in bodies):
        fail(WSGI_MIDDLEWARE, "the inner app's body has a close() method and nobody called it: "
                              "PEP 3333 says the server calls close(), and your middleware stood "
                              "in between.",
             "return the inner iterable itself, or, if you wrap it, call its close() in your "
             "own close() (or in a finally: around the loop)",
             concept="the server calls the body's close() when it is done with it, even when the "
                     "client left half-way (PEP 3333); a middleware that replaces the body takes "
                     "that duty over.")
    with server_errors() as errors, serve(wrapped, "wsgi-middleware", kind="wsgi") as server:
        response = client.request(server.address, headers=[("X-Request-ID", "wire-1")])
    if response.status != 201 or response.header(b"x-request-id") != b"wire-1":
        fail(WSGI_MIDDLEWARE, f"over a real socket our WSGI server answered {response.status} "
                              f"with X-Request-ID {response.header(b'x-request-id')!r}. "
                              f"{describe_log(errors)}")
    passed(WSGI_MIDDLEWARE, "ids made, reused and echoed; streaming, close() and exc_info "
                            "preserved; and over loopback on our WSGI server.")
