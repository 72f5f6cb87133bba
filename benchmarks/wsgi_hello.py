"""Hello-world requests per second: our WSGI server against gunicorn (gthread) and waitress.

    .venv/bin/python benchmarks/wsgi_hello.py                  # defaults: 8 threads, 3 rounds
    .venv/bin/python benchmarks/wsgi_hello.py --rounds 5 --duration 4 --connections 32
    .venv/bin/python benchmarks/wsgi_hello.py --connections 16,50 --pin 0 --json wsgi-hello.json

Every server runs `asgi_lab.apps.hello:wsgi_app` in a process of its own, with the same number
of threads: ours with `--threads N`, gunicorn with `-k gthread -w 1 --threads N`, waitress with
`--threads=N`. Access logs are off everywhere. The load comes from yet another process: a
small single-threaded client on a selector (below) that keeps `--connections` requests in
flight, one per connection, either reusing each connection (keep-alive) or opening a new one
per request (`Connection: close`). Its own CPU use is printed, so you can check that the
client was not the bottleneck. `--client wrk` uses wrk instead (`apt-get install wrk`).

Rounds are interleaved (ours, gunicorn, waitress, ours, ...) so that noise from other work on
the machine spreads over all servers; the table shows the median of the rounds, their spread,
and our ratio to each server in the same run. Servers that are not installed are skipped.
`--connections 16,50` sweeps the number of connections (a table each); `--pin 0` runs every
server on CPU 0 only (taskset), which changes the picture on a 2-core machine: the client
then has a core of its own. `--json FILE` writes every round with the machine and command.

To measure a change to our server, A/B in the same run: `--baseline DIR` adds a server
"baseline", our server imported from the `asgi_lab` package under DIR (say, an older
checkout: `git worktree add /tmp/base HEAD~1`), interleaved with the others.
`markdown(result)` gives the tables of a `--json` file, computed again from its rounds.
"""

from __future__ import annotations

import argparse
import errno
import json
import os
import re
import selectors
import socket
import subprocess
import sys
import time

from harness import baseline_line, markdown_table, measured, median, number, spread, text_table, unique

from asgi_lab.experiments.results import git_commit, write_result
from asgi_lab.experiments.servers import (BASELINE_HELP, SERVERS, ServerProcess, ServerSpec, ours,
                                          with_baseline)
from asgi_lab.load.wrk import run_wrk

APP = "asgi_lab.apps.hello:wsgi_app"


# -- the load generator (runs in its own process: `wsgi_hello.py --client ...`) -----------------

def run_client(port: int, keep_alive: bool, duration: float, connections: int, warmup: float) -> dict:
    """Keep `connections` requests in flight for `duration` seconds; count complete 200s."""
    request = b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n" + (b"\r\n" if keep_alive else b"Connection: close\r\n\r\n")
    selector = selectors.DefaultSelector()
    address = ("127.0.0.1", port)
    counted = total = errors = 0
    start = time.monotonic()
    count_from = start + warmup
    stop = count_from + duration

    def open_connection():
        sock = socket.socket()
        sock.setblocking(False)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        err = sock.connect_ex(address)
        if err not in (0, errno.EINPROGRESS):
            raise OSError(err, os.strerror(err))
        selector.register(sock, selectors.EVENT_WRITE, [sock, b"", False])

    for _ in range(connections):
        open_connection()
    cpu_start = time.process_time()
    now = start
    while now < stop:
        for key, mask in selector.select(1.0):
            state = key.data
            sock = state[0]
            if mask & selectors.EVENT_WRITE:  # connected: send the request
                sock.send(request)
                selector.modify(sock, selectors.EVENT_READ, state)
                continue
            try:
                data = sock.recv(65536)
            except OSError:
                data = b""
                errors += 1
            buffer = state[1] + data
            done = False
            if keep_alive:
                head_end = buffer.find(b"\r\n\r\n")
                if head_end >= 0:
                    length = int(re.search(rb"(?i)content-length: *(\d+)", buffer[:head_end]).group(1))
                    done = len(buffer) >= head_end + 4 + length
            else:
                done = not data
            if not done and data:
                state[1] = buffer
                continue
            if buffer.startswith(b"HTTP/1.1 200"):
                total += 1
                if now >= count_from:
                    counted += 1
            else:
                errors += 1
            if keep_alive and data:
                state[1] = b""
                sock.send(request)
            else:
                selector.unregister(sock)
                sock.close()
                open_connection()
        now = time.monotonic()
    cpu = time.process_time() - cpu_start
    elapsed = now - count_from
    return {"requests": counted, "all_requests": total, "errors": errors, "seconds": elapsed,
            "client_cpu": cpu / (now - start)}


