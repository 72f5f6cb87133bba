"""What a hello-world request costs each WSGI server, in counts: context switches and system
calls per request, and CPU time per request, under wrk.

    .venv/bin/python benchmarks/wsgi_per_request.py                      # 50 keep-alive connections
    .venv/bin/python benchmarks/wsgi_per_request.py --close --connections 16 --perf
    .venv/bin/python benchmarks/wsgi_per_request.py --baseline /tmp/base --json costs.json

Requests per second swing with whatever else the machine runs; these counts much less so,
which makes them the evidence to trust on a busy machine (`wsgi_hello.py` gives the rates).
Context switches are summed over the server's threads from /proc/PID/task/*/status
(`voluntary`: a thread blocked, on a lock, the GIL, a socket; `involuntary`: the kernel
preempted it, mostly for other processes). `--perf` also counts system calls by name with
`perf stat` (counting only, no sampling, so the server runs at nearly full speed; `strace -c`
stops the server at every call, which changes how its threads take turns with the GIL).
Linux only. gunicorn serves from a child process: its counts cover the whole process tree
for CPU only.
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import subprocess
import sys
import time

from asgi_lab.experiments.results import git_commit, write_result
from asgi_lab.experiments.servers import BASELINE_HELP, SERVERS, ServerProcess, ours, with_baseline
from asgi_lab.load.wrk import run_wrk
from harness import baseline_line, markdown_table, measured, median, number, unique

APP = "asgi_lab.apps.hello:wsgi_app"
SYSCALLS = ("futex", "recvfrom", "sendto", "epoll_wait", "epoll_ctl", "pselect6", "select", "poll",
            "write", "read", "accept4", "close", "getrusage")


def context_switches(pid: int) -> tuple[int, int]:
    """(voluntary, involuntary) context switches of every thread of `pid` so far."""
    voluntary = involuntary = 0
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/status") as f:
                status = f.read()
        except FileNotFoundError:  # a thread that just ended
            continue
        voluntary += int(re.search(r"\nvoluntary_ctxt_switches:\s+(\d+)", status).group(1))
        involuntary += int(re.search(r"nonvoluntary_ctxt_switches:\s+(\d+)", status).group(1))
    return voluntary, involuntary


def measure(server: ServerProcess, args) -> dict:
    """One wrk run against `server`; its costs per request."""
    perf = None
    if args.perf:
        out = f"/tmp/wsgi-per-request-{os.getpid()}-{server.name}.perf"
        events = ["raw_syscalls:sys_enter"] + [f"syscalls:sys_enter_{name}" for name in SYSCALLS]
        perf = subprocess.Popen(["perf", "stat", "-x,", "-o", out, "-e", ",".join(events), "-p", str(server.pid)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(0.3)  # attached
    switches_before, cpu_before = context_switches(server.pid), server.cpu_seconds()
    result = run_wrk(server.url + "/", args.duration, args.connections, close=args.close)
    switches_after, cpu_after = context_switches(server.pid), server.cpu_seconds()
    n = max(result["requests"], 1)
    row = {"requests": result["requests"], "rps": result["requests_per_s"], "p99_ms": result["p99_ms"],
           "errors": result["errors"], "cpu_us": (cpu_after - cpu_before) / n * 1e6,
           "voluntary": (switches_after[0] - switches_before[0]) / n,
           "involuntary": (switches_after[1] - switches_before[1]) / n}
    if perf is not None:
        perf.send_signal(signal.SIGINT)
        perf.wait(10)
        with open(out) as f:
            for line in f:
                fields = line.strip().split(",")
                if len(fields) > 2 and fields[0].isdigit():
                    name = fields[2].split(":")[-1].replace("sys_enter_", "").replace("sys_enter", "syscalls")
                    row[name] = int(fields[0]) / n  # counted over a little more than the run
        os.unlink(out)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument("--close", action="store_true", help="Connection: close (a new connection per request)")
    parser.add_argument("--duration", type=float, default=3.0)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--servers", default="asgi_lab,waitress")
    parser.add_argument("--pin", metavar="CPUS", help="run every server on these CPUs only (taskset)")
    parser.add_argument("--perf", action="store_true", help="count system calls by name (perf stat)")
    parser.add_argument("--baseline", metavar="DIR", help=BASELINE_HELP)
    parser.add_argument("--json", metavar="FILE")
    args = parser.parse_args()

    specs = [ours("wsgi", "--threads", "{threads}", name="asgi_lab") if name == "asgi_lab" else SERVERS[name]
             for name in args.servers.split(",")]
    servers = [ServerProcess(spec, args.threads, app=APP, ready_path="/", pin=args.pin)
               for spec in with_baseline([spec for spec in specs if spec.available], args.baseline)]
    rows = []
    try:
        for server in servers:
            server.start()
            run_wrk(server.url + "/", 1, args.connections, close=args.close)  # warm up
        for number in range(args.rounds):  # interleaved, as in wsgi_hello.py
            for server in servers:
                row = {"server": server.name, "round": number, **measure(server, args)}
                rows.append(row)
                counts = "  ".join(f"{name} {row[name]:.3f}" for name in ("syscalls", *SYSCALLS)
                                   if row.get(name, 0) >= 0.001)
                print(f"{server.name:9} {row['rps']:6.0f} req/s  p99 {row['p99_ms']:5.1f} ms  "
                      f"CPU {row['cpu_us']:4.0f} us  context switches {row['voluntary']:.3f} voluntary "
                      f"{row['involuntary']:.3f} involuntary  {counts}  (per request)", flush=True)
    finally:
        for server in servers:
            server.stop(5)
    if args.json:
        write_result({"benchmark": "wsgi_per_request", "app": APP, "threads": args.threads,
                      "connections": args.connections, "close": args.close, "pin": args.pin,
                      "duration": args.duration, "rounds": args.rounds, "baseline": args.baseline,
                      "baseline_commit": git_commit(args.baseline) if args.baseline else None,
                      "runs": rows}, args.json, indent=1)
        print(f"wrote {args.json}")


HEADER = ["server", "req/s", "p99 ms", "CPU us/req", "voluntary switches/req",
          "involuntary switches/req", "system calls/req"]


def table_rows(runs: list[dict]) -> list[list[str]]:
    """One row per server: the median over its rounds of each cost per request."""
    rows = []
    for name in unique(run["server"] for run in runs):
        mine = [run for run in runs if run["server"] == name]
        syscalls = median(run.get("syscalls", float("nan")) for run in mine)  # with --perf only
        rows.append([name, number(median(r["rps"] for r in mine)), number(median(r["p99_ms"] for r in mine), 1),
                     number(median(r["cpu_us"] for r in mine)), number(median(r["voluntary"] for r in mine), 3),
                     number(median(r["involuntary"] for r in mine), 3), number(syscalls, 2)])
    return rows


def markdown(result: dict) -> str:
    """The costs per request of a result file, medians of its rounds, as Markdown."""
    mode = "`Connection: close`" if result["close"] else "keep-alive"
    pinned = f", servers pinned to CPU {result['pin']}" if result.get("pin") else ""
    return "\n".join([
        f"`{result['app']}`, {result['threads']} threads, {result['connections']} {mode} connections "
        f"from wrk{pinned}, median of {result.get('rounds') or len(result['runs'])} interleaved rounds "
        f"of {result['duration']:g} s.", "",
        markdown_table(HEADER, table_rows(result["runs"])), "",
        "Counts per request: context switches summed over the server's threads (voluntary: a "
        "thread blocked on a lock, the GIL or a socket; involuntary: preempted), system calls "
        "from `perf stat` ('-' without `--perf`)." + baseline_line(result), "",
        measured(result)])


if __name__ == "__main__":
    sys.exit(main())
