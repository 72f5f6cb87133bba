"""10,000 SSE clients with Python's garbage collector on and off: where the lag comes from.

    python benchmarks/sse_gc.py [--rounds 3] [--clients 10000] [--duration 10] [--interval 5]
    python benchmarks/sse_gc.py --json benchmarks/results/sse-gc.json

At 10,000 clients the reference sweep (notebook 03) has found our ASGI server's delivery lag
p99 and time to first event (TTFE) p99 above uvicorn's; at 1,000 they are close. This
benchmark tests one explanation: pauses of CPython's cyclic garbage collector while the
clients connect. Each new connection leaves objects that live as long as it does (its
protocol object, h11's state machine, the app's task and coroutine...), and the collector
examines every one of them at each full collection. CPython 3.11 (`Modules/gcmodule.c`,
`collect_generations`) only triggers "a full collection if the ratio long_lived_pending /
long_lived_total is above a given value (hardwired to 25%)", so that "each full garbage
collection is more and more costly as the number of objects grows, but we do fewer and fewer
of them". While 10,000 connections pile up, a full collection comes each time the tracked
objects have grown by a quarter since the last one, each longer than the last, on the loop's
only thread: every event due meanwhile waits.

Each server runs once per round, in a rotated order: our ASGI server, the same server with the
collector off (`gc.disable()` before anything else runs), and uvicorn both ways. If the
collector is the cause, turning it off closes most of the gap; if the machine is (a core
taken by other work), it does not.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics

from harness import markdown_table, measured, paired_median, ratio
from sse_clients import by_server, rounds, spread

from asgi_lab.experiments import sse_concurrency
from asgi_lab.experiments.results import write_result
from asgi_lab.experiments.servers import SERVERS, ServerSpec

COLLECTOR_OFF = "-gc-off"


def collector_off(spec: ServerSpec) -> ServerSpec:
    """`spec` (a `{python} -m MODULE ...` server) with the cyclic garbage collector off from
    the first line on: `python -c "import gc, runpy; gc.disable(); runpy.run_module(MODULE)"`."""
    python, dash_m, module, *rest = spec.template
    if (python, dash_m) != ("{python}", "-m"):
        raise ValueError(f"{spec.name} is not run as `python -m MODULE`: cannot turn its collector off")
    run = f"import gc, runpy; gc.disable(); runpy.run_module({module!r}, run_name='__main__', alter_sys=True)"
    return dataclasses.replace(spec, name=spec.name + COLLECTOR_OFF, template=(python, "-c", run, *rest),
                               label=f"{spec.label or spec.name}, gc.disable()")


FIGURES = {"lag p99": lambda s: s["lag_ms"]["p99"], "lag max": lambda s: s["lag_ms"]["max"],
           "TTFE p99": lambda s: s["ttfe_ms"]["p99"], "CPU s": lambda s: s["cpu_s"]}
HEADER = ["server", "served", *(f"{name} (ms)" if name != "CPU s" else name for name in FIGURES)]


def rows(result: dict) -> list[list[str]]:
    """One row per server: served clients, then the median (min-max) of each figure."""
    out = []
    for name, summaries in by_server(result["rounds"]).items():
        row = [name, f"{statistics.median(s['served'] for s in summaries):,.0f}/{result['clients']:,}"]
        out.append(row + [spread([get(s) for s in summaries]) for get in FIGURES.values()])
    return out


def off_against_on(result: dict, server: str) -> str:
    """`server` with the collector off against on, each figure the median of its per-round
    ratios (off / on: below 1.00x, turning the collector off made that figure smaller)."""
    table = by_server(result["rounds"])
    on, off = table.get(server), table.get(server + COLLECTOR_OFF)
    if not on or not off:
        return ""
    return f"{server}, collector off / on, median of the per-round ratios: " + ", ".join(
        f"{name} {ratio(paired_median([get(s) for s in off], [get(s) for s in on]))}"
        for name, get in FIGURES.items())


def title(result: dict) -> str:
    return (f"{result['clients']:,} SSE clients, one event every {result['interval']:g} s per client "
            f"for {result['duration']:g} s, garbage collector on and off; median (min-max) of "
            f"{len(result['rounds'])} rounds")


def markdown(result: dict) -> str:
    """The printed table and ratios of a result file, as Markdown."""
    lines = [f"- {line}" for line in (off_against_on(result, name) for name in ("asgi", "uvicorn")) if line]
    return "\n".join([f"**{title(result)}**", "", markdown_table(HEADER, rows(result)), "", *lines, "",
                      measured(result)])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--clients", type=int, default=10_000)
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--interval", type=float, default=5.0, help="seconds between a client's events")
    parser.add_argument("--json", metavar="FILE")
    args = parser.parse_args()

    specs = []
    for name in ("asgi", "uvicorn"):
        specs += [SERVERS[name], collector_off(SERVERS[name])]
    result = {"benchmark": "sse_gc", "clients": args.clients, "duration": args.duration,
              "interval": args.interval,
              "rounds": [sse_concurrency.slim_result(result) for result in rounds(
                  args.clients, args.duration, specs, args.rounds, interval=args.interval, load_processes=2)]}
    print()
    print(sse_concurrency.render_table(title(result), [dict(zip(HEADER, row)) for row in rows(result)]))
    for name in ("asgi", "uvicorn"):
        print(off_against_on(result, name))
    if args.json:
        write_result(result, args.json)
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
