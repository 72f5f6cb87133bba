"""Every benchmark's result file becomes a table on the docs pages: a tiny, made-up result per
script goes through tools/render_results.py (as `make docs` renders them), so a `markdown()`
that breaks, or stops computing its medians and ratios from the raw rounds, fails here. No
benchmark runs: the numbers are chosen so that each median and ratio is known in advance."""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
_spec = importlib.util.spec_from_file_location("render_results", ROOT / "tools" / "render_results.py")
render = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(render)

MACHINE = {"commit": "ab" * 20, "date": "2026-12-03T08:00:00+00:00", "cpu_model": "Test CPU", "cores": 2,
           "python": "3.11.7", "load_average": [0.5, 0.25, 0.125]}


def stamped(result: dict, command: str) -> dict:
    return {**result, "command": command, "machine": MACHINE}


def load_rounds(scenarios: tuple[str, ...], servers: dict[str, tuple[list[float], list[float]]]) -> list[dict]:
    """harness.raw_rounds rows: per server (req/s per round, CPU us per request per round)."""
    return [{"server": name, "scenario": scenario, "round": number, "requests_per_s": rps, "p50_ms": 1.0,
             "p99_ms": 2.5, "errors": 0, "requests": int(rps), "cpu_us_per_request": cpu}
            for number in range(3) for scenario in scenarios
            for name, (rates, cpus) in servers.items() for rps, cpu in [(rates[number], cpus[number])]]


def http_hello() -> dict:
    return stamped({"benchmark": "http_hello", "app": "asgi_lab.apps.hello:app", "rounds": 3, "seconds": 1.0,
                    "connections": 10, "client": "wrk", "baseline": "/tmp/base", "runs": load_rounds(
                        ("keep-alive", "close"),
                        {"asgi_lab": ([100, 400, 200], [50, 50, 50]),
                         "baseline": ([100, 150, 100], [100, 100, 100]),
                         "uvicorn-h11": ([100, 100, 100], [100, 100, 100])})},
                   "python benchmarks/http_hello.py --baseline /tmp/base")


def tracer_overhead() -> dict:
    return stamped({"benchmark": "tracer_overhead", "app": "asgi_lab.apps.hello:app", "rounds": 3,
                    "seconds": 1.0, "connections": 10, "client": "wrk", "tracer_blocks_removed": 46,
                    "reference": "no tracer code", "runs": load_rounds(
                        ("keep-alive", "close"),
                        {"no tracer code": ([100, 100, 100], [100, 100, 100]),
                         "same, again": ([100, 100, 100], [100, 100, 100]),
                         "tracer=None": ([100, 100, 100], [100, 100, 100]),
                         "tracer on": ([50, 50, 50], [200, 200, 200])})},
                   "python benchmarks/tracer_overhead.py")


def gunicorn_workers() -> dict:
    return stamped({"benchmark": "gunicorn_workers", "app": "asgi_lab.apps.hello:app", "rounds": 3,
                    "seconds": 1.0, "connections": 10, "client": "wrk", "runs": load_rounds(
                        ("keep-alive", "close"),
                        {"1 worker": ([100, 100, 100], [100, 100, 100]),
                         "2 workers": ([150, 150, 150], [100, 100, 100])})},
                   "python benchmarks/gunicorn_workers.py")


def wsgi_per_request() -> dict:
    costs = {"asgi_lab": [(1000, 2.0, 100, 0.04, 0.01, 3.1), (2000, 3.0, 150, 0.05, 0.01, 3.2),
                          (3000, 4.0, 200, 0.06, 0.01, 3.3)],
             "waitress": [(1000, 9.0, 200, 8.0, 0.5, None)] * 3}
    runs = [{"server": name, "round": number, "requests": rps, "rps": rps, "p99_ms": p99, "errors": 0,
             "cpu_us": cpu, "voluntary": voluntary, "involuntary": involuntary,
             **({"syscalls": syscalls} if syscalls is not None else {})}
            for name, rounds in costs.items() for number, (rps, p99, cpu, voluntary, involuntary, syscalls)
            in enumerate(rounds)]
    return stamped({"benchmark": "wsgi_per_request", "app": "asgi_lab.apps.hello:wsgi_app", "threads": 8,
                    "connections": 50, "close": False, "pin": None, "duration": 1.0, "rounds": 3,
                    "baseline": None, "runs": runs}, "python benchmarks/wsgi_per_request.py")


