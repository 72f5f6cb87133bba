"""WebSocket echo: round trips/s with many clients, and the time of a 1 MiB round trip.

    python benchmarks/ws_echo.py [--rounds 8] [--seconds 2.5] [--clients 100] [--baseline DIR] [--json FILE]

Every server runs in its own process with access logs off, serving the same app
(`asgi_lab.apps.echo:app`). uvicorn runs with `--ws wsproto`, the library we use too, so the
difference is the server around the library; hypercorn (also on wsproto) joins when installed.

Load comes from separate processes. For round trips/s, 100 connections (`EchoClient`, asyncio
with frames built once by wsproto, so the client costs far less than any server) each send
a 16-byte text message, wait for its echo, and send the next. For the 1 MiB round trip, one
connection of the `websockets` library sends 1 MiB of binary and times the echo.

Servers are measured in interleaved rounds (A B C, then C B A, ...) because the machine is
shared and noisy. Besides round trips/s and times, the table shows each server's own CPU time
per round trip, read from the kernel: the figure other load on the machine disturbs least.
Issue targets: >= 1.2x uvicorn-wsproto round trips/s, and a 1 MiB round trip no slower than
uvicorn-wsproto's. `markdown(result)` is the same table, from a `--json` file's rounds.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import time

from harness import (baseline_line, markdown_table, measured, median, number, paired_median, ratio,
                     spread, text_table, unique)
from wsproto import Connection, ConnectionType, WSConnection
from wsproto.events import AcceptConnection, Message, Request

from asgi_lab.experiments.results import git_commit, write_result
from asgi_lab.experiments.servers import (BASELINE_HELP, SERVERS, ServerProcess, ours,
                                          with_baseline)

PYTHON = sys.executable
APP = "asgi_lab.apps.echo:app"
MESSAGE = "0123456789abcdef"
BIG = 1024 * 1024


# -- the servers -------------------------------------------------------------------------------

def servers(baseline: str | None = None) -> list[ServerProcess]:
    """Ours, uvicorn on wsproto (no keep-alive pings: ours are off by default too), hypercorn.
    An echo app has no HTTP route: ready as soon as the port accepts."""
    specs = [ours("asgi", name="asgi_lab")]
    if SERVERS["uvicorn"].available:
        specs.append(SERVERS["uvicorn"].variant("uvicorn-wsproto", "--ws", "wsproto",
                                                "--ws-ping-interval", "0"))
    if SERVERS["hypercorn"].available:
        specs.append(SERVERS["hypercorn"])
    return [ServerProcess(spec, app=APP, ready_path=None) for spec in with_baseline(specs, baseline)]


# -- the load client (one process per server, kept running across rounds) -------------------------

class EchoClient(asyncio.Protocol):
    """One load-generating connection: opening handshake by wsproto, then round trips on demand.

    A load generator must be much cheaper than the servers it measures, or it measures itself
    (the `websockets` client costs more per message than the servers here). So the frames are
    built once, by wsproto: the masked text frame we send and the unmasked frame the echo must
    be, byte for byte. Each round trip is then one write and one comparison. Reusing one mask
    key is a load-generator shortcut (like wrk sending identical requests); the server cannot
    tell, and still unmasks, validates and echoes every frame.
    """

    def __init__(self, host: str, url_path: str, request_frame: bytes, echo_frame: bytes) -> None:
        loop = asyncio.get_running_loop()
        self.handshake = WSConnection(ConnectionType.CLIENT)
        self.host, self.url_path = host, url_path
        self.request_frame, self.echo_frame = request_frame, echo_frame
        self.opened = loop.create_future()
        self.stopped = loop.create_future()
        self.buffer = b""
        self.deadline = 0.0
        self.count = 0
        self.transport = None

    def connection_made(self, transport) -> None:
        self.transport = transport
        transport.write(self.handshake.send(Request(host=self.host, target=self.url_path)))

    def run(self, deadline: float) -> asyncio.Future:
        """Echo until time.monotonic() passes `deadline`; the future resolves when stopped."""
        self.deadline, self.count = deadline, 0
        self.stopped = asyncio.get_running_loop().create_future()
        self.transport.write(self.request_frame)
        return self.stopped

    def data_received(self, data: bytes) -> None:
        if not self.opened.done():
            self.handshake.receive_data(data)
            for event in self.handshake.events():
                if isinstance(event, AcceptConnection):
                    self.opened.set_result(None)
                else:
                    self.opened.set_exception(RuntimeError(f"handshake refused: {event}"))
            return
        buffer = self.buffer + data if self.buffer else data
        if len(buffer) < len(self.echo_frame):
            self.buffer = buffer
            return
        self.buffer = b""
        if buffer != self.echo_frame:  # one message in flight: exactly its echo must come back
            self.fail(AssertionError(f"unexpected bytes from the server: {buffer[:40]!r}"))
            return
        self.count += 1
        if time.monotonic() < self.deadline:
            self.transport.write(self.request_frame)
        elif not self.stopped.done():
            self.stopped.set_result(None)

    def connection_lost(self, exc) -> None:
        self.fail(exc or ConnectionError("the server closed the connection"))

    def fail(self, error: BaseException) -> None:
        for future in (self.opened, self.stopped):
            if not future.done():
                future.set_exception(error)
        self.transport.close()


async def load_process(url: str, clients: int) -> None:
    """Connect, then obey commands on stdin, one JSON answer per line on stdout:
    `echo SECONDS` (all clients echo for that long), `big REPEAT` (1 MiB round trips), `quit`."""
    from urllib.parse import urlsplit

    from websockets.asyncio.client import connect

    loop = asyncio.get_running_loop()
    parts = urlsplit(url)
    request_frame = bytes(Connection(ConnectionType.CLIENT).send(Message(data=MESSAGE)))
    echo_frame = bytes(Connection(ConnectionType.SERVER).send(Message(data=MESSAGE)))
    protocols = []
    for _ in range(clients):
        _, protocol = await loop.create_connection(
            lambda: EchoClient(parts.netloc, parts.path or "/", request_frame, echo_frame),
            parts.hostname, parts.port)
        protocols.append(protocol)
    await asyncio.gather(*(p.opened for p in protocols))
    big = await connect(url, compression=None, max_size=None, ping_interval=None)
    payload = os.urandom(BIG)
    print(json.dumps({"ready": True}), flush=True)

    while True:
        command, _, argument = (await loop.run_in_executor(None, sys.stdin.readline)).strip().partition(" ")
        if command == "echo":
            started = time.monotonic()
            outcomes = await asyncio.gather(*(p.run(started + float(argument)) for p in protocols),
                                            return_exceptions=True)
            seconds = time.monotonic() - started
            errors = [repr(e) for e in outcomes if e is not None]
            protocols = [p for p, e in zip(protocols, outcomes) if e is None]
            answer = {"round_trips": sum(p.count for p in protocols), "seconds": seconds,
                      "errors": len(errors), "first_error": errors[0] if errors else None}
        elif command == "big":
            times = []
            for _ in range(int(argument)):
                started = time.perf_counter()
                await big.send(payload)
                echo = await big.recv()
                times.append(time.perf_counter() - started)
                if echo != payload:
                    raise AssertionError("wrong 1 MiB echo")
            answer = {"times": times}
        else:
            await big.close()
            for p in protocols:
                p.transport.close()
            return
        print(json.dumps(answer), flush=True)


class LoadProcess:
    """The parent's handle on one `load_process` child."""

    def __init__(self, server: ServerProcess, clients: int) -> None:
        self.proc = subprocess.Popen([PYTHON, __file__, "--client", f"ws://127.0.0.1:{server.port}/",
                                      str(clients)],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        ready = self.proc.stdout.readline()
        if not ready:
            raise RuntimeError(f"the load client for {server.name} failed to connect")

    def ask(self, command: str) -> dict:
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()
        answer = self.proc.stdout.readline()
        if not answer:
            raise RuntimeError(f"the load client died during {command!r}")
        return json.loads(answer)

    def close(self) -> None:
        try:
            self.proc.stdin.write("quit\n")
            self.proc.stdin.close()
            self.proc.wait(10)
        except (OSError, subprocess.TimeoutExpired):
            self.proc.kill()


# -- measuring -------------------------------------------------------------------------------

def measure(server: ServerProcess, load: LoadProcess, seconds: float, repeat: int) -> dict:
    """One slot of one round: round trips/s and the server's CPU per round trip, then the
    median 1 MiB round trip and the server's CPU per 1 MiB round trip."""
    cpu = server.cpu_seconds()
    echo = load.ask(f"echo {seconds}")
    echo_cpu = server.cpu_seconds() - cpu
    if echo["errors"]:
        print(f"  {server.name}: {echo['errors']} client(s) failed, e.g. {echo['first_error']}",
              file=sys.stderr)
    cpu = server.cpu_seconds()
    big = load.ask(f"big {repeat}")
    big_cpu = server.cpu_seconds() - cpu
    trips = max(echo["round_trips"], 1)
    return {"rps": echo["round_trips"] / echo["seconds"], "cpu": echo_cpu / trips * 1e6,
            "big": statistics.median(big["times"]) * 1000, "big_cpu": big_cpu / repeat * 1000,
            "errors": echo["errors"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--seconds", type=float, default=1.0, help="echo time per server per round")
    parser.add_argument("--clients", type=int, default=100)
    parser.add_argument("--big-repeat", type=int, default=20, help="1 MiB round trips per round")
    parser.add_argument("--baseline", metavar="DIR", help=BASELINE_HELP)
    parser.add_argument("--json", metavar="FILE", help="write the per-round numbers and the machine here")
    args = parser.parse_args()

    procs = servers(args.baseline)
    print(f"WebSocket echo, {args.rounds} interleaved rounds: {args.clients} clients echoing for "
          f"{args.seconds:g} s, then {args.big_repeat} x 1 MiB round trips, on each server")
    metrics = ("rps", "cpu", "big", "big_cpu")
    results = {(p.name, m): [] for p in procs for m in metrics}
    errors = {p.name: 0 for p in procs}
    loads: dict[str, LoadProcess] = {}
    try:
        for proc in procs:
            proc.start()
            loads[proc.name] = LoadProcess(proc, args.clients)
        for proc in procs:  # warm-up
            measure(proc, loads[proc.name], 0.5, 2)
        for r in range(args.rounds):
            # A B C, then C B A: a slow drift in the machine's load favours no one.
            for proc in procs if r % 2 == 0 else procs[::-1]:
                m = measure(proc, loads[proc.name], args.seconds, args.big_repeat)
                for metric in metrics:
                    results[(proc.name, metric)].append(m[metric])
                errors[proc.name] += m["errors"]
                print(f"  round {r + 1}/{args.rounds} {proc.name:<16} {m['rps']:>8.0f} round trips/s"
                      f" {m['cpu']:6.1f} us CPU each   1 MiB {m['big']:6.2f} ms ({m['big_cpu']:.2f} ms CPU)",
                      file=sys.stderr, flush=True)
    finally:
        for load in loads.values():
            load.close()
        for proc in procs:
            proc.stop()

    result = {"benchmark": "ws_echo", "app": APP, "rounds": args.rounds,
              "seconds": args.seconds, "clients": args.clients,
              "big_repeat": args.big_repeat, "baseline": args.baseline,
              "baseline_commit": git_commit(args.baseline) if args.baseline else None,
              "errors": errors,
              "runs": [{"server": name, "metric": metric, "values": values}
                       for (name, metric), values in results.items()]}
    print()
    print(text_table(HEADER, table_rows(result)))
    print(f"({note(result)})")
    for line in ratio_lines(result):
        print(line)
    if args.json:
        write_result(result, args.json, indent=1)
        print(f"wrote {args.json}")


REFERENCE = "uvicorn-wsproto"
HEADER = ["server", "round trips/s", "ratio", "min-max", "errors", "CPU us/trip", "ratio",
          "1 MiB ms", "ratio", "CPU ms", "ratio"]


def values_of(result: dict) -> dict[tuple[str, str], list[float]]:
    """{(server, metric): per-round values}, metrics rps, cpu, big, big_cpu."""
    return {(run["server"], run["metric"]): run["values"] for run in result["runs"]}


def reference_of(result: dict) -> str:
    names = unique(run["server"] for run in result["runs"])
    return REFERENCE if REFERENCE in names else names[0]


def table_rows(result: dict) -> list[list[str]]:
    """One row per server: medians over the rounds, and each ratio the median of the per-round
    ratios against the reference (the two ran a second or two apart, under much the same load)."""
    values, reference = values_of(result), reference_of(result)
    rows = []
    for name in unique(run["server"] for run in result["runs"]):
        def cells(metric: str, digits: int) -> list[str]:
            return [number(median(values[(name, metric)]), digits),
                    ratio(paired_median(values[(name, metric)], values[(reference, metric)]))]

        rps, cpu, big, big_cpu = cells("rps", 0), cells("cpu", 1), cells("big", 2), cells("big_cpu", 2)
        rows.append([name, *rps, spread(values[(name, "rps")]), str(result["errors"].get(name, 0)),
                     *cpu, *big, *big_cpu])
    return rows


def note(result: dict) -> str:
    return (f"Values are medians over rounds; each ratio is the median of the per-round ratios against "
            f"{reference_of(result)}. CPU us/trip and CPU ms are the server's own CPU time per round trip "
            "(per 1 MiB round trip), the figures least disturbed by other load on a shared machine; "
            "lower is better for them and for 1 MiB ms, higher for round trips/s.")


def ratio_lines(result: dict) -> list[str]:
    values = values_of(result)
    names = unique(run["server"] for run in result["runs"])

    def paired(name: str, other: str, metric: str) -> float:
        return paired_median(values[(name, metric)], values[(other, metric)])

    lines = []
    if REFERENCE in names:
        lines.append(f"asgi_lab / {REFERENCE}: round trips/s {ratio(paired('asgi_lab', REFERENCE, 'rps'))} "
                     f"(target >= 1.2x), server CPU per round trip {ratio(paired('asgi_lab', REFERENCE, 'cpu'))}; "
                     f"1 MiB round trip time {ratio(paired('asgi_lab', REFERENCE, 'big'))} (target <= 1.0x), "
                     f"server CPU per 1 MiB round trip {ratio(paired('asgi_lab', REFERENCE, 'big_cpu'))}")
    if "baseline" in names:
        lines.append(f"asgi_lab / baseline (median of per-round ratios): round trips/s "
                     f"{ratio(paired('asgi_lab', 'baseline', 'rps'), 3)}, server CPU per round trip "
                     f"{ratio(paired('asgi_lab', 'baseline', 'cpu'), 3)}, 1 MiB time "
                     f"{ratio(paired('asgi_lab', 'baseline', 'big'), 3)}")
    return lines


def markdown(result: dict) -> str:
    """The printed table and ratios of a result file, from its per-round values, as Markdown."""
    return "\n".join([
        f"WebSocket echo (`{result['app']}`), {result['rounds']} interleaved rounds: {result['clients']} "
        f"clients echoing 16-byte messages for {result['seconds']:g} s, then {result['big_repeat']} x 1 MiB "
        "round trips, on each server.", "",
        markdown_table(HEADER, table_rows(result)), "",
        note(result), "",
        *(f"- {line}" for line in ratio_lines(result)), "",
        measured(result) + baseline_line(result)])


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--client":
        asyncio.run(load_process(sys.argv[2], int(sys.argv[3])))
    else:
        main()
