"""Shared pieces of the HTTP benchmarks: load servers in interleaved rounds, print a table.

The servers are started by the package's one launcher (`asgi_lab/experiments/servers.py`).

Load comes from `wrk` (Debian package `wrk`) when it is installed: a C load generator that will
not be the bottleneck. Without it, a small asyncio client in a separate process is used; it
is slower than the servers it measures, so its figures compress the ratios (the table says
which client ran).

Servers are measured in interleaved rounds (A B C, A B C, ...), because this machine is shared
and noisy: a burst of noise then hits every server, and the median of the rounds is reported.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
from dataclasses import dataclass

from asgi_lab.experiments.servers import ServerProcess
from asgi_lab.load.wrk import have_wrk, run_wrk

PYTHON = sys.executable


@dataclass
class LoadResult:
    requests_per_s: float
    p50_ms: float
    p99_ms: float
    errors: int = 0
    requests: int = 0
    cpu_us_per_request: float = float("nan")
    """Server CPU time (user + system) per request: steadier than req/s on a busy machine."""


def run_python_client(url: str, seconds: float, connections: int, close: bool) -> LoadResult:
    out = subprocess.run([PYTHON, os.path.join(os.path.dirname(__file__), "pyload.py"), url,
                          str(seconds), str(connections), "close" if close else "keep-alive"],
                         capture_output=True, text=True, timeout=seconds + 60).stdout
    rps, p50, p99, errors, requests = out.split()
    return LoadResult(float(rps), float(p50), float(p99), int(errors), int(requests))


def load(url: str, seconds: float, connections: int, close: bool,
         server: ServerProcess | None = None) -> LoadResult:
    """Load `url`; with the `server`, also measure its CPU time per request."""
    cpu_before = server.cpu_seconds() if server else 0.0
    if have_wrk():
        w = run_wrk(url, seconds, connections, close)
        result = LoadResult(w["requests_per_s"], w["p50_ms"], w["p99_ms"], w["errors"], w["requests"])
    else:
        result = run_python_client(url, seconds, connections, close)
    if server and result.requests:
        result.cpu_us_per_request = (server.cpu_seconds() - cpu_before) / result.requests * 1e6
    return result


def client_name() -> str:
    return "wrk" if have_wrk() else "asyncio client (install wrk for accurate figures)"


def interleaved(servers: list[ServerProcess], scenarios: dict[str, dict], rounds: int,
                seconds: float) -> dict[tuple[str, str], list[LoadResult]]:
    """Run every scenario on every server, `rounds` times, interleaved. Servers stay up."""
    results: dict[tuple[str, str], list[LoadResult]] = {}
    try:
        for server in servers:
            server.start()
        for server in servers:  # warm-up
            load(server.url + "/", 1, 10, False)
        for r in range(rounds):
            for scenario, options in scenarios.items():
                for server in servers:
                    result = load(server.url + "/", seconds, server=server, **options)
                    results.setdefault((server.name, scenario), []).append(result)
                    print(f"  round {r + 1}/{rounds} {scenario:<11} {server.name:<14} "
                          f"{result.requests_per_s:>9.0f} req/s", file=sys.stderr, flush=True)
    finally:
        for server in servers:
            server.stop()
    return results


def median_result(results: list[LoadResult]) -> LoadResult:
    return LoadResult(
        statistics.median(r.requests_per_s for r in results),
        statistics.median(r.p50_ms for r in results),
        statistics.median(r.p99_ms for r in results),
        sum(r.errors for r in results),
        sum(r.requests for r in results),
        statistics.median(r.cpu_us_per_request for r in results),
    )


def print_table(results, servers: list[ServerProcess], scenarios, reference: str) -> dict:
    """One row per (scenario, server), with two ratios against `reference`: requests/s, and
    server CPU time per request (inverted, so that higher is better for both)."""
    ratios = {}
    print(f"\n{'scenario':<12} {'server':<16} {'req/s':>9} {'ratio':>7} {'CPU us/req':>10} "
          f"{'ratio':>7} {'p50 ms':>8} {'p99 ms':>8} {'errors':>7}  req/s spread")
    for scenario in scenarios:
        ref = median_result(results[(reference, scenario)])
        for server in servers:
            runs = results[(server.name, scenario)]
            m = median_result(runs)
            ratio = m.requests_per_s / ref.requests_per_s
            cpu_ratio = ref.cpu_us_per_request / m.cpu_us_per_request if m.cpu_us_per_request else float("nan")
            ratios[(server.name, scenario)] = ratio
            ratios[(server.name, scenario, "cpu")] = cpu_ratio
            spread = f"{min(r.requests_per_s for r in runs):.0f}-{max(r.requests_per_s for r in runs):.0f}"
            print(f"{scenario:<12} {server.name:<16} {m.requests_per_s:>9.0f} {ratio:>6.2f}x "
                  f"{m.cpu_us_per_request:>10.1f} {cpu_ratio:>6.2f}x "
                  f"{m.p50_ms:>8.2f} {m.p99_ms:>8.2f} {m.errors:>7}  {spread}")
    print(f"(ratios against {reference}; 'CPU us/req' is the server process's CPU time per request)")
    return ratios


def raw_rounds(results: dict) -> list[dict]:
    """The per-round numbers of `interleaved`, for a result file."""
    return [{"server": name, "scenario": scenario, "round": number, **vars(result)}
            for (name, scenario), runs in results.items() for number, result in enumerate(runs)]
