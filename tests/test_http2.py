"""HTTP/2 in memory (asgi_lab/http2.py): two h2 connections back to back, no socket at all.
Also the trace's HTTP/2 labels and the sequence diagram's arrows for frames."""

from __future__ import annotations

import socket

import h2.events
import pytest

from asgi_lab import http2
from asgi_lab.trace import TraceEvent
from asgi_lab.viz.labels import label, listing, route
from asgi_lab.viz import sequence_diagram

pytestmark = pytest.mark.timeout(30)


@pytest.fixture(autouse=True)
def no_sockets(monkeypatch):
    """Prove the point: nothing here may connect or listen (asyncio's own wake-up socketpair,
    which needs neither, is fine)."""
    def refuse(*args, **kwargs):
        raise AssertionError("the HTTP/2 demo used the network")
    for name in ("connect", "connect_ex", "bind"):
        monkeypatch.setattr(socket.socket, name, refuse)


def test_frames_of_reads_the_preface_and_settings_with_hyperframe():
    pair = http2.H2Pair()
    pair.client.initiate_connection()
    frames = http2.frames_of(pair.client.data_to_send())  # preface + SETTINGS
    assert [f["frame"] for f in frames] == ["SETTINGS"]
    assert frames[0]["stream_id"] == 0 and frames[0]["flags"] == [] and frames[0]["size"] % 6 == 0


def test_two_streams_on_one_connection_get_odd_client_ids():
    pair = http2.H2Pair()
    pair.connect()
    assert [pair.request("/a"), pair.request("/b")] == [1, 3]
    events = pair.to_server()
    received = [e for e in events if isinstance(e, h2.events.RequestReceived)]
    assert [e.stream_id for e in received] == [1, 3]
    assert [f["frame"] for f in pair.tracer.filter(kind="frame_in")[-2:] for f in [f.data]] == ["HEADERS"] * 2


def test_asgi_apps_answer_both_streams_interleaved():
    run = http2.serve_asgi(http2.chunked_app(3))
    assert run.data_order() == [1, 3, 1, 3, 1, 3]
    for stream_id, path in ((1, "/a"), (3, "/b")):
        response = run.responses[stream_id]
        assert response["status"] == 200 and response["ended"]
        assert response["body"] == f"{path} part 1\n{path} part 2\n{path} part 3\n".encode()
    last = [f for f in run.frames("frame_out") if f["frame"] == "DATA"][-2:]
    assert all("END_STREAM" in f["flags"] for f in last)


def test_each_stream_gets_its_own_asgi_scope_per_the_spec():
    run = http2.serve_asgi(http2.chunked_app(1))
    one, three = run.requests[1], run.requests[3]
    assert one is not three
    assert (one["path"], three["path"]) == ("/a", "/b")
    for scope in (one, three):
        assert scope["type"] == "http" and scope["http_version"] == "2"
        assert scope["scheme"] == "https" and scope["method"] == "GET"
        names = [name for name, _ in scope["headers"]]
        assert names[0] == b"host" and not any(name.startswith(b":") for name in names)


def test_authority_replaces_an_existing_host_header():
    event = h2.events.RequestReceived(stream_id=1)
    event.headers = [(b":method", b"GET"), (b":scheme", b"https"), (b":authority", b"a.example"),
                     (b":path", b"/x%20y?q=1"), (b"host", b"old.example"), (b"accept", b"*/*")]
    scope = http2.asgi_scope(event)
    assert scope["headers"] == [(b"host", b"a.example"), (b"accept", b"*/*")]
    assert (scope["path"], scope["raw_path"], scope["query_string"]) == ("/x y", b"/x%20y", b"q=1")


def test_the_wsgi_way_drains_one_stream_before_the_next():
    run = http2.serve_wsgi(http2.chunked_wsgi_app(3))
    assert run.data_order() == [1, 1, 1, 1, 3, 3, 3, 3]  # three chunks and the empty END_STREAM
    assert run.responses[3]["body"] == b"/b part 1\n/b part 2\n/b part 3\n"
    environ = run.requests[1]
    assert environ["SERVER_PROTOCOL"] == "HTTP/2" and environ["PATH_INFO"] == "/a"
    assert not any("stream" in key.lower() for key in environ)


def test_response_events_leave_out_the_connection_frames_and_keep_both_streams():
    for run in (http2.serve_asgi(http2.chunked_app(2)), http2.serve_wsgi(http2.chunked_wsgi_app(2))):
        events = run.response_events()
        assert {e.layer for e in events} <= {"asgi", "wsgi", "h2"}
        assert all(e.data["stream_id"] in (1, 3) for e in events)
        stream_frames = [f for f in run.frames("frame_out") if f["stream_id"]]  # not SETTINGS (stream 0)
        assert sum(e.kind == "frame_out" for e in events) == len(stream_frames) >= 6


def test_frames_are_routed_and_labelled_with_their_stream():
    frame = TraceEvent(0.0, 1, "h2", "frame_out",
                       {"frame": "DATA", "stream_id": 3, "flags": ["END_STREAM"], "size": 10})
    assert route(frame) == ("server", "client")
    assert label(frame) == "DATA s3 END_STREAM (10 B)"
    assert route(TraceEvent(0.0, 1, "h2", "frame_in", {})) == ("client", "server")
    message = TraceEvent(0.0, 1, "asgi", "send", {"type": "http.response.start", "status": 200,
                                                  "stream_id": 1})
    assert label(message) == "s1 · http.response.start 200"
    received = TraceEvent(0.0, 1, "h2", "RequestReceived", {"stream_id": 1, "method": "GET", "path": "/a"})
    assert route(received) is None
    assert listing([received]).endswith("RequestReceived  s1 GET /a")


def test_the_sequence_diagram_has_an_arrow_with_the_stream_id_for_every_frame():
    run = http2.serve_asgi(http2.chunked_app(2))
    fig = sequence_diagram(run.tracer)
    texts = [t.get_text() for t in fig.axes[0].texts if t.get_gid() == "arrow-label"]
    frames = run.frames()
    assert sum(text.startswith(("DATA s", "HEADERS s", "SETTINGS s")) for text in texts) == len(frames)
    assert "DATA s3 END_STREAM (10 B)" in texts
