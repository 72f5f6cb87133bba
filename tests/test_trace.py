"""The tracer: what it records from a real server, and how a trace is read, saved and loaded."""

from __future__ import annotations

import json
import threading

import pytest

from asgi_lab import Tracer, serve_in_background
from asgi_lab.apps.pair import asgi_app
from asgi_lab.wire import GET_REQUEST, POST_REQUEST, exchange, trace_exchange
from asgi_lab.trace import TraceEvent, jsonable, merge_chunks, preview
from asgi_lab.viz.labels import details, label, listing, route

POST_FLOW = [
    ("socket", "connection_made"), ("socket", "bytes_in"),
    ("h11", "Request"), ("h11", "Data"), ("h11", "EndOfMessage"),
    ("asgi", "receive"), ("asgi", "send"), ("asgi", "send"),
    # Outgoing h11 events are traced too (the connection core, both servers): then the bytes.
    ("h11", "Response"), ("h11", "Data"), ("h11", "EndOfMessage"),
    ("socket", "bytes_out"), ("socket", "connection_lost"),
]


async def lifespan_app(scope, receive, send):
    """asgi_app, plus a lifespan that says yes to startup and shutdown."""
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            await send({"type": message["type"] + ".complete"})
            if message["type"] == "lifespan.shutdown":
                return
    await asgi_app(scope, receive, send)


@pytest.fixture(scope="module")
def traced():
    """One ASGI server with lifespan, a traced POST and GET, and the whole trace after shutdown."""
    tracer = Tracer()
    with serve_in_background(lifespan_app, name="test-trace", tracer=tracer, access_log=False) as server:
        post = trace_exchange(server, tracer, POST_REQUEST)
        get = trace_exchange(server, tracer, GET_REQUEST)
        server_thread = server._thread.name
    return tracer, post, get, server_thread


def test_a_post_is_recorded_in_order_with_monotonic_times(traced):
    tracer, post, _, _ = traced
    assert [(e.layer, e.kind) for e in merge_chunks(post)] == POST_FLOW
    times = [e.t for e in post]
    assert times == sorted(times)
    assert all(t >= tracer.start for t in times)
    receive = next(e for e in post if e.kind == "receive")
    assert receive.data == {"type": "http.request", "body": "hello there", "more_body": False}
    start, body = [e.data for e in post if e.kind == "send"]
    assert start["type"] == "http.response.start" and start["status"] == 200
    assert ["content-type", "text/plain"] in start["headers"]  # bytes pairs became JSON lists
    assert body == {"type": "http.response.body", "body": "hello there"}
    sent = next(e for e in post if e.kind == "bytes_out").data
    assert sent["bytes"].startswith("HTTP/1.1 200 OK\r\n") and sent["bytes"].endswith("hello there")
    assert sent["size"] == len(sent["bytes"])


def test_each_event_names_its_thread_and_task(traced):
    _, post, _, server_thread = traced
    assert {e.thread for e in post} == {server_thread}
    # Protocol callbacks run on the loop outside any task; the app runs in one task, and what
    # its send() makes (the outgoing h11 events, then the bytes) is traced from that task.
    outgoing = post.index(next(e for e in post if e.kind == "Response"))
    assert all(e.task is None for e in post[:outgoing] if e.layer in ("socket", "h11"))
    assert {e.task for e in post[outgoing:-1]} == {e.task for e in post if e.layer == "asgi"}
    app_tasks = {e.task for e in post if e.layer == "asgi"}
    assert len(app_tasks) == 1 and None not in app_tasks


def test_lifespan_is_recorded_on_connection_zero(traced):
    tracer = traced[0]
    lifespan = [(e.kind, e.data["type"]) for e in tracer.filter(conn=0)]
    assert lifespan == [("receive", "lifespan.startup"), ("send", "lifespan.startup.complete"),
                        ("receive", "lifespan.shutdown"), ("send", "lifespan.shutdown.complete")]
    assert tracer.connections() == [1, 2]


def test_filter_by_connection_layer_and_kind(traced):
    tracer, post, get, _ = traced
    assert tracer.filter(conn=post[0].conn) == post
    assert tracer.filter(conn=get[0].conn) == get
    asgi = tracer.filter(layer="asgi")
    assert asgi and all(e.layer == "asgi" for e in asgi)
    both = tracer.filter(layer=["socket", "h11"], kind=("bytes_in", "Request"))
    assert [(e.conn, e.kind) for e in both] == [(1, "bytes_in"), (1, "Request"),
                                                (2, "bytes_in"), (2, "Request")]
    assert tracer.filter(conn=99) == []


