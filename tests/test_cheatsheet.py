"""The two tables of notebook 02: scope against environ, and the ASGI message cheat sheet."""

from __future__ import annotations

import io

import h11

from asgi_lab.asgi.scope import build_http_scope
from asgi_lab.trace import TraceEvent, Tracer
from asgi_lab.viz.cheatsheet import (message_cheat_sheet, message_cheat_sheet_text,
                                     scope_and_environ, scope_and_environ_text)
from asgi_lab.wsgi.environ import build_environ, environ_base

REQUEST = h11.Request(method="POST", target="/caf%C3%A9?x=1",
                      headers=[("Host", "lab"), ("Content-Type", "text/plain"),
                               ("Content-Length", "2"), ("X-Trace", "a"), ("X-Trace", "b")])


def same_request():
    scope = build_http_scope(REQUEST, "1.1", ("127.0.0.1", 50000), ("127.0.0.1", 8000))
    base = environ_base(("127.0.0.1", 8000), ("127.0.0.1", 50000))
    return scope, build_environ(REQUEST, io.BytesIO(b"hi"), base)


def test_each_scope_key_sits_beside_the_environ_key_the_spec_maps_it_to():
    scope, environ = same_request()
    rows = {(row[0], row[2]): (row[1], row[3]) for row in scope_and_environ(scope, environ)}
    assert rows[("method", "REQUEST_METHOD")] == ("'POST'", "'POST'")
    assert rows[("path", "PATH_INFO")] == ("'/café'", "'/cafÃ©'")  # str vs PEP 3333 latin-1
    assert rows[("query_string", "QUERY_STRING")] == ("b'x=1'", "'x=1'")
    assert rows[("http_version", "SERVER_PROTOCOL")] == ("'1.1'", "'HTTP/1.1'")
    assert rows[("client", "REMOTE_ADDR")] == ("('127.0.0.1', 50000)", "'127.0.0.1'")
    assert rows[("type", "")] == ("'http'", "(none: WSGI speaks only HTTP)")


def test_headers_are_paired_line_by_line_and_repeats_show_the_joined_environ_value():
    scope, environ = same_request()
    headers = [row for row in scope_and_environ(scope, environ) if row[0].startswith("headers")]
    assert [(row[1], row[2], row[3]) for row in headers] == [
        ("(b'host', b'lab')", "HTTP_HOST", "'lab'"),
        ("(b'content-type', b'text/plain')", "CONTENT_TYPE", "'text/plain'"),
        ("(b'content-length', b'2')", "CONTENT_LENGTH", "'2'"),
        ("(b'x-trace', b'a')", "HTTP_X_TRACE", "'a,b'"),
        ("(b'x-trace', b'b')", "HTTP_X_TRACE", "'a,b'"),
    ]


def test_environ_only_keys_say_where_asgi_carries_them():
    scope, environ = same_request()
    rows = {row[2]: row for row in scope_and_environ(scope, environ)}
    assert rows["wsgi.input"][:2] == ("", "(receive(): http.request messages)")
    assert rows["wsgi.input"][3] == "BytesIO"
    text = scope_and_environ_text(scope, environ)
    assert text.splitlines()[0].split() == ["scope", "(ASGI)", "value", "environ", "(PEP", "3333)", "value"]


def event(kind: str, message: dict, conn: int = 1, layer: str = "asgi") -> TraceEvent:
    return TraceEvent(t=0.0, conn=conn, layer=layer, kind=kind, data=message)


def test_the_cheat_sheet_lists_each_message_type_once_with_every_key_seen():
    trace = Tracer([
        event("receive", {"type": "lifespan.startup"}, conn=0),
        event("receive", {"type": "http.request", "body": b"a", "more_body": True}),
        event("bytes_in", {"bytes": "x"}, layer="socket"),  # not a message: left out
        event("receive", {"type": "http.request", "body": b"b", "more_body": False}),
        event("send", {"type": "http.response.start", "status": 200, "headers": []}),
        event("send", {"type": "http.response.body", "body": b"x", "more_body": True}),
        event("send", {"type": "http.response.body", "body": b""}),
        event("receive", {"type": "http.disconnect"}),
    ])
    assert message_cheat_sheet(trace) == [
        ("lifespan.startup", "receive: server -> app", "-"),
        ("http.request", "receive: server -> app", "body, more_body"),
        ("http.response.start", "send: app -> server", "status, headers"),
        ("http.response.body", "send: app -> server", "body, more_body"),
        ("http.disconnect", "receive: server -> app", "-"),
    ]
    lines = message_cheat_sheet_text(trace).splitlines()
    assert lines[0].split() == ["message", "type", "direction", "keys"]
    assert len(lines) == 2 + 5 and lines[3].startswith("http.request ")
