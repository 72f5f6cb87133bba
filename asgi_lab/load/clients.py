"""What the SSE, long-polling and WebSocket generators share: one process's share of the
clients, and the life of a run.

    class SSELoad(ClientLoad):        # sse.py; LongPollLoad in longpoll.py, WSLoad in ws.py
        scheme, counted, per_client = "http", "events", ("events", ...)
        def client(self, index, connect_started): return SSEClient(self, index, connect_started)
        def measurements(self, end): return {"events": self.events, ...}

A run has three acts, the same for every kind of client:

1. *Ramp*: open the N connections, spread evenly over `spread` seconds (a burst of 10,000
   SYNs would overflow the server's listen backlog and turn into one-second retransmits), at
   most `connect_concurrency` handshakes at a time, each within `connect_timeout`; a client
   not connected `ramp_timeout` seconds after the start gives up ("not connected: ramp
   timeout"), so that a server that stopped accepting cannot stretch the ramp for ever.
2. *Hold*: keep them open for `duration` seconds after the last one connected.
3. *Leave*: close every connection (`leave()`; the WebSocket clients say goodbye first).

Every client records its TCP connect time and its error, if any (the first one: refused,
reset, closed by the server, a bad answer). `run_generators` starts generator processes
(process.py) and `merge`s what they measured; `main` is a generator process's command line.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from urllib.parse import urlsplit

import h11

from . import TooManyClients, raise_open_files_limit
from .process import run_in_processes

PROGRESS_EVERY = 0.5
"""Seconds between two progress reports."""


class Client(asyncio.Protocol):
    """One client connection: what every kind shares (its slot in the run, its first error)."""

    __slots__ = ("run", "index", "connect_started", "transport", "retired")

    def __init__(self, run: "ClientLoad", index: int, connect_started: float) -> None:
        self.run = run
        self.index = index
        self.connect_started = connect_started
        self.transport: asyncio.Transport | None = None
        self.retired = False  # replaced by a new connection (long polling): its end is no error

    def connection_made(self, transport: asyncio.Transport) -> None:
        self.transport = transport
        self.run.connect[self.index] = time.perf_counter() - self.connect_started
        self.run.open_clients[self.index] = self

    def fail(self, error: str) -> None:
        if self.run.errors[self.index] is None:
            self.run.errors[self.index] = error
        self.transport.abort()

    def connection_lost(self, exc: Exception | None) -> None:
        run = self.run
        if run.open_clients.get(self.index) is self:
            del run.open_clients[self.index]
        if not run.leaving and not self.retired and run.errors[self.index] is None:
            run.errors[self.index] = f"connection lost: {exc!r}" if exc else "closed by the server"


class HTTPClient(Client):
    """A client over HTTP/1.1: h11 (the client side) frames its requests and parses the
    answers; `event_received` handles each h11 event (False: stop reading this batch).
    `pending` holds body bytes received and not handled yet (half an event, a partial body)."""

    __slots__ = ("conn", "pending")

    def __init__(self, run: "ClientLoad", index: int, connect_started: float) -> None:
        super().__init__(run, index, connect_started)
        self.conn = h11.Connection(h11.CLIENT)
        self.pending = b""

    def send_get(self, *headers: tuple[str, str]) -> None:
        run = self.run
        request = h11.Request(method="GET", target=run.target, headers=[("host", run.host_header), *headers])
        self.transport.write(self.conn.send(request) + self.conn.send(h11.EndOfMessage()))

    def data_received(self, data: bytes) -> None:
        now = time.time()
        self.conn.receive_data(data)
        while True:
            try:
                event = self.conn.next_event()
            except h11.RemoteProtocolError as exc:
                self.fail(f"bad response: {exc}")
                return
            if event is h11.NEED_DATA or not self.event_received(event, now):
                return

    def event_received(self, event, now: float) -> bool:
        raise NotImplementedError


def stamp(data: bytes) -> tuple[float, float, float] | None:
    """`SEQ T1 T2`, the format of our apps' events and messages (`asgi_lab/apps/sse.py`), as
    numbers; None for any other data (an app of yours: its messages count, without a lag)."""
    parts = data.split()
    if len(parts) != 3:
        return None
    try:
        return float(parts[0]), float(parts[1]), float(parts[2])
    except ValueError:
        return None


class ClientLoad:
    """One process's share of the clients: ramp, hold, leave; what was measured about them."""

    scheme = "http"
    counted = "events"
    """What the progress reports count (`total`)."""
    per_client: tuple[str, ...] = ()
    """Result keys holding one value per client, or per event: `merge` joins them."""
    options: dict[str, tuple[float, str]] = {}
    """The kind's own numeric options: name -> (default, help), on its command line too."""

    def __init__(self, url: str, clients: int, duration: float, *, spread: float = 1.0,
                 connect_concurrency: int = 256, connect_timeout: float = 10.0,
                 ramp_timeout: float = 60.0, progress=None) -> None:
        parts = urlsplit(url)
        if parts.scheme != self.scheme or not parts.hostname:
            raise ValueError(f"expected a {self.scheme}:// URL, got {url!r}")
        self.host, self.port = parts.hostname, parts.port or 80
        self.host_header = parts.netloc
        self.target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        self.clients, self.duration, self.spread = clients, duration, spread
        self.connect_concurrency = connect_concurrency
        self.connect_timeout, self.ramp_timeout = connect_timeout, ramp_timeout
        self.progress = progress
        self.connect: list[float | None] = [None] * clients
        self.errors: list[str | None] = [None] * clients
        self.open_clients: dict[int, Client] = {}
        self.total = 0
        self.leaving = False

    def client(self, index: int, connect_started: float) -> Client:
        raise NotImplementedError

    def measurements(self, end: float) -> dict:
        """The kind's own per-client and per-event lists, for the result."""
        raise NotImplementedError

    async def connect_one(self, index: int) -> None:
        loop = asyncio.get_running_loop()
        started = time.perf_counter()
        try:
            async with asyncio.timeout(self.connect_timeout):
                await loop.create_connection(lambda: self.client(index, started), self.host, self.port)
        except (OSError, TimeoutError) as exc:
            self.errors[index] = f"connect: {type(exc).__name__}: {exc}"

    async def ramp(self, started: float) -> None:
        """A few workers share the list of clients, so only so many handshakes are in flight."""
        todo = iter(range(self.clients))
        pace = self.spread / max(self.clients, 1)
        deadline = started + self.ramp_timeout

        async def worker() -> None:
            for i in todo:
                due = started + i * pace
                if due > deadline:  # its turn comes too late: no need to wait for it
                    self.errors[i] = "not connected: ramp timeout"
                    continue
                if due > time.time():
                    await asyncio.sleep(due - time.time())
                if time.time() > deadline:
                    self.errors[i] = "not connected: ramp timeout"
                    continue
                await self.connect_one(i)

        await asyncio.gather(*(worker() for _ in range(min(self.connect_concurrency, self.clients))))

    async def run(self) -> dict:
        started = time.time()
        reporter = asyncio.get_running_loop().create_task(self.report_progress(started))
        await self.ramp(started)
        ramp_end = time.time()
        end = ramp_end + self.duration
        await asyncio.sleep(self.duration)
        self.leaving = True
        await self.leave()
        reporter.cancel()
        return {"clients": self.clients, "duration": self.duration, "started": started,
                "ramp_s": round(ramp_end - started, 3), "ended": end,
                "connect_ms": [round(c * 1000, 3) if c is not None else None for c in self.connect],
                "errors": self.errors, **self.measurements(end)}

    async def leave(self) -> None:
        for client in list(self.open_clients.values()):
            client.transport.abort()
        await asyncio.sleep(0)  # let the transports finish closing

    async def report_progress(self, started: float) -> None:
        while self.progress is not None:
            await asyncio.sleep(PROGRESS_EVERY)
            self.progress({"open": len(self.open_clients), self.counted: self.total,
                           "errors": sum(e is not None for e in self.errors),
                           "elapsed": round(time.time() - started, 2)})