def test_json_round_trip(traced, tmp_path):
    tracer = traced[0]
    path = tmp_path / "trace.json"
    tracer.save(path)
    loaded = Tracer.load(path)
    assert loaded.events == tracer.events
    assert loaded.start == tracer.events[0].t
    assert isinstance(json.loads(path.read_text()), list)
    assert Tracer.from_json(tracer.to_json()).listing() == tracer.listing()


def test_the_listing_is_the_same_for_the_same_request():
    listings = []
    for _ in range(2):
        tracer = Tracer()
        with serve_in_background(asgi_app, name="test-trace-listing", tracer=tracer,
                                 access_log=False) as server:
            events = trace_exchange(server, tracer, POST_REQUEST)
        listings.append(listing(events))
    assert listings[0] == listings[1]
    assert "http.request body='hello there' more_body=False" in listings[0]
    assert "ms" not in listings[0] and "127.0.0.1" not in listings[0]


def test_a_tracer_collects_from_several_threads():
    tracer = Tracer()
    workers = [threading.Thread(target=lambda n=n: [tracer.emit(n, "test", "tick", {"i": i})
                                                    for i in range(200)], name=f"worker-{n}")
               for n in range(1, 5)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    assert len(tracer) == 800
    for n in range(1, 5):
        mine = tracer.filter(conn=n)
        assert [e.data["i"] for e in mine] == list(range(200))  # in order, per thread
        assert {e.thread for e in mine} == {f"worker-{n}"} and {e.task for e in mine} == {None}


def test_wait_for_gives_up_with_a_clear_error():
    with pytest.raises(TimeoutError, match="kind=never"):
        Tracer().wait_for(kind="never", timeout=0.05)


def test_payloads_are_truncated_and_json_friendly():
    assert preview(b"ab\r\n") == "ab\r\n"
    long = preview(b"x" * 1000)
    assert long.startswith("x" * 256) and long.endswith("... (1000 bytes)")
    message = {"type": "http.response.start", "headers": [(b"a", b"1")], "status": 200,
               "client": ("127.0.0.1", 5000)}
    assert jsonable(message) == {"type": "http.response.start", "headers": [["a", "1"]],
                                 "status": 200, "client": ["127.0.0.1", 5000]}
    assert jsonable(object()).startswith("<object object")


def event(layer, kind, **data):
    return TraceEvent(t=0.0, conn=1, layer=layer, kind=kind, data=data)


def test_routes_and_labels_cover_both_interfaces():
    assert route(event("socket", "bytes_in", bytes="GET / HTTP/1.1\r\n", size=16)) == ("client", "server")
    assert route(event("socket", "bytes_out")) == ("server", "client")
    assert route(event("asgi", "receive", type="http.request")) == ("server", "app")
    assert route(event("asgi", "send", type="http.response.start", status=200)) == ("app", "server")
    assert route(event("wsgi", "app_call")) == ("server", "app")
    assert route(event("wsgi", "start_response", status="200 OK")) == ("app", "server")
    assert route(event("wsgi", "close")) == ("server", "app")
    assert route(event("h11", "Request")) is None and route(event("server", "timeout")) is None

    assert label(event("socket", "bytes_in", bytes="GET / HTTP/1.1\r\nHost: x\r\n", size=24)) \
        == "GET / HTTP/1.1  (24 B)"
    assert label(event("asgi", "send", type="http.response.start", status=200)) == "http.response.start 200"
    assert label(event("asgi", "send", type="http.response.body", body="abc", more_body=True)) \
        == "http.response.body (3 B) more_body"
    assert label(event("asgi", "receive", type="http.disconnect")) == "http.disconnect"
    assert label(event("h11", "Request", method="POST", target="/echo")) == "Request POST /echo"
    assert label(event("wsproto", "Request", target="/chat", host="lab")) == "Request /chat"
    assert label(event("wsproto", "CloseConnection", code=1000, reason="")) == "CloseConnection 1000"
    assert label(event("wsgi", "start_response", status="200 OK")) == "start_response('200 OK')"
    assert label(event("wsgi", "environ", REQUEST_METHOD="GET", PATH_INFO="/")) == "environ GET /"
    assert label(event("wsgi", "close")) == "close()"
    assert details(event("socket", "connection_made", client=["127.0.0.1", 5555])) == ""


def test_merge_chunks_joins_only_consecutive_chunks_of_one_connection():
    chunks = [event("socket", "bytes_in", bytes="POST", size=4),
              event("socket", "bytes_in", bytes=" /", size=2),
              event("h11", "Request"),
              event("h11", "Data", data="ab"), event("h11", "Data", data="c"),
              TraceEvent(0.0, 2, "socket", "bytes_in", {"bytes": "x", "size": 1}),
              event("socket", "bytes_in", bytes="d", size=1)]
    merged = merge_chunks(chunks)
    assert [(e.conn, e.kind) for e in merged] == [(1, "bytes_in"), (1, "Request"), (1, "Data"),
                                                  (2, "bytes_in"), (1, "bytes_in")]
    assert merged[0].data == {"bytes": "POST /", "size": 6, "chunks": 2}
    assert merged[2].data["data"] == "abc"


def test_no_tracer_means_no_recording():
    with serve_in_background(asgi_app, name="test-trace-off", access_log=False) as server:
        assert server.server.tracer is None
        assert exchange(server.address, GET_REQUEST).endswith(b"Hello, world!")


def test_brief_listing_and_filtering_by_message_type(traced):
    tracer, post, _, _ = traced
    brief = listing(post, brief=True).splitlines()
    assert brief[5].split() == ["6", "conn", "1", "asgi", "receive", "http.request"]
    assert brief[-1].split() == ["13", "conn", "1", "socket", "connection_lost"]
    starts = tracer.filter(message_type="http.response.start")
    assert [e.conn for e in starts] == [1, 2] and all(e.kind == "send" for e in starts)
    assert tracer.wait_for(message_type="lifespan.startup").conn == 0


def test_the_wsgi_server_records_the_call_on_one_worker_thread():
    from asgi_lab.apps.pair import wsgi_app

    tracer = Tracer()
    with serve_in_background(wsgi_app, "wsgi", name="test-trace-wsgi", tracer=tracer, threads=2,
                             access_log=False) as server:
        post = trace_exchange(server, tracer, POST_REQUEST)
    assert [(e.layer, e.kind) for e in merge_chunks(post)] == [
        ("socket", "connection_made"), ("socket", "bytes_in"), ("h11", "Request"),
        ("h11", "Data"), ("h11", "EndOfMessage"),  # a small body is read before the call
        ("wsgi", "environ"), ("wsgi", "app_call"),
        ("wsgi", "start_response"), ("wsgi", "app_return"), ("wsgi", "body_chunk"),
        ("h11", "Response"), ("h11", "Data"), ("h11", "EndOfMessage"),
        ("socket", "bytes_out"), ("socket", "connection_lost")]
    environ = next(e for e in post if e.kind == "environ").data
    assert environ["REQUEST_METHOD"] == "POST" and environ["CONTENT_LENGTH"] == "11"
    assert post[0].thread == "wsgi-acceptor"
    workers = {e.thread for e in post[1:]}
    assert len(workers) == 1 and workers.pop().startswith("wsgi-worker-")
    assert {e.task for e in post} == {None}
    assert next(e for e in post if e.kind == "body_chunk").data == {"data": "hello there"}


def test_every_emit_in_the_servers_is_guarded_by_a_tracer_check():
    """Free when off: no `tracer.emit(...)` may run (nor its arguments be built) without a
    tracer. Every call must sit inside `if <...>tracer is not None:` (possibly `and ...`)."""
    import ast
    from pathlib import Path

    import asgi_lab

    def is_check(test):
        if isinstance(test, ast.BoolOp) and isinstance(test.op, ast.And):
            return is_check(test.values[0])
        return (isinstance(test, ast.Compare) and isinstance(test.ops[0], ast.IsNot)
                and isinstance(test.comparators[0], ast.Constant) and test.comparators[0].value is None
                and ast.unparse(test.left).split(".")[-1] == "tracer")

    unguarded, calls = [], 0
    for path in Path(asgi_lab.__file__).parent.rglob("*.py"):
        if path.name == "trace.py":
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        parents = {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}
        for node in ast.walk(tree):
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                    and node.func.attr == "emit" and "tracer" in ast.unparse(node.func.value)):
                calls += 1
                ancestor = parents.get(node)
                while ancestor is not None and not (isinstance(ancestor, ast.If) and is_check(ancestor.test)):
                    ancestor = parents.get(ancestor)
                if ancestor is None:
                    unguarded.append(f"{path.relative_to(path.parents[1])}:{node.lineno}")
    assert calls > 30  # the servers do trace: sockets, h11, wsproto, ASGI, WSGI
    assert unguarded == []
