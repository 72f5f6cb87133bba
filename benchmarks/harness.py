"""Shared pieces of the benchmarks: load servers in interleaved rounds, and report the rounds
as a table, printed or as Markdown from a result file.

The servers are started by the package's one launcher (`asgi_lab/experiments/servers.py`).

Load comes from `wrk` (Debian package `wrk`) when it is installed: a C load generator that will
not be the bottleneck. Without it, a small asyncio client in a separate process is used; it
is slower than the servers it measures, so its figures compress the ratios (the table says
which client ran).

Servers are measured in interleaved rounds (A B C, A B C, ...), because this machine is shared
and noisy: a burst of noise then hits every server, and the median of the rounds is reported.

Every benchmark writes its raw per-round numbers with `--json FILE`, and offers
`markdown(result)`: the table it prints, computed again from that file's raw numbers (never
from figures stored beside them), for the docs pages `tools/render_results.py` renders. The
table helpers at the end of this file are shared by all of them: `text_table` prints what
`markdown_table` renders, and `measured` is the line saying where, when and by what command.
"""

from __future__ import annotations

import math
import os
import signal
import statistics
import subprocess
import sys
from dataclasses import dataclass

from asgi_lab.experiments.servers import ServerProcess
from asgi_lab.load.wrk import have_wrk, run_wrk

PYTHON = sys.executable


def _end_like_ctrl_c(signum, frame):
    """`kill` (SIGTERM) ends a benchmark through its `finally` blocks, as Ctrl-C does, so the
    servers it started stop with it instead of outliving it."""
    raise SystemExit(128 + signum)


signal.signal(signal.SIGTERM, _end_like_ctrl_c)  # every benchmark imports this module


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


ROUNDS_HEADER = ["scenario", "server", "req/s", "ratio", "CPU us/req", "CPU ratio", "p50 ms", "p99 ms",
                 "errors", "req/s min-max"]


def rounds_rows(runs: list[dict], reference: str) -> list[list[str]]:
    """The table of `print_table`, from raw rounds (`raw_rounds`'s format, as a result file
    holds them): one row per (scenario, server), medians over the rounds, and two ratios
    against `reference`: requests/s, and CPU time per request inverted (higher is better)."""
    grouped = group(runs, "scenario", "server")
    rows = []
    for scenario in unique(run["scenario"] for run in runs):
        ref = median_result(grouped[(scenario, reference)])
        for server in unique(run["server"] for run in runs):
            rounds = grouped.get((scenario, server))
            if not rounds:
                continue
            m = median_result(rounds)
            rows.append([scenario, server, number(m.requests_per_s), times(m.requests_per_s, ref.requests_per_s),
                         number(m.cpu_us_per_request, 1), times(ref.cpu_us_per_request, m.cpu_us_per_request),
                         number(m.p50_ms, 2), number(m.p99_ms, 2), str(m.errors),
                         spread([r.requests_per_s for r in rounds])])
    return rows


def rounds_note(reference: str) -> str:
    return (f"Medians of the rounds; ratios against {reference} (req/s: its / {reference}'s; CPU: "
            f"{reference}'s CPU time per request / its, so higher is better for both). "
            "'CPU us/req' is the server process's CPU time per request.")


def print_table(results, servers: list[ServerProcess], scenarios, reference: str) -> dict:
    """One row per (scenario, server), with two ratios against `reference`: requests/s, and
    server CPU time per request (inverted, so that higher is better for both). Returns
    the ratios, by (server, scenario) and (server, scenario, "cpu")."""
    ratios = {}
    for scenario in scenarios:
        ref = median_result(results[(reference, scenario)])
        for server in servers:
            m = median_result(results[(server.name, scenario)])
            ratios[(server.name, scenario)] = m.requests_per_s / ref.requests_per_s
            ratios[(server.name, scenario, "cpu")] = (ref.cpu_us_per_request / m.cpu_us_per_request
                                                      if m.cpu_us_per_request else float("nan"))
    print()
    print(text_table(ROUNDS_HEADER, rounds_rows(raw_rounds(results), reference), left=2))
    print(f"({rounds_note(reference)})")
    return ratios