def merge(results: list[dict], per_client: tuple[str, ...]) -> dict:
    """Put the shares of several generator processes together, as if one process ran them."""
    merged = dict(results[0])
    merged["clients"] = sum(r["clients"] for r in results)
    merged["started"] = min(r["started"] for r in results)
    merged["ended"] = max(r["ended"] for r in results)
    merged["ramp_s"] = max(r["ramp_s"] for r in results)
    for key in ("connect_ms", "errors", *per_client):
        merged[key] = [value for r in results for value in r.get(key, ())]
    merged["processes"] = len(results)
    return merged


def run_generators(load_class: type[ClientLoad], url: str, clients: int, duration: float, *,
                   processes: int = 1, progress=None, timeout: float | None = None,
                   **options) -> dict:
    """Run `clients` clients of `load_class` in `processes` generator processes (`python -m
    <its module>`, see process.py), and merge what they measured. `options` are the kind's
    own (`load_class.options`) and the ramp's (spread, connect_concurrency, connect_timeout,
    ramp_timeout); None leaves one at the generator's default."""
    args = ["--duration", str(duration)]
    for name, value in options.items():
        if value is not None:
            args += [f"--{name.replace('_', '-')}", str(value)]
    timeout = timeout or duration + (options.get("ramp_timeout") or 60) + 60
    results = run_in_processes(load_class.__module__, url, clients, args, processes, progress, timeout)
    return merge(results, load_class.per_client)


