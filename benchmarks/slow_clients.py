"""Slow clients against a 4-thread WSGI pool: is a normal GET still answered, and how fast?

    .venv/bin/python benchmarks/slow_clients.py                       # all attacks, all servers
    .venv/bin/python benchmarks/slow_clients.py --attacks non-readers --servers asgi_lab
    .venv/bin/python benchmarks/slow_clients.py --markdown benchmarks/results/slow-clients.json

Issue "HTTP security", section 3. Three attacks, each against a fresh server process with
default settings and 4 worker threads: our WSGI server, waitress (`--threads=4`) and gunicorn
(`-k gthread -w 1 --threads 4`), all serving `app` below:

    slow-bodies  50 connections each sending a 100-byte POST body one byte per second
    non-readers  8 clients that ask for a 16 MiB response and never read it
    slowloris    50 connections each sending a request head one byte per second

The attack starts, gets `--settle` seconds to take hold, then a normal client sends one
`GET /` at a time (a new connection each, `Connection: close`, 5 s timeout) for `--duration`
seconds while the attack goes on. The table shows that client's latency (p50, p99) and its
errors; a failed GET counts as slower than any answered one. Target: p99 under 1 s under every
attack. A connection the server closes is opened again, so the attack never lets up.
Loopback only; every loop is bounded by the duration.

`--json FILE` writes the raw samples with the commit, date, CPU model, cores and the exact
command; `--markdown FILE` prints the table of such a file as Markdown (for the README).
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
import threading
import time

# This file is also the app every server imports (a baseline checkout's too, which may not
# have the modules below): asgi_lab is imported inside the functions that run here only.
HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
APP = "slow_clients:app"   # this file, imported by each server (PYTHONPATH=benchmarks)
THREADS = 4
BIG = 16 * 1024 * 1024
PROBE_TIMEOUT = 5.0
ATTACKS = ("slow-bodies", "non-readers", "slowloris")
_big_body = b""


def app(environ, start_response):
    """The app every server runs: reads a POST body; `GET /?N` answers N bytes (default 2)."""
    global _big_body
    if environ["REQUEST_METHOD"] == "POST":
        environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))
    size = int(environ.get("QUERY_STRING") or 2)
    if size == BIG:
        _big_body = _big_body or b"x" * BIG   # made once: the attack measures writing, not this
        body = _big_body
    else:
        body = b"x" * size
    start_response("200 OK", [("Content-Type", "application/octet-stream"), ("Content-Length", str(size))])
    return [body]


# -- the servers --------------------------------------------------------------------------------

def server_process(name: str, baseline: str | None = None):
    """A server at its default settings but for the pool size (None if not installed).
    "baseline" is our server imported from the checkout `baseline` (an A/B of a change).
    gunicorn keeps its default timeouts (the experiments' gunicorn waits 300 s, not 30)."""
    from asgi_lab.experiments.servers import SERVERS, ServerProcess, ServerSpec, from_checkout, ours

    gunicorn = ServerSpec("gunicorn", ("gunicorn", "-k", "gthread", "-w", "1", "--threads", "{threads}",
                                       "--log-level", "info", "-b", "{host}:{port}", "{app}"),
                          interface="wsgi", requires="gunicorn")
    specs = {"asgi_lab": ours("wsgi", "--threads", "{threads}", name="asgi_lab"),
             "waitress": SERVERS["waitress"], "gunicorn": gunicorn}
    if name == "baseline":
        spec = from_checkout(specs["asgi_lab"], baseline)
    elif name in specs:
        spec = specs[name]
    else:
        raise ValueError(name)
    if not spec.available:
        return None
    env = {"PYTHONPATH": os.pathsep.join([HERE, ROOT, os.environ.get("PYTHONPATH", "")])}
    return ServerProcess(spec, THREADS, app=APP, ready_path="/", env=env)


# -- the attacks ----------------------------------------------------------------------------------

class Attack:
    """`count` connections, each sent `opening` at once, then one byte of `drip` per second.
    One thread drives them all; a connection the server closes is replaced. `read=False`:
    never read anything (the non-readers), so their responses stay unread."""

    def __init__(self, port: int, count: int, opening: bytes, drip: bytes, read: bool = True,
                 small_receive_buffer: bool = False) -> None:
        self.port, self.count, self.opening, self.drip = port, count, opening, drip
        self.read, self.small_receive_buffer = read, small_receive_buffer
        self.sockets: dict[socket.socket, int] = {}  # socket -> bytes of `drip` sent
        self.reopened = 0
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self.run, name="attack", daemon=True)

    def open(self) -> None:
        try:
            sock = socket.socket()
            if self.small_receive_buffer:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            sock.settimeout(2.0)
            sock.connect(("127.0.0.1", self.port))
            sock.sendall(self.opening)
            sock.setblocking(False)
            self.sockets[sock] = 0
        except OSError:
            sock.close()

    def replace(self, sock: socket.socket) -> None:
        del self.sockets[sock]
        sock.close()
        self.reopened += 1
        self.open()

    def run(self) -> None:
        for _ in range(self.count):
            self.open()
        while not self.stopping.wait(1.0):
            for sock in list(self.sockets):
                if self.read:  # the server answered (408...) or closed: a new attacker
                    try:
                        sock.recv(1, socket.MSG_PEEK)  # returns only once it answered or closed
                    except BlockingIOError:
                        pass
                    except OSError:
                        self.replace(sock)
                        continue
                    else:
                        self.replace(sock)
                        continue
                sent = self.sockets[sock]
                if sent >= len(self.drip):
                    continue
                try:
                    sock.send(self.drip[sent:sent + 1])
                    self.sockets[sock] = sent + 1
                except BlockingIOError:
                    pass
                except OSError:
                    self.replace(sock)
            while len(self.sockets) < self.count and not self.stopping.is_set():
                self.open()

    def __enter__(self) -> "Attack":
        self.thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self.stopping.set()
        self.thread.join(5)
        for sock in self.sockets:
            sock.close()


