"""Experiment: one blocking call in one coroutine makes *every* request wait.

An event loop runs one callback at a time. A coroutine that calls `time.sleep(0.1)` (or runs
a real query through a blocking driver such as `sqlite3` or `psycopg`, or 100 ms of
computation) does not give the loop back for 100 ms: no
other request is read, answered, or even accepted meanwhile. This module measures it:

    run = measure(app, work_ms=100, concurrency=4)

1. starts `app` on our ASGI server (loopback, a free port);
2. starts a *loop-lag probe* on the server's loop: a coroutine that asks to sleep 5 ms again
   and again and records how late it wakes up. Late by 300 ms means that for 300 ms the loop
   could run nothing else;
3. sends `concurrency` requests for `?ms=work_ms` at once, then, while they run, one *probe
   request* for `?ms=0`, a request that needs no work at all;
4. returns the latencies (`Run`).

`sweep()` does that for several apps and blocking times, `rounds` times, *interleaved*: every
app runs on its own server from start to end, and each round measures every app once, in a
rotated order. Whatever else loads the machine then hits every variant alike, and `medians()`
keeps the typical value of each. `plot()` draws the probe request's latency against the
blocking time, one line per app, with the range over the rounds. The `explain_*` functions
turn the numbers into the sentences a notebook shows, and say so when a run was too noisy
to support the lesson instead of claiming it.

The clients are threads of this process (the quantities measured are tens to hundreds of
milliseconds, far above the few milliseconds of noise that sharing the GIL with the server
adds).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import statistics
import threading
import time
from dataclasses import dataclass, field

import psutil

from ..background import serve_in_background, server_errors
from ..exercises.client import request
from .procstats import sample_tree

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
    cpu: float = 0.0
    """CPU seconds this process and its children (a process pool's workers) used meanwhile."""
    round: int = 0
    """Which round of an interleaved `sweep` this run belongs to (0 for a lone measurement)."""
    rounds: int = 1
    """How many runs a run from `medians()` stands for."""

    @property
    def slowest(self) -> float:
        return max(self.latencies, default=0.0)

    @property
    def median(self) -> float:
        return statistics.median(self.latencies) if self.latencies else 0.0

    @property
    def cores(self) -> float:
        """How many cores were busy on average: CPU seconds per second of the run. Threads
        under the GIL cannot push it much above 1; processes can (if the cores are free), and
        so can threads on a free-threaded build (3.13t/3.14t)."""
        return self.cpu / self.wall if self.wall else 0.0


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
    me = psutil.Process()
    with LoopLagProbe(server.loop) as lag:
        time.sleep(2 * PROBE_INTERVAL)  # let the probe take its first sample
        cpu_before = sample_tree(me)[3]
        started = time.monotonic()
        for worker in workers:
            worker.start()
        time.sleep(probe_delay)  # the slow requests are in; now a request that needs nothing
        probe.start()
        for thread in (*workers, probe):
            thread.join(timeout)
        wall = time.monotonic() - started
        cpu = sample_tree(me)[3] - cpu_before
    return Run(variant=variant, work_ms=work_ms, concurrency=concurrency,
               latencies=[r[0] for r in results[:concurrency]], probe_latency=results[-1][0],
               loop_lag=lag.max_lag, wall=wall, statuses=[r[1] for r in results], cpu=cpu)


def measure(app, work_ms: float, concurrency: int = 4, variant: str | None = None) -> Run:
    """Start `app` on a background ASGI server, measure once, stop it."""
    variant = variant or getattr(app, "__name__", "app")
    with serve_in_background(app, name=f"blocking-loop:{variant}", lifespan="off",
                             access_log=False) as server:
        return measure_server(server, variant, work_ms, concurrency)


def sweep(apps: dict, work_ms=(0, 25, 50, 100), concurrency: int = 4,
          rounds: int = 1) -> list[Run]:
    """`measure` every app (name -> app) at every blocking time, `rounds` times.

    Every app gets its own server for the whole sweep; each round measures every app once per
    blocking time, starting with a different app each round (round 1: A B C, round 2: B C A,
    ...), so that a burst of load from elsewhere does not fall on one variant only."""
    names = list(apps)
    runs = []
    with contextlib.ExitStack() as stack:
        servers = {}
        for variant, app in apps.items():
            servers[variant] = stack.enter_context(serve_in_background(
                app, name=f"blocking-loop:{variant}", lifespan="off", access_log=False))
            request(servers[variant].address, target="/?ms=0")  # warm up: first connection
        for round_ in range(rounds):
            order = names[round_ % len(names):] + names[:round_ % len(names)]
            for ms in work_ms:
                for variant in order:
                    run = measure_server(servers[variant], variant, ms, concurrency)
                    run.round = round_
                    runs.append(run)
    return runs


def medians(runs: list[Run]) -> list[Run]:
    """One `Run` per (variant, work) with the median of every number over the rounds, in the
    order the variants and works first appear. A single round comes back unchanged."""
    groups: dict[tuple, list[Run]] = {}
    for run in runs:
        groups.setdefault((run.variant, run.work_ms), []).append(run)
    typical = []
    for (variant, work_ms), group in groups.items():
        if len(group) == 1:
            typical.append(group[0])
            continue
        by_rank = zip(*(sorted(run.latencies) for run in group))
        typical.append(Run(
            variant=variant, work_ms=work_ms, concurrency=group[0].concurrency,
            latencies=[statistics.median(values) for values in by_rank],
            probe_latency=statistics.median(run.probe_latency for run in group),
            loop_lag=statistics.median(run.loop_lag for run in group),
            wall=statistics.median(run.wall for run in group),
            # so that `cores` (cpu / wall) is the median of the rounds' `cores`:
            cpu=statistics.median(run.cores for run in group)
            * statistics.median(run.wall for run in group),
            statuses=[status for run in group for status in run.statuses],
            round=-1, rounds=len(group)))
    return typical


def spread(runs: list[Run], variant: str, work_ms: float, metric: str = "probe_latency"):
    """(lowest, median, highest) of `metric` over the rounds of one variant at one work."""
    values = sorted(getattr(run, metric) for run in runs
                    if run.variant == variant and run.work_ms == work_ms)
    return values[0], statistics.median(values), values[-1]


def pick(runs: list[Run], variant: str, work_ms: float | None = None) -> Run:
    """The median run of `variant` (at `work_ms`, or its only/largest work)."""
    mine = [run for run in medians(runs) if run.variant == variant
            and (work_ms is None or run.work_ms == work_ms)]
    if not mine:
        raise KeyError(f"no run of {variant!r}" + (f" at {work_ms:g} ms" if work_ms else ""))
    return max(mine, key=lambda run: run.work_ms)


def save(runs: list[Run], path) -> None:
    """Write the runs as a result file (`results.py`: the command and the machine, and one
    object per run under "runs"), to plot or compare later."""
    from dataclasses import asdict

    from .results import write_result

    write_result({"experiment": "blocking-loop", "runs": [asdict(run) for run in runs]}, path, indent=1)


def load(path) -> list[Run]:
    """The runs of a file `save` wrote (or of an older file: a bare list of runs)."""
    from .results import read_result

    data = read_result(path)
    return [Run(**fields) for fields in (data["runs"] if isinstance(data, dict) else data)]


def table(runs: list[Run], cores: bool = False) -> str:
    """The runs as a text table, times in milliseconds (medians when there are rounds), one
    variant after another; `cores=True` adds how many cores were busy (CPU-bound work)."""
    typical = medians(runs)
    order = list(dict.fromkeys(run.variant for run in typical))
    typical.sort(key=lambda run: (order.index(run.variant), run.work_ms))
    rounds = max((run.rounds for run in typical), default=1)
    note = f"; median of {rounds} rounds" if rounds > 1 else ""
    lines = [f"{'variant':<20} {'work':>6} {'probe':>7} {'median':>7} {'slowest':>8} "
             f"{'loop stalled':>13}" + (f" {'cores':>6}" if cores else "")
             + f"   (ms; {typical[0].concurrency if typical else 0} concurrent requests{note})"]
    for run in typical:
        lines.append(f"{run.variant:<20} {run.work_ms:>6g} {run.probe_latency * 1000:>7.0f} "
                     f"{run.median * 1000:>7.0f} {run.slowest * 1000:>8.0f} "
                     f"{run.loop_lag * 1000:>13.0f}" + (f" {run.cores:>6.1f}" if cores else ""))
    return "\n".join(lines)


def plot(runs: list[Run], ax=None, metric: str = "probe_latency"):
    """Latency (ms) of the probe request (or `metric`: "slowest", "loop_lag") against the
    blocking time per request, one line per variant: the median over the rounds, and a bar
    from the lowest to the highest round. Returns the matplotlib Axes."""
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=(6.4, 3.6))
    typical = medians(runs)
    for variant, marker in zip(dict.fromkeys(run.variant for run in typical),
                               itertools.cycle("osD^vP")):
        mine = [run for run in typical if run.variant == variant]
        works = [run.work_ms for run in mine]
        middle = [getattr(run, metric) * 1000 for run in mine]
        ranges = [spread(runs, variant, ms, metric) for ms in works]
        below = [m - low * 1000 for m, (low, _, _) in zip(middle, ranges)]
        above = [high * 1000 - m for m, (_, _, high) in zip(middle, ranges)]
        ax.errorbar(works, middle, yerr=[below, above], marker=marker, capsize=3, label=variant)
    concurrency = typical[0].concurrency if typical else 0
    rounds = max((run.rounds for run in typical), default=1)
    labels = {"probe_latency": "latency of a request that needs no work (ms)",
              "slowest": "slowest of the concurrent requests (ms)",
              "loop_lag": "longest event-loop stall (ms)"}
    ax.set_xlabel(f"work per request (ms), {concurrency} requests at once"
                  + (f"; median and range of {rounds} rounds" if rounds > 1 else ""))
    ax.set_ylabel(labels.get(metric, metric))
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    ax.legend()
    return ax