def wsgi_hello(pin: str | None = None) -> dict:
    rates = {"asgi_lab": [400, 100, 200], "gunicorn": [100, 100, 100], "waitress": [200, 200, 200]}
    runs = [{"connections": 16, "server": name, "mode": mode, "round": number, "requests": rps, "all_requests": rps,
             "errors": 0, "seconds": 1.0, "client_cpu": 0.25, "server_cpu": 0.5, "cpu_us": 100.0 if name == "asgi_lab"
             else 300.0, "rps": rps}
            for number in range(3) for mode in ("keep-alive", "close") for name, r in rates.items()
            for rps in [r[number]]]
    return stamped({"benchmark": "wsgi_hello", "app": "asgi_lab.apps.hello:wsgi_app", "threads": 8, "rounds": 3,
                    "duration": 1.0, "warmup": 0.2, "connections": [16], "client": "python", "pin": pin,
                    "baseline": None, "baseline_commit": None, "runs": runs},
                   "python benchmarks/wsgi_hello.py" + (f" --pin {pin}" if pin else ""))


def ws_echo() -> dict:
    values = {"asgi_lab": {"rps": [300, 240, 480], "cpu": [10, 10, 10], "big": [5, 5, 5], "big_cpu": [2, 2, 2]},
              "uvicorn-wsproto": {"rps": [100, 120, 120], "cpu": [20, 20, 20], "big": [5, 5, 5],
                                  "big_cpu": [4, 4, 4]}}
    return stamped({"benchmark": "ws_echo", "app": "asgi_lab.apps.echo:app", "rounds": 3, "seconds": 1.0,
                    "clients": 100, "big_repeat": 2, "baseline": None, "baseline_commit": None,
                    "errors": {"asgi_lab": 0, "uvicorn-wsproto": 0},
                    "runs": [{"server": name, "metric": metric, "values": v}
                             for name, metrics in values.items() for metric, v in metrics.items()]},
                   "python benchmarks/ws_echo.py")


def chat_load() -> dict:
    runs = [{"server": name, "rate": 10.0, "round": number, "sent": 10, "expected": 200, "delivered": 200,
             "seconds": 1.0 if name == "asgi_lab" else 2.0, "p50_ms": 1.0, "p99_ms": 9.0, "dropped": 0,
             "cpu_us": 50.0 if name == "asgi_lab" else 100.0}
            for number in range(3) for name in ("asgi_lab", "uvicorn-wsproto")]
    return stamped({"benchmark": "chat_load", "clients": 20, "senders": 5, "rates": [10.0], "seconds": 1.0,
                    "rounds": 3, "runs": runs}, "python benchmarks/chat_load.py")


def sse_summary(rss: float, kb: float, lag_p99: float) -> dict:
    return {"clients": 100, "served": 100, "never": 0, "errors": 0, "events": 300, "expected_events": 300,
            "lag_ms": {"p50": 1.0, "p99": lag_p99, "max": lag_p99}, "ttfe_ms": {"p50": 2.0, "p99": 4.0},
            "peak_rss_mb": rss, "per_client_kb": kb, "peak_vms_mb": 100.0, "peak_threads": 1, "cpu_s": 0.5}


def sse_clients() -> dict:
    rounds = [{"runs": [{"server": {"name": "asgi"}, "summary": sse_summary(rss, 2.0, 5.0)},
                        {"server": {"name": "uvicorn"}, "summary": sse_summary(2 * rss, 8.0, 9.0)}]}
              for rss in (30.0, 40.0, 80.0)]
    big = {"clients": 10_000, "runs": [{"summary": {**sse_summary(60, 2, 20), "clients": 10_000, "served": 10_000},
                                        "load": {"ramp_s": 3.0}}]}
    return stamped({"benchmark": "sse_clients", "clients": 100, "duration": 5.0, "pool_threads": 32,
                    "baseline": None, "baseline_commit": None, "rounds": rounds, "big": big},
                   "python benchmarks/sse_clients.py")


