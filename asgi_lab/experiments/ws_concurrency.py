"""N concurrent WebSocket clients on each server: what holding them costs, and the round trip.

    python -m asgi_lab experiment ws --clients 1000 --duration 10 --send-interval 1
    python -m asgi_lab experiment ws --clients 200 --servers asgi \\
        --server mine="{python} -m uvicorn --ws wsproto --host {host} --port {port} asgi_lab.apps.echo:app"

    from asgi_lab.experiments import ws_concurrency
    print(ws_concurrency.format_table(ws_concurrency.run(clients=200, duration=5)))

Every server serves the echo (`asgi_lab/apps/echo.py`); only ASGI servers speak WebSocket
(WSGI has no way to hold one: PEP 3333 ends a request with its response). The clients come
from another process (`asgi_lab/load/ws.py`): each opens its WebSocket, then sends a stamped
text message every `send_interval` seconds and times its echo. Per server we report:

- *served*: clients with no error that got back every message they sent (but perhaps the
  last, still on its way when the run ended);
- *threads*, *RSS* (idle, peak, and (peak - idle) / N per client), *CPU s*, as for SSE;
- *handshake*: request sent to `101 Switching Protocols`, p50 / p99;
- *round trip*: message sent to its echo received, p50 / p99 / max.
"""

from __future__ import annotations

from ..load import SERVER_ADVICE, raise_open_files_limit
from ..load.ws import run_ws_load
from .measure import experiment_result, measure_each, stats_ms
from .servers import POOL_THREADS, WEBSOCKET_SERVERS, resolve_servers
from .sse_concurrency import render_table

DEFAULT_SERVERS = WEBSOCKET_SERVERS
ECHO_APP = "asgi_lab.apps.echo:app"


def run(clients: int = 1000, duration: float = 10.0, servers=DEFAULT_SERVERS, *,
        send_interval: float = 1.0, spread: float = 1.0, pool_threads: int = POOL_THREADS,
        load_processes: int | None = None, progress=True, out=None) -> dict:
    """Run the WebSocket comparison against each server in turn; returns the result."""
    specs = resolve_servers(servers)
    wsgi = [spec.name for spec in specs if spec.interface == "wsgi"]
    if wsgi:
        raise ValueError(f"{', '.join(wsgi)}: a WSGI server cannot hold a WebSocket; choose "
                         f"from {', '.join(WEBSOCKET_SERVERS)} or a --server of yours")
    raise_open_files_limit(clients, SERVER_ADVICE)  # fail before anything starts
    processes = load_processes or 1

    def start_load(url, report):
        return run_ws_load("ws" + url[len("http"):] + "/", clients, duration,
                           send_interval=send_interval, spread=spread, processes=processes,
                           progress=report)

    runs = measure_each(specs, start_load, summarize, clients=clients, pool_threads=pool_threads,
                        expected_time=spread + duration, counted="messages", progress=progress,
                        app=ECHO_APP)
    return experiment_result("ws", runs, out, clients=clients, duration=duration,
                             send_interval=send_interval, spread=spread, load_processes=processes)


def summarize(measured: dict) -> dict:
    load, process = measured["load"], measured["process"]
    served = [error is None and sent > 0 and received >= sent - 1
              for error, sent, received in zip(load["errors"], load["sent"], load["received"])]
    return {
        "clients": load["clients"],
        "served": sum(served),
        "sent": sum(load["sent"]),
        "received": sum(load["received"]),
        "errors": sum(e is not None for e in load["errors"]),
        "handshake_ms": stats_ms(load["handshake_ms"]),
        "lag_ms": stats_ms(load["lags_ms"]),
        **process,
    }


def format_table(result: dict) -> str:
    def ms(value) -> str:
        return "-" if value is None else f"{value:.1f}"

    rows = [{"server": run["server"]["name"], "served": f"{s['served']}/{s['clients']}",
             "echoed": f"{s['received']}/{s['sent']}", "errors": s["errors"],
             "threads": s["peak_threads"], "peak MB": s["peak_rss_mb"],
             "KB/client": s["per_client_kb"], "CPU s": s["cpu_s"],
             "handshake p50": ms(s["handshake_ms"]["p50"]), "trip p50": ms(s["lag_ms"]["p50"]),
             "trip p99": ms(s["lag_ms"]["p99"]), "trip max": ms(s["lag_ms"]["max"])}
            for run in result["runs"] for s in [run["summary"]]]
    title = (f"WebSocket: {result['clients']} clients, {result['duration']:g} s, a message each "
             f"every {result['send_interval']:g} s (times in ms)")
    return render_table(title, rows)
