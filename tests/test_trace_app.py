"""Your own app in the lab: trace it (Starlette, FastAPI, Flask, Django), see its onion.

Real servers on 127.0.0.1 (port 0), real sockets, a few requests each.
"""

import json

import pytest

from asgi_lab.cli import main
from asgi_lab.onion import MiddlewareOnion, changes
from asgi_lab.trace import Tracer
from asgi_lab.viz.labels import label, route
from asgi_lab.trace_app import BadRequestSpec, parse_request, trace_app

GZIP_AND_CORS = "GET / -H 'accept-encoding: gzip' -H 'origin: http://example.org'"


# -- the request syntax ------------------------------------------------------------------------

def test_a_request_reads_like_curl():
    spec = parse_request("post /echo -H 'content-type: text/plain' -H 'x-a: 1' -d 'hello there'")
    assert (spec.method, spec.target, spec.body) == ("POST", "/echo", b"hello there")
    assert spec.headers == [("content-type", "text/plain"), ("x-a", "1")]
    wire = spec.to_bytes("127.0.0.1:8000")
    assert wire.startswith(b"POST /echo HTTP/1.1\r\n")
    assert b"content-length: 11\r\n" in wire and b"connection: close\r\n" in wire
    assert wire.endswith(b"\r\n\r\nhello there")


def test_a_body_can_come_from_a_file(tmp_path):
    (tmp_path / "body.json").write_bytes(b'{"a": 1}')
    assert parse_request(f"PUT /x -d @{tmp_path / 'body.json'}").body == b'{"a": 1}'


@pytest.mark.parametrize("text, why", [
    ("GET", "at least METHOD TARGET"),
    ("GET hello", "must start with '/'"),
    ("GET / -H nocolon", "'name: value'"),
    ("GET / --verbose", "expected -H"),
    ("GET / -d", "expected -H"),
    ("GET 'unclosed", "quotation"),
])
def test_a_bad_request_line_says_what_is_wrong(text, why):
    with pytest.raises(BadRequestSpec, match=why):
        parse_request(text)


# -- tracing each framework -----------------------------------------------------------------------

def _types(events, layer):
    return [e.data.get("type") for e in events if e.layer == layer]


def test_starlette_onion_shows_gzip_and_cors_changing_the_response_start(tmp_path):
    from asgi_lab.apps.frameworks.starlette_app import app

    run = trace_app(app, [GZIP_AND_CORS, "GET /hello"], onion=True, out=tmp_path / "t.json")
    assert run.onion.lanes == ["Starlette", "ServerErrorMiddleware", "CORSMiddleware",
                               "GZipMiddleware", "ExceptionMiddleware", "Router"]
    events = run.events(0)
    starts = [e for e in events if e.layer == "onion" and e.data["type"] == "http.response.start"]
    # One crossing per boundary: router -> exception -> gzip -> cors -> server error -> app.
    assert [(e.data["from"], e.data["to"]) for e in starts] == [
        ("app/5", "app/4"), ("app/4", "app/3"), ("app/3", "app/2"), ("app/2", "app/1"),
        ("app/1", "app")]
    changed = {e.data["from"]: e.data["changes"] for e in starts if e.data["changes"]}
    assert set(changed) == {"app/3", "app/2"}  # GZip, then CORS; nothing else touched it
    assert "+content-encoding: gzip" in changed["app/3"]
    assert any(c.startswith("content-length: 915 -> ") for c in changed["app/3"])
    assert "+access-control-allow-origin: *" in changed["app/2"]
    bodies = [e for e in events if e.layer == "onion" and e.data["type"] == "http.response.body"]
    gzipped = [e for e in bodies if e.data["from"] == "app/3"][0]
    assert gzipped.data["changes"][0].startswith("body 915 B -> ")
    assert "*" in label(gzipped) and route(gzipped) == ("app/3", "app/2")
    # The server saw the compressed response, after the onion: the app's send.
    assert _types(events, "asgi") == ["http.response.start", "http.response.body"]
    # Without gzip and origin, only CORS touches the response: it adds `vary: Origin`.
    assert [(e.data["from"], e.data["changes"]) for e in run.events(1)
            if e.layer == "onion" and e.data["changes"]] == [("app/2", ["+vary: Origin"])]
    # Written: the trace (readable back), the summary, one PNG per request.
    assert len(Tracer.load(tmp_path / "t.json")) == len(run.tracer)
    summary = json.loads((tmp_path / "t.summary.json").read_text())
    assert summary["onion"]["layers"][3] == "GZipMiddleware"
    assert [r["conn"] for r in summary["requests"]] == run.conns
    assert (tmp_path / "t-1.png").stat().st_size > 10_000 and (tmp_path / "t-2.png").exists()
    assert app.middleware_stack is None  # removed again: the app is as it was


def test_a_request_body_travels_in_through_every_layer():
    from asgi_lab.apps.frameworks.starlette_app import app

    run = trace_app(app, ["POST /echo -H 'content-type: text/plain' -d 'hello there'"], onion=True)
    inward = [(e.data["from"], e.data["to"]) for e in run.events(0)
              if e.layer == "onion" and e.data["type"] == "http.request"]
    assert inward == [("app", "app/1"), ("app/1", "app/2"), ("app/2", "app/3"), ("app/3", "app/4"),
                      ("app/4", "app/5")]
    body = [e for e in run.events(0) if e.layer == "onion" and e.data["type"] == "http.response.body"]
    assert body[-1].data["message"]["body"] == "hello there"


