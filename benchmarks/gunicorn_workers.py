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
import datetime
import json
import os
import platform
import shlex
import statistics
import subprocess
import sys

from harness import (PYTHON, ServerProcess, client_name, free_port, interleaved, median_result,
                     print_table)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
APP = "asgi_lab.apps.hello:app"


def gunicorn_server(workers: int) -> ServerProcess:
    return ServerProcess(f"{workers} worker{'s' if workers > 1 else ''}", [
        PYTHON, "-m", "gunicorn", "-k", "asgi_lab.workers.ASGIWorker", "-w", str(workers),
        "-b", f"127.0.0.1:{free_port()}", "--log-level", "info", "--no-control-socket", APP],
        env={"PYTHONPATH": ROOT})


def machine() -> dict:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    try:
        commit = subprocess.run(["git", "-C", ROOT, "rev-parse", "HEAD"], capture_output=True,
                                text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        commit = None
    return {"commit": commit,
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "cpu_model": cpu, "cores": os.cpu_count(), "python": platform.python_version(),
            "load_average_before": os.getloadavg(), "shared": True}


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
    where = machine()
    print(f"load: {client_name()}; {args.rounds} rounds x {args.seconds:g} s; "
          f"{where['cores']} cores ({where['cpu_model']}), shared", file=sys.stderr)
    results = interleaved(servers, scenarios, args.rounds, args.seconds)
    ratios = print_table(results, servers, scenarios, reference=servers[0].name)
    if args.json:
        out = {
            "command": "python benchmarks/gunicorn_workers.py " + shlex.join(sys.argv[1:]),
            "machine": where, "client": client_name(), "app": APP,
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
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1)
        print(f"wrote {args.json}", file=sys.stderr)


if __name__ == "__main__":
    main()