def sse_gc() -> dict:
    def run(name: str, lag_p99: float) -> dict:
        return {"server": {"name": name}, "summary": {**sse_summary(60.0, 2.0, lag_p99), "clients": 10_000,
                                                      "served": 10_000}}
    rounds = [{"runs": [run("asgi", 20.0), run("asgi-gc-off", 5.0), run("uvicorn", 8.0),
                        run("uvicorn-gc-off", 8.0 * factor)]} for factor in (0.5, 1.0, 2.0)]
    return stamped({"benchmark": "sse_gc", "clients": 10_000, "duration": 10.0, "interval": 5.0,
                    "rounds": rounds}, "python benchmarks/sse_gc.py")


def sse_memory() -> dict:
    return stamped({"benchmark": "sse_memory", "clients": 10, "bytes_per_client": 2345.6, "sites": [
        {"file": "asgi_lab/asgi/scope.py", "line": 44, "bytes": 4640, "blocks": 20, "code": "scope = {"},
        {"file": "x.py", "line": 1, "bytes": 100, "blocks": 1, "code": "a | b"}]},
        "python benchmarks/sse_memory.py")


def soak(sigterm: bool = False) -> dict:
    held = {"fds": 7, "threads": 1, "tcp": 0, "rss_mib": 32.0, "tasks": 3, "timers": 1}
    run = {"server": "asgi", "requests": 1000, "seconds": 2.0, "threads": 32, "served": {"keep-alive": 1000},
           "errors": {}, "before": held, "rss_checkpoints": [[250, 32.0], [500, 32.5], [1000, 33.0]],
           "paused_at": None}
    if sigterm:
        run.update(shutdown={"exit_code": 0, "seconds": 1.5, "lifespan_shutdown": True},
                   at_sigterm={"keep-alive: completed": 8}, log_errors=0,
                   errors={"keep-alive (during shutdown): ConnectionError": 2})
    else:
        run.update(end=held, idle=held, back_to_idle=True, tracebacks=0)
    return stamped({"benchmark": "soak", "requests": 1000, "sigterm": sigterm, "pause": 0.0, "grace": 3.0,
                    "keep_alive": 1.0, "passed": True, "runs": [run]}, "python benchmarks/soak.py")


def request_path() -> dict:
    calls = {"h11": 129.0, "asgi_lab": 34.0, "other": 25.0}
    h11_calls = dict.fromkeys(["receive_data", "next_event: Request", "next_event: EndOfMessage", "send: Response",
                               "send: Data", "send: EndOfMessage", "start_next_cycle"], 1.0)
    return stamped({"benchmark": "request_path", "app": "asgi_lab.apps.hello:wsgi_app", "requests": 1000,
                    "rounds": 3, "baseline": None, "baseline_commit": None, "runs": [
                        {"checkout": "asgi_lab", "mode": "keep-alive", "ours_us": 80.0, "h11_us": 60.0,
                         "calls": calls, "h11_call_us": h11_calls},
                        {"checkout": "asgi_lab", "mode": "close", "ours_us": 120.0, "h11_us": 90.0,
                         "calls": calls}]},
                   "python benchmarks/request_path.py")


def floods() -> dict:
    return stamped({"benchmark": "floods", "idle": 100, "threads": 8, "runs": [
        {"server": "asgi", "scenario": "upload", "pushed": "96 MiB body", "peak_rss_growth_mib": 1.25,
         "complete": True},
        {"server": "asgi", "scenario": "idle", "connections": 100, "closed": 100, "seconds": 2.5,
         "idle_timeout": 2.0, "opening_seconds": 0.1, "fds": [7, 107, 7]},
        {"server": "wsgi", "scenario": "pool", "requests": 80, "threads": 8, "answered": 80, "seconds": 2.25,
         "ideal_seconds": 2.0}]}, "python benchmarks/floods.py")


