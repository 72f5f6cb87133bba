"""Experiment: one blocking call in one coroutine makes *every* request wait.

An event loop runs one callback at a time. A coroutine that calls `time.sleep(0.1)` (or a
sync database driver, or 100 ms of computation) does not give the loop back for 100 ms: no
other request is read, answered, or even accepted meanwhile. This module measures it:

    run = measure(app, work_ms=100, concurrency=4)

1. starts `app` on our ASGI server (loopback, a free port);
2. starts a *loop-lag probe* on the server's loop: a coroutine that asks to sleep 5 ms again
   and again and records how late it wakes up. Late by 300 ms means that for 300 ms the loop
   could run nothing else;
3. sends `concurrency` requests for `?ms=work_ms` at once, then, while they run, one *probe
   request* for `?ms=0`, a request that needs no work at all;
4. returns the latencies (`Run`).

`sweep()` does that for several apps and blocking times; `plot()` draws the probe request's
latency against the blocking time, one line per app. The clients are threads of this process
(the quantities measured are tens to hundreds of milliseconds, far above the few
milliseconds of noise that sharing the GIL with the server adds).
"""

from __future__ import annotations

import asyncio
import statistics
import threading
import time
from dataclasses import dataclass, field

from ..background import serve_in_background, server_errors
from ..exercises.client import request

PROBE_INTERVAL = 0.005
"""How often the loop-lag probe asks to wake up, in seconds."""


class LoopLagProbe:
    """Measures how long an event loop was unable to run anything, from inside it.

    It sleeps `interval` seconds again and again on `loop` (another thread's loop is fine);
    each time it wakes, it notes how late it is. A loop that is never blocked wakes the probe
    within a millisecond or so; a loop stuck in `time.sleep(0.3)` wakes it 300 ms late.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, interval: float = PROBE_INTERVAL) -> None:
        self.loop = loop
        self.interval = interval
        self.lags: list[float] = []
        self._stop = threading.Event()
        self._future = None

    async def _watch(self) -> None:
        while not self._stop.is_set():
            asked = self.loop.time()
            await asyncio.sleep(self.interval)
            self.lags.append(max(self.loop.time() - asked - self.interval, 0.0))

    def start(self) -> "LoopLagProbe":
        self._future = asyncio.run_coroutine_threadsafe(self._watch(), self.loop)
        return self

    def stop(self) -> float:
        """Stop watching; returns the longest stall seen, in seconds."""
        self._stop.set()
        if self._future is not None:
            try:
                self._future.result(timeout=5.0)
            except Exception:
                self._future.cancel()
        return self.max_lag

    @property
    def max_lag(self) -> float:
        return max(self.lags, default=0.0)

    def __enter__(self) -> "LoopLagProbe":
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()


@dataclass
class Run:
    """One measurement: `concurrency` requests doing `work_ms` of work, plus one probe."""

    variant: str
    work_ms: float
    concurrency: int
    latencies: list[float] = field(default_factory=list)
    """Seconds from sending to the end of the response, one per concurrent request."""
    probe_latency: float = 0.0
    """Seconds for the probe request (no work at all), sent while the others ran."""
    loop_lag: float = 0.0
    """The longest time the server's event loop could run nothing else, in seconds."""
    wall: float = 0.0
    """Seconds from the first request sent to the last response received."""
    statuses: list[int] = field(default_factory=list)

    @property
    def slowest(self) -> float:
        return max(self.latencies, default=0.0)

    @property
    def median(self) -> float:
        return statistics.median(self.latencies) if self.latencies else 0.0


def _timed_get(address, target: str, out: list, index: int, timeout: float) -> None:
    started = time.monotonic()
    try:
        response = request(address, target=target, timeout=timeout)
        out[index] = (time.monotonic() - started, response.status)
    except OSError:
        out[index] = (time.monotonic() - started, 0)


def measure_server(server, variant: str, work_ms: float, concurrency: int = 4,
                   probe_delay: float = 0.02, timeout: float = 30.0) -> Run:
    """Measure an app already running on `server` (a `BackgroundServer` for ASGI)."""
    results: list = [None] * (concurrency + 1)
    workers = [threading.Thread(target=_timed_get, daemon=True,
                                args=(server.address, f"/?ms={work_ms:g}", results, i, timeout))
               for i in range(concurrency)]
    probe = threading.Thread(target=_timed_get, daemon=True,
                             args=(server.address, "/?ms=0", results, concurrency, timeout))
    with LoopLagProbe(server.loop) as lag:
        time.sleep(2 * PROBE_INTERVAL)  # let the probe take its first sample
        started = time.monotonic()
        for worker in workers:
            worker.start()
        time.sleep(probe_delay)  # the slow requests are in; now a request that needs nothing
        probe.start()
        for thread in (*workers, probe):
            thread.join(timeout)
        wall = time.monotonic() - started
    return Run(variant=variant, work_ms=work_ms, concurrency=concurrency,
               latencies=[r[0] for r in results[:concurrency]], probe_latency=results[-1][0],
               loop_lag=lag.max_lag, wall=wall, statuses=[r[1] for r in results])


