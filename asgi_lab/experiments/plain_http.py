"""Is ASGI faster for plain request/response? The same hello world on both of our servers.

    comparison = compare_hello()          # about 11 s
    print(comparison.table())
    print(comparison.verdict())

The WSGI app and the ASGI app of `asgi_lab/apps/hello.py` (the same 13-byte answer) run on
our WSGI server (8 worker threads) and our ASGI server, both in the background in this
process (`serve_in_background`). The load comes from another process
(`asgi_lab.load.http`): 8 keep-alive connections, each sending its next GET as soon as the
previous answer is in, one server at a time, in interleaved rounds (WSGI, ASGI, WSGI, ...).

Three figures per round and server: requests per second and median latency (what the
clients saw), and the CPU time this process spent per request (read from our own CPU clock
at each round's edges; the generator pauses there). On a shared, noisy machine the CPU per
request moves least, which is why it is here. The comparison reports the median of the
per-round ratios ASGI/WSGI and their range: the range is the noise.

A caveat that the result reports, not hides: the load generator is one Python process. If it
was busy all the time, it (not the servers) set the pace, and the requests/s ratio is pulled
towards 1; the CPU per request is not.
"""

from __future__ import annotations

import os
import statistics
import time
from dataclasses import dataclass, field

from ..apps import hello
from ..background import serve_in_background
from ..load.http import run_http_load

SERVERS = ("WSGI", "ASGI")
NO_DIFFERENCE = (0.85, 1.15)
"""Ratios inside this band count as "the same" (rounds on this machine vary by about this much)."""


@dataclass
class HelloComparison:
    """What `compare_hello` measured: one row per round and server, and the load's own use."""

    rows: list[dict] = field(default_factory=list)   # server, round, requests_per_s, p50_ms, cpu_us
    clients: int = 0
    seconds: float = 0.0
    client_busy: float = 0.0                         # the generator's CPU / wall time (1.0 = saturated)
    errors: int = 0
    load: float = 0.0                                # the machine's 1-minute load average, at the end
    cores: int = 0

    def of(self, server: str, key: str) -> list[float]:
        return [row[key] for row in self.rows if row["server"] == server]

    def median(self, server: str, key: str) -> float:
        return statistics.median(self.of(server, key))

    def ratios(self, key: str) -> list[float]:
        """ASGI / WSGI for `key`, round by round."""
        return [a / w for w, a in zip(self.of("WSGI", key), self.of("ASGI", key)) if w]

    def ratio(self, key: str) -> tuple[float, float, float]:
        """(median, lowest, highest) of the per-round ASGI/WSGI ratios of `key`."""
        values = self.ratios(key)
        return statistics.median(values), min(values), max(values)

    def table(self) -> str:
        lines = [f"{'server':<6} {'requests/s':>11} {'median latency':>15} {'CPU per request':>16}   "
                 f"(median of {len(self.of('WSGI', 'round'))} rounds of {self.seconds:g} s, "
                 f"{self.clients} connections)"]
        for server in SERVERS:
            lines.append(f"{server:<6} {self.median(server, 'requests_per_s'):>11.0f} "
                         f"{self.median(server, 'p50_ms'):>12.2f} ms {self.median(server, 'cpu_us'):>13.0f} µs")
        for key, name in (("requests_per_s", "requests/s"), ("p50_ms", "latency"),
                          ("cpu_us", "CPU per request")):
            median, low, high = self.ratio(key)
            lines.append(f"ASGI/WSGI {name:<16} {median:.2f}x   (rounds: {low:.2f}x to {high:.2f}x)")
        return "\n".join(lines)

    def verdict(self) -> str:
        """The conclusion, computed. First the cost: the CPU per request, ASGI/WSGI ("about the
        same" when inside `NO_DIFFERENCE`, or when the rounds fall on both sides of 1). Then the
        requests/s ratio with its range over the rounds; when it differs more than the CPU ratio does, the difference was waiting (for a
        core on a busy machine, for the other side), not work."""
        cpu, cpu_low, cpu_high = self.ratio("cpu_us")
        rps, low, high = self.ratio("requests_per_s")
        if NO_DIFFERENCE[0] <= cpu <= NO_DIFFERENCE[1] or cpu_low <= 1.0 <= cpu_high:
            text = (f"about the same (within 15%, or rounds on both sides of 1): a request cost the "
                    f"ASGI server {cpu:.2f}x the CPU it cost the WSGI server")
        elif cpu < 1:
            text = f"ASGI cheaper here: {cpu:.2f}x the CPU per request"
        else:
            text = f"ASGI dearer here: {cpu:.2f}x the CPU per request"
        text += f" (rounds: {cpu_low:.2f}x to {cpu_high:.2f}x); requests/s ASGI/WSGI = {rps:.2f}x " \
                f"(rounds: {low:.2f}x to {high:.2f}x)"
        same_rate = NO_DIFFERENCE[0] <= rps <= NO_DIFFERENCE[1] or low <= 1.0 <= high
        if not same_rate and abs(rps - 1) > abs(cpu - 1) + 0.15:
            text += (f", a gap the CPU cost does not explain: time spent waiting, not working "
                     f"(load average {self.load:.1f} on {self.cores} cores during the run)")
        if self.client_busy > 0.9:
            text += (f"; the load generator was busy {self.client_busy:.0%} of the time, so it may "
                     "have set the pace")
        return text


