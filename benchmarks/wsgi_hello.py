"""Hello-world requests per second: our WSGI server against gunicorn (gthread) and waitress.

    .venv/bin/python benchmarks/wsgi_hello.py                  # defaults: 8 threads, 3 rounds
    .venv/bin/python benchmarks/wsgi_hello.py --rounds 5 --duration 4 --connections 32

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

To measure a change to our server, A/B in the same run: `--baseline DIR` adds a server
"baseline", our server imported from the `asgi_lab` package under DIR (say, an older
checkout: `git worktree add /tmp/base HEAD~1`), interleaved with the others.
"""

from __future__ import annotations

import argparse
import errno
import json
import os
import re
import selectors
import shutil
import socket
import statistics
import subprocess
import sys
import time

APP = "asgi_lab.apps.hello:wsgi_app"
HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


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


def run_wrk(port: int, keep_alive: bool, duration: float, connections: int, warmup: float) -> dict:
    header = [] if keep_alive else ["-H", "Connection: close"]
    out = subprocess.run(["wrk", "-t", "1", "-c", str(connections), "-d", f"{duration:.0f}s", *header,
                          f"http://127.0.0.1:{port}/"], capture_output=True, text=True, check=True).stdout
    requests = int(re.search(r"(\d+) requests in", out).group(1))
    seconds = float(re.search(r"requests in ([\d.]+)s", out).group(1))
    errors = sum(int(n) for n in re.findall(r"(?:connect|read|write|timeout) (\d+)", out))
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return {"requests": requests, "all_requests": requests,
            "errors": errors + (int(non2xx.group(1)) if non2xx else 0),
            "seconds": seconds, "client_cpu": float("nan")}


# -- the servers -----------------------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def server_commands(threads: int) -> dict[str, list[str] | None]:
    python = sys.executable
    bindir = os.path.dirname(python)

    def tool(name):
        path = os.path.join(bindir, name)
        return path if os.path.exists(path) else shutil.which(name)

    commands: dict[str, list[str] | None] = {
        "asgi_lab": [python, "-m", "asgi_lab", "wsgi", APP, "--port", "0", "--threads", str(threads),
                     "--log-level", "warning", "--no-access-log"],
        "gunicorn": None,
        "waitress": None,
    }
    if tool("gunicorn"):
        commands["gunicorn"] = [tool("gunicorn"), "-k", "gthread", "-w", "1", "--threads", str(threads),
                                "--log-level", "warning", "-b", "127.0.0.1:{port}", APP]
    if tool("waitress-serve"):
        commands["waitress"] = [tool("waitress-serve"), f"--threads={threads}", "--listen=127.0.0.1:{port}", APP]
    return commands


class Server:
    def __init__(self, name: str, command: list[str], cwd: str = ROOT) -> None:
        self.name = name
        self.port = free_port() if name not in ("asgi_lab", "baseline") else 0
        command = [part.replace("{port}", str(self.port)) for part in command]
        self.process = subprocess.Popen(command, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                        text=True)
        if name in ("asgi_lab", "baseline"):  # it prints the port it got
            line = self.process.stdout.readline()
            self.port = int(re.search(r":(\d+) ", line).group(1))
        self.wait_listening()

    def wait_listening(self, timeout: float = 15.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1) as sock:
                    sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                    if sock.recv(100).startswith(b"HTTP/1.1 200"):
                        return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError(f"{self.name} did not start")

    def cpu_seconds(self) -> float:
        try:
            import psutil
        except ImportError:
            return float("nan")
        process = psutil.Process(self.process.pid)
        total = 0.0
        for p in [process, *process.children(recursive=True)]:
            times = p.cpu_times()
            total += times.user + times.system
        return total

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()


def measure(server: Server, keep_alive: bool, args) -> dict:
    command = [sys.executable, __file__, "--client-port", str(server.port), "--duration", str(args.duration),
               "--connections", str(args.connections), "--warmup", str(args.warmup),
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
    parser.add_argument("--connections", type=int, default=16, help="concurrent client connections")
    parser.add_argument("--client", choices=("python", "wrk"), default="python")
    parser.add_argument("--modes", default="keep-alive,close")
    parser.add_argument("--servers", default="asgi_lab,gunicorn,waitress")
    parser.add_argument("--baseline", metavar="DIR", help="also run the asgi_lab package under DIR, as 'baseline'")
    parser.add_argument("--client-port", type=int, help=argparse.SUPPRESS)  # the load process
    parser.add_argument("--close", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.client_port:
        run = run_wrk if args.client == "wrk" else run_client
        print(json.dumps(run(args.client_port, not args.close, args.duration, args.connections, args.warmup)))
        return

    commands = server_commands(args.threads)
    wanted = args.servers.split(",")
    for name in wanted:
        if commands.get(name) is None:
            print(f"({name} is not installed: skipped)")
    servers = [Server(name, commands[name]) for name in wanted if commands.get(name)]
    if args.baseline:  # the same command, run where `-m asgi_lab` imports the baseline's package
        servers.insert(1, Server("baseline", commands["asgi_lab"], cwd=os.path.abspath(args.baseline)))
    modes = args.modes.split(",")
    results: dict[tuple[str, str], list[dict]] = {}
    try:
        for round_number in range(args.rounds):
            for mode in modes:
                for server in servers:
                    result = measure(server, mode == "keep-alive", args)
                    results.setdefault((server.name, mode), []).append(result)
                    print(f"round {round_number + 1}/{args.rounds} {mode:10} {server.name:9} "
                          f"{result['rps']:8.0f} req/s  errors {result['errors']}  "
                          f"server: {result['server_cpu']:4.0%} of a core, {result['cpu_us']:4.0f} us/request  "
                          f"client: {result['client_cpu']:.0%} of a core", flush=True)
    finally:
        for server in servers:
            server.stop()

    print(f"\nhello world, {args.threads} threads, {args.connections} connections, {args.client} client, "
          f"median of {args.rounds} rounds x {args.duration:.0f} s (min-max in brackets)\n")
    print(f"{'mode':11}{'server':10}{'req/s':>8}  {'range':>15}  {'ours / it':>9}   "
          f"{'CPU us/req':>10}  {'it / ours':>9}")
    for mode in modes:
        ours = results.get(("asgi_lab", mode))
        for server in servers:
            runs = results[(server.name, mode)]
            rates = [r["rps"] for r in runs]
            median = statistics.median(rates)
            cpu = statistics.median(r["cpu_us"] for r in runs)
            ratio = cpu_ratio = ""
            if ours and server.name != "asgi_lab":
                ratio = f"{statistics.median(r['rps'] for r in ours) / median:8.2f}x"
                cpu_ratio = f"{cpu / statistics.median(r['cpu_us'] for r in ours):8.2f}x"
            print(f"{mode:11}{server.name:10}{median:8.0f}  {f'[{min(rates):.0f}-{max(rates):.0f}]':>15}  "
                  f"{ratio:>9}   {cpu:10.0f}  {cpu_ratio:>9}")
    print("\nreq/s: higher is better; 'ours / it' > 1 means we served more.")
    print("CPU us/req: server CPU time (all its processes) per request, lower is better; 'it / ours' > 1")
    print("means it spent more. On a busy machine req/s swings with the scheduler; CPU per request less so.")
    print("targets (issue 4): req/s >= 1.0x waitress and >= 1.5x gunicorn gthread, both modes")


if __name__ == "__main__":
    main()
