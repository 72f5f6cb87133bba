"""`python -m asgi_lab load sse|longpoll|http|ws URL`: load any server on this machine.

    python -m asgi_lab load sse http://127.0.0.1:8000/events --clients 200 --duration 5
    python -m asgi_lab load longpoll http://127.0.0.1:8000/poll --clients 200 --duration 10
    python -m asgi_lab load http http://127.0.0.1:8000/hello --clients 16 --duration 3
    python -m asgi_lab load ws ws://127.0.0.1:8000/ --clients 100 --duration 5 --send-interval 1
    python -m asgi_lab load sse --replot load-sse.json --charts charts/

The server is yours: started however you like (our servers, uvicorn, gunicorn, ...). The
clients run in processes of their own, the same generators as the experiments
(`asgi_lab/load/sse.py`, `longpoll.py`, `http.py`, `ws.py`, through
`process.run_in_processes`), with a progress bar. The result is saved as JSON with where it
came from (commit, date, machine, the command), a table is printed, and `--charts DIR` draws
the per-client measurements (`asgi_lab/viz/load_charts.py`).

Only loopback targets (127.0.0.0/8, ::1, localhost) unless `--allow-remote`: a load test is
a flood of connections, and pointed at a machine that is not yours it is an attack. The lab's
own environment allows loopback only.
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import sys
from urllib.parse import urlsplit

from . import percentile
from .clients import add_options
from .longpoll import LongPollLoad
from .sse import SSELoad
from .ws import WSLoad

KINDS = {
    "sse": ("http", "Server-Sent-Events clients: each holds one GET and counts the events"),
    "longpoll": ("http", "long-polling clients: each asks again as soon as an answer comes"),
    "http": ("http", "keep-alive clients sending GET after GET (a closed loop)"),
    "ws": ("ws", "WebSocket clients: a stamped message every --send-interval, count what comes back"),
}

GENERATORS = {"sse": SSELoad, "longpoll": LongPollLoad, "ws": WSLoad}
"""The kinds with a generator of many clients (`clients.py`); http has its own (`http.py`)."""

REMOTE_REFUSED = (
    "refusing to load {host!r}: it is not a loopback address (127.0.0.0/8, ::1, localhost). "
    "A load test opens many connections at once; aimed at a machine that is not yours it is a "
    "denial-of-service attack, and the lab's environment allows 127.0.0.1 only. If the server "
    "is yours and on another machine, say so with --allow-remote.")


class RemoteTarget(ValueError):
    """A load test aimed beyond this machine, without --allow-remote."""


def is_loopback(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and the name localhost (no DNS lookup: a name could lie)."""
    if host.lower() in ("localhost", "localhost."):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_url(kind: str, url: str, allow_remote: bool = False) -> str:
    """The URL, checked: its scheme fits the kind, and it is loopback unless allowed."""
    parts = urlsplit(url)
    scheme = KINDS[kind][0]
    if parts.scheme != scheme or not parts.hostname:
        raise ValueError(f"a {kind} load needs a {scheme}:// URL with a host, got {url!r}")
    if not allow_remote and not is_loopback(parts.hostname):
        raise RemoteTarget(REMOTE_REFUSED.format(host=parts.hostname))
    return url


# -- running ----------------------------------------------------------------------------------------

