"""WebSocket echo: round trips/s with many clients, and the time of a 1 MiB round trip.

    python benchmarks/ws_echo.py [--rounds 8] [--seconds 2.5] [--clients 100] [--client-processes 1]

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
uvicorn-wsproto's.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import time

from wsproto import Connection, ConnectionType, WSConnection
from wsproto.events import AcceptConnection, Message, Request

PYTHON = sys.executable
APP = "asgi_lab.apps.echo:app"
MESSAGE = "0123456789abcdef"
BIG = 1024 * 1024


# -- the servers -------------------------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServerProcess:
    """A server in a subprocess on a known port; `start()` returns once it accepts connections."""

    def __init__(self, name: str, argv: list[str], port: int) -> None:
        self.name, self.argv, self.port = name, argv, port
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 20.0) -> None:
        self.proc = subprocess.Popen(self.argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode}: {self.argv}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                return
            except OSError:
                time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"{self.name} did not start listening on port {self.port}")

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/"

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def servers() -> list[ServerProcess]:
    # asgi_lab gets a fixed port too (rather than --port 0) so all servers start the same way.
    port = free_port()
    found = [ServerProcess("asgi_lab", [PYTHON, "-m", "asgi_lab", "asgi", APP, "--port", str(port),
                                        "--log-level", "warning", "--no-access-log"], port)]
    if importlib.util.find_spec("uvicorn"):
        port = free_port()
        found.append(ServerProcess("uvicorn-wsproto", [
            PYTHON, "-m", "uvicorn", APP, "--port", str(port), "--ws", "wsproto",
            "--log-level", "warning", "--no-access-log", "--lifespan", "off"], port))
    if importlib.util.find_spec("hypercorn"):
        port = free_port()
        found.append(ServerProcess("hypercorn", [
            PYTHON, "-m", "hypercorn", APP, "--bind", f"127.0.0.1:{port}",
            "--log-level", "warning"], port))
    return found


# -- the load client (runs in child processes) ----------------------------------------------

class EchoClient(asyncio.Protocol):
    """One load-generating connection: opening handshake by wsproto, then round trips.

    A load generator must be much cheaper than the servers it measures, or it measures itself
    (the `websockets` client costs more per message than the servers here). So the frames are
    built once, by wsproto: the masked text frame we send and the unmasked frame the echo must
    be, byte for byte. Each round trip is then one write and one comparison. Reusing one mask
    key is a load-generator shortcut (like wrk sending identical requests); the server cannot
    tell, and still unmasks, validates and echoes every frame.
    """

    def __init__(self, host: str, url_path: str, request_frame: bytes, echo_frame: bytes,
                 start_at: float, stop_at: float, done: asyncio.Future) -> None:
        self.handshake = WSConnection(ConnectionType.CLIENT)
        self.host, self.url_path = host, url_path
        self.request_frame, self.echo_frame = request_frame, echo_frame
        self.start_at, self.stop_at, self.done = start_at, stop_at, done
        self.open = False
        self.buffer = b""
        self.count = 0
        self.transport = None

    def connection_made(self, transport) -> None:
        self.transport = transport
        transport.write(self.handshake.send(Request(host=self.host, target=self.url_path)))

    def data_received(self, data: bytes) -> None:
        if not self.open:
            self.handshake.receive_data(data)
            for event in self.handshake.events():
                if not isinstance(event, AcceptConnection):
                    self.finish(RuntimeError(f"handshake refused: {event}"))
                    return
                self.open = True
                self.transport.write(self.request_frame)
            return
        buffer = self.buffer + data if self.buffer else data
        size = len(self.echo_frame)
        if len(buffer) < size:
            self.buffer = buffer
            return
        if buffer != self.echo_frame:  # one message in flight: exactly its echo must come back
            self.finish(AssertionError(f"unexpected bytes from the server: {buffer[:40]!r}"))
            return
        self.buffer = b""
        now = time.time()
        if now >= self.start_at:
            if now >= self.stop_at:
                self.finish(None)
                return
            self.count += 1
        self.transport.write(self.request_frame)

    def connection_lost(self, exc) -> None:
        if not self.done.done():
            self.finish(exc or ConnectionError("server closed the connection"))

    def finish(self, error) -> None:
        if not self.done.done():
            self.done.set_result(error)
        self.transport.close()


async def echo_clients(url: str, clients: int, start_at: float, stop_at: float) -> dict:
    """`clients` connections echoing MESSAGE; counts round trips between start_at and stop_at."""
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    request_frame = bytes(Connection(ConnectionType.CLIENT).send(Message(data=MESSAGE)))
    echo_frame = bytes(Connection(ConnectionType.SERVER).send(Message(data=MESSAGE)))
    loop = asyncio.get_running_loop()
    protocols = []
    for _ in range(clients):
        done = loop.create_future()
        _, protocol = await loop.create_connection(
            lambda: EchoClient(parts.netloc, parts.path or "/", request_frame, echo_frame,
                               start_at, stop_at, done), parts.hostname, parts.port)
        protocols.append(protocol)
    outcomes = await asyncio.gather(*(p.done for p in protocols))
    errors = [repr(e) for e in outcomes if e is not None]
    return {"round_trips": sum(p.count for p in protocols), "errors": len(errors),
            "first_error": errors[0] if errors else None}


async def big_round_trips(url: str, repeat: int) -> dict:
    """One connection; each round trip sends 1 MiB of binary and waits for all of it back."""
    from websockets.asyncio.client import connect

    payload = os.urandom(BIG)
    times = []
    async with connect(url, compression=None, max_size=None, ping_interval=None) as ws:
        await ws.send(payload)  # warm-up
        await ws.recv()
        for _ in range(repeat):
            start = time.perf_counter()
            await ws.send(payload)
            echo = await ws.recv()
            times.append(time.perf_counter() - start)
            if echo != payload:
                raise AssertionError("wrong 1 MiB echo")
    return {"times": times}


def client_main(argv: list[str]) -> None:
    mode, url = argv[0], argv[1]
    if mode == "echo":
        clients, start_at, stop_at = int(argv[2]), float(argv[3]), float(argv[4])
        result = asyncio.run(echo_clients(url, clients, start_at, stop_at))
    else:
        result = asyncio.run(big_round_trips(url, int(argv[2])))
    print(json.dumps(result))


def start_clients(commands: list[list[str]]) -> list[subprocess.Popen]:
    return [subprocess.Popen([PYTHON, __file__, "--client", *command], stdout=subprocess.PIPE,
                             text=True) for command in commands]


def collect(children: list[subprocess.Popen], timeout: float) -> list[dict]:
    return [json.loads(child.communicate(timeout=timeout)[0]) for child in children]


# -- measuring -------------------------------------------------------------------------------

def cpu_seconds(proc: ServerProcess) -> float:
    """CPU time used so far by the server process and its children (hypercorn forks a worker).

    Read from /proc/PID/task/TID/schedstat (nanoseconds) where Linux offers it: psutil's
    figures come in 10 ms clock ticks, too coarse for a few dozen 1 MiB round trips.
    """
    import psutil

    root = psutil.Process(proc.proc.pid)
    total = 0.0
    for p in [root, *root.children(recursive=True)]:
        try:
            tasks = os.listdir(f"/proc/{p.pid}/task")
            total += sum(int(open(f"/proc/{p.pid}/task/{tid}/schedstat").read().split()[0])
                         for tid in tasks) / 1e9
        except FileNotFoundError:  # not Linux, or the process just ended
            try:
                times = p.cpu_times()
                total += times.user + times.system
            except psutil.NoSuchProcess:
                pass
    return total


def measure_echo(server: ServerProcess, clients: int, seconds: float,
                 processes: int) -> tuple[float, float, int]:
    """Round trips/s, server CPU microseconds per round trip, and failed connections."""
    shares = [clients // processes + (1 if i < clients % processes else 0) for i in range(processes)]
    start_at = time.time() + 1.0 + clients * 0.005  # time for every client to connect
    stop_at = start_at + seconds
    commands = [["echo", server.url, str(n), str(start_at), str(stop_at)] for n in shares]
    children = start_clients(commands)
    time.sleep(max(0.0, start_at - time.time()))
    cpu_start = cpu_seconds(server)
    time.sleep(max(0.0, stop_at - time.time()))
    cpu = cpu_seconds(server) - cpu_start
    results = collect(children, timeout=60)
    round_trips = sum(r["round_trips"] for r in results)
    for r in results:
        if r.get("first_error"):
            print(f"  {server.name}: {r['errors']} client(s) failed, e.g. {r['first_error']}",
                  file=sys.stderr)
    return round_trips / seconds, cpu / max(round_trips, 1) * 1e6, sum(r["errors"] for r in results)


def measure_big(server: ServerProcess, repeat: int) -> tuple[float, float]:
    """Median 1 MiB round trip in ms, and the server's CPU ms per 1 MiB round trip."""
    cpu_start = cpu_seconds(server)
    [result] = collect(start_clients([["big", server.url, str(repeat)]]), timeout=120)
    cpu = cpu_seconds(server) - cpu_start
    return statistics.median(result["times"]) * 1000, cpu / (repeat + 1) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=2.5)
    parser.add_argument("--clients", type=int, default=100)
    parser.add_argument("--client-processes", type=int, default=1)
    parser.add_argument("--big-repeat", type=int, default=20, help="1 MiB round trips per round")
    args = parser.parse_args()

    procs = servers()
    print(f"WebSocket echo, {args.rounds} interleaved rounds: {args.clients} clients for "
          f"{args.seconds:g} s ({args.client_processes} client process(es)), then "
          f"{args.big_repeat} x 1 MiB round trips (`websockets` client)")
    metrics = ("rps", "cpu", "big", "big_cpu")
    results = {(p.name, m): [] for p in procs for m in metrics}
    errors = {p.name: 0 for p in procs}
    try:
        for proc in procs:
            proc.start()
        for r in range(args.rounds):
            # A B C, then C B A: a slow drift in the machine's load favours no one.
            for proc in procs if r % 2 == 0 else procs[::-1]:
                value, us, failed = measure_echo(proc, args.clients, args.seconds, args.client_processes)
                ms, cpu_ms = measure_big(proc, args.big_repeat)
                for metric, x in zip(metrics, (value, us, ms, cpu_ms)):
                    results[(proc.name, metric)].append(x)
                errors[proc.name] += failed
                print(f"  round {r + 1}/{args.rounds} {proc.name:<16} {value:>8.0f} round trips/s"
                      f" {us:6.1f} us CPU each   1 MiB {ms:6.2f} ms ({cpu_ms:.2f} ms CPU)",
                      file=sys.stderr, flush=True)
    finally:
        for proc in procs:
            proc.stop()

    reference = "uvicorn-wsproto" if any(p.name == "uvicorn-wsproto" for p in procs) else procs[0].name

    def ratio(name: str, metric: str) -> float:
        """Median over rounds of (server / reference) measured in the same round: the two ran
        seconds apart, so they saw much the same background load."""
        pairs = zip(results[(name, metric)], results[(reference, metric)])
        return statistics.median(a / b for a, b in pairs)

    def median(name: str, metric: str) -> float:
        return statistics.median(results[(name, metric)])

    print(f"\n{'server':<16} {'round trips/s':>13} {'ratio':>6} {'spread':>13} {'errors':>6}"
          f" {'CPU us/trip':>11} {'ratio':>6} {'1 MiB ms':>9} {'ratio':>6} {'CPU ms':>7} {'ratio':>6}")
    for proc in procs:
        name = proc.name
        spread = f"{min(results[(name, 'rps')]):.0f}-{max(results[(name, 'rps')]):.0f}"
        print(f"{name:<16} {median(name, 'rps'):>13.0f} {ratio(name, 'rps'):>5.2f}x {spread:>13} "
              f"{errors[name]:>6} {median(name, 'cpu'):>11.1f} {ratio(name, 'cpu'):>5.2f}x "
              f"{median(name, 'big'):>9.2f} {ratio(name, 'big'):>5.2f}x "
              f"{median(name, 'big_cpu'):>7.2f} {ratio(name, 'big_cpu'):>5.2f}x")
    print(f"(values are medians over rounds; each ratio is the median of the per-round ratios "
          f"against {reference}.\n CPU us/trip and CPU ms are the server's own CPU time per round "
          f"trip, the figures least\n disturbed by other load on a shared machine.)")
    if reference != procs[0].name:
        ours = procs[0].name
        print(f"\nasgi_lab / uvicorn-wsproto: round trips/s {ratio(ours, 'rps'):.2f}x (target >= 1.2x), "
              f"server CPU per round trip {ratio(ours, 'cpu'):.2f}x;\n"
              f"1 MiB round trip time {ratio(ours, 'big'):.2f}x (target <= 1.0x), "
              f"server CPU per 1 MiB round trip {ratio(ours, 'big_cpu'):.2f}x")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--client":
        client_main(sys.argv[2:])
    else:
        main()