def compare_hello(seconds: float = 0.7, rounds: int = 6, clients: int = 8,
                  threads: int = 8) -> HelloComparison:
    """Serve hello world on both servers and load them in interleaved rounds (see above).
    About `rounds` x 2 x (`seconds` + 0.1) s, plus a second to start and warm up."""
    edges: list[tuple[dict, float]] = []

    def progress(report: dict) -> None:  # called on this thread at each round's edges
        edges.append((dict(report), time.process_time()))

    with serve_in_background(hello.wsgi_app, "wsgi", name="plain-http:wsgi", access_log=False,
                             threads=threads) as wsgi, \
            serve_in_background(hello.app, "asgi", name="plain-http:asgi", access_log=False,
                                lifespan="off") as asgi:
        result = run_http_load([wsgi.url, asgi.url], clients=clients, seconds=seconds,
                               rounds=rounds, progress=progress)
    cpu = {}
    for (report, cpu_at), (report_end, cpu_end) in zip(edges[::2], edges[1::2]):
        if report["edge"] == 0 and report_end["edge"] == 1:
            cpu[(report["round"], report["url"])] = cpu_end - cpu_at
    comparison = HelloComparison(clients=clients, seconds=seconds,
                                 client_busy=result["client_cpu_s"] / result["client_busy_s"],
                                 load=os.getloadavg()[0], cores=os.cpu_count() or 0)
    for run in result["runs"]:
        index = result["urls"].index(run["url"])
        cpu_s = cpu.get((run["round"], index))
        comparison.rows.append({
            "server": SERVERS[index], "round": run["round"], "requests": run["requests"],
            "requests_per_s": run["requests_per_s"], "p50_ms": run["p50_ms"], "p99_ms": run["p99_ms"],
            "cpu_us": cpu_s / run["requests"] * 1e6 if cpu_s is not None and run["requests"] else float("nan"),
        })
        comparison.errors += run["errors"]
    return comparison


def plot(comparison: HelloComparison):
    """Every round, WSGI and ASGI side by side: requests/s (left) and CPU per request (right),
    so the noise is visible and the two measures can be compared."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10.5, 3.4), layout="constrained")
    plt.close(fig)
    colors = {"WSGI": "#d35400", "ASGI": "#c0392b"}  # the layer colours of the sequence diagrams
    rounds = comparison.of("WSGI", "round")
    width = 0.38
    for ax, key, unit in ((axes[0], "requests_per_s", "requests per second"),
                          (axes[1], "cpu_us", "CPU time per request (µs)")):
        for offset, server in ((-width / 2, "WSGI"), (width / 2, "ASGI")):
            ax.bar([r + 1 + offset for r in rounds], comparison.of(server, key), width,
                   label=f"{server} server", color=colors[server], alpha=0.6 if server == "WSGI" else 0.9)
        median, low, high = comparison.ratio(key)
        ax.set_title(f"ASGI/WSGI {median:.2f}x (rounds {low:.2f}x to {high:.2f}x)", loc="left", fontsize=10)
        ax.set_xlabel("round (the two servers take turns)")
        ax.set_ylabel(unit)
        ax.set_xticks([r + 1 for r in rounds])
        ax.set_ylim(0, max(comparison.of("WSGI", key) + comparison.of("ASGI", key)) * 1.25)
        for side in ("top", "right"):
            ax.spines[side].set_visible(False)
    axes[0].legend(loc="upper left", ncol=2, fontsize=9, frameon=False)
    fig.suptitle(f"Hello world, this run: {comparison.verdict().split(':')[0]}", x=0.01, ha="left",
                 fontsize=12, fontweight="bold")
    return fig
