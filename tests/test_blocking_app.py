"""`python -m asgi_lab experiment blocking`: does a real framework app block the loop?

The apps are real FastAPI and Starlette apps with a real `sqlite3` query (the course's shop,
`asgi_lab.db`) in an `async def` route, and their fixed versions (`asyncio.to_thread`).
"""

import asyncio
import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("starlette")

from starlette.applications import Starlette  # noqa: E402
from starlette.middleware import Middleware  # noqa: E402
from starlette.middleware.base import BaseHTTPMiddleware  # noqa: E402
from starlette.responses import PlainTextResponse  # noqa: E402
from starlette.routing import Route  # noqa: E402

from asgi_lab import db  # noqa: E402
from asgi_lab.apps.own import blocking_route  # noqa: E402
from asgi_lab.db import shop  # noqa: E402
from asgi_lab.experiments import blocking_app  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
THIS_FILE = Path(__file__).name


def test_fastapi_blocking_query_is_found_with_its_route_and_line():
    result = blocking_app.run(blocking_route.app, ["/slow", "/hello"], clients=3, duration=1.5)
    summary = result["summary"]
    assert summary["blocks"], blocking_app.format_table(result)
    culprit = summary["culprits"][0]
    assert culprit["request"] == "GET /slow"
    assert "blocking_route.py" in culprit["blocking_line"]
    assert "conn.execute(" in culprit["blocking_line"]
    assert culprit["longest_ms"] >= result["threshold_ms"]
    stall = max((s for s in result["stalls"] if s["in_app"]), key=lambda s: s["duration_ms"])
    functions = [frame["function"] for frame in stall["stack"]]
    assert "slow" in functions and functions[-1] == "top_customer"
    assert "> asgi_lab/apps/own/blocking_route.py" in blocking_app.format_stack(stall) \
        or "blocking_route.py" in blocking_app.format_stack(stall)
    # asyncio's debug mode saw it too, and its report names the task of a /slow request
    assert summary["slow_callbacks"] >= 1
    assert "GET /slow" in {cb["request"] for cb in result["slow_callbacks"]}
    # the other route waited behind it: /hello needs no work, yet took a stall's length
    assert result["summary"]["paths"]["/hello"]["max_ms"] >= result["threshold_ms"]
    assert all(r["status"] == 200 for r in result["client_requests"])


def test_fastapi_fixed_with_to_thread_reports_no_stall():
    result = blocking_app.run(blocking_route.fixed_app, ["/slow", "/hello"], clients=3,
                              duration=1.5)
    summary = result["summary"]
    table = blocking_app.format_table(result)
    assert not summary["blocks"] and summary["stalls_in_app"] == 0, table
    # A stall the app did not cause (a garbage collection on the loop's thread, or a machine
    # so busy that the loop's thread got no CPU) is reported as such, never as the app's.
    for stall in result["stalls"]:
        assert not stall["in_app"] and stall["cause"].startswith(("garbage collection", "none of")), table
    if not result["stalls"]:
        assert summary["max_lag_ms"] < result["threshold_ms"]
        assert "no stall of 100 ms or more" in table
    assert summary["paths"]["/slow"]["requests"] >= 1
    assert all(r["status"] == 200 for r in result["client_requests"])


# -- Starlette, with a BaseHTTPMiddleware: the route runs in a task of its own ------------------

def _report(path, latest):
    conn = sqlite3.connect(path)
    try:
        return conn.execute(shop.REPORT.format(p="?"), (latest,)).fetchone()[0]  # BLOCKS HERE
    finally:
        conn.close()


def _starlette_app(fixed: bool):
    path = shop.sqlite_path(db.ensure_shop())
    latest = shop.ORDERS - min(db.rows_for(250), shop.ORDERS)

    async def slow(request):
        if fixed:
            return PlainTextResponse(await asyncio.to_thread(_report, path, latest))
        return PlainTextResponse(_report(path, latest))

    class Header(BaseHTTPMiddleware):
        async def dispatch(self, request, call_next):
            response = await call_next(request)
            response.headers["x-checked"] = "yes"
            return response

    return Starlette(routes=[Route("/report", slow)], middleware=[Middleware(Header)])


def test_starlette_blocking_route_behind_middleware():
    result = blocking_app.run(_starlette_app(fixed=False), "/report", clients=2, duration=1.5)
    summary = result["summary"]
    assert summary["blocks"], blocking_app.format_table(result)
    stall = next(s for s in result["stalls"] if s["in_app"])
    assert THIS_FILE in stall["blocking_line"] and "BLOCKS HERE" in stall["blocking_line"]
    # the handler ran in the middleware's own task: the request comes from what was in flight
    assert stall["request"] == "GET /report" or "GET /report" in stall["candidates"]


def test_starlette_fixed_route_behind_middleware():
    result = blocking_app.run(_starlette_app(fixed=True), "/report", clients=2, duration=1.5)
    assert not result["summary"]["blocks"], blocking_app.format_table(result)
    assert all(not stall["in_app"] for stall in result["stalls"]), blocking_app.format_table(result)


def test_django_async_view_with_a_blocking_query_is_found():
    """Django (ASGI handler, no lifespan): the stall is blamed on the view's query line."""
    pytest.importorskip("django")
    from asgi_lab.apps.frameworks import django_app

    result = blocking_app.run(django_app.application, ["/report", "/hello"], clients=2, duration=1.5)
    assert result["summary"]["blocks"], blocking_app.format_table(result)
    stall = next(s for s in result["stalls"] if s["in_app"])
    assert "django_app.py" in stall["blocking_line"] and "in report" in stall["blocking_line"], stall
    assert "blocks the loop" in stall["blocking_line"]
    assert all(answer["errors"] == 0 for answer in result["summary"]["paths"].values()), result["summary"]