def run_load(kind: str, url: str, clients: int, duration: float, *, processes: int = 1,
             interval: float = 1.0, period: float = 2.0, send_interval: float = 1.0,
             spread: float = 1.0, allow_remote: bool = False, progress=True,
             command: str | None = None) -> dict:
    """Load `url` with `clients` clients of `kind` for `duration` seconds; the result, with a
    summary and where it came from. `progress`: True (a bar), False, or an object with
    update(fraction, text) and close()."""
    from ..experiments.measure import make_progress
    from ..experiments.results import stamp

    check_url(kind, url, allow_remote)
    bar = make_progress(progress)
    expected = duration + spread
    counted = "messages" if kind in ("longpoll", "ws") else "events"

    def report(totals):
        if "elapsed" in totals:
            bar.update(totals["elapsed"] / expected,
                       f"{kind}: {totals['open']}/{clients} open, {totals[counted]} {counted}, "
                       f"{totals['errors']} errors, {totals['elapsed']:.0f}/{expected:.0f} s")
        else:  # the http generator reports the edges of its round
            bar.update(totals.get("edge", 0), f"http: {clients} clients, "
                       f"{'done' if totals.get('edge') else 'running'}")

    bar.update(0.0, f"{kind}: starting {clients} clients")
    try:
        if kind == "sse":
            from .sse import run_sse_load

            load = run_sse_load(url, clients, duration, interval=interval, spread=spread,
                                processes=processes, progress=report)
        elif kind == "longpoll":
            from .longpoll import run_longpoll_load

            load = run_longpoll_load(url, clients, duration, period=period, spread=spread,
                                     processes=processes, progress=report)
        elif kind == "http":
            from .http import run_http_load

            load = run_http_load([url], clients, seconds=duration, rounds=1, progress=report)
        else:
            from .ws import run_ws_load

            load = run_ws_load(url, clients, duration, send_interval=send_interval, spread=spread,
                               processes=processes, progress=report)
    finally:
        bar.close()
    return stamp({"experiment": f"load-{kind}", "kind": kind, "url": url, "clients": clients,
                   "duration": duration, "load": load, "summary": summarize(kind, load)}, command)


def summarize(kind: str, load: dict) -> dict:
    """The figures a table shows: per client, how many connected, were served, waited."""
    if kind == "http":
        (run,) = load["runs"]
        return {"requests": run["requests"], "requests_per_s": round(run["requests_per_s"], 1),
                "p50_ms": round(run["p50_ms"], 3), "p99_ms": round(run["p99_ms"], 3),
                "errors": run["errors"], "first_error": run["first_error"]}
    errors = [e for e in load["errors"] if e is not None]
    delivered = {"sse": "events", "longpoll": "received", "ws": "received"}[kind]
    per_client = load.get(delivered) or [0] * load["clients"]
    summary = {
        "clients": load["clients"],
        "with_errors": len(errors),
        "first_errors": sorted(set(errors))[:3],
        "delivered": sum(per_client),
        "clients_delivered_to": sum(1 for n in per_client if n > 0),
        "lag_ms": _stats(load.get("lags_ms", [])),
    }
    if "connect_ms" in load:
        summary["connect_ms"] = _stats(load["connect_ms"])
    if "ttfe_ms" in load:
        summary["ttfe_ms"] = _stats(load["ttfe_ms"])
    if "handshake_ms" in load:
        summary["handshake_ms"] = _stats(load["handshake_ms"])
    if kind == "ws":
        summary["sent"] = sum(load["sent"])
    if kind == "longpoll":
        summary["requests"] = sum(load["requests"])
        summary["timeouts"] = sum(load["timeouts"])
    return summary


def _stats(values) -> dict:
    data = [v for v in values if v is not None]
    return {"p50": percentile(data, 50), "p99": percentile(data, 99),
            "max": max(data) if data else None, "n": len(data)}


# -- a table ------------------------------------------------------------------------------------------

