"""`python -m asgi_lab experiment sse|longpoll|ws ...`: run an experiment, print its table, save JSON.

    python -m asgi_lab experiment sse --clients 1000 --duration 10
    python -m asgi_lab experiment sse --clients 100,500,1000,2000,5000 --servers asgi,wsgi-threads
    python -m asgi_lab experiment longpoll --clients 1000 --duration 10 --period 2
    python -m asgi_lab experiment ws --clients 1000 --duration 10 --send-interval 1 --servers asgi,uvicorn
    python -m asgi_lab experiment sse --replot sse-1000.json --charts charts/
    python -m asgi_lab experiment sse --clients 100,1000,10000 --thread-servers-up-to 5000 --slim
    python -m asgi_lab experiment blocking myapp:app --path /slow   (see blocking_app.py)

Several client counts make a sweep (one run per count); `--thread-servers-up-to N` leaves
the servers that spend a thread per client out of the runs above N clients, `--slim` keeps
the summaries and drops the per-event lists (a result small enough to commit), `--note` is
stored with the machine's description (commit, date, CPU model, cores, the exact command).

`--server NAME="COMMAND"` (repeatable) adds a server of yours, started from a command template
with `{host}` and `{port}` (and `{python}`), sampled and stopped like the built-in ones:

    python -m asgi_lab experiment sse --clients 100 --servers asgi \
        --server flask="gunicorn -k gthread --threads 32 -b {host}:{port} asgi_lab.apps.sse:wsgi_app"

It must serve the experiment's paths (`/events?interval=S` for sse, `/poll?timeout=T&period=P`
for longpoll, as `asgi_lab/apps/sse.py` does).

`--charts DIR` also saves the charts as PNG files; `--replot FILE` draws them again from a
saved result without running anything.
"""

from __future__ import annotations

import argparse
import os
import sys

from ..load.clients import add_options
from ..load.command import GENERATORS
from .servers import EXPERIMENT_SERVERS, POOL_THREADS, SERVERS, WEBSOCKET_SERVERS


def add_experiment_parser(commands) -> None:
    """Add the `experiment` subcommand to the main CLI's subparsers."""
    experiment = commands.add_parser("experiment", help="measure threads against coroutines "
                                     "(SSE clients, long polling)")
    kinds = experiment.add_subparsers(dest="experiment", required=True)
    for name, help_text in (("sse", "N concurrent Server-Sent-Events clients"),
                            ("longpoll", "N concurrent long-polling clients"),
                            ("ws", "N concurrent WebSocket clients (echo, ASGI servers)")):
        parser = kinds.add_parser(name, help=help_text)
        parser.add_argument("--clients", default="1000",
                            help="number of clients; a comma-separated list runs a sweep (default: 1000)")
        parser.add_argument("--duration", type=float, default=10.0,
                            help="seconds to hold the clients after they connected (default: 10)")
        parser.add_argument("--servers", default=",".join(WEBSOCKET_SERVERS if name == "ws" else EXPERIMENT_SERVERS),
                            help=f"comma-separated, from {', '.join(SERVERS)} (default: all installed)")
        parser.add_argument("--server", action="append", default=[], metavar='NAME="COMMAND"',
                            help="one of your servers, a command template with {host} and {port} "
                                 "(repeatable)")
        parser.add_argument("--pool-threads", type=int, default=POOL_THREADS,
                            help="threads of the small WSGI pools (default: %(default)s)")
        parser.add_argument("--load-processes", type=int, default=None,
                            help="load-generator processes (default: one per 5000 SSE clients; "
                                 "long polling: one per 250, at most 4)")
        parser.add_argument("--out", default=None,
                            help="save the JSON result here (default: experiment-<kind>-<clients>.json)")
        parser.add_argument("--charts", metavar="DIR", default=None, help="also save the charts as PNG here")
        parser.add_argument("--replot", metavar="FILE", default=None,
                            help="print the tables of a saved result (and with --charts, draw "
                                 "its charts) without running anything")
        parser.add_argument("--thread-servers-up-to", type=int, default=None, metavar="N",
                            help="in a sweep, run the servers that spend an OS thread per client "
                                 "only up to N clients")
        parser.add_argument("--slim", action="store_true",
                            help="keep summaries and samples, drop per-event lists (SSE)")
        parser.add_argument("--note", default=None,
                            help="a remark stored with the machine's description, e.g. 'shared machine'")
        add_options(parser, GENERATORS[name])  # --interval, --period, --send-interval
        parser.set_defaults(run=run_from_args)
    blocking = kinds.add_parser("blocking", help="does your ASGI app block the event loop? "
                                "(asyncio debug mode, a loop-lag probe, the stack that ran)")
    add_blocking_arguments(blocking)
    blocking.set_defaults(run=run_blocking)


