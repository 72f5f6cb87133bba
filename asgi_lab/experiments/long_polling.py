"""Long polling, measured: clients that hold a request open until a message is published.

    python -m asgi_lab experiment longpoll --clients 1000 --duration 10 --period 2

    from asgi_lab.experiments import long_polling
    result = long_polling.run(clients=1000, duration=10)
    print(long_polling.format_table(result))

The book's claim: long polling "works in WSGI (barely), but ties up a worker thread for the
entire wait time". Here every client polls `GET /poll` in a loop; the server publishes a
message every `period` seconds to everyone waiting (`asgi_lab/apps/sse.py`). Per server:

- *delivered*: messages received out of messages due (one per publication while the client
  was polling); a client waiting in a queue behind busy workers misses publications;
- *all*: clients that received every message they were due;
- *threads*, *RSS* (peak, per client), *CPU s*: what waiting cost the server;
- *lag*: p50 / p99 of receive time - publication time, over all delivered messages.
"""

from __future__ import annotations

import math

from ..load import SERVER_ADVICE, raise_open_files_limit
from ..load.longpoll import run_longpoll_load
from .measure import experiment_result, measure_each, stats_ms
from .servers import POOL_THREADS, resolve_servers
from .sse_concurrency import render_table

DEFAULT_SERVERS = ("asgi", "wsgi-threads", "wsgi-pool", "uvicorn", "gunicorn")
POLL_TIMEOUT = 30.0


def burst_processes_for(clients: int) -> int:
    """Load-generator processes for long polling: one per 250 clients, at most 4.

    Every publication answers all waiting clients at once, and a client process handles the
    answers one after another: with 1000 clients in one process, the last answer is read
    ~100 ms after it arrived, and that wait would count as delivery lag. Several processes
    read the burst in parallel (measured: p50 lag 184 ms with one process, 55-65 ms with four).
    """
    return min(4, max(1, math.ceil(clients / 250)))


def run(clients: int = 1000, duration: float = 10.0, servers=DEFAULT_SERVERS, *,
        period: float = 2.0, spread: float = 1.0, pool_threads: int = POOL_THREADS,
        load_processes: int | None = None, progress=True, out=None) -> dict:
    """Run the long-polling comparison against each server in turn; returns the result.

    The clients connect over `spread` seconds, then poll for `duration` seconds."""
    specs = resolve_servers(servers)
    raise_open_files_limit(clients, SERVER_ADVICE)  # fail before anything starts
    processes = load_processes or burst_processes_for(clients)

    def start_load(url, report):
        return run_longpoll_load(url + f"/poll?timeout={POLL_TIMEOUT:g}&period={period:g}",
                                 clients, duration, period=period, spread=spread,
                                 processes=processes, progress=report)

    runs = measure_each(specs, start_load, summarize, clients=clients, pool_threads=pool_threads,
                        expected_time=spread + duration, counted="messages", progress=progress)
    return experiment_result("longpoll", runs, out, clients=clients, duration=duration, period=period,
                             spread=spread, pool_threads=pool_threads, load_processes=processes)


def summarize(measured: dict) -> dict:
    load, process = measured["load"], measured["process"]
    complete = [error is None and got >= due for error, got, due
                in zip(load["errors"], load["messages"], load["expected"])]
    return {
        "clients": load["clients"],
        "all_messages": sum(complete),
        "messages": sum(load["messages"]),
        "expected_messages": sum(load["expected"]),
        "requests": sum(load["requests"]),
        "timeouts": sum(load["timeouts"]),
        "errors": sum(e is not None for e in load["errors"]),
        "lag_ms": stats_ms(load["lags_ms"]),
        **process,
    }


def table_rows(result: dict) -> list[dict]:
    rows = []
    for measured in result["runs"]:
        s = measured["summary"]
        due = s["expected_messages"]
        rows.append({
            "server": measured["server"]["name"],
            "delivered": f"{s['messages']}/{due}" + (f" ({100 * s['messages'] / due:.0f}%)" if due else ""),
            "all": f"{s['all_messages']}/{s['clients']}",
            "errors": s["errors"],
            "threads": s["peak_threads"],
            "peak MB": s["peak_rss_mb"],
            "KB/client": s["per_client_kb"],
            "CPU s": s["cpu_s"],
            "lag p50": _ms(s["lag_ms"]["p50"]),
            "lag p99": _ms(s["lag_ms"]["p99"]),
        })
    return rows


def format_table(result: dict) -> str:
    title = (f"Long polling: {result['clients']} clients, {result['duration']:g} s, a message "
             f"every {result['period']:g} s (times in ms)")
    return render_table(title, table_rows(result))


def _ms(value) -> str:
    return "-" if value is None else f"{value:.1f}"


def describe(result: dict) -> str:
    """What the long-polling run showed, as Markdown computed from its numbers."""
    n = result["clients"]
    lines = []
    for run in result["runs"]:
        s = run["summary"]
        due = s["expected_messages"]
        share = 100 * s["messages"] / due if due else 0.0
        lines.append(
            f"- `{run['server']['name']}` ({run['server']['waits_in']}s wait): delivered "
            f"{s['messages']} of {due} due messages ({share:.0f}%); {s['all_messages']} of {n} "
            f"clients got every one; {s['peak_threads']} OS thread{'s' if s['peak_threads'] != 1 else ''}, "
            f"peak RSS {s['peak_rss_mb']:.1f} MB, lag p50 {_ms(s['lag_ms']['p50'])} ms.")
    return "\n".join(lines)