# -- the conclusions, computed from the numbers ----------------------------------------------------

def machine_load() -> str:
    """How busy the machine was, for the noisy branches: "load average 2.3 on 2 cores"."""
    try:
        load = os.getloadavg()[0]
    except (AttributeError, OSError):  # Windows has no load average
        return f"{os.cpu_count()} cores"
    return f"load average {load:.1f} on {os.cpu_count()} cores"


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms"


def _too_noisy(what: str) -> str:
    return (f"**This run was too noisy to show it** ({what}; {machine_load()}): another "
            "program took the cores while we measured. Run the measuring cell again.")


def explain_one_by_one(runs: list[Run], blocked: str = "time.sleep",
                       fixed: str = "asyncio.sleep") -> str:
    """The answer to "N blocking requests of W ms on one loop: when is the last one served?",
    from the medians of `runs`, or an honest "too noisy" when they do not show it."""
    b, f = pick(runs, blocked), pick(runs, fixed)
    n, work = b.concurrency, b.work_ms / 1000
    one_by_one = b.slowest >= (n - 0.5) * work and b.probe_latency >= (n - 1.5) * work
    # Together: all done within two requests' work, and the probe served in a fraction of
    # its wait behind the blocking handler (a busy machine delays every thread a little).
    together = f.slowest < 2 * work and f.probe_latency * 4 < b.probe_latency
    rounds = f" (median of {b.rounds} rounds)" if b.rounds > 1 else ""
    if not (one_by_one and together):
        return _too_noisy(
            f"`{blocked}`: last answer after {_ms(b.slowest)}, probe {_ms(b.probe_latency)}; "
            f"`{fixed}`: last answer after {_ms(f.slowest)}, probe {_ms(f.probe_latency)}")
    return (
        f"With `{blocked}`, the last of the {n} requests got its answer after "
        f"**{_ms(b.slowest)}**{rounds}: {n} × {b.work_ms:g} ms, one after another, because "
        f"`{blocked}` never gives the loop back. The probe, which needed no work at all, "
        f"waited **{_ms(b.probe_latency)}**: the loop could not even read it, and stalled for up "
        f"to {_ms(b.loop_lag)} at a stretch. With `{fixed}`, the last answer came after "
        f"{_ms(f.slowest)} and the probe after {_ms(f.probe_latency)}: the {n} waits overlapped, "
        f"and the loop never stalled more than {_ms(f.loop_lag)}.")