def measure(app, work_ms: float, concurrency: int = 4, variant: str | None = None) -> Run:
    """Start `app` on a background ASGI server, measure once, stop it."""
    variant = variant or getattr(app, "__name__", "app")
    with serve_in_background(app, name=f"blocking-loop:{variant}", lifespan="off",
                             access_log=False) as server:
        return measure_server(server, variant, work_ms, concurrency)


def sweep(apps: dict, work_ms=(0, 25, 50, 100), concurrency: int = 4) -> list[Run]:
    """`measure` every app (name -> app) at every blocking time; one server per app."""
    runs = []
    for variant, app in apps.items():
        with serve_in_background(app, name=f"blocking-loop:{variant}", lifespan="off",
                                 access_log=False) as server:
            request(server.address, target="/?ms=0")  # warm up: imports, first connection
            for ms in work_ms:
                runs.append(measure_server(server, variant, ms, concurrency))
    return runs


def save(runs: list[Run], path) -> None:
    """Write the runs as JSON (one object per run), to plot or compare later."""
    import json
    from dataclasses import asdict
    from pathlib import Path

    Path(path).write_text(json.dumps([asdict(run) for run in runs], indent=1), encoding="utf-8")


def load(path) -> list[Run]:
    import json
    from pathlib import Path

    return [Run(**fields) for fields in json.loads(Path(path).read_text(encoding="utf-8"))]


def table(runs: list[Run]) -> str:
    """The runs as a text table, times in milliseconds."""
    lines = [f"{'variant':<20} {'work':>6} {'probe':>7} {'median':>7} {'slowest':>8} "
             f"{'loop stalled':>13}   (ms; {runs[0].concurrency if runs else 0} concurrent requests)"]
    for run in runs:
        lines.append(f"{run.variant:<20} {run.work_ms:>6g} {run.probe_latency * 1000:>7.0f} "
                     f"{run.median * 1000:>7.0f} {run.slowest * 1000:>8.0f} {run.loop_lag * 1000:>13.0f}")
    return "\n".join(lines)


def plot(runs: list[Run], ax=None, metric: str = "probe_latency"):
    """Latency (ms) of the probe request (or `metric`: "slowest", "loop_lag") against the
    blocking time per request, one line per variant. Returns the matplotlib Axes."""
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=(6.4, 3.6))
    variants = list(dict.fromkeys(run.variant for run in runs))
    for variant in variants:
        mine = [run for run in runs if run.variant == variant]
        ax.plot([run.work_ms for run in mine], [getattr(run, metric) * 1000 for run in mine],
                marker="o", label=variant)
    concurrency = runs[0].concurrency if runs else 0
    labels = {"probe_latency": "latency of a request that needs no work (ms)",
              "slowest": "slowest of the concurrent requests (ms)",
              "loop_lag": "longest event-loop stall (ms)"}
    ax.set_xlabel(f"work per request (ms), {concurrency} requests at once")
    ax.set_ylabel(labels.get(metric, metric))
    ax.grid(alpha=0.3)
    ax.legend()
    return ax


def forgotten_await_demo(app=None) -> dict:
    """Run the forgotten-await app once; return what the client saw and what Python warned.

    The warning is issued on the server's thread when the un-awaited coroutine is collected,
    so it is caught there (warnings filters are process-wide) and handed back as data.
    """
    import warnings

    from ..apps.pitfalls import forgotten_await

    app = app or forgotten_await
    with server_errors() as records, warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", RuntimeWarning)
        with serve_in_background(app, name="blocking-loop:forgotten-await", lifespan="off",
                                 access_log=False) as server:
            response = request(server.address, target="/")
    server_log = [record.getMessage() for record in records]
    return {"status": response.status, "body": response.body.decode("latin-1"),
            "warnings": [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)],
            "server_log": server_log}


def main(argv=None) -> None:
    """`python -m asgi_lab.experiments.blocking_loop`: print the sweep as a table."""
    import argparse

    from ..apps import pitfalls

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work-ms", type=float, nargs="+", default=[0, 25, 50, 100])
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--cpu", action="store_true", help="the CPU-bound variants instead")
    parser.add_argument("--out", help="also save the runs to this JSON file")
    args = parser.parse_args(argv)
    if args.cpu:
        pitfalls.warm_up_process_pool()
    variants = pitfalls.CPU_VARIANTS if args.cpu else {
        "sync database driver": pitfalls.blocking_database, **pitfalls.VARIANTS}
    runs = sweep(variants, args.work_ms, args.concurrency)
    print(table(runs))
    if args.out:
        save(runs, args.out)


if __name__ == "__main__":
    main()
