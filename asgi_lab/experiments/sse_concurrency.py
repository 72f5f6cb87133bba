"""The headline experiment: N concurrent SSE clients, threads against coroutines.

    python -m asgi_lab experiment sse --clients 1000 --duration 10
    python -m asgi_lab experiment sse --clients 100,500,1000 --servers asgi,wsgi-threads

    from asgi_lab.experiments import sse_concurrency
    result = sse_concurrency.run(clients=1000, duration=10)
    print(sse_concurrency.format_table(result))

The claim under test (the book's chapter III): "1000 concurrent SSE connections = 1000
blocked threads". Every server gets the same stream (one event per second per client, see
`asgi_lab/apps/sse.py`) and the same clients (`asgi_lab/load/sse.py`, another process).
Per server we report:

- *served*: clients that received every event they were due (see `load.sse.fully_served`);
  *never*: clients that did not get a single event during the run (a starved pool);
- *threads*: the most OS threads the server process had;
- *RSS*: idle, peak, and (peak - idle) / N, the memory one client costs;
- *CPU s*: CPU seconds the server used during the load;
- *lag*: p50 / p99 / max of receive time - the server's send stamp, over all events;
- *late*: p99 of send stamp - due time: how far behind its schedule the server fell;
- *TTFE*: time to first event, p50 / p99 over the clients that got one.
"""

from __future__ import annotations

import math

from ..load import SERVER_ADVICE, raise_open_files_limit
from ..load.sse import fully_served, run_sse_load
from .measure import PartProgress, experiment_result, make_progress, measure_each, stats_ms
from .results import stamp, write_result
from .servers import POOL_THREADS, resolve_servers

DEFAULT_SERVERS = ("asgi", "wsgi-threads", "wsgi-pool", "uvicorn", "gunicorn", "hypercorn", "gevent")
CLIENTS_PER_LOAD_PROCESS = 5000
CONNECTS_PER_SECOND = 2000
"""The clients arrive over max(one interval, N / 2000 s): 10,000 clients over 5 s. Real
clients do not all connect in the same second, and each one's events are spread likewise."""


def load_processes_for(clients: int) -> int:
    """One generator process per 5000 clients: each keeps well inside one core and its fds."""
    return max(1, math.ceil(clients / CLIENTS_PER_LOAD_PROCESS))


def run(clients: int = 1000, duration: float = 10.0, servers=DEFAULT_SERVERS, *,
        pool_threads: int = POOL_THREADS, interval: float = 1.0, load_processes: int | None = None,
        progress=True, out=None) -> dict:
    """Run the SSE experiment against each server in turn; returns (and saves to `out`) the result.

    `progress=True` shows a bar (a widget in Jupyter, a line on a terminal); pass False for
    silence. The result is plain JSON-ready data: `runs` holds one entry per server with its
    `summary`, the process `samples` and everything the load generator measured.
    """
    specs = resolve_servers(servers)
    raise_open_files_limit(clients, SERVER_ADVICE)  # fail before anything starts
    processes = load_processes or load_processes_for(clients)
    spread = max(interval, clients / CONNECTS_PER_SECOND)

    def start_load(url, report):
        return run_sse_load(url + f"/events?interval={interval}", clients, duration,
                            interval=interval, spread=spread, processes=processes, progress=report)

    runs = measure_each(specs, start_load, summarize, clients=clients, pool_threads=pool_threads,
                        expected_time=spread + duration, counted="events", progress=progress)
    return experiment_result("sse", runs, out, clients=clients, duration=duration, interval=interval,
                             spread=spread, pool_threads=pool_threads, load_processes=processes)


def run_sweep(clients=(100, 500, 1000), duration: float = 10.0, servers=DEFAULT_SERVERS, *,
              thread_servers_up_to: int | None = None, slim: bool = False, note: str | None = None,
              command: str | None = None, progress=True, out=None, **options) -> dict:
    """`run()` once per client count, for the memory/threads-against-clients charts.

    `thread_servers_up_to=5000` leaves the servers that spend an OS thread per waiting client
    (`waits_in == "thread"`) out of the larger runs: 10,000 threads prove nothing new, and a
    pool of 32 at 10,000 clients only starves more of them. `slim=True` keeps the summaries,
    the process samples and each client's time to first event, and drops the per-event lists
    (a sweep to commit as a reference). `note` is stored with the machine's description.
    """
    bar = make_progress(progress)
    results = []
    for i, n in enumerate(clients):
        names = servers_for(n, servers, thread_servers_up_to)
        result = run(n, duration, names, progress=PartProgress(bar, i, len(clients)), **options)
        results.append(slim_result(result) if slim else result)
    bar.close()
    sweep = {"experiment": "sse-sweep", "clients": list(clients), "duration": duration,
             "thread_servers_up_to": thread_servers_up_to, "results": results}
    stamp(sweep, command, note, environment=True)
    if out:
        write_result(sweep, out)
    return sweep