def explain_fixes(runs: list[Run], blocking=("blocking driver", "time.sleep"),
                  fixes=("asyncio.sleep", "asyncio.to_thread", "thread pool",
                         "async driver")) -> str:
    """The lesson of the sweep: the probe's latency climbs with the work for the blocking
    variants and stays flat for the fixes; or "too noisy" when the medians do not show it."""
    typical = medians(runs)
    top = max(run.work_ms for run in typical)
    n = typical[0].concurrency
    worst = max((run for run in typical if run.variant in blocking and run.work_ms == top),
                key=lambda run: run.probe_latency)
    fix_runs = [run for run in typical if run.variant in fixes]
    worst_fix = max(fix_runs, key=lambda run: run.probe_latency)
    climbs = worst.probe_latency >= (n - 1.5) * top / 1000
    # Flat: the probe never waits for even half of one request's work, nor a quarter of what
    # it waits behind a blocking handler (a busy machine delays every thread a little).
    flat = (worst_fix.probe_latency < 0.5 * top / 1000
            and worst_fix.probe_latency * 4 < worst.probe_latency)
    if not (climbs and flat):
        return _too_noisy(
            f"at {top:g} ms of work, `{worst.variant}` kept the probe waiting "
            f"{_ms(worst.probe_latency)}; `{worst_fix.variant}` at {worst_fix.work_ms:g} ms, "
            f"{_ms(worst_fix.probe_latency)}")
    return (
        f"The blocking lines climb with the work: at {top:g} ms per request, the probe waited "
        f"up to **{_ms(worst.probe_latency)}** (`{worst.variant}`), about the work of all {n} "
        f"requests added up, because the loop did them one by one. With the fixes it stayed "
        f"at or under **{_ms(max(worst_fix.probe_latency, 0.001))}** at every amount of work: "
        f"the loop was free to answer it.")


