"""Trace real requests through both servers, without a browser: `make demo`.

    python -m asgi_lab demo --out demo-output

starts the ASGI server and the WSGI server in the background, each with a `Tracer`, sends
each of them the same GET and the same POST over a plain socket, and writes:

- `asgi-get.png`, `asgi-post.png`, `wsgi-get.png`, `wsgi-post.png`: sequence diagrams;
- `post-side-by-side.png`: the WSGI and the ASGI POST next to each other;
- `timeline.png`: eight concurrent slow requests on each server: which thread works on
  which connection when (four WSGI workers, one ASGI event loop);
- `asgi-trace.json`, `wsgi-trace.json`: every event recorded, for `Tracer.load(...)`;

and prints each trace as a listing. The apps are `asgi_lab/apps/pair.py`; the requests and
the socket clients (`exchange`, `trace_exchange`, `concurrent_requests`) are
`asgi_lab/wire.py`, which the notebooks use too.
"""

from __future__ import annotations

from pathlib import Path

from .apps.pair import asgi_app, slow_asgi_app, slow_wsgi_app, wsgi_app
from .background import serve_in_background
from .trace import TraceEvent, Tracer
from .wire import GET_REQUEST, POST_REQUEST, concurrent_requests, trace_exchange


def run_demo(out: str | Path = "demo-output") -> int:
    """Serve, trace and draw; print the listings and the files written. Returns 0."""
    from .viz import sequence_diagram, side_by_side
    from .viz.timeline import compare_timelines

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    traces: dict[str, dict[str, list[TraceEvent]]] = {}

    for kind, app in (("asgi", asgi_app), ("wsgi", wsgi_app)):
        tracer = Tracer()
        with serve_in_background(app, kind, name=f"demo-{kind}", tracer=tracer, access_log=False) as server:
            traces[kind] = {"GET": trace_exchange(server, tracer, GET_REQUEST),
                            "POST": trace_exchange(server, tracer, POST_REQUEST)}
        path = out / f"{kind}-trace.json"
        tracer.save(path)
        written.append(path)
        for method, events in traces[kind].items():
            title = f"{method} through the {kind.upper()} server"
            print(f"\n{title}\n{'-' * len(title)}")
            print(Tracer(events).listing(times=True))
            fig = sequence_diagram(events, title=title,
                                   lane_titles={"app": f"{kind.upper()} app"})
            path = out / f"{kind}-{method.lower()}.png"
            fig.savefig(path, dpi=110)
            written.append(path)

    fig = side_by_side({"WSGI": traces["wsgi"]["POST"], "ASGI": traces["asgi"]["POST"]},
                       lane_titles={"WSGI": {"app": "WSGI app"}, "ASGI": {"app": "ASGI app"}})
    path = out / "post-side-by-side.png"
    fig.savefig(path, dpi=100)
    written.append(path)

    # Many connections at once: threads (WSGI) against tasks (ASGI).
    busy = {}
    for kind, app in (("wsgi", slow_wsgi_app), ("asgi", slow_asgi_app)):
        tracer = busy[f"{kind.upper()}: 8 clients, one row per thread"] = Tracer()
        with serve_in_background(app, kind, name=f"demo-slow-{kind}", tracer=tracer,
                                 access_log=False, threads=4) as server:
            concurrent_requests(server, 8)
    fig = compare_timelines(busy, by="thread")
    path = out / "timeline.png"
    fig.savefig(path, dpi=100)
    written.append(path)

    print("\nwritten:")
    for path in written:
        print(f"  {path}")
    return 0
