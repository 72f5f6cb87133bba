"""One gunicorn worker against two: our ASGI server in gunicorn's process manager, on more cores.

    python benchmarks/gunicorn_workers.py [--rounds 3] [--seconds 3] [--connections 50] \\
        [--json benchmarks/results/gunicorn-workers.json]

`gunicorn -k asgi_lab.workers.ASGIWorker -w N` serving `asgi_lab.apps.hello:app`, N = 1 and 2,
loaded by wrk (one thread) with keep-alive and with `Connection: close`, in interleaved rounds
(1, 2, 1, 2, ...) so that noise on a shared machine hits both alike; medians are reported.
The ratio says how much a second worker process adds on this machine: on 2 cores, wrk itself
takes a good part of one, so 2x is out of reach here. `markdown(result)` is the same table, from
a `--json` file's raw rounds.
"""

from __future__ import annotations

import argparse
import os
import sys

from asgi_lab.experiments.results import write_result
from asgi_lab.experiments.servers import ServerProcess, ServerSpec
from harness import (ROUNDS_HEADER, client_name, interleaved, markdown_table, measured, print_table,
                     raw_rounds, rounds_note, rounds_rows, unique)

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
    parser.add_argument("--json", metavar="FILE", help="write the per-round numbers and the machine here")
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
    print_table(results, servers, scenarios, reference=servers[0].name)
    if args.json:
        write_result({"benchmark": "gunicorn_workers", "client": client_name(), "app": APP,
                      "rounds": args.rounds, "seconds": args.seconds, "connections": args.connections,
                      "runs": raw_rounds(results)}, args.json, indent=1)
        print(f"wrote {args.json}", file=sys.stderr)


def rounds_of(result: dict) -> list[dict]:
    """The raw rounds; a file from before `runs` kept them as `samples`, by "server/scenario"."""
    if "runs" in result:
        return result["runs"]
    return [{"server": key.split("/")[0], "scenario": key.split("/")[1], "round": number, **sample}
            for key, samples in result["samples"].items() for number, sample in enumerate(samples)]


KEEP_ALIVE_NOTE = (
    "With keep-alive, wrk opens all its connections at the same moment and keeps them for the "
    "whole round. Both workers wait on gunicorn's one listening socket, and the first whose event "
    "loop wakes up accepts every connection already there (asyncio's `_accept_connection` calls "
    "`accept()` up to the listen backlog times per wake-up, 2048 here): in such a round the second "
    "worker serves nothing, and two workers do what one does. The min-max column shows the rounds "
    "in which the connections were shared. With a new connection per request (`Connection: close`), "
    "both workers keep accepting.")


def markdown(result: dict) -> str:
    """The printed table of a result file, from its raw rounds, as Markdown."""
    runs = rounds_of(result)
    reference = unique(run["server"] for run in runs)[0]
    return "\n".join([
        f"`gunicorn -k asgi_lab.workers.ASGIWorker -w N` serving `{result['app']}`, "
        f"{result['rounds']} interleaved rounds of {result['seconds']:g} s, {result['connections']} "
        f"connections, load from {result['client']}.", "",
        markdown_table(ROUNDS_HEADER, rounds_rows(runs, reference), left=2), "",
        rounds_note(reference) + " The ratio is what a second worker process adds on this machine.", "",
        KEEP_ALIVE_NOTE, "",
        measured(result)])


if __name__ == "__main__":
    main()