def attack(name: str, port: int) -> Attack:
    if name == "slow-bodies":
        head = b"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n"
        return Attack(port, 50, head, b"b" * 100)
    if name == "non-readers":
        request = b"GET /?%d HTTP/1.1\r\nHost: x\r\n\r\n" % BIG
        return Attack(port, 8, request, b"", read=False, small_receive_buffer=True)
    if name == "slowloris":
        return Attack(port, 50, b"G", b"ET / HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"s" * 1000 + b"\r\n\r\n")
    if name == "none":  # a control run
        return Attack(port, 0, b"", b"")
    raise ValueError(name)


# -- the normal client ----------------------------------------------------------------------------

def probe(port: int) -> tuple[float, str | None]:
    """One normal `GET /` on a new connection: (seconds, None) if answered 200, else the error."""
    started = time.monotonic()
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=PROBE_TIMEOUT) as sock:
            sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            data = b""
            while chunk := sock.recv(65536):
                data += chunk
                if time.monotonic() - started > PROBE_TIMEOUT:
                    raise TimeoutError("too slow")
    except OSError as exc:
        return time.monotonic() - started, type(exc).__name__
    if not data.startswith(b"HTTP/1.1 200") or not data.endswith(b"\r\n\r\nxx"):
        return time.monotonic() - started, f"bad response {data[:20]!r}"
    return time.monotonic() - started, None


def measure(server_name: str, attack_name: str, settle: float, duration: float,
            baseline: str | None = None) -> dict | None:
    """Start the server, start the attack, let it settle, then probe for `duration` seconds."""
    server = server_process(server_name, baseline)
    if server is None:
        return None
    server.start()
    try:
        if probe(server.port)[1] is not None:
            raise RuntimeError(f"{server_name} does not answer before the attack")
        with attack(attack_name, server.port) as running:
            time.sleep(settle)
            samples = []
            started = time.monotonic()
            while time.monotonic() - started < duration:
                at = time.monotonic() - started
                seconds, error = probe(server.port)
                samples.append({"at": round(at, 3), "seconds": round(seconds, 5), "error": error})
                time.sleep(max(0.0, 0.1 - seconds))  # about ten GETs a second while healthy
            reopened = running.reopened
    finally:
        server.stop()
    return {"server": server_name, "attack": attack_name, "samples": samples,
            "attack_connections_reopened": reopened, **summary(samples)}


def summary(samples: list[dict]) -> dict:
    """p50 and p99 of the GETs' latency in ms; a failed GET counts as infinitely slow (None)."""
    latencies = sorted(float("inf") if s["error"] else s["seconds"] for s in samples)

    def pct(q: float) -> float | None:
        value = latencies[min(len(latencies) - 1, int(q * len(latencies)))]
        return None if value == float("inf") else round(value * 1000, 1)

    return {"gets": len(samples), "errors": sum(1 for s in samples if s["error"]),
            "p50_ms": pct(0.50), "p99_ms": pct(0.99),
            "max_ms": pct(1.0)}