# (result, what its section must show: a medians-and-ratios row computed from the raw rounds)
CASES = {
    "http_hello": (http_hello, ["| keep-alive | asgi_lab | 200 | 2.00x | 50.0 | 2.00x | 1.00 | 2.50 | 0 | 100-400 |",
                                "asgi_lab / uvicorn-h11, keep-alive: 2.00x req/s, 2.00x CPU per request",
                                "asgi_lab / baseline, close: 2.000x req/s, 2.000x CPU per request",
                                "'baseline' is our server from `/tmp/base`"]),
    "tracer_overhead": (tracer_overhead, ["| close | tracer on | 50 | 0.50x | 200.0 | 0.50x |",
                                          "| keep-alive | CPU per req | 1.000x [1.00-1.00] | 1.000x [1.00-1.00] | "
                                          "0.500x [0.50-0.50] |"]),
    "gunicorn_workers": (gunicorn_workers, ["| keep-alive | 2 workers | 150 | 1.50x | 100.0 | 1.00x |"]),
    "wsgi_hello": (wsgi_hello, ["| close | gunicorn | 100 | 100-100 | 2.00x | 300 | 3.00x | - | 25% |",
                                "| close | waitress | 200 | 200-200 | 1.00x | 300 | 3.00x | - | 25% |"]),
    "wsgi_per_request": (wsgi_per_request, ["| asgi_lab | 2,000 | 3.0 | 150 | 0.050 | 0.010 | 3.20 |",
                                            "| waitress | 1,000 | 9.0 | 200 | 8.000 | 0.500 | - |"]),
    "request_path": (request_path, ["| keep-alive | asgi_lab | 80.0 | 60.0 | 20.0 | 75% | 129 | 34 | 25 |",
                                    "| close | asgi_lab | 120.0 | 90.0 | 30.0 | 75% | 129 | 34 | 25 |",
                                    "| send: Response | 1.0 |", "| all | 7.0 |"]),
    "ws_echo": (ws_echo, ["| asgi_lab | 300 | 3.00x | 240-480 | 0 | 10.0 | 0.50x | 5.00 | 1.00x | 2.00 | 0.50x |",
                          "asgi_lab / uvicorn-wsproto: round trips/s 3.00x"]),
    "chat_load": (chat_load, ["| asgi_lab | 200 | 200 | 2.00x | 0% | 100.0% | 1.0 | 9.0 | 50.0 | 0.50x | 0 |"]),
    "sse_clients": (sse_clients, ["| asgi | 100/100 | 0 | 1 | 40.0 (30.0-80.0) | 2.00 (2.00-2.00) |",
                                  "round 2: all events delivered: yes", "(0.50x), per client 0.25x uvicorn's",
                                  "asgi / uvicorn, median of the per-round ratios: peak RSS 0.50x, KB/client 0.25x, "
                                  "CPU s 1.00x, lag p99 0.56x", "fully served: 10000/10000"]),
    "sse_gc": (sse_gc, ["| asgi-gc-off | 10,000/10,000 | 5.0 (5.0-5.0) | 5.0 (5.0-5.0) | 4.0 (4.0-4.0) | 0.5 (0.5-0.5) |",
                        "| uvicorn-gc-off | 10,000/10,000 | 8.0 (4.0-16.0) |",
                        "asgi, collector off / on, median of the per-round ratios: lag p99 0.25x, lag max 0.25x, "
                        "TTFE p99 1.00x, CPU s 1.00x",
                        "uvicorn, collector off / on, median of the per-round ratios: lag p99 1.00x"]),
    "sse_memory": (sse_memory, ["10 waiting SSE clients on our ASGI server: 2,346 bytes per client",
                                "| `asgi_lab/asgi/scope.py:44` | `scope = {` | 464 | 2.0 |",
                                "| `x.py:1` | `a \\| b` | 10 | 0.1 |"]),
    "soak": (soak, ["| asgi | 1,000 | 2.0 | 500 | 0 | +0.5 MiB over 500 | yes | 0 | yes |",
                    "| asgi | idle | 7 | 1 | 0 | 32.0 | 3 | 1 |"]),
    "floods": (floods, ["| asgi | upload | 96 MiB body | 1.2 MiB | yes |",
                        "asgi idle: 100 of 100 idle connections closed by the server, all within 2.5 s",
                        "wsgi pool: 80 concurrent 0.2 s requests on 8 threads: 80 of 80 answered 200 in 2.2 s"]),
}
CASES["soak (SIGTERM)"] = (lambda: soak(sigterm=True), ["| asgi | 0 | 1.50 s | True |",
                                                        "| asgi | keep-alive: completed | 8 |"])