def add_blocking_arguments(parser: argparse.ArgumentParser) -> None:
    """`experiment blocking`'s options. (Here, not in blocking_app.py, so that building the
    command line does not import the experiment: every `python -m asgi_lab asgi` would pay
    for its imports, a few MB of memory, with psutil and the exercise checks.)"""
    parser.add_argument("app", nargs="?", help="your ASGI app, as MODULE:ATTR")
    parser.add_argument("--path", action="append", default=None,
                        help="a path to GET (repeat for several; clients take them in turn; default /)")
    parser.add_argument("--clients", type=int, default=4, help="concurrent clients (default: 4)")
    parser.add_argument("--duration", type=float, default=3.0, help="seconds of load (default: 3)")
    parser.add_argument("--threshold-ms", type=float, default=None,
                        help="report stalls this long or longer (default: 100, asyncio's own "
                             "slow_callback_duration)")
    parser.add_argument("--lifespan", choices=("auto", "on", "off"), default="auto")
    parser.add_argument("--no-warmup", dest="warmup", action="store_false",
                        help="measure from the first request (default: one unmeasured request "
                             "per client and path first)")
    parser.add_argument("--out", default="experiment-blocking.json", help="the JSON result")
    parser.add_argument("--charts", metavar="DIR", default=None, help="also save the chart as PNG here")
    parser.add_argument("--replot", metavar="FILE", default=None,
                        help="print the table of a saved result (and with --charts, draw it)")
    parser.add_argument("--stacks", type=int, default=1, metavar="N",
                        help="print the stack of the N longest stalls in your code (default: 1)")


def run_blocking(args: argparse.Namespace) -> int:
    from .blocking_app import run_from_args

    return run_from_args(args)


def run_from_args(args: argparse.Namespace) -> int:
    from . import long_polling, sse_concurrency, ws_concurrency
    from .measure import load_result, save_result
    from .results import stamp
    from .servers import parse_server_option, resolve_servers

    if args.replot:
        result = load_result(args.replot)
    else:
        try:
            clients = [int(n) for n in args.clients.split(",")]
        except ValueError:
            raise SystemExit(f"error: --clients must be numbers, got {args.clients!r}")
        try:
            servers = resolve_servers(args.servers, [parse_server_option(s) for s in args.server])
        except ValueError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        options = dict(servers=servers, pool_threads=args.pool_threads,
                       load_processes=args.load_processes)
        if args.experiment == "longpoll":
            options["period"] = args.period
            module = long_polling
        elif args.experiment == "ws":
            options["send_interval"] = args.send_interval
            module = ws_concurrency
        else:
            options["interval"] = args.interval
            module = sse_concurrency
        try:
            if len(clients) > 1 and module is sse_concurrency:
                result = sse_concurrency.run_sweep(
                    clients, args.duration, thread_servers_up_to=args.thread_servers_up_to,
                    slim=args.slim, note=args.note, **options)
            elif len(clients) > 1:
                servers = options.pop("servers")
                results = [module.run(n, args.duration, sse_concurrency.servers_for(
                    n, servers, args.thread_servers_up_to), **options) for n in clients]
                result = stamp({"experiment": f"{args.experiment}-sweep", "clients": clients,
                                "duration": args.duration, "results": results}, note=args.note,
                               environment=True)
            else:
                result = module.run(clients[0], args.duration, **options)
                if args.slim and module is sse_concurrency:
                    result = sse_concurrency.slim_result(result)
                if args.note:
                    stamp(result, result["command"], args.note, environment=True)
        except (RuntimeError, ValueError) as exc:  # e.g. too many clients for the fd limit
            print(f"error: {exc}", file=sys.stderr)
            return 1
        out = args.out or f"experiment-{args.experiment}-{args.clients.replace(',', '-')}.json"
        save_result(result, out)
        print(f"saved {out}", file=sys.stderr)
    print_tables(result)
    if args.charts:
        from ..viz import charts

        os.makedirs(args.charts, exist_ok=True)
        from .measure import source_line

        source = source_line(result, args.replot)
        for path in charts.save_charts(result, args.charts, source):
            print(f"chart: {path}", file=sys.stderr)
    return 0


def print_tables(result: dict) -> None:
    from . import long_polling, sse_concurrency, ws_concurrency

    modules = {"longpoll": long_polling, "ws": ws_concurrency}
    for single in result.get("results", [result]):
        module = modules.get(single["experiment"], sse_concurrency)
        print(module.format_table(single))
        print()
