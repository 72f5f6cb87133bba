"""Shared pieces of the HTTP benchmarks: start a server in its own process, load it, print a table.

Load comes from `wrk` (Debian package `wrk`) when it is installed: a C load generator that will
not be the bottleneck. Without it, a small asyncio client in a separate process is used; it
is slower than the servers it measures, so its figures compress the ratios (the table says
which client ran).

Servers are measured in interleaved rounds (A B C, A B C, ...), because this machine is shared
and noisy: a burst of noise then hits every server, and the median of the rounds is reported.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import dataclass

PYTHON = sys.executable
URL_RE = re.compile(rb"(https?)://(127\.0\.0\.1|localhost|\[::1\]):(\d+)")
PORT_RE = re.compile(rb"(?:127\.0\.0\.1|0\.0\.0\.0|localhost):(\d+)")


@dataclass
class ServerProcess:
    """A server started as a subprocess; `port` is read from what it prints."""

    name: str
    argv: list[str]
    env: dict | None = None
    proc: subprocess.Popen | None = None
    port: int = 0

    def start(self, timeout: float = 20.0) -> "ServerProcess":
        self.proc = subprocess.Popen(self.argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     env={**os.environ, **(self.env or {})})
        deadline = time.monotonic() + timeout
        seen = b""
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if not line:
                break
            seen += line
            match = PORT_RE.search(line)
            if match:
                self.port = int(match.group(1))
                # Read the rest of its output in the background, so that a server that logs a
                # lot (uvicorn logs each WebSocket) never blocks on a full pipe.
                threading.Thread(target=self.proc.stdout.read, daemon=True).start()
                return self
        self.stop()
        raise RuntimeError(f"{self.name} did not report a port:\n{seen.decode(errors='replace')}")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    def stop(self) -> None:
        stop_process(self.proc)


def stop_process(proc: subprocess.Popen | None) -> None:
    """Stop a server the way a user would (SIGINT: graceful shutdown); kill it after 10 s."""
    if proc is not None and proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class LoadResult:
    requests_per_s: float
    p50_ms: float
    p99_ms: float
    errors: int = 0
    requests: int = 0
    cpu_us_per_request: float = float("nan")
    """Server CPU time (user + system) per request: steadier than req/s on a busy machine."""


def cpu_seconds(pid: int) -> float:
    """user + system CPU time of a process and its children (hypercorn serves from a child)."""
    import psutil

    total = 0.0
    process = psutil.Process(pid)
    for p in [process, *process.children(recursive=True)]:
        times = p.cpu_times()
        total += times.user + times.system
    return total


def run_wrk(url: str, seconds: float, connections: int, close: bool) -> LoadResult:
    argv = ["wrk", "-t", "1", "-c", str(connections), "-d", f"{max(1, round(seconds))}s", "--latency", url]
    if close:
        argv[1:1] = ["-H", "Connection: close"]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 30).stdout
    match = re.search(r"Requests/sec:\s+([\d.]+)", out)
    if match is None:
        raise RuntimeError(f"wrk failed against {url}:\n{out}")
    rps = float(match.group(1))

    def pct(label: str) -> float:
        m = re.search(rf"\s{label}%\s+([\d.]+)(us|ms|s)\b", out)
        value, unit = float(m.group(1)), m.group(2)
        return value / 1000 if unit == "us" else value * 1000 if unit == "s" else value

    requests = int(re.search(r"(\d+) requests in", out).group(1))
    errors = 0
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    if m:
        # wrk counts a server closing after "Connection: close" as a read error; not ours to count.
        errors = int(m.group(1)) + int(m.group(3)) + int(m.group(4)) + (0 if close else int(m.group(2)))
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if m:
        errors += int(m.group(1))
    return LoadResult(rps, pct("50"), pct("99"), errors, requests)


def run_python_client(url: str, seconds: float, connections: int, close: bool) -> LoadResult:
    out = subprocess.run([PYTHON, os.path.join(os.path.dirname(__file__), "pyload.py"), url,
                          str(seconds), str(connections), "close" if close else "keep-alive"],
                         capture_output=True, text=True, timeout=seconds + 60).stdout
    rps, p50, p99, errors, requests = out.split()
    return LoadResult(float(rps), float(p50), float(p99), int(errors), int(requests))


def load(url: str, seconds: float, connections: int, close: bool, pid: int | None = None) -> LoadResult:
    """Load `url`; with the server's `pid`, also measure its CPU time per request."""
    cpu_before = cpu_seconds(pid) if pid else 0.0
    run = run_wrk if shutil.which("wrk") else run_python_client
    result = run(url, seconds, connections, close)
    if pid and result.requests:
        result.cpu_us_per_request = (cpu_seconds(pid) - cpu_before) / result.requests * 1e6
    return result


def client_name() -> str:
    return "wrk" if shutil.which("wrk") else "asyncio client (install wrk for accurate figures)"


def interleaved(servers: list[ServerProcess], scenarios: dict[str, dict], rounds: int,
                seconds: float) -> dict[tuple[str, str], list[LoadResult]]:
    """Run every scenario on every server, `rounds` times, interleaved. Servers stay up."""
    results: dict[tuple[str, str], list[LoadResult]] = {}
    for server in servers:
        server.start()
    try:
        for server in servers:  # warm-up
            load(server.url, 1, 10, False)
        for r in range(rounds):
            for scenario, options in scenarios.items():
                for server in servers:
                    result = load(server.url, seconds, pid=server.proc.pid, **options)
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