def test_fastapi_onion_and_the_diagram_has_a_lane_per_layer():
    from asgi_lab.apps.frameworks.fastapi_app import app

    run = trace_app(app, [GZIP_AND_CORS], onion=True)
    assert run.onion.lanes[0] == "FastAPI"
    assert {"CORSMiddleware", "GZipMiddleware", "ServerErrorMiddleware"} <= set(run.onion.lanes)
    (fig,) = run.figures()
    titles = [t.get_text() for t in fig.axes[0].texts if (t.get_gid() or "").startswith("lane:")]
    assert titles[:3] == ["client", "server", "FastAPI"] and titles[3:] == run.onion.lanes[1:]


def test_without_the_onion_a_framework_app_is_traced_as_one_app():
    from asgi_lab.apps.frameworks.fastapi_app import app

    run = trace_app(app, ["GET /hello", "POST /hello -d x"])
    assert run.onion is None and all(e.layer != "onion" for e in run.tracer)
    starts = [e for e in run.tracer if e.layer == "asgi" and e.data.get("type") == "http.response.start"]
    assert [e.data["status"] for e in starts] == [200, 405]


def test_flask_onion_shows_the_wsgi_middleware_it_was_given():
    from asgi_lab.apps.frameworks.flask_app import app

    before = app.wsgi_app
    run = trace_app(app, ["GET /hello"], kind="wsgi", onion=True)
    assert run.onion.lanes == ["Flask", "ProxyFix", "Flask.wsgi_app"]
    kinds = [(e.kind, e.data["from"], e.data["to"]) for e in run.events(0) if e.layer == "onion"]
    assert kinds[:2] == [("call", "app", "app/1"), ("call", "app/1", "app/2")]
    assert ("start_response", "app/2", "app/1") in kinds and ("close", "app/1", "app/2") in kinds
    statuses = [e.data["message"]["status"] if e.layer == "onion" else e.data["status"]
                for e in run.events(0) if e.kind == "start_response"]
    assert statuses == ["200 OK"] * 3  # Flask.wsgi_app -> ProxyFix -> Flask -> the server
    assert app.wsgi_app is before


@pytest.mark.parametrize("kind, attr", [("asgi", "application"), ("wsgi", "wsgi_application")])
def test_django_is_traced_and_its_hidden_middleware_are_named(kind, attr):
    from asgi_lab.apps.frameworks import django_app

    run = trace_app(getattr(django_app, attr), ["GET /hello", "GET /nowhere"], kind=kind, onion=True)
    assert "hides its middleware" in run.onion.hidden and "GZipMiddleware" in run.onion.hidden
    assert all(e.layer != "onion" for e in run.tracer)
    if kind == "asgi":
        statuses = [e.data["status"] for e in run.tracer if e.data.get("type") == "http.response.start"]
    else:
        statuses = [int(e.data["status"][:3]) for e in run.tracer if e.kind == "start_response"]
    assert statuses == [200, 404]


def test_a_stream_that_never_ends_is_cut_after_the_timeout():
    from asgi_lab.apps.frameworks.fastapi_app import app

    run = trace_app(app, ["GET /events?interval=0.1"], timeout=0.5)
    bodies = [e for e in run.tracer if e.layer == "asgi" and e.data.get("type") == "http.response.body"]
    assert 2 <= len(bodies) <= 8  # about five events in half a second, then the client left
    assert run.tracer.filter(kind="connection_lost")


def test_changes_compares_headers_status_and_body():
    inner = {"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"5")]}
    outer = {"type": "http.response.start", "status": 500, "headers": [(b"Content-Length", b"5"),
                                                                     (b"vary", b"Origin")]}
    assert changes(inner, outer) == ["status 200 -> 500", "+vary: Origin"]
    smaller = dict(inner, headers=[(b"content-length", b"3"), (b"content-encoding", b"gzip")])
    assert changes(inner, smaller) == ["+content-encoding: gzip", "content-length: 5 -> 3"]
    assert changes(smaller, dict(inner, headers=[])) == ["-content-length: 3", "-content-encoding: gzip"]
    assert changes({"body": b"hello"}, {"body": b"hi"}) == ["body 5 B -> 2 B"]
    assert changes({"body": b"hello"}, {"body": b"HELLO"}) == ["body rewritten"]


def test_a_plain_app_has_no_stack_to_show():
    from asgi_lab.apps.hello import app

    onion = MiddlewareOnion.install(app, Tracer(), "asgi")
    assert "exposes no middleware stack" in onion.hidden and onion.lanes == ["app"]


# -- the command --------------------------------------------------------------------------------

def test_the_trace_command_writes_the_trace_and_the_pngs(tmp_path, capsys):
    out = tmp_path / "trace.json"
    assert main(["trace", "asgi_lab.apps.frameworks.starlette_app:app", "--onion",
                 "--request", GZIP_AND_CORS, "--request", "GET /boom", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "ASGI onion of Starlette" in printed and "GZipMiddleware" in printed
    assert "+content-encoding: gzip" in printed
    assert "Exception in ASGI application" in printed  # /boom: the server's log, shown as data
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "trace-1.png", "trace-2.png", "trace.json", "trace.summary.json"]


def test_the_trace_command_on_a_django_wsgi_app_says_the_stack_is_hidden(tmp_path, capsys):
    assert main(["trace", "asgi_lab.apps.frameworks.django_app:wsgi_application", "--wsgi",
                 "--onion", "--request", "GET /hello", "--out", str(tmp_path / "d.json")]) == 0
    assert "hidden: Django hides its middleware" in capsys.readouterr().out


def test_the_trace_command_refuses_a_bad_request_line():
    with pytest.raises(SystemExit, match="bad --request"):
        main(["trace", "asgi_lab.apps.hello:app", "--request", "GET"])