# -- pure parts ---------------------------------------------------------------------------------

def test_blocking_line_is_the_innermost_frame_of_your_code(tmp_path):
    import asyncio.base_events as base_events

    stack = [{"file": base_events.__file__, "line": 1, "function": "run_forever", "code": "x"},
             {"file": str(tmp_path / "myapp.py"), "line": 12, "function": "route",
              "code": "rows = cur.execute(sql)"},
             {"file": sqlite3.__file__, "line": 3, "function": "inner", "code": "y"}]
    assert blocking_app.blocking_line(stack).endswith("myapp.py:12 in route: rows = cur.execute(sql)")
    assert blocking_app.blocking_line(stack[:1]) is None  # only the loop: not the app
    server = str(ROOT / "asgi_lab" / "asgi" / "http.py")
    assert not blocking_app.is_your_code(server)
    assert blocking_app.is_your_code(str(ROOT / "asgi_lab" / "apps" / "own" / "blocking_route.py"))


def test_summary_and_chart_from_a_saved_result(tmp_path):
    stack = [{"file": str(tmp_path / "myapp.py"), "line": 7, "function": "slow", "code": "q()"}]
    result = {"app": "myapp:app", "paths": ["/slow", "/ok"], "clients": 2, "duration": 1.0,
              "threshold_ms": 100.0, "samples": [[0.1, 1.0], [0.5, 300.0], [0.6, 2.0]],
              "stalls": [{"start": 0.2, "end": 0.5, "duration_ms": 300.0, "request": "GET /slow",
                          "candidates": [], "stack": stack, "blocking_line": "myapp.py:7 in slow: q()",
                          "in_app": True, "samples": 2, "also": [], "gc_ms": 0.0,
                          "cause": "your code"},
                         {"start": 0.7, "end": 0.85, "duration_ms": 150.0, "request": None,
                          "candidates": [], "stack": [], "blocking_line": None, "in_app": False,
                          "samples": 1, "also": [], "gc_ms": 140.0,
                          "cause": "garbage collection (generation 2), 140 ms"}],
              "slow_callbacks": [], "requests": [],
              "client_requests": [{"path": "/slow", "start": 0.2, "ms": 320.0, "status": 200},
                                  {"path": "/ok", "start": 0.25, "ms": 280.0, "status": 200},
                                  {"path": "/ok", "start": 0.9, "ms": 2.0, "status": 500}],
              "environment": {}}
    summary = blocking_app.summarize(result)
    assert summary["blocks"] and summary["stalls"] == 2 and summary["stalls_in_app"] == 1
    assert summary["longest_stall_ms"] == 300.0 and summary["stalled_ms_total"] == 450.0
    assert summary["culprits"] == [{"request": "GET /slow", "blocking_line": "myapp.py:7 in slow: q()",
                                    "stalls": 1, "longest_ms": 300.0}]
    assert summary["paths"]["/ok"] == {"requests": 2, "errors": 1, "p50_ms": 280.0, "max_ms": 280.0}
    result["summary"] = summary
    table = blocking_app.format_table(result)
    assert "BLOCKS THE LOOP: 1 stall in your code, the longest 300 ms" in table
    assert "  GET /slow: the loop was stuck at\n    myapp.py:7 in slow: q()  (1 stall, longest 300 ms)" in table
    assert "not the app: 150 ms at t=0.70 s, garbage collection (generation 2), 140 ms" in table
    fig = blocking_app.lag_chart(result)
    assert fig.axes[0].get_title(loc="left").startswith("GET /slow blocks the loop")


def test_cli_runs_saves_and_replots(tmp_path):
    out, charts = tmp_path / "blocking.json", tmp_path / "charts"
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    run = subprocess.run(
        [sys.executable, "-m", "asgi_lab", "experiment", "blocking",
         "asgi_lab.apps.own.blocking_route:app", "--path", "/slow", "--path", "/hello",
         "--clients", "2", "--duration", "1", "--out", str(out), "--charts", str(charts)],
        capture_output=True, text=True, timeout=120, env=env, cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    assert "BLOCKS THE LOOP" in run.stdout
    assert "GET /slow" in run.stdout and "blocking_route.py" in run.stdout
    assert "Executing" not in run.stderr  # asyncio's reports are data, not log lines
    saved = json.loads(out.read_text())
    assert saved["experiment"] == "blocking" and saved["summary"]["blocks"]
    stamped = saved.get("environment") or saved  # measure.environment, or results.stamp
    assert stamped["command"].startswith("python -m asgi_lab experiment blocking")
    assert (charts / "blocking-lag.png").stat().st_size > 10_000
    replot = subprocess.run(
        [sys.executable, "-m", "asgi_lab", "experiment", "blocking", "--replot", str(out),
         "--charts", str(tmp_path / "again")],
        capture_output=True, text=True, timeout=60, env=env, cwd=tmp_path)
    assert replot.returncode == 0, replot.stderr
    assert replot.stdout.splitlines()[:3] == run.stdout.splitlines()[:3]
    assert (tmp_path / "again" / "blocking-lag.png").exists()