def paired_median(ours: list[float], theirs: list[float]) -> float:
    """Round by round ours / theirs (measured seconds apart, so under much the same load),
    then the median; a round where either is missing or zero (a failed run) is left out."""
    ratios = [a / b for a, b in zip(ours, theirs) if finite(a) and finite(b) and a and b]
    return statistics.median(ratios) if ratios else float("nan")


def raw_rounds(results: dict) -> list[dict]:
    """The per-round numbers of `interleaved`, for a result file."""
    return [{"server": name, "scenario": scenario, "round": number, **vars(result)}
            for (name, scenario), runs in results.items() for number, result in enumerate(runs)]


# -- tables: printed, and as Markdown from a result file ------------------------------------------------


def finite(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def number(value, digits: int = 0) -> str:
    """`value` with thousands separators and `digits` decimals; "-" when not measured."""
    return f"{value:,.{digits}f}" if finite(value) else "-"


def times(value, reference) -> str:
    """value / reference as "1.23x"; "-" when either is not measured."""
    return f"{value / reference:.2f}x" if finite(value) and finite(reference) and reference else "-"


def ratio(value: float, digits: int = 2) -> str:
    return f"{value:.{digits}f}x" if finite(value) else "-"


def spread(values, digits: int = 0) -> str:
    """min-max of the measured `values`."""
    values = [v for v in values if finite(v)]
    return f"{min(values):,.{digits}f}-{max(values):,.{digits}f}" if values else "-"


def median(values) -> float:
    """The median of the measured `values` (NaN when none was)."""
    values = [v for v in values if finite(v)]
    return statistics.median(values) if values else float("nan")


def unique(values) -> list:
    """`values` without repeats, in the order they first come."""
    return list(dict.fromkeys(values))


def group(runs: list[dict], *keys: str) -> dict[tuple, list]:
    """Raw rounds by the values of `keys`, each group in round order, as `LoadResult`s when
    they are `raw_rounds` rows and as dicts otherwise."""
    fields = set(LoadResult.__dataclass_fields__)
    out: dict[tuple, list] = {}
    for run in sorted(runs, key=lambda r: r.get("round", 0)):
        value = LoadResult(**{k: v for k, v in run.items() if k in fields}) if "requests_per_s" in run else run
        out.setdefault(tuple(run[key] for key in keys), []).append(value)
    return out


def text_table(header: list[str], rows: list[list[str]], left: int = 1) -> str:
    """Aligned columns: the first `left` to the left, the numbers to the right."""
    widths = [max([len(h), *(len(row[i]) for row in rows)]) for i, h in enumerate(header)]

    def line(cells) -> str:
        return "  ".join(c.ljust(w) if i < left else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths)))

    return "\n".join([line(header), *(line(row) for row in rows)])


def markdown_table(header: list[str], rows: list[list[str]], left: int = 1) -> str:
    """The same table in Markdown: the first `left` columns aligned left, the others right."""
    align = "|" + "|".join("---" if i < left else "---:" for i in range(len(header))) + "|"
    return "\n".join(["| " + " | ".join(header) + " |", align, *("| " + " | ".join(row) + " |" for row in rows)])


def measured(result: dict) -> str:
    """Where, when and how a result file's numbers were measured, as one sentence; a fact the
    file lacks is "unknown"."""
    m = result.get("machine") or {}
    load = m.get("load_average") or m.get("load_average_before")
    load = " / ".join(f"{x:.1f}" for x in load) if load else "unknown"
    commit = m.get("commit")
    commit = (commit[:9] + (" with uncommitted changes" if "+" in commit else "")) if commit else "unknown"
    return (f"Measured {(m.get('date') or 'unknown')[:10]} on {m.get('cpu_model') or 'unknown'} "
            f"({m.get('cores') or 'unknown'} cores, load average {load}), Python {m.get('python') or 'unknown'}, "
            f"commit {commit}, by `{result.get('command') or 'unknown'}`.")


def baseline_line(result: dict) -> str:
    """What 'baseline' is, when the run had one (`--baseline DIR`)."""
    if not result.get("baseline"):
        return ""
    at = result.get("baseline_commit")
    return (f" 'baseline' is our server from `{result['baseline']}`"
            + (f" (commit {at[:9]})." if at else "."))