def explain_cpu(runs: list[Run], inline: str = "in the coroutine",
                thread: str = "asyncio.to_thread", process: str = "process pool") -> str:
    """What the CPU-bound variants showed, from the medians: who kept the loop free, and how
    many cores each could use. A claim the numbers do not support becomes a "too noisy"
    remark, never a wrong sentence."""
    i, t, p = pick(runs, inline), pick(runs, thread), pick(runs, process)
    n, rounds = i.concurrency, (f" (medians of {i.rounds} rounds)" if i.rounds > 1 else "")
    parts = []
    if i.cores < 0.6:
        parts.append(
            f"*A busy machine.* Computing in the coroutine can keep one core busy; it got "
            f"{i.cores:.1f} of one ({machine_load()}). Every time below is stretched: compare "
            f"the variants with each other, not with {i.work_ms:g} ms.")
    if p.probe_latency * 3 < i.probe_latency and p.loop_lag * 2 < i.loop_lag:
        parts.append(
            f"**The loop.** Computing in the coroutine, the loop stalled for up to "
            f"{_ms(i.loop_lag)} and the probe waited **{_ms(i.probe_latency)}**{rounds}. With "
            f"the process pool, the loop stalled at most {_ms(p.loop_lag)} and the probe took "
            f"**{_ms(p.probe_latency)}**: the work happened in other processes.")
    else:
        parts.append(_too_noisy(f"the probe waited {_ms(i.probe_latency)} in the coroutine, "
                                f"{_ms(p.probe_latency)} with the process pool"))
    if t.loop_lag * 2 < i.loop_lag:
        parts.append(
            f"**Threads.** With `{thread}` the loop breathed: it stalled at most "
            f"{_ms(t.loop_lag)}, because a computing thread must offer the GIL back every "
            f"`sys.getswitchinterval()` (5 ms). Yet the probe took {_ms(t.probe_latency)}: "
            f"each time the loop's thread makes a system call (`epoll`, `accept`, `recv`, "
            f"`send`) it lets go of the GIL, and must wait for a computing thread to hand it "
            f"back.")
    else:
        parts.append(_too_noisy(f"with `{thread}` the loop stalled up to {_ms(t.loop_lag)}, "
                                f"in the coroutine {_ms(i.loop_lag)}"))
    if t.cores <= 1.2:
        finish = (f"so the {n} computations were not done any sooner ({_ms(t.slowest)} against "
                  f"{_ms(i.slowest)} in the coroutine)." if t.slowest >= 0.9 * i.slowest else
                  f"so their finishing time ({_ms(t.slowest)} against {_ms(i.slowest)} in the "
                  f"coroutine) differs by the machine's other work, not by the threads.")
        parts.append(
            f"But the threads kept only **{t.cores:.1f} core** busy (the coroutine: "
            f"{i.cores:.1f}): only the thread holding the GIL computes, {finish}")
    else:
        parts.append(
            f"The threads kept **{t.cores:.1f} cores** busy: more than one thread computed at "
            f"a time, which the GIL does not allow. Is this a free-threaded build of Python?")
    speedup = i.slowest / p.slowest
    if p.cores >= 1.3:
        sooner = (f"and finished all {n} in {_ms(p.slowest)}, {speedup:.1f}× sooner than the "
                  f"coroutine" if speedup >= 1.2 else
                  f"though its finishing time ({_ms(p.slowest)} against {_ms(i.slowest)}) was "
                  f"blurred by the machine's other work ({machine_load()})")
        parts.append(f"**Processes.** The pool kept **{p.cores:.1f} cores** busy: its two "
                     f"workers computed at once, {sooner}.")
    else:
        parts.append(
            f"**Processes.** The pool kept only {p.cores:.1f} cores busy: the machine's cores "
            f"were taken by other work ({machine_load()}), and a pool is only as fast as the "
            f"free cores. What it guarantees is the free loop.")
    return "\n\n".join(parts)


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

    from .. import db
    from ..apps import pitfalls

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work-ms", type=float, nargs="+", default=[0, 25, 50, 100])
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds (medians)")
    parser.add_argument("--cpu", action="store_true", help="the CPU-bound variants instead")
    parser.add_argument("--out", help="also save the runs to this JSON file")
    parser.add_argument("--db", help="the database of the query variants: a SQLite path or a "
                                     "postgresql:// URL (default: $ASGI_LAB_DB, else SQLite)")
    args = parser.parse_args(argv)
    if args.db:
        os.environ[db.ENV] = args.db  # the apps read it (asgi_lab.db.database_url)
    if args.cpu:
        pitfalls.warm_up_process_pool()
    else:
        print(f"database: {pitfalls.warm_up_database()}")
    variants = pitfalls.CPU_VARIANTS if args.cpu else {
        "time.sleep": pitfalls.blocking_sleep, **pitfalls.DB_VARIANTS}
    runs = sweep(variants, args.work_ms, args.concurrency, args.rounds)
    print(table(runs, cores=args.cpu))
    if args.out:
        save(runs, args.out)


if __name__ == "__main__":
    main()