def servers_for(clients: int, servers, thread_servers_up_to: int | None) -> list:
    """The servers to run at `clients`: all of them, or past `thread_servers_up_to` only
    those that do not spend an OS thread per waiting client."""
    specs = resolve_servers(servers)
    if thread_servers_up_to is not None and clients > thread_servers_up_to:
        specs = [spec for spec in specs if spec.waits_in != "thread"]
    return specs


def slim_result(result: dict) -> dict:
    """The same result without the per-event lists (lags, lateness, connect times, events
    per client): the summaries keep their percentiles. Time to first event stays, per client,
    rounded to 1 ms, for `charts.ttfe_chart`."""
    slim = dict(result, runs=[])
    for measured in result["runs"]:
        load = measured["load"]
        kept = {key: load[key] for key in ("clients", "duration", "interval", "ramp_s", "processes")
                if key in load}
        kept["ttfe_ms"] = [None if t is None else round(t) for t in load["ttfe_ms"]]
        kept["error_kinds"] = error_kinds(load["errors"])
        slim["runs"].append(dict(measured, load=kept))
    slim["slim"] = True
    return slim


def error_kinds(errors) -> dict[str, int]:
    """How many clients failed, by the first words of their error ("connect: ConnectionRefused...")."""
    kinds: dict[str, int] = {}
    for error in errors:
        if error is not None:
            kind = error.split(":")[0] if ":" in error else error
            kinds[kind] = kinds.get(kind, 0) + 1
    return kinds


def summarize(measured: dict) -> dict:
    """The per-server numbers of the table, from the raw measurements."""
    load, process = measured["load"], measured["process"]
    served = fully_served(load)
    ttfe = load["ttfe_ms"]
    return {
        "clients": load["clients"],
        "served": sum(served),
        "never": sum(t is None for t in ttfe),
        "errors": sum(e is not None for e in load["errors"]),
        "events": sum(load["events"]),
        "expected_events": sum(load["expected"]),
        "lag_ms": stats_ms(load["lags_ms"]),
        "late_ms": stats_ms(load["lateness_ms"]),
        "ttfe_ms": stats_ms(ttfe),
        "connect_ms": stats_ms(load["connect_ms"]),
        **process,
    }


def table_rows(result: dict) -> list[dict]:
    """One row per server, the columns of `format_table`."""
    rows = []
    for measured in result["runs"]:
        s = measured["summary"]
        rows.append({
            "server": measured["server"]["name"],
            "served": f"{s['served']}/{s['clients']}",
            "never": s["never"],
            "threads": s["peak_threads"],
            "idle MB": s["idle_rss_mb"],
            "peak MB": s["peak_rss_mb"],
            "KB/client": s["per_client_kb"],
            "VMS MB": s["peak_vms_mb"],
            "CPU s": s["cpu_s"],
            "lag p50": _ms(s["lag_ms"]["p50"]),
            "lag p99": _ms(s["lag_ms"]["p99"]),
            "lag max": _ms(s["lag_ms"]["max"]),
            "late p99": _ms(s["late_ms"]["p99"]),
            "TTFE p50": _ms(s["ttfe_ms"]["p50"]),
            "TTFE p99": _ms(s["ttfe_ms"]["p99"]),
        })
    return rows


def format_table(result: dict) -> str:
    """A plain-text table (times in ms), one line per server."""
    title = (f"SSE: {result['clients']} clients, {result['duration']:g} s, one event every "
             f"{result['interval']:g} s (times in ms)")
    return render_table(title, table_rows(result))


def render_table(title: str, rows: list[dict]) -> str:
    """Rows of equal keys as aligned text columns under a title."""
    if not rows:
        return f"{title}\n(no servers ran)"
    columns = list(rows[0])
    widths = {c: max(len(c), *(len(str(row[c])) for row in rows)) for c in columns}

    def line(cells) -> str:
        return "  ".join(str(cells[c]).ljust(widths[c]) if i == 0 else str(cells[c]).rjust(widths[c])
                         for i, c in enumerate(columns))

    return "\n".join([title, line({c: c for c in columns}), *(line(row) for row in rows)])


def _ms(value) -> str:
    return "-" if value is None else f"{value:.1f}"


# -- conclusions, in words, from the numbers ---------------------------------------------------