def add_options(parser: argparse.ArgumentParser, load_class: type[ClientLoad]) -> None:
    """The kind's own options (`load_class.options`) on a command line."""
    for name, (default, text) in load_class.options.items():
        parser.add_argument(f"--{name.replace('_', '-')}", type=float, default=default,
                            help=f"{text} (default: {default:g})")


def main(load_class: type[ClientLoad], argv: list[str] | None = None) -> int:
    """The command line of a generator process: `python -m asgi_lab.load.<kind> URL ...`,
    with the ramp's options and the kind's own (`load_class.options`)."""
    module = load_class.__module__
    doc = sys.modules[module].__doc__ or ""
    parser = argparse.ArgumentParser(prog=f"python -m {module}", description=doc.split("\n")[0])
    parser.add_argument("url", help=f"the endpoint, e.g. {load_class.scheme}://127.0.0.1:8000/")
    parser.add_argument("--clients", type=int, default=100)
    parser.add_argument("--duration", type=float, default=10.0, help="seconds to hold after the ramp")
    parser.add_argument("--spread", type=float, default=None,
                        help="seconds over which to spread the connects")
    parser.add_argument("--connect-concurrency", type=int, default=256,
                        help="handshakes in flight at most (default: 256)")
    parser.add_argument("--connect-timeout", type=float, default=10.0)
    parser.add_argument("--ramp-timeout", type=float, default=60.0,
                        help="give up connecting a client this long after the start (default: 60)")
    add_options(parser, load_class)
    parser.add_argument("--out", help="write the JSON result here (default: stdout)")
    parser.add_argument("--progress", action="store_true", help="print a JSON progress line now and then")
    args = parser.parse_args(argv)
    try:
        raise_open_files_limit(args.clients)
    except TooManyClients as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    progress = (lambda report: print(json.dumps({"progress": report}), flush=True)) if args.progress else None
    ramp = {name: getattr(args, name) for name in ("connect_concurrency", "connect_timeout", "ramp_timeout")}
    if args.spread is not None:
        ramp["spread"] = args.spread
    own = {name: getattr(args, name) for name in load_class.options}
    load = load_class(args.url, args.clients, args.duration, progress=progress, **ramp, **own)
    result = asyncio.run(load.run())
    if args.out:
        with open(args.out, "w") as f:
            json.dump(result, f)
    else:
        json.dump(result, sys.stdout)
    return 0
