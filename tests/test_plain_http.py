"""The plain request/response comparison: the load generator (asgi_lab/load/http.py), run in
its own process against real servers on 127.0.0.1, and the computed verdict
(asgi_lab/experiments/plain_http.py). No speed is asserted here: benchmarks/ does that."""

from __future__ import annotations

import asyncio
import math
import socket

import pytest

from asgi_lab.apps import hello
from asgi_lab.background import serve_in_background
from asgi_lab.experiments import plain_http
from asgi_lab.experiments.plain_http import HelloComparison
from asgi_lab.load import http as http_load

pytestmark = pytest.mark.timeout(60)


def test_load_once_counts_complete_200s():
    with serve_in_background(hello.app, "asgi", name="test:load-once", access_log=False,
                             lifespan="off") as server:
        result = asyncio.run(http_load.load_once(server.url, clients=2, seconds=0.3))
    assert result["errors"] == 0 and result["requests"] > 10
    assert 0 < result["p50_ms"] <= result["p99_ms"]
    assert result["requests_per_s"] == pytest.approx(result["requests"] / result["elapsed"])


def test_a_server_that_is_not_there_is_an_error_not_a_hang():
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    result = asyncio.run(http_load.load_once(f"http://127.0.0.1:{port}/", clients=2, seconds=0.2))
    assert result["requests"] == 0 and result["errors"] == 2
    assert "Connect" in result["first_error"] or "refused" in result["first_error"].lower()


def test_non_200_answers_are_errors():
    def teapot(environ, start_response):
        start_response("418 I'm a teapot", [("Content-Length", "0")])
        return []

    with serve_in_background(teapot, "wsgi", name="test:teapot", access_log=False, threads=2) as server:
        result = asyncio.run(http_load.load_once(server.url, clients=1, seconds=0.2))
    assert result["requests"] == 0 and result["errors"] > 0 and result["first_error"] == "status 418"


def test_the_generator_process_interleaves_rounds_and_reports_their_edges():
    edges = []
    with serve_in_background(hello.wsgi_app, "wsgi", name="test:gen-wsgi", access_log=False) as wsgi, \
            serve_in_background(hello.app, "asgi", name="test:gen-asgi", access_log=False,
                                lifespan="off") as asgi:
        urls = [wsgi.url, asgi.url]
        result = http_load.run_http_load(urls, clients=2, seconds=0.2, rounds=2, progress=edges.append)
    assert [run["url"] for run in result["runs"]] == urls * 2
    assert [run["round"] for run in result["runs"]] == [0, 0, 1, 1]
    assert all(run["errors"] == 0 and run["requests"] > 0 for run in result["runs"])
    assert [(e["round"], e["url"], e["edge"]) for e in edges] == [
        (r, u, edge) for r in range(2) for u in range(2) for edge in (0, 1)]
    assert 0 < result["client_cpu_s"]


def test_compare_hello_measures_both_servers_every_round():
    comparison = plain_http.compare_hello(seconds=0.2, rounds=2, clients=2)
    assert [row["server"] for row in comparison.rows] == ["WSGI", "ASGI"] * 2
    assert comparison.errors == 0
    assert all(row["requests"] > 0 and math.isfinite(row["cpu_us"]) and row["cpu_us"] > 0
               for row in comparison.rows)
    assert "ASGI/WSGI" in comparison.verdict()
    assert len(comparison.table().splitlines()) == 6
    fig = plain_http.plot(comparison)
    assert len(fig.axes) == 2


def synthetic(rps, cpu, load=1.0, client_busy=0.3):
    """A comparison with given per-round (WSGI, ASGI) requests/s and CPU per request."""
    comparison = HelloComparison(clients=8, seconds=1.0, client_busy=client_busy, load=load, cores=2)
    for number, ((w_rps, a_rps), (w_cpu, a_cpu)) in enumerate(zip(rps, cpu)):
        for server, r, c in (("WSGI", w_rps, w_cpu), ("ASGI", a_rps, a_cpu)):
            comparison.rows.append({"server": server, "round": number, "requests": int(r),
                                    "requests_per_s": r, "p50_ms": 1.0, "p99_ms": 2.0, "cpu_us": c})
    return comparison


def test_verdict_no_faster_when_the_cost_is_the_same():
    verdict = synthetic([(1000, 1020), (1000, 980)], [(100, 102), (100, 98)]).verdict()
    assert verdict.startswith("about the same (within 15%, or rounds on both sides of 1): a request cost the ASGI server 1.00x")
    assert "waiting" not in verdict and "load generator" not in verdict


def test_verdict_names_a_real_difference_and_a_gap_the_cpu_does_not_explain():
    cheaper = synthetic([(1000, 1500), (1000, 1600)], [(100, 60), (100, 62)]).verdict()
    assert cheaper.startswith("ASGI cheaper here: 0.61x")
    waiting = synthetic([(2000, 1000), (2000, 900)], [(100, 100), (100, 101)], load=8.0).verdict()
    assert waiting.startswith("about the same") and "time spent waiting" in waiting
    assert "load average 8.0 on 2 cores" in waiting


def test_verdict_warns_when_the_load_generator_was_saturated():
    verdict = synthetic([(1000, 1000)], [(100, 100)], client_busy=0.97).verdict()
    assert "busy 97% of the time" in verdict
