"""Hello-world requests/s and latency: our ASGI server against uvicorn (h11) and hypercorn.

    python benchmarks/http_hello.py [--rounds 5] [--seconds 5] [--connections 50] [--baseline DIR]
    python benchmarks/http_hello.py --json benchmarks/results/http-hello.json

Every server runs in its own process, with access logs off and warnings only, serving the same
app (`asgi_lab.apps.hello:app`). uvicorn runs with `--http h11`, the parser we use too, so the
difference is the server around the parser. Issue targets: >= 1.3x uvicorn-h11 with
keep-alive, >= 1.2x with `Connection: close`. `--baseline DIR` adds our server run from
another checkout, as "baseline" (an A/B of a change, in the same interleaved rounds).
"""

from __future__ import annotations

import argparse

from asgi_lab.experiments.results import write_result
from asgi_lab.experiments.servers import (BASELINE_HELP, SERVERS, ServerProcess, ours,
                                          with_baseline)
from harness import client_name, interleaved, print_table, raw_rounds

APP = "asgi_lab.apps.hello:app"


def servers(baseline: str | None = None) -> list[ServerProcess]:
    specs = [ours("asgi", name="asgi_lab")]
    for name, renamed in (("uvicorn", "uvicorn-h11"), ("hypercorn", "hypercorn")):
        if SERVERS[name].available:
            specs.append(SERVERS[name].variant(renamed))
    return [ServerProcess(spec, app=APP, ready_path="/") for spec in with_baseline(specs, baseline)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=5)
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument("--baseline", metavar="DIR", help=BASELINE_HELP)
    parser.add_argument("--json", metavar="FILE", help="write the per-round numbers and the machine here")
    args = parser.parse_args()
    scenarios = {
        "keep-alive": {"connections": args.connections, "close": False},
        "close": {"connections": args.connections, "close": True},
    }
    procs = servers(args.baseline)
    print(f"hello world, {args.rounds} interleaved rounds of {args.seconds:g} s, "
          f"{args.connections} connections, load from {client_name()}")
    results = interleaved(procs, scenarios, args.rounds, args.seconds)
    reference = "uvicorn-h11" if any(p.name == "uvicorn-h11" for p in procs) else procs[0].name
    ratios = print_table(results, procs, scenarios, reference)
    if reference != procs[0].name:
        for scenario, target in (("keep-alive", 1.3), ("close", 1.2)):
            print(f"asgi_lab / uvicorn-h11, {scenario}: {ratios[('asgi_lab', scenario)]:.2f}x req/s, "
                  f"{ratios[('asgi_lab', scenario, 'cpu')]:.2f}x CPU per request (target {target}x)")
    if args.baseline:
        for scenario in scenarios:
            ours_now, before = results[("asgi_lab", scenario)], results[("baseline", scenario)]
            print(f"asgi_lab / baseline, {scenario}: "
                  f"{_median_ratio(ours_now, before, 'requests_per_s'):.3f}x req/s, "
                  f"{_median_ratio(before, ours_now, 'cpu_us_per_request'):.3f}x CPU per request "
                  "(median of per-round ratios; higher is better for both)")
    if args.json:
        write_result({"benchmark": "http_hello", "app": APP, "rounds": args.rounds,
                      "seconds": args.seconds, "connections": args.connections,
                      "client": client_name(), "baseline": args.baseline,
                      "runs": raw_rounds(results)}, args.json, indent=1)
        print(f"wrote {args.json}")


def _median_ratio(a, b, field: str) -> float:
    """Round by round a / b (measured a few seconds apart), then the median."""
    import statistics

    return statistics.median(getattr(x, field) / getattr(y, field) for x, y in zip(a, b))


if __name__ == "__main__":
    main()