# -- the report -------------------------------------------------------------------------------------

def ms(value: float | None) -> str:
    return "failed" if value is None else f"{value:,.0f}" if value >= 10 else f"{value:.1f}"


def table_rows(runs: list[dict]) -> list[list[str]]:
    """One row per (attack, server), its percentiles computed again from the run's samples."""
    rows = []
    for run in runs:
        s = summary(run["samples"])
        met = s["p99_ms"] is not None and s["p99_ms"] < 1000 and not s["errors"]
        rows.append([run["attack"], run["server"], ms(s["p50_ms"]), ms(s["p99_ms"]),
                     f"{s['errors']}/{s['gets']}", "yes" if met else "no"])
    return rows


HEADER = ["attack", "server", "GET p50 ms", "GET p99 ms", "errors", "p99 < 1 s"]


def print_table(runs: list[dict]) -> None:
    widths = [max(len(h), *(len(row[i]) for row in table_rows(runs))) for i, h in enumerate(HEADER)]
    print("  ".join(h.ljust(w) for h, w in zip(HEADER, widths)))
    for row in table_rows(runs):
        print("  ".join(cell.ljust(w) if i < 2 else cell.rjust(w) for i, (cell, w) in enumerate(zip(row, widths))))


def markdown(result: dict) -> str:
    """The table of a result file, as Markdown, with where it was measured."""
    lines = ["| " + " | ".join(HEADER) + " |", "|" + "|".join(["---"] * 2 + ["---:"] * 4) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in table_rows(result["runs"])]
    m = result["machine"]
    lines.append("")
    lines.append(f"{result['threads']} threads, default settings; {result['duration']:g} s of GETs per attack "
                 f"('failed': that share of GETs got no answer within {result['probe_timeout']:g} s); "
                 f"measured {m['date'][:10]} on {m['cpu_model']} ({m['cores']} cores, shared), "
                 f"commit {(m['commit'] or '?')[:9]}, by `{result['command']}`.")
    if result.get("baseline_commit"):
        lines[-1] += (f" `baseline` is our server at commit {result['baseline_commit'][:9]}, before finished"
                      " responses were handed over to the acceptor.")
    return "\n".join(lines)


def main() -> None:
    from asgi_lab.experiments.results import git_commit, write_result
    from asgi_lab.experiments.servers import BASELINE_HELP

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--attacks", default=",".join(ATTACKS), help=f"some of {', '.join(ATTACKS)}, none")
    parser.add_argument("--servers", default="asgi_lab,waitress,gunicorn")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds of normal GETs per attack")
    parser.add_argument("--settle", type=float, default=2.0, help="seconds the attack runs before the GETs")
    parser.add_argument("--baseline", metavar="DIR", help=BASELINE_HELP)
    parser.add_argument("--json", metavar="FILE", help="write the raw samples and the machine here")
    parser.add_argument("--markdown", metavar="FILE", help="print the table of a result FILE as Markdown, and stop")
    args = parser.parse_args()
    if args.markdown:
        with open(args.markdown) as f:
            print(markdown(json.load(f)))
        return

    runs = []
    servers = args.servers.split(",")
    if args.baseline:
        servers.insert(1, "baseline")
    for attack_name in args.attacks.split(","):
        for server_name in servers:
            run = measure(server_name, attack_name, args.settle, args.duration, args.baseline)
            if run is None:
                print(f"({server_name} is not installed: skipped)", file=sys.stderr)
                continue
            runs.append(run)
            print(f"{attack_name:12} {server_name:9} p50 {ms(run['p50_ms']):>7} ms  p99 {ms(run['p99_ms']):>7} ms  "
                  f"errors {run['errors']}/{run['gets']}", file=sys.stderr, flush=True)
    print(f"\nA normal client's GET under each slow-client attack, {THREADS} worker threads, default settings\n")
    print_table(runs)
    print(f"\n(a GET that failed or took over {PROBE_TIMEOUT:g} s counts as slower than any answered one;"
          " 'failed': at least that share failed)")
    if args.json:
        write_result({"benchmark": "slow_clients", "threads": THREADS, "duration": args.duration,
                      "settle": args.settle, "probe_timeout": PROBE_TIMEOUT, "runs": runs,
                      "baseline_commit": git_commit(args.baseline) if args.baseline else None},
                     args.json, indent=1)
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
