"""One gunicorn worker against two: our ASGI server in gunicorn's process manager, on more cores.

    python benchmarks/gunicorn_workers.py [--rounds 3] [--seconds 3] [--connections 50] \\
        [--json benchmarks/results/gunicorn-workers.json]

`gunicorn -k asgi_lab.workers.ASGIWorker -w N` serving `asgi_lab.apps.hello:app`, N = 1 and 2,
loaded by wrk (one thread) with keep-alive and with `Connection: close`, in interleaved rounds
(1, 2, 1, 2, ...) so that noise on a shared machine hits both alike; medians are reported.
The ratio says how much a second worker process adds on this machine: on 2 cores, wrk itself
takes a good part of one, so 2x is out of reach here.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys

from asgi_lab.experiments.results import write_result
from asgi_lab.experiments.servers import ServerProcess, ServerSpec
from harness import client_name, interleaved, median_result, print_table

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
APP = "asgi_lab.apps.hello:app"


def gunicorn_server(workers: int) -> ServerProcess:
    spec = ServerSpec(f"{workers} worker{'s' if workers > 1 else ''}",
                      ("{python}", "-m", "gunicorn", "-k", "asgi_lab.workers.ASGIWorker", "-w", str(workers),
                       "-b", "{host}:{port}", "--log-level", "info", "--no-control-socket", "{app}"),
                      requires="gunicorn")
    return ServerProcess(spec, app=APP, ready_path="/", env={"PYTHONPATH": ROOT})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=3)
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument("--json", metavar="FILE", help="write the samples, medians, ratios and machine here")
    args = parser.parse_args()
    import gunicorn.config

    if "control_socket_disable" not in gunicorn.config.Config().settings:
        raise SystemExit("needs gunicorn >= 24 (--no-control-socket)")
    scenarios = {"keep-alive": {"connections": args.connections, "close": False},
                 "close": {"connections": args.connections, "close": True}}
    servers = [gunicorn_server(1), gunicorn_server(2)]
    print(f"load: {client_name()}; {args.rounds} rounds x {args.seconds:g} s; "
          f"{os.cpu_count()} cores", file=sys.stderr)
    results = interleaved(servers, scenarios, args.rounds, args.seconds)
    ratios = print_table(results, servers, scenarios, reference=servers[0].name)
    if args.json:
        out = {
            "benchmark": "gunicorn_workers", "client": client_name(), "app": APP,
            "rounds": args.rounds, "seconds": args.seconds, "connections": args.connections,
            "samples": {f"{name}/{scenario}": [vars(r) for r in runs]
                        for (name, scenario), runs in results.items()},
            "median": {f"{name}/{scenario}": vars(median_result(runs))
                       for (name, scenario), runs in results.items()},
            "ratio_2_over_1": {scenario: ratios[(servers[1].name, scenario)] for scenario in scenarios},
            "cpu_ratio_2_over_1": {scenario: ratios[(servers[1].name, scenario, "cpu")]
                                   for scenario in scenarios},
            "spread_req_s": {f"{name}/{scenario}": [min(r.requests_per_s for r in runs),
                                                    statistics.median(r.requests_per_s for r in runs),
                                                    max(r.requests_per_s for r in runs)]
                             for (name, scenario), runs in results.items()},
        }
        write_result(out, args.json, indent=1)
        print(f"wrote {args.json}", file=sys.stderr)


if __name__ == "__main__":
    main()