def wrk_client(port: int, keep_alive: bool, duration: float, connections: int, warmup: float) -> dict:
    """The same measurement from wrk (no warm-up of its own: the rounds before warm it)."""
    result = run_wrk(f"http://127.0.0.1:{port}/", duration, connections, close=not keep_alive)
    return {"requests": result["requests"], "all_requests": result["requests"],
            "errors": result["errors"], "seconds": result["seconds"], "client_cpu": float("nan"),
            "p99_ms": result["p99_ms"]}


# -- the servers -------------------------------------------------------------------------------

def server_specs(names: list[str], baseline: str | None) -> list[ServerSpec]:
    """Ours, gunicorn (gthread, one worker) and waitress, each with the same pool size."""
    specs = []
    for name in names:
        spec = ours("wsgi", "--threads", "{threads}", name="asgi_lab") if name == "asgi_lab" else SERVERS[name]
        if spec.available:
            specs.append(spec)
        else:
            print(f"({name} is not installed: skipped)")
    return with_baseline(specs, baseline)


def measure(server: ServerProcess, keep_alive: bool, connections: int, args) -> dict:
    command = [sys.executable, __file__, "--client-port", str(server.port), "--duration", str(args.duration),
               "--connections", str(connections), "--warmup", str(args.warmup),
               "--client", args.client] + ([] if keep_alive else ["--close"])
    cpu_before = server.cpu_seconds()
    result = json.loads(subprocess.run(command, capture_output=True, text=True, check=True).stdout)
    cpu = server.cpu_seconds() - cpu_before
    result["server_cpu"] = cpu / (result["seconds"] + args.warmup)        # share of one core
    result["cpu_us"] = cpu / max(result["all_requests"], 1) * 1e6          # per request
    result["rps"] = result["requests"] / result["seconds"]
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=float, default=3.0, help="seconds measured per run")
    parser.add_argument("--warmup", type=float, default=0.5, help="seconds not counted at the start of a run")
    parser.add_argument("--connections", default="16",
                        help="concurrent client connections; a comma-separated list is a sweep (16,50)")
    parser.add_argument("--client", choices=("python", "wrk"), default="python")
    parser.add_argument("--modes", default="keep-alive,close")
    parser.add_argument("--servers", default="asgi_lab,gunicorn,waitress")
    parser.add_argument("--pin", metavar="CPUS", help="run every server on these CPUs only "
                        "(taskset --cpu-list, e.g. 0 or 0,1); the client is not pinned")
    parser.add_argument("--baseline", metavar="DIR", help=BASELINE_HELP)
    parser.add_argument("--json", metavar="FILE", help="write the per-round numbers and the machine here")
    parser.add_argument("--client-port", type=int, help=argparse.SUPPRESS)  # the load process
    parser.add_argument("--close", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.client_port:
        run = wrk_client if args.client == "wrk" else run_client
        print(json.dumps(run(args.client_port, not args.close, args.duration, int(args.connections),
                             args.warmup)))
        return

    sweep = [int(n) for n in args.connections.split(",")]
    specs = server_specs(args.servers.split(","), args.baseline)
    servers = [ServerProcess(spec, args.threads, app=APP, ready_path="/", pin=args.pin) for spec in specs]
    modes = args.modes.split(",")
    results: dict[tuple[int, str, str], list[dict]] = {}
    try:
        for server in servers:
            server.start()
        for round_number in range(args.rounds):
            for connections in sweep:
                for mode in modes:
                    for server in servers:
                        result = measure(server, mode == "keep-alive", connections, args)
                        results.setdefault((connections, server.name, mode), []).append(result)
                        print(f"round {round_number + 1}/{args.rounds} {connections:3} conn {mode:10} "
                              f"{server.name:9} {result['rps']:8.0f} req/s  errors {result['errors']}  "
                              f"server: {result['server_cpu']:4.0%} of a core, {result['cpu_us']:4.0f} us/request  "
                              f"client: {result['client_cpu']:.0%} of a core", flush=True)
    finally:
        for server in servers:
            server.stop(10)

    runs = [{"connections": n, "server": name, "mode": mode, "round": i, **run}
            for (n, name, mode), rounds in results.items() for i, run in enumerate(rounds)]
    result = {"benchmark": "wsgi_hello", "app": APP, "threads": args.threads,
              "rounds": args.rounds, "duration": args.duration, "warmup": args.warmup,
              "connections": sweep, "client": args.client, "pin": args.pin,
              "baseline": args.baseline,
              "baseline_commit": git_commit(args.baseline) if args.baseline else None,
              "runs": runs}
    for connections in sweep:
        print(f"\n{title(result, connections)}\n")
        print(text_table(HEADER, table_rows(runs, connections), left=2))
    print(f"\n{NOTE}")
    print(TARGETS)
    if args.json:
        write_result(result, args.json, indent=1)
        print(f"wrote {args.json}")


HEADER = ["mode", "server", "req/s", "min-max", "ours / it", "CPU us/req", "it / ours", "p99 ms", "client CPU"]
NOTE = ("req/s: higher is better; 'ours / it' > 1 means we served more. CPU us/req: server CPU time "
        "(all its processes) per request, lower is better; 'it / ours' > 1 means it spent more. On a "
        "busy machine req/s swings with the scheduler; CPU per request less so. 'p99 ms': the 99th "
        "percentile of latency that wrk reports (median over rounds; '-' with the python client). "
        "'client CPU': the load client's share of a core (near 100%: the client, not the server, was "
        "the limit).")
TARGETS = ("targets (issue 22): req/s >= 1.0x waitress and >= 1.5x gunicorn gthread, both modes, "
           "at 16 and 50 connections, pinned and unpinned")


def title(result: dict, connections: int) -> str:
    pinned = f", servers pinned to CPU {result['pin']}" if result.get("pin") else ""
    return (f"hello world, {result['threads']} threads, {connections} connections, {result['client']} client"
            f"{pinned}, median of {result['rounds']} rounds x {result['duration']:g} s")


def table_rows(runs: list[dict], connections: int) -> list[list[str]]:
    """One row per (mode, server) at `connections`, medians of the rounds; ours / it for the
    others (ratio of the medians): req/s, and CPU time per request inverted (it / ours)."""
    runs = [run for run in runs if run["connections"] == connections]
    rows = []
    for mode in unique(run["mode"] for run in runs):
        by_server = {name: [run for run in runs if run["mode"] == mode and run["server"] == name]
                     for name in unique(run["server"] for run in runs)}
        ours = by_server.get("asgi_lab")
        for name, rounds in by_server.items():
            rps, cpu = median(r["rps"] for r in rounds), median(r["cpu_us"] for r in rounds)
            ratio = cpu_ratio = ""
            if ours and name != "asgi_lab":
                ratio = f"{median(r['rps'] for r in ours) / rps:.2f}x"
                cpu_ratio = f"{cpu / median(r['cpu_us'] for r in ours):.2f}x"
            client = median(r["client_cpu"] for r in rounds)
            p99 = median(r.get("p99_ms", float("nan")) for r in rounds)  # wrk only
            rows.append([mode, name, number(rps), spread(r["rps"] for r in rounds), ratio, number(cpu),
                         cpu_ratio, f"{p99:.1f}" if p99 == p99 else "-",
                         f"{client:.0%}" if client == client else "-"])
    return rows


def markdown(result: dict) -> str:
    """The printed tables of a result file, one per number of connections, from its rounds."""
    out = []
    for connections in result["connections"]:
        out += [f"**{title(result, connections)}**", "",
                markdown_table(HEADER, table_rows(result["runs"], connections), left=2), ""]
    return "\n".join([*out, NOTE + " " + TARGETS[0].upper() + TARGETS[1:] + ".", "",
                      measured(result) + baseline_line(result)])


if __name__ == "__main__":
    main()