def format_table(result: dict) -> str:
    """The summary as a few aligned lines."""
    s, kind = result["summary"], result["kind"]
    head = f"{kind} load on {result['url']}: {result['clients']} clients, {result['duration']} s"
    if kind == "http":
        rows = [("requests", s["requests"]), ("requests/s", s["requests_per_s"]),
                ("latency p50 / p99", f"{s['p50_ms']} / {s['p99_ms']} ms"),
                ("errors", s["errors"] if not s["first_error"] else f"{s['errors']} ({s['first_error']})")]
    else:
        def ms(stats):
            if not stats or stats["n"] == 0:
                return "-"
            return f"{stats['p50']} / {stats['p99']} / {stats['max']} ms  (n={stats['n']})"

        rows = [("clients with an error", s["with_errors"] if not s["first_errors"]
                 else f"{s['with_errors']}  e.g. {s['first_errors'][0]}"),
                ("delivered", f"{s['delivered']} to {s['clients_delivered_to']} clients"),
                ("connect p50 / p99 / max", ms(s.get("connect_ms")))]
        if "handshake_ms" in s:
            rows.append(("handshake p50 / p99 / max", ms(s["handshake_ms"])))
        if "ttfe_ms" in s:
            rows.append(("first event p50 / p99 / max", ms(s["ttfe_ms"])))
        rows.append(("lag p50 / p99 / max", ms(s["lag_ms"])))
    width = max(len(name) for name, _ in rows)
    return "\n".join([head, "-" * len(head), *(f"{name:<{width}}  {value}" for name, value in rows)])


# -- the command line --------------------------------------------------------------------------------

def add_load_parser(commands) -> None:
    """Add `load` to the main CLI's subcommands."""
    load = commands.add_parser("load", help="load any server on this machine: SSE, long "
                               "polling, plain HTTP or WebSocket clients, from other processes")
    kinds = load.add_subparsers(dest="kind", required=True)
    for kind, (scheme, text) in KINDS.items():
        parser = kinds.add_parser(kind, help=text, description=text)
        parser.add_argument("url", nargs="?", help=f"the target, e.g. {scheme}://127.0.0.1:8000/")
        parser.add_argument("--clients", type=int, default=100, help="(default: %(default)s)")
        parser.add_argument("--duration", type=float, default=5.0,
                            help="seconds to hold the clients (http: to load) (default: %(default)s)")
        if kind != "http":
            parser.add_argument("--processes", type=int, default=1,
                                help="load-generator processes to split the clients over")
            parser.add_argument("--spread", type=float, default=1.0,
                                help="seconds over which to spread the connects (default: 1)")
        if kind in GENERATORS:
            add_options(parser, GENERATORS[kind])
        parser.add_argument("--allow-remote", action="store_true",
                            help="allow a target that is not loopback (a server of yours)")
        parser.add_argument("--out", default=None, help=f"the JSON result (default: load-{kind}.json)")
        parser.add_argument("--charts", metavar="DIR", default=None, help="also draw the charts (PNG) here")
        parser.add_argument("--replot", metavar="FILE", default=None,
                            help="print the table of a saved result (and with --charts, draw it) "
                                 "without loading anything")
        parser.add_argument("--no-progress", dest="progress", action="store_false")
        parser.set_defaults(run=run_from_args)


def run_from_args(args: argparse.Namespace) -> int:
    from ..experiments.measure import load_result, save_result

    if args.replot:
        result = load_result(args.replot)
    else:
        if not args.url:
            print("error: give the URL to load (or --replot FILE)", file=sys.stderr)
            return 2
        try:
            result = run_load(args.kind, args.url, args.clients, args.duration,
                              processes=getattr(args, "processes", 1),
                              interval=getattr(args, "interval", 1.0),
                              period=getattr(args, "period", 2.0),
                              send_interval=getattr(args, "send_interval", 1.0),
                              spread=getattr(args, "spread", 1.0), allow_remote=args.allow_remote,
                              progress=args.progress)
        except RemoteTarget as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        except (RuntimeError, ValueError, TimeoutError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        out = args.out or f"load-{args.kind}.json"
        save_result(result, out)
        print(f"saved {out}", file=sys.stderr)
    print(format_table(result))
    if args.charts:
        from ..viz.load_charts import save_load_charts

        os.makedirs(args.charts, exist_ok=True)
        for path in save_load_charts(result, args.charts):
            print(f"chart: {path}", file=sys.stderr)
    return 0