CASES["wsgi_hello (pinned)"] = (lambda: wsgi_hello(pin="0"), ["servers pinned to CPU 0"])


def page_of(result: dict, tmp_path: Path) -> str:
    """The section `tools/render_results.py` writes for `result` alone, as `make docs` would."""
    (tmp_path / "result.json").write_text(json.dumps(result), encoding="utf-8")
    pages = render.render_pages([tmp_path])
    text = "\n".join(pages.values())
    assert "From `" in text, "the result file got no section"
    return text


@pytest.mark.parametrize("case", CASES)
def test_each_benchmarks_result_renders_as_its_table(case, tmp_path):
    make, expected = CASES[case]
    result = make()
    page = page_of(result, tmp_path)
    assert "failed on this file" not in page, page
    assert "No table for this kind of result yet" not in page, page
    assert f"## {render.TITLES[result['benchmark']]}" in page
    assert "Measured 2026-12-03 on Test CPU (2 cores, load average 0.5 / 0.2 / 0.1), Python 3.11.7, " \
           f"commit ababababa, by `{result['command']}`." in page
    for line in expected:
        assert line in page, f"{line!r} not in:\n{page}"
    page_name = "reliability" if result["benchmark"] in render.RELIABILITY else "performance"
    assert page.index("From `") > page.index(f"# {render.PAGES[page_name][0]}")


def test_a_broken_markdown_shows_on_the_page_instead_of_a_table(tmp_path):
    result = http_hello()
    del result["runs"]
    assert "`benchmarks/http_hello.py`'s `markdown()` failed on this file: KeyError" in page_of(result, tmp_path)


def test_every_benchmark_that_writes_a_result_file_has_a_table_and_a_case_here():
    writers = sorted(p.stem for p in (ROOT / "benchmarks").glob("*.py") if "write_result(" in p.read_text())
    assert "http_hello" in writers and "floods" in writers
    for name in writers:
        source = (ROOT / "benchmarks" / f"{name}.py").read_text()
        assert re.search(r"^def markdown\(result: dict\) -> str:", source, re.M), f"{name}.py has no markdown()"
        assert name in render.TITLES, f"tools/render_results.py has no heading for {name}"
        assert name == "slow_clients" or name in CASES, f"no made-up {name} result in this test"


def test_a_result_file_from_before_the_benchmark_key_is_matched_by_its_name(tmp_path):
    """A gunicorn-workers.json written before `benchmark` and `runs` existed (its rounds are
    `samples`, keyed "SERVER/SCENARIO"), as the first committed one was, still renders."""
    def rounds(rps: float) -> list[dict]:
        return [{"requests_per_s": rps, "p50_ms": 10.0, "p99_ms": 20.0, "errors": 0,
                 "requests": int(rps * 3), "cpu_us_per_request": 250.0}] * 3

    old = stamped({"client": "wrk", "app": "asgi_lab.apps.hello:app", "rounds": 3, "seconds": 3.0,
                   "connections": 50, "samples": {
                       "1 worker/keep-alive": rounds(1000), "2 workers/keep-alive": rounds(1500),
                       "1 worker/close": rounds(500), "2 workers/close": rounds(800)}},
                  "python benchmarks/gunicorn_workers.py --json results/gunicorn-workers.json")
    (tmp_path / "gunicorn-workers.json").write_text(json.dumps(old))
    page = render.render_pages([tmp_path])[render.DOCS / "performance.md"]
    assert f"## {render.TITLES['gunicorn_workers']}" in page
    assert re.search(r"\| keep-alive \| 2 workers \| [\d,]+ \| \d\.\d\dx \|", page), page


def test_other_result_files_render_with_pages_only(tmp_path):
    with pytest.raises(SystemExit):  # the README's blocks come from the committed files only
        render.main(["--results", str(tmp_path)])
