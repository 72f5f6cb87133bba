"""The pictures of a trace: sequence diagrams, timelines, the stepper, and `make demo`."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import pytest  # noqa: E402
from matplotlib.text import Annotation  # noqa: E402

from asgi_lab import Tracer, serve_in_background  # noqa: E402
from asgi_lab.apps.pair import asgi_app, slow_asgi_app  # noqa: E402
from asgi_lab.wire import GET_REQUEST, POST_REQUEST, concurrent_requests, trace_exchange  # noqa: E402
from asgi_lab.trace import TraceEvent, merge_chunks  # noqa: E402
from asgi_lab.viz.labels import route  # noqa: E402
from asgi_lab.viz import Stepper, sequence_diagram, side_by_side, timeline  # noqa: E402
from asgi_lab.viz.timeline import compare_timelines, spans  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def post():
    tracer = Tracer()
    with serve_in_background(asgi_app, name="test-viz", tracer=tracer, access_log=False) as server:
        events = trace_exchange(server, tracer, POST_REQUEST)
        trace_exchange(server, tracer, GET_REQUEST)
    return tracer, events


@pytest.fixture(scope="module")
def busy():
    """Six slow requests at once on the ASGI server."""
    tracer = Tracer()
    with serve_in_background(slow_asgi_app, name="test-viz-busy", tracer=tracer,
                             access_log=False) as server:
        concurrent_requests(server, 6)
        for conn in range(1, 7):
            tracer.wait_for(conn=conn, kind="connection_lost")
    return tracer


def arrows(ax):
    return [a for a in ax.texts if isinstance(a, Annotation) and a.get_gid() == "arrow"]


def notes(ax):
    return [a for a in ax.texts if a.get_gid() == "note"]


def lane_names(ax):
    return [t.get_text() for t in ax.texts if (t.get_gid() or "").startswith("lane:")]


def test_sequence_diagram_has_three_lanes_and_an_arrow_per_message(post):
    _, events = post
    fig = sequence_diagram(events, title="POST")
    ax = fig.axes[0]
    assert lane_names(ax) == ["client", "server", "app"]
    merged = merge_chunks(events)
    routed = [e for e in merged if route(e) is not None]
    assert len(arrows(ax)) == len(routed) == 6  # connect, bytes in, receive, 2 sends, bytes out
    assert len(notes(ax)) == len(merged) - len(routed)
    labels = [t.get_text() for t in ax.texts if t.get_gid() == "arrow-label"]
    assert labels[2:5] == ["http.request (11 B)", "http.response.start 200", "http.response.body (11 B)"]
    # Arrows point the right way: receive goes server -> app, send app -> server.
    receive, start = arrows(ax)[2], arrows(ax)[3]
    assert receive.xy[0] > receive.xyann[0] and start.xy[0] < start.xyann[0]
    # One row per event on the time axis, first at 0 ms.
    ticks = [t.get_text() for t in ax.get_yticklabels()]
    assert len(ticks) == len(merged) and ticks[0].endswith("0.00 ms")


def test_sequence_diagram_of_one_connection_and_custom_lanes(post):
    tracer, events = post
    fig = sequence_diagram(tracer, conn=2, lane_titles={"app": "ASGI app"})
    ax = fig.axes[0]
    assert lane_names(ax) == ["client", "server", "ASGI app"]
    assert len(ax.get_yticks()) == len(merge_chunks(tracer.filter(conn=2)))
    # Several connections in one diagram: each label says whose it is.
    both = sequence_diagram(tracer)
    assert any(t.get_text().startswith("[2] ") for t in both.axes[0].texts)


def test_a_long_trace_is_cut_and_says_so():
    events = [TraceEvent(t=i / 1000, conn=1, layer="asgi", kind="send",
                         data={"type": "http.response.body", "body": "x", "more_body": True})
              for i in range(60)]
    ax = sequence_diagram(events, limit=20).axes[0]
    assert len(arrows(ax)) == 20
    assert [t.get_text() for t in ax.texts if t.get_gid() == "left-out"] == \
        ["… and 40 more events, not shown"]


def test_side_by_side_draws_one_diagram_per_trace(post):
    tracer, events = post
    fig = side_by_side({"first": events, "second": tracer.filter(conn=2)},
                       lane_titles={"second": {"app": "other app"}})
    assert [ax.get_title(loc="left") for ax in fig.axes] == ["first", "second"]
    assert lane_names(fig.axes[1]) == ["client", "server", "other app"]
    assert len(arrows(fig.axes[0])) == 6 and len(arrows(fig.axes[1])) == 5  # GET: no receive


def test_timeline_by_task_gives_each_request_its_own_row(busy):
    fig = timeline(busy, by="task")
    ax = fig.axes[0]
    bars = [c for c in ax.collections if (c.get_gid() or "").startswith("conn:")]
    expected = spans([e for e in busy.events if e.conn], "task")
    assert len(bars) == len(expected)
    rows = [t.get_text() for t in ax.get_yticklabels()]
    app_tasks = {e.task for e in busy.events if e.layer == "asgi"}
    assert len(app_tasks) == 6 and app_tasks <= set(rows)
    assert sum(row.startswith("no task") for row in rows) == 1  # the loop's callbacks


def test_timeline_by_thread_stacks_overlapping_connections(busy):
    bars = spans(busy.events, "thread")
    assert len({b.row for b in bars}) == 1  # one thread, the event loop's
    assert len(bars) == 6 and max(b.level for b in bars) >= 1  # they overlapped in time
    ax = timeline(busy, by="thread").axes[0]
    assert {c.get_gid() for c in ax.collections if c.get_gid()} == {f"conn:{n}" for n in range(1, 7)}
    with pytest.raises(ValueError, match="by must be"):
        timeline(busy, by="color")


def test_compare_timelines_stacks_one_chart_per_trace(busy, post):
    fig = compare_timelines({"busy": busy, "post": post[0]}, by=["thread", "conn"])
    assert [ax.get_title(loc="left") for ax in fig.axes] == ["busy", "post"]
    assert [t.get_text() for t in fig.axes[1].get_yticklabels()] == ["conn 1", "conn 2"]


def test_stepper_moves_with_its_buttons_and_slider(post):
    _, events = post
    stepper = Stepper(events)
    merged = merge_chunks(events)
    assert stepper.index == 0 and len(stepper.events) == len(merged)
    stepper.next_button.click()
    stepper.next_button.click()
    assert stepper.index == 2 and stepper.event.kind == "Request"
    assert "Request" in stepper.event_pane.value and "POST" in stepper.event_pane.value
    stepper.previous_button.click()
    assert stepper.index == 1 and stepper.event.kind == "bytes_in"
    assert "(this event)" in stepper.wire_pane.value and "POST /echo HTTP/1.1<span style='color:#999'>\\r\\n</span>" in stepper.wire_pane.value
    stepper.slider.value = len(merged) - 2  # bytes_out
    assert stepper.event.kind == "bytes_out" and "HTTP/1.1 200 OK<span" in stepper.wire_pane.value
    assert bytes(stepper.diagram.value).startswith(b"\x89PNG")
    stepper.next_button.click()
    stepper.next_button.click()  # past the end: stays on the last event
    assert stepper.index == len(merged) - 1 and stepper.slider.value == stepper.index
    stepper.go(-5)
    assert stepper.index == 0 and "nothing yet" in stepper.wire_pane.value


def test_stepper_bundle_has_the_widget_and_a_static_fallback(post):
    _, events = post
    bundle = Stepper(events, title="POST")._repr_mimebundle_()
    assert "application/vnd.jupyter.widget-view+json" in bundle
    assert "http.response.start" in bundle["text/plain"]
    assert "<img src='data:image/png;base64," in bundle["text/html"]
    assert bundle["text/html"].count("<tr>") == len(merge_chunks(events)) + 1


def test_stepper_static_mode_needs_no_widgets(post):
    _, events = post
    stepper = Stepper(events, static=True)
    bundle = stepper._repr_mimebundle_()
    assert set(bundle) == {"text/plain", "text/html"}
    assert stepper.widget is None
    stepper.next()
    stepper.next()
    assert stepper.index == 2 and stepper.wire()["bytes_in"].kind == "bytes_in"
    assert stepper.diagram_png().startswith(b"\x89PNG")
    with pytest.raises(ValueError, match="no events"):
        Stepper([], static=True)


def test_stepper_on_a_long_trace_shows_a_window_of_the_diagram():
    events = [TraceEvent(t=i / 1000, conn=1, layer="asgi", kind="send",
                         data={"type": "http.response.body", "body": "x", "more_body": True})
              for i in range(40)]
    stepper = Stepper(events, static=True)
    stepper.go(30)
    assert stepper.diagram_png().startswith(b"\x89PNG")


def test_make_demo_writes_the_pngs(tmp_path):
    out = tmp_path / "demo"
    result = subprocess.run([sys.executable, "-m", "asgi_lab", "demo", "--out", str(out)],
                            capture_output=True, text=True, timeout=60, cwd=ROOT,
                            env={**os.environ, "MPLBACKEND": "Agg"})
    assert result.returncode == 0, result.stderr
    for name in ("asgi-get.png", "asgi-post.png", "wsgi-get.png", "wsgi-post.png",
                 "post-side-by-side.png", "timeline.png"):
        assert (out / name).read_bytes().startswith(b"\x89PNG"), name
    assert "http.response.start status=200" in result.stdout
    assert str(out / "timeline.png") in result.stdout
    for kind in ("asgi", "wsgi"):
        loaded = Tracer.load(out / f"{kind}-trace.json")
        assert loaded.connections() == [1, 2] and len(loaded) > 15


def test_a_wsgi_generator_has_its_call_and_close_on_the_diagram():
    def countdown(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain")])
        yield b"2..."
        yield b"1..."

    tracer = Tracer()
    with serve_in_background(countdown, "wsgi", name="test-viz-wsgi", tracer=tracer,
                             access_log=False) as server:
        events = trace_exchange(server, tracer, GET_REQUEST)
    ax = sequence_diagram(events, lane_titles={"app": "WSGI app"}).axes[0]
    labels = [t.get_text() for t in ax.texts if t.get_gid() == "arrow-label"]
    assert labels[2:5] == ["app(environ, start_response)", "returned generator",
                           "start_response('200 OK')"]
    assert labels.count("body_chunk(4 B)") == 2 and labels[-2:] == ["close()", "0\\r\\n\\r\\n  (5 B)"]
    call, close = arrows(ax)[2], [a for a, t in zip(arrows(ax), labels) if t == "close()"][0]
    assert call.xy[0] > call.xyann[0] and close.xy[0] > close.xyann[0]  # server -> app, both
    assert [t.get_text() for t in ax.texts if t.get_gid() == "note"][:3] == \
        ["Request GET /hello", "EndOfMessage", "environ GET /hello"]  # the (empty) body is read first


# -- the experiment charts: one message per figure ------------------------------------------------


def _summary(clients, threads, per_client_kb, served, waits_in):
    return {"clients": clients, "served": served, "never": clients - served,
            "peak_threads": threads, "per_client_kb": per_client_kb}


def _sweep():
    """A made-up sweep: a coroutine server, a thread per client, a pool of 32."""
    results = []
    for n in (100, 1000, 5000):
        runs = [("asgi", "coroutine", 1, 5.0, n), ("wsgi-threads", "thread", n + 1, 20.0, n),
                ("wsgi-pool", "thread", 33, 0.5, 32)]
        if n > 1000:
            runs = runs[:1]  # thread servers left out of the big run
        results.append({"clients": n, "pool_threads": 32, "runs": [
            {"server": {"name": name, "waits_in": waits}, "summary": _summary(n, t, kb, s, waits)}
            for name, waits, t, kb, s in runs]})
    return {"experiment": "sse-sweep", "results": results}


def _lines(fig):
    return {line.get_label(): line for ax in fig.axes for line in ax.get_lines()
            if not line.get_label().startswith("_")}


def test_threads_chart_is_log_log_with_the_course_colours():
    from asgi_lab.viz import charts

    fig = charts.threads_chart(_sweep(), source="source: test · commit abc")
    ax = fig.axes[0]
    assert ax.get_yscale() == "log" and ax.get_xscale() == "log"
    assert ax.get_title(loc="left") == "Threads grow with clients; coroutines do not"
    lines = _lines(fig)
    assert list(lines["wsgi-threads"].get_ydata()) == [101, 1001]
    assert list(lines["asgi"].get_xdata()) == [100, 1000, 5000]
    assert lines["asgi"].get_color() == charts.COLORS["asgi"] == charts.color("asgi")
    assert "threads" in ax.get_ylabel() and "clients" in ax.get_xlabel()
    assert fig._supxlabel.get_text() == "source: test · commit abc"


def test_memory_per_client_chart_starts_at_zero_and_says_who_was_not_served():
    from asgi_lab.viz import charts

    fig = charts.memory_per_client_chart(_sweep(), clients=1000)
    ax = fig.axes[0]
    assert ax.get_xlim()[0] == 0
    assert [p.get_label() for p in ax.patches] == ["wsgi-pool", "asgi", "wsgi-threads"]
    labels = [t.get_text() for t in ax.texts]
    assert "0.5 KB   (served 32 of 1,000)" in labels and "20.0 KB" in labels
    assert ax.get_title(loc="left") == ("1,000 clients: a waiting thread costs 20 KB of RSS, "
                                        "a waiting coroutine 5 KB")
    assert "KB" in ax.get_xlabel()
    with pytest.raises(ValueError, match="no run with 7 clients"):
        charts.memory_per_client_chart(_sweep(), clients=7)


def test_never_served_chart_counts_the_starved_clients():
    from asgi_lab.viz import charts

    fig = charts.never_served_chart(_sweep())
    ax = fig.axes[0]
    lines = _lines(fig)
    assert list(lines["wsgi-pool"].get_ydata()) == [68, 968]
    assert list(lines["asgi: none, at every size"].get_ydata()) == [0, 0, 0]
    assert ax.get_ylim()[0] == 0
    assert ax.get_title(loc="left") == "A pool of 32 threads leaves every client after the 32nd unserved"


def test_never_served_chart_says_when_two_servers_starve_the_same_clients():
    """Two pools of 32 leave the same clients unserved: the second line, drawn on the first,
    is dashed and says so in the legend."""
    from asgi_lab.viz import charts

    sweep = _sweep()
    for result in sweep["results"]:
        result["runs"] += [{**run, "server": {**run["server"], "name": "gunicorn"}}
                           for run in result["runs"] if run["server"]["name"] == "wsgi-pool"]
    lines = _lines(charts.never_served_chart(sweep))
    assert lines["wsgi-pool"].get_linestyle() == "-"
    same = lines["gunicorn: the same counts as wsgi-pool"]
    assert same.get_linestyle() == "--" and list(same.get_ydata()) == [68, 968]


def test_address_space_chart_stacks_the_parts():
    from asgi_lab.experiments.procstats import PARTS
    from asgi_lab.viz import charts

    def measured(arena_max, arenas):
        sizes = dict(zip(PARTS, (1600, arenas, 2, 9, 7)))
        return {"threads": 200, "arena_max": arena_max, "parts": {
            name: {"mappings": 1, "size": mb * 2**20, "rss": 2**20} for name, mb in sizes.items()}}

    fig = charts.address_space_chart(measured(None, 960), measured(2, 64))
    space = fig.axes[0]
    containers = {c.get_label(): c for c in space.containers}
    assert list(containers) == list(PARTS)
    assert [round(p.get_width(), 4) for p in containers["malloc arenas"]] == \
        [round(960 / 1024, 4), round(64 / 1024, 4)]
    totals = [t.get_text().strip() for t in space.texts]
    assert totals == [f"{(1600 + 960 + 18) / 1024:,.2f}", f"{(1600 + 64 + 18) / 1024:,.2f}"]
    assert "GB" in space.get_xlabel() and "MB" in fig.axes[1].get_xlabel()