def describe(result: dict) -> str:
    """What one run showed, as Markdown sentences computed from its numbers (nothing is
    written in advance: a different machine gets different sentences)."""
    n, duration = result["clients"], result["duration"]
    runs = {run["server"]["name"]: run["summary"] for run in result["runs"]}
    coroutines, threads, pool = runs.get("asgi"), runs.get("wsgi-threads"), runs.get("wsgi-pool")
    uvicorn, gunicorn, gevent = runs.get("uvicorn"), runs.get("gunicorn"), runs.get("gevent")
    lines = []
    if coroutines:
        lines.append(
            f"- **Coroutines** (`asgi`): {_served(coroutines)} on {_threads(coroutines)}; memory grew "
            f"by {coroutines['per_client_kb']:.1f} KB per client; {coroutines['cpu_s']:.2f} CPU s; "
            f"delivery lag p99 {_ms(coroutines['lag_ms']['p99'])} ms.")
    if threads:
        line = (f"- **A thread per client** (`wsgi-threads`): {_served(threads)} on "
                f"{_threads(threads)}; memory grew by {threads['per_client_kb']:.1f} KB per client, "
                f"and the address space reached {threads['peak_vms_mb']:,.0f} MB (reserved, not "
                f"used: each thread's stack, and glibc's malloc arenas); {threads['cpu_s']:.2f} CPU s; "
                f"lag p99 {_ms(threads['lag_ms']['p99'])} ms.")
        lines.append(line)
    if pool:
        size = result["pool_threads"]
        lines.append(
            f"- **A pool of {size} threads** (`wsgi-pool`): {_served(pool)}. {pool['never']} of {n} "
            f"clients never received a single event in {duration:g} s: the first {size} streams hold "
            f"every worker for as long as they last, and the others wait in the queue behind them.")
    if gunicorn:
        lines.append(f"- **gunicorn gthread**, the same pool size: {_served(gunicorn)}, "
                     f"{gunicorn['never']} never served. The starvation is the model's, not our server's.")
    if gevent:
        lines.append(f"- **gevent** (the same WSGI app, monkey-patched): {_served(gevent)} on "
                     f"{_threads(gevent)}, {gevent['per_client_kb']:.1f} KB per client: a greenlet "
                     f"waits where a thread did.")
    if coroutines and threads and coroutines["per_client_kb"] > 0:
        lines.append(f"- Per client, the thread costs {threads['per_client_kb'] / coroutines['per_client_kb']:.1f}x "
                     f"the memory of the coroutine, and {threads['peak_threads'] - 1} more OS threads "
                     f"for the kernel to schedule.")
    if coroutines and uvicorn:
        lines.append(f"- **uvicorn** (h11): {_served(uvicorn)}, {uvicorn['per_client_kb']:.1f} KB per client "
                     f"(ours: {coroutines['per_client_kb']:.1f}), peak RSS {uvicorn['peak_rss_mb']:.1f} MB "
                     f"(ours: {coroutines['peak_rss_mb']:.1f}), lag p99 {_ms(uvicorn['lag_ms']['p99'])} ms.")
    return "\n".join(lines)


def describe_sweep(sweep: dict) -> str:
    """The cost of one more client for each server, from its smallest to its largest run
    (a sweep may leave thread servers out of its largest runs)."""
    results = sweep["results"]
    if len(results) < 2:
        return describe(results[-1])
    names = list(dict.fromkeys(run["server"]["name"] for r in results for run in r["runs"]))
    lines = ["Each extra client added, from the smallest to the largest run of each server:"]
    for name in names:
        ran = [(r["clients"], s) for r in results if (s := _summary(r, name)) is not None]
        if len(ran) < 2:
            continue
        (n_low, a), (n_high, b) = ran[0], ran[-1]
        extra = n_high - n_low
        memory = (b["peak_rss_mb"] - a["peak_rss_mb"]) * 1024 / extra
        threads = (b["peak_threads"] - a["peak_threads"]) / extra
        lines.append(f"- `{name}`, {n_low:,} to {n_high:,} clients: {memory:.1f} KB of RSS and "
                     f"{threads:.2f} OS threads ({fates(b)}).")
    return "\n".join(lines) + "\n\nAt the largest size:\n\n" + describe(results[-1])


def at(sweep: dict, clients: int) -> dict:
    """The run of a sweep with `clients` clients."""
    for result in sweep["results"]:
        if result["clients"] == clients:
            return result
    raise ValueError(f"no run with {clients} clients; the sweep has {sweep['clients']}")


def _summary(result: dict, name: str) -> dict | None:
    return next((run["summary"] for run in result["runs"] if run["server"]["name"] == name), None)


def _served(summary: dict) -> str:
    if summary["served"] == summary["clients"]:
        return f"all {summary['clients']} clients served"
    return f"{summary['served']} of {summary['clients']} clients served"


def fates(summary: dict) -> str:
    """What became of a run's clients: served in full, failed, never served, or short of
    events (see `load.sse.fully_served`)."""
    n, served = summary["clients"], summary["served"]
    if served == n:
        return f"all {n:,} served every event they were due"
    parts = [f"{served:,} of {n:,} served every event they were due"]
    if summary["errors"]:
        parts.append(f"{summary['errors']:,} ended with an error")
    if summary["never"]:
        parts.append(f"{summary['never']:,} never received one")
    behind = n - served - summary["errors"] - summary["never"]
    if behind > 0:
        parts.append(f"{behind:,} received events, but fewer than they were due (their "
                     f"stream started late or fell behind)")
    return "; ".join(parts)


def _threads(summary: dict) -> str:
    count = summary["peak_threads"]
    return f"{count} OS thread" + ("" if count == 1 else "s")
