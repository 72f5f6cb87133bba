"""Soak: hours of a classroom's traffic in a minute or two, then check nothing was left behind.

    python benchmarks/soak.py                       # both servers, 100,000 requests each
    python benchmarks/soak.py --server asgi --requests 20000
    python benchmarks/soak.py --server wsgi --seconds 60
    python benchmarks/soak.py --server asgi --sigterm   # end with SIGTERM under full load
    python benchmarks/soak.py --server wsgi --pause 1.3 # freeze the server for 1.3 s halfway

Each server runs as a subprocess (`python -m asgi_lab asgi|wsgi asgi_lab.apps.soak:...`) and
gets mixed traffic from asyncio clients in this process, all at once:

    keep-alive       many small requests on one connection (the fast path)
    new-connection   one request per connection, "Connection: close"
    echo             POST bodies of a few KiB, read back
    stream           chunked responses of 20 x 4 KiB
    sse-leaver       reads a few Server-Sent Events, then drops the connection
    slow-reader      a 1 MiB response read 64 KiB at a time, with pauses
    ws-dropper       (ASGI) a WebSocket: a few echoes, then the TCP connection is cut
                     without a Close frame

The server process is measured from outside (psutil: open file descriptors, threads, TCP
connections, RSS) and, for ASGI, from inside through the soak app's /debug route (asyncio
tasks and scheduled timers). Three moments: before the traffic, when it stops, and after
the idle timeout has passed. "Back to idle" means: no TCP connection left, and fds, threads,
tasks and timers back to their value before the traffic. RSS is reported, and its growth over
the second half of the run shows whether memory keeps climbing (a leak) or has plateaued.

With --sigterm the run ends with SIGTERM while all clients are busy: the report says how long
the server took to exit, its exit code, whether lifespan shutdown ran, and what the clients saw.

With --pause S the server process is frozen (SIGSTOP) for S seconds halfway through, as a
swapping or overloaded machine, a long GC pause or a paused VM would freeze it. The clients
keep sending meanwhile. With S above the idle timeout, every connection looks idle to the
server when it wakes up, though most have a request waiting: the idle timeout must close only
the truly idle ones (a request already sent must be answered, not reset).

With --tracemalloc the server runs in this process instead, and the report is what Python
allocations its code still holds after the run (a leak grows it; allocator arenas do not).

`--json FILE` writes each server's raw figures (requests by client kind, errors, holdings at the
three moments, RSS checkpoints, shutdown); `markdown(result)` renders their tables from them.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import socket
import sys
import time
from collections import Counter
from dataclasses import dataclass, field

import h11
import psutil
import wsproto
from wsproto.events import AcceptConnection, BytesMessage, CloseConnection, Request, TextMessage

from harness import markdown_table, measured, number, text_table

from asgi_lab.experiments.servers import ServerProcess, ours

KEEP_ALIVE = 1.0  # the server's idle timeout in this run (seconds): "idle" comes soon after
SOAK_APPS = {"asgi": "asgi_lab.apps.soak:app", "wsgi": "asgi_lab.apps.soak:wsgi_app"}


# -- the server under test --------------------------------------------------------------------------


def start_server(kind: str, threads: int, grace: float, keep_alive: float = KEEP_ALIVE) -> ServerProcess:
    """Our `kind` server on the soak app, in a process of its own (the package's launcher)."""
    options = ["--timeout-keep-alive", str(keep_alive), "--timeout-graceful-shutdown", str(grace),
               *(["--threads", str(threads)] if kind == "wsgi" else [])]
    return ServerProcess(ours(kind, *options), threads, app=SOAK_APPS[kind], ready_path="/").start()


def holdings(server) -> dict:
    """What the server process holds right now (`server.name` is its kind, asgi or wsgi)."""
    connections = [c for c in server.ps.net_connections(kind="tcp") if c.status != psutil.CONN_LISTEN]
    held = {"fds": server.ps.num_fds(), "threads": server.ps.num_threads(),
            "tcp": len(connections), "rss_mib": server.ps.memory_info().rss / 2**20}
    if server.name == "asgi":
        debug = json.loads(blocking_get(server.address, "/debug"))
        held["tasks"], held["timers"] = debug["tasks"], debug["timers"]
    return held


def blocking_get(address, target: str) -> bytes:
    """One request, on its own connection (used for /debug, outside the measured traffic)."""
    with socket.create_connection(address, timeout=10) as sock:
        sock.sendall(f"GET {target} HTTP/1.1\r\nhost: soak\r\nconnection: close\r\n\r\n".encode())
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    return data.partition(b"\r\n\r\n")[2]


# -- the clients ------------------------------------------------------------------------------------


@dataclass
class Stats:
    target: int
    deadline: float
    served: Counter = field(default_factory=Counter)
    errors: Counter = field(default_factory=Counter)
    stopping: bool = False
    sigterm_at: float | None = None
    paused_at: int | None = None  # --pause: the request count when the server was frozen
    at_sigterm: Counter = field(default_factory=Counter)  # (client, outcome) of work in flight

    def in_flight(self, client: str, since: float, outcome: str) -> None:
        """Record what became of a request (or stream, or WebSocket) begun before SIGTERM."""
        if self.sigterm_at is not None and since < self.sigterm_at:
            self.at_sigterm[client, outcome] += 1

    @property
    def total(self) -> int:
        return sum(self.served.values())

    def more(self) -> bool:
        return not self.stopping and self.total < self.target and time.monotonic() < self.deadline


class HTTPClient:
    """An HTTP/1.1 connection driven by h11 (the client side): no hand-parsing here either."""

    def __init__(self, reader, writer, stats: Stats | None = None, name: str = "") -> None:
        self.reader, self.writer = reader, writer
        self.conn = h11.Connection(h11.CLIENT)
        self.stats, self.name = stats, name

    @classmethod
    async def open(cls, address, stats: Stats | None = None, name: str = "") -> "HTTPClient":
        return cls(*await asyncio.open_connection(*address), stats, name)

    async def request(self, method: str, target: str, body: bytes = b"", close: bool = False,
                      read_pause: float = 0.0) -> tuple[int, int]:
        """Send a request, read the whole response: (status, body size)."""
        sent = time.monotonic()
        try:
            answer = await self._request(method, target, body, close, read_pause)
        except (OSError, ConnectionError, h11.ProtocolError):
            if self.stats is not None:
                self.stats.in_flight(self.name, sent, "cut")
            raise
        if self.stats is not None:
            self.stats.in_flight(self.name, sent, "completed")
        return answer

    async def _request(self, method, target, body, close, read_pause) -> tuple[int, int]:
        headers = [("host", "soak")]
        if body:
            headers.append(("content-length", str(len(body))))
        if close:
            headers.append(("connection", "close"))
        self.writer.write(self.conn.send(h11.Request(method=method, target=target, headers=headers)) +
                          (self.conn.send(h11.Data(data=body)) if body else b"") +
                          self.conn.send(h11.EndOfMessage()))
        status, size = 0, 0
        while True:
            event = await self.next_event(read_pause)
            if isinstance(event, h11.Response):
                status = event.status_code
            elif isinstance(event, h11.Data):
                size += len(event.data)
            elif isinstance(event, h11.EndOfMessage):
                if self.conn.our_state is h11.DONE and self.conn.their_state is h11.DONE:
                    self.conn.start_next_cycle()
                return status, size
            elif isinstance(event, h11.ConnectionClosed):
                raise ConnectionError("closed before the response completed")

    async def next_event(self, read_pause: float = 0.0, read_size: int = 65536):
        while True:
            event = self.conn.next_event()
            if event is not h11.NEED_DATA:
                return event
            if read_pause:
                await asyncio.sleep(read_pause)
            self.conn.receive_data(await self.reader.read(read_size))

    def abort(self) -> None:
        self.writer.transport.abort()

    async def close(self) -> None:
        self.writer.close()
        try:
            await self.writer.wait_closed()
        except OSError:
            pass


async def on_connections(address, stats: Stats, name: str, per_connection: int, request) -> None:
    """Open a connection, send up to `per_connection` requests on it one after the other
    (`await request(client)` sends one and checks the answer), close it; again and again."""
    while stats.more():
        client = await HTTPClient.open(address, stats, name)
        try:
            for _ in range(per_connection):
                if not stats.more():
                    break
                await request(client)
                stats.served[name] += 1
        finally:
            await client.close()


async def keep_alive(address, stats: Stats) -> None:
    async def get(client):
        status, size = await client.request("GET", "/")
        assert (status, size) == (200, 2), (status, size)

    await on_connections(address, stats, "keep-alive", 200, get)


async def new_connection(address, stats: Stats) -> None:
    async def get_and_close(client):
        status, _ = await client.request("GET", "/", close=True)
        assert status == 200

    await on_connections(address, stats, "new-connection", 1, get_and_close)


async def echo(address, stats: Stats) -> None:
    async def post(client):
        body = os.urandom(random.randint(1, 8192))
        status, size = await client.request("POST", "/echo", body)
        assert status == 200 and size == len(str(len(body)))

    await on_connections(address, stats, "echo", 50, post)


async def stream(address, stats: Stats) -> None:
    async def chunked(client):
        status, size = await client.request("GET", "/stream?chunks=20&size=4096")
        assert (status, size) == (200, 20 * 4096)

    await on_connections(address, stats, "stream", 20, chunked)


async def sse_leaver(address, stats: Stats) -> None:
    """Reads a few events from an endless stream, then drops the connection (no goodbye)."""
    while stats.more():
        client = await HTTPClient.open(address)
        client.writer.write(client.conn.send(h11.Request(
            method="GET", target="/sse?interval=0.005", headers=[("host", "soak")])) +
            client.conn.send(h11.EndOfMessage()))
        events, wanted, began = 0, random.randint(1, 10), time.monotonic()
        while events < wanted:
            try:
                event = await client.next_event()
            except (OSError, h11.ProtocolError):
                event = None
            if isinstance(event, h11.Data):
                events += event.data.count(b"\n\n")
            elif not isinstance(event, h11.Response):
                stats.in_flight("sse-leaver", began, "ended by the server")
                raise ConnectionError(f"SSE stream ended: {event!r}")
        client.abort() if random.random() < 0.5 else await client.close()
        stats.served["sse-leaver"] += 1


async def slow_reader(address, stats: Stats) -> None:
    async def read_slowly(client):
        status, size = await client.request("GET", f"/big?size={1024 * 1024}", read_pause=0.002)
        assert (status, size) == (200, 1024 * 1024)

    await on_connections(address, stats, "slow-reader", 1, read_slowly)


async def ws_dropper(address, stats: Stats) -> None:
    """A WebSocket that echoes a few messages, then vanishes without a Close frame."""
    while stats.more():
        reader, writer = await asyncio.open_connection(*address)
        ws = wsproto.WSConnection(wsproto.ConnectionType.CLIENT)
        writer.write(ws.send(Request(host="soak", target="/ws")))
        accepted, echoed, wanted, began = False, 0, random.randint(1, 20), time.monotonic()
        while not accepted or echoed < wanted:
            data = await reader.read(65536)
            if not data:
                stats.in_flight("ws-dropper", began, "closed without a Close frame")
                raise ConnectionError("WebSocket closed by the server")
            ws.receive_data(data)
            for event in ws.events():
                if isinstance(event, CloseConnection):
                    stats.in_flight("ws-dropper", began, f"Close frame {event.code}")
                    writer.transport.abort()
                    raise ConnectionError(f"WebSocket closed by the server with {event.code}")
                if isinstance(event, AcceptConnection):
                    accepted = True
                    for i in range(wanted):
                        writer.write(ws.send(TextMessage(data=f"message {i}")) if i % 2 else
                                     ws.send(BytesMessage(data=os.urandom(100))))
                elif isinstance(event, (TextMessage, BytesMessage)) and event.message_finished:
                    echoed += 1
        writer.transport.abort()
        stats.served["ws-dropper"] += 1


CLIENTS = {  # kind of client: how many run at once
    "keep-alive": (keep_alive, 8),
    "new-connection": (new_connection, 2),
    "echo": (echo, 2),
    "stream": (stream, 1),
    "sse-leaver": (sse_leaver, 2),
    "slow-reader": (slow_reader, 1),
    "ws-dropper": (ws_dropper, 2),
}


async def run_client(name, function, address, stats: Stats) -> None:
    while stats.more():
        try:
            await function(address, stats)
        except (OSError, ConnectionError, AssertionError, h11.ProtocolError) as exc:
            if stats.stopping:
                stats.errors[f"{name} (during shutdown): {type(exc).__name__}"] += 1
                return
            stats.errors[f"{name}: {type(exc).__name__}: {exc}"[:120]] += 1
            await asyncio.sleep(0.01)


async def traffic(server, stats: Stats, sigterm: bool, checkpoints: list,
                  pause: float = 0.0) -> dict:
    kinds = {name: spec for name, spec in CLIENTS.items() if server.name == "asgi" or name != "ws-dropper"}
    tasks = [asyncio.create_task(run_client(name, function, server.address, stats))
             for name, (function, count) in kinds.items() for _ in range(count)]
    shutdown: dict = {}
    marks = [stats.target * f for f in (0.25, 0.5, 1.0)]
    while stats.more():
        await asyncio.sleep(0.2)
        if marks and stats.total >= marks[0]:
            marks.pop(0)
            checkpoints.append((stats.total, server.ps.memory_info().rss / 2**20))
        if pause and stats.total >= stats.target // 2:
            stats.paused_at = stats.total
            server.process.send_signal(signal.SIGSTOP)
            await asyncio.sleep(pause)  # the clients carry on: their requests wait in the sockets
            server.process.send_signal(signal.SIGCONT)
            pause = 0.0
        if sigterm and stats.total >= stats.target // 2:
            sent = stats.sigterm_at = time.monotonic()
            server.process.send_signal(signal.SIGTERM)
            stats.stopping = True
            loop = asyncio.get_running_loop()
            code = await loop.run_in_executor(None, server.process.wait, 60)
            shutdown = {"exit_code": code, "seconds": time.monotonic() - sent,
                        "lifespan_shutdown": "lifespan shutdown complete" in server.output()}
    stats.stopping = True
    await asyncio.wait(tasks, timeout=30)
    for task in tasks:
        task.cancel()
    return shutdown


# -- the report ---------------------------------------------------------------------------------------


def soak(kind: str, requests: int, seconds: float, threads: int, sigterm: bool, grace: float,
         pause: float = 0.0, record: dict | None = None) -> bool:
    """One soak of our `kind` server; prints its report, fills `record` (for --json) with
    the raw figures, and says whether it passed."""
    record = {} if record is None else record
    server = start_server(kind, threads, grace)
    try:
        time.sleep(0.5)
        before = holdings(server)
        stats = Stats(target=requests, deadline=time.monotonic() + seconds)
        checkpoints: list = []
        started = time.monotonic()
        shutdown = asyncio.run(traffic(server, stats, sigterm, checkpoints, pause))
        elapsed = time.monotonic() - started
        record.update(server=kind, requests=stats.total, seconds=round(elapsed, 3), threads=threads,
                      served=dict(stats.served), errors=dict(stats.errors), before=before,
                      rss_checkpoints=checkpoints, paused_at=stats.paused_at)
        print(f"\n== {kind.upper()} server: {stats.total:,} requests in {elapsed:.1f} s "
              f"({stats.total / elapsed:,.0f}/s)" + (f", {threads} threads" if kind == "wsgi" else ""))
        if stats.paused_at is not None:
            print(f"   server frozen (SIGSTOP) for {pause} s at {stats.paused_at:,} requests")
        for name, count in sorted(stats.served.items()):
            print(f"   {name:<15} {count:>9,}")
        print(f"   errors          {sum(stats.errors.values()):>9,}")
        for what, count in stats.errors.most_common(10):
            print(f"      {count:>6} x {what}")
        if sigterm:
            print(f"   SIGTERM under load: exit code {shutdown.get('exit_code')}, exited after "
                  f"{shutdown.get('seconds', float('nan')):.2f} s (grace period {grace} s)" +
                  (f", lifespan shutdown ran: {shutdown.get('lifespan_shutdown')}" if kind == "asgi" else ""))
            print("   what became of the work in flight when SIGTERM came:")
            for (client, outcome), count in sorted(stats.at_sigterm.items()):
                print(f"      {client:<15} {outcome:<30} {count:>5}")
            tail = [line for line in server.output().splitlines() if "Traceback" in line or "ERROR" in line]
            record.update(shutdown=shutdown, at_sigterm={f"{c}: {o}": n for (c, o), n in stats.at_sigterm.items()},
                          log_errors=len(tail))
            print(f"   tracebacks/errors in the server log: {len(tail)}")
            return passed(record, grace)
        end = holdings(server)
        time.sleep(KEEP_ALIVE + 1.5)  # past the idle timeout: every keep-alive connection is gone
        idle = holdings(server)
        print(f"   {'':<10}" + "".join(f"{name:>10}" for name in before))
        for label, figures in (("before", before), ("end", end), ("idle", idle)):
            print(f"   {label:<10}" + "".join(f"{value:>10.1f}" if isinstance(value, float)
                                            else f"{value:>10}" for value in figures.values()))
        if len(checkpoints) >= 2:
            (n1, rss1), (n2, rss2) = checkpoints[-2], checkpoints[-1]
            print(f"   RSS {rss1:.1f} MiB at {n1:,} requests -> {rss2:.1f} MiB at {n2:,} "
                  f"({rss2 - rss1:+.1f} MiB over the last {n2 - n1:,})")
        back = idle["tcp"] == 0 and all(idle[name] <= before[name]
                                         for name in ("fds", "threads", "tasks", "timers") if name in idle)
        errors = server.output().count("Traceback")
        record.update(end=end, idle=idle, back_to_idle=back, tracebacks=errors)
        print(f"   back to idle: {'yes' if back else 'NO'}; tracebacks in the server log: {errors}")
        return passed(record, grace)
    finally:
        server.stop(15)


def passed(run: dict, grace: float) -> bool:
    """One server's verdict from its raw figures. A soak: back to idle, no traceback, no client
    error. With SIGTERM: exit code 0 within the grace period (+1 s), and no client error but
    those of connections the shutdown ended."""
    if "shutdown" in run:
        shutdown = run["shutdown"]
        return (shutdown.get("exit_code") == 0 and shutdown.get("seconds", 99) < grace + 1
                and all("shutdown" in what for what in run["errors"]))
    return bool(run.get("back_to_idle")) and run.get("tracebacks") == 0 and not run["errors"]


SUMMARY_HEADER = ["server", "requests", "seconds", "req/s", "client errors", "RSS growth, last half",
                  "back to idle", "tracebacks", "passed"]


def summary_rows(result: dict) -> list[list[str]]:
    """One row per server: what it served, what went wrong, whether it let go of everything."""
    rows = []
    for run in result["runs"]:
        marks = run["rss_checkpoints"]
        growth = f"{marks[-1][1] - marks[-2][1]:+.1f} MiB over {marks[-1][0] - marks[-2][0]:,}" \
            if len(marks) >= 2 else "-"
        idle = run.get("back_to_idle")
        rows.append([run["server"], f"{run['requests']:,}", f"{run['seconds']:.1f}",
                     number(run["requests"] / run["seconds"] if run["seconds"] else float("nan")),
                     f"{sum(run['errors'].values()):,}", growth,
                     "-" if idle is None else "yes" if idle else "NO",
                     str(run.get("tracebacks", run.get("log_errors", "-"))),
                     "yes" if passed(run, result["grace"]) else "NO"])
    return rows


def holdings_rows(result: dict) -> tuple[list[str], list[list[str]]]:
    """What each server held before the traffic, when it stopped, and after the idle timeout."""
    names = list(dict.fromkeys(name for run in result["runs"] for name in run["before"]))
    rows = []
    for run in result["runs"]:
        for moment in ("before", "end", "idle"):
            if moment in run:
                rows.append([run["server"], moment, *(("-" if run[moment].get(n) is None else
                                                       f"{run[moment][n]:.1f}" if isinstance(run[moment][n], float)
                                                       else str(run[moment][n])) for n in names)])
    return ["server", "moment", *(n.replace("rss_mib", "RSS MiB") for n in names)], rows


def served_rows(result: dict) -> tuple[list[str], list[list[str]]]:
    """Requests completed by kind of client, one column per server."""
    servers = [run["server"] for run in result["runs"]]
    kinds = sorted({kind for run in result["runs"] for kind in run["served"]})
    return (["client", *servers],
            [[kind, *(f"{run['served'][kind]:,}" if kind in run["served"] else "-" for run in result["runs"])]
             for kind in kinds])


def markdown(result: dict) -> str:
    """A soak's tables, from the raw figures of its result file."""
    if not result["runs"]:
        return f"No per-server figures in this file (a `--tracemalloc` run). {measured(result)}"
    how = (f"Mixed traffic until {result['requests']:,} requests per server, idle timeout "
           f"{result['keep_alive']:g} s")
    if result.get("pause"):
        how += f"; each server frozen (SIGSTOP) for {result['pause']:g} s halfway"
    if result.get("sigterm"):
        how += f"; ended by SIGTERM under full load (grace period {result['grace']:g} s)"
    out = [how + ".", "", markdown_table(SUMMARY_HEADER, summary_rows(result)), ""]
    if not result.get("sigterm"):
        header, rows = holdings_rows(result)
        out += ["Held by the server process (psutil; tasks and timers from the ASGI app's /debug):", "",
                markdown_table(header, rows, left=2), ""]
    else:
        out += [markdown_table(["server", "exit code", "exited after", "lifespan shutdown ran"],
                               [[run["server"], str(run["shutdown"].get("exit_code")),
                                 f"{run['shutdown'].get('seconds', float('nan')):.2f} s",
                                 str(run["shutdown"].get("lifespan_shutdown")) if run["server"] == "asgi" else "-"]
                                for run in result["runs"]]), "",
                "What became of the work in flight when SIGTERM came:", "",
                markdown_table(["server", "client: outcome", "count"],
                               [[run["server"], what, str(n)] for run in result["runs"]
                                for what, n in sorted(run.get("at_sigterm", {}).items())], left=2), ""]
    header, rows = served_rows(result)
    errors = [f"{run['server']}: {n} x {what}" for run in result["runs"] for what, n in run["errors"].items()]
    out += ["Requests completed, by kind of client:", "", markdown_table(header, rows), ""]
    if errors:
        out += ["Client errors: " + "; ".join(errors) + ".", ""]
    return "\n".join([*out, measured(result)])


class InProcessServer:
    """The same traffic against a background server in this process, for tracemalloc."""

    def __init__(self, kind: str, threads: int) -> None:
        from asgi_lab.apps import soak as soak_app
        from asgi_lab.background import serve_in_background

        self.name = kind
        self.ps = psutil.Process()
        self.background = serve_in_background(
            soak_app.app if kind == "asgi" else soak_app.wsgi_app, kind=kind, name=f"soak-{kind}",
            access_log=False, timeout_keep_alive=KEEP_ALIVE, threads=threads)
        self.address = self.background.address


def tracemalloc_check(kind: str, requests: int, threads: int) -> bool:
    """Python allocations made by the server's code (asgi_lab, h11, wsproto, asyncio, threading,
    sockets) that are still alive after `requests` more requests and the idle timeout. RSS can
    grow for other reasons (the allocator's arenas); this is the number a leak would move."""
    import gc
    import tracemalloc

    server = InProcessServer(kind, threads)
    try:
        def run(count: int) -> None:
            stats = Stats(target=count, deadline=time.monotonic() + 600)
            asyncio.run(traffic(server, stats, False, []))
            time.sleep(KEEP_ALIVE + 1.5)
            gc.collect()

        run(requests // 4)  # warm up: caches, pools, the first connections
        tracemalloc.start(5)
        before = tracemalloc.take_snapshot()
        run(requests)
        after = tracemalloc.take_snapshot()
        tracemalloc.stop()
    finally:
        server.background.stop()
    code = [tracemalloc.Filter(True, f"*{name}*") for name in
            ("asgi_lab", "h11", "wsproto", "asyncio", "threading", "socket", "selectors")]
    growth = after.filter_traces(code).compare_to(before.filter_traces(code), "lineno")
    total = sum(stat.size_diff for stat in growth)
    print(f"\n== {kind.upper()} server, in process: {requests:,} requests after a warm-up; "
          f"live allocations of the server's code grew by {total / 1024:.1f} KiB")
    for stat in growth[:5]:
        print(f"   {stat}")
    return total < 256 * 1024


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--server", choices=("asgi", "wsgi", "both"), default="both")
    parser.add_argument("--requests", type=int, default=100_000)
    parser.add_argument("--seconds", type=float, default=600, help="stop after this long at most")
    parser.add_argument("--threads", type=int, default=32, help="WSGI worker threads")
    parser.add_argument("--sigterm", action="store_true", help="end with SIGTERM under load")
    parser.add_argument("--pause", type=float, default=0.0,
                        help="freeze the server (SIGSTOP) for this many seconds halfway")
    parser.add_argument("--grace", type=float, default=3.0, help="graceful shutdown timeout")
    parser.add_argument("--tracemalloc", action="store_true",
                        help="run the server in this process and report what its code left allocated")
    parser.add_argument("--json", metavar="FILE", help="write each server's raw figures and the machine here")
    args = parser.parse_args()
    ok = True
    runs = []
    for kind in (("asgi", "wsgi") if args.server == "both" else (args.server,)):
        if args.tracemalloc:
            ok &= tracemalloc_check(kind, args.requests, args.threads)
        else:
            runs.append({})
            ok &= soak(kind, args.requests, args.seconds, args.threads, args.sigterm, args.grace,
                       args.pause, runs[-1])
    result = {"benchmark": "soak", "requests": args.requests, "sigterm": args.sigterm,
              "pause": args.pause, "grace": args.grace, "keep_alive": KEEP_ALIVE,
              "passed": bool(ok), "runs": runs}
    if runs:
        print()
        print(text_table(SUMMARY_HEADER, summary_rows(result)))
    print("\nresult:", "PASS" if ok else "FAIL")
    if args.json:
        from asgi_lab.experiments.results import write_result

        write_result(result, args.json, indent=1)
        print(f"wrote {args.json}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
