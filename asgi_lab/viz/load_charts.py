"""Charts of one `python -m asgi_lab load ...` run (`asgi_lab/load/command.py`).

    fig = load_chart(result)              # a result from run_load() or read back from JSON
    save_load_charts(result, "charts/")  # the same, as PNG

SSE, long polling and WebSocket runs get four panels, one point per client, sorted so the
worst clients sit on the right: the TCP connect time (and the WebSocket handshake), the time
to the first event or message, how many each one got, and the delivery lag of every stamped
event as a cumulative distribution. A plain HTTP run gets its latency percentiles.
"""

from __future__ import annotations

import os

from .charts import _figure

COLOR = "#1f77b4"
SECOND = "#ff7f0e"


def _sorted(values) -> list[float]:
    return sorted(v for v in values if v is not None)


def load_chart(result: dict):
    """The figure for one load result."""
    if result["kind"] == "http":
        return _http_chart(result)
    load, kind = result["load"], result["kind"]
    fig, (connect, first, delivered, lag) = _figure(16, 3.8, columns=4)
    fig.suptitle(f"{kind} load on {result['url']}: {result['clients']} clients, "
                 f"{result['duration']} s", x=0.01, ha="left", fontsize=12, fontweight="bold")

    values = _sorted(load.get("connect_ms", []))
    connect.plot(range(1, len(values) + 1), values, color=COLOR, label="TCP connect")
    if "handshake_ms" in load:
        values = _sorted(load["handshake_ms"])
        connect.plot(range(1, len(values) + 1), values, color=SECOND, label="WebSocket handshake")
    connect.set_title("Connect, per client", loc="left", fontsize=11, fontweight="bold")
    connect.set_ylabel("ms")

    if "ttfe_ms" in load:
        values = _sorted(load["ttfe_ms"])
        first.plot(range(1, len(values) + 1), values, color=COLOR, label="first event")
        first.set_title("Time to first event, per client", loc="left", fontsize=11, fontweight="bold")
        first.set_ylabel("ms")
    else:  # long polling: how many requests each client made
        values = sorted(load.get("requests", []))
        first.plot(range(1, len(values) + 1), values, color=COLOR, label="requests")
        first.set_title("Requests, per client", loc="left", fontsize=11, fontweight="bold")

    counts = sorted(load.get("events") or load.get("received") or [])
    errors = sum(e is not None for e in load.get("errors", []))
    delivered.plot(range(1, len(counts) + 1), counts, color=COLOR, label="delivered")
    delivered.set_title(f"Delivered, per client ({errors} with an error)", loc="left",
                        fontsize=11, fontweight="bold")

    lags = _sorted(load.get("lags_ms", []))
    if lags:
        lag.plot(lags, [(i + 1) / len(lags) for i in range(len(lags))], color=COLOR, label="lag")
    else:
        lag.text(0.5, 0.5, "no stamped events:\nno lag to show", ha="center", va="center",
                 transform=lag.transAxes, color="#555555")
    lag.set_title("Delivery lag (CDF)", loc="left", fontsize=11, fontweight="bold")
    lag.set_xlabel("ms")
    lag.set_ylabel("fraction of events")
    for ax in (connect, first, delivered):
        ax.set_xlabel("clients, sorted")
        ax.set_ylim(bottom=0)  # from zero: a client with 4 events is not one with none
    connect.legend(frameon=False, fontsize=8)
    return fig


def _http_chart(result: dict):
    (run,) = result["load"]["runs"]
    fig, (ax,) = _figure(6, 3.6)
    bars = ax.bar(["p50", "p99"], [run["p50_ms"], run["p99_ms"]], color=[COLOR, SECOND])
    for bar, name in zip(bars, ("p50", "p99")):
        bar.set_label(name)
    ax.set_ylabel("ms per request")
    ax.set_title(f"{result['url']}: {run['requests_per_s']:.0f} requests/s, "
                 f"{result['clients']} clients, {run['errors']} errors", loc="left", fontsize=10,
                 fontweight="bold")
    return fig


def save_load_charts(result: dict, folder) -> list[str]:
    """Draw `result` into `folder` as load-KIND.png; returns the paths written."""
    path = os.path.join(folder, f"load-{result['kind']}.png")
    load_chart(result).savefig(path, dpi=100)
    return [path]
