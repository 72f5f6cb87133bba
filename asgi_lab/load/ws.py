"""N concurrent WebSocket clients against one server, from a process of their own.

    python -m asgi_lab.load.ws ws://127.0.0.1:8000/ --clients 200 --duration 10 --send-interval 1

or from Python (this starts the generator processes and merges what they measured):

    from asgi_lab.load.ws import run_ws_load
    result = run_ws_load("ws://127.0.0.1:8000/", clients=200, duration=10)

Each client is an `asyncio.Protocol` with a `wsproto` client connection (RFC 6455; wsproto
writes the handshake and the frames, we never do). A run ramps the connects over `spread`
seconds, holds them for `duration`, then closes each with code 1000.

While it holds, each client sends a text message every `send_interval` seconds (0: never;
for a server that pushes on its own): `asgi_lab SEQ SENT`, its number and the time it left.
Any message that comes back holding such a stamp (an echo, or a chat that broadcasts it
with a prefix) gives a *lag*: our receive time minus SENT. Every message received counts as
delivered.

Per client it records: the TCP connect time, the handshake time (request sent to the 101
accepted), the time to first message (handshake done to first message received), messages
sent and received, and the error if any (refused, a rejected handshake, closed by the
server). Per stamped message: the lag.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import sys
import time
from urllib.parse import urlsplit

from wsproto import ConnectionType, WSConnection
from wsproto.events import (AcceptConnection, BytesMessage, CloseConnection, Ping, RejectConnection,
                            RejectData, Request, TextMessage)
from wsproto.utilities import RemoteProtocolError

from . import TooManyClients, raise_open_files_limit
from .process import run_in_processes

PROGRESS_EVERY = 0.5
STAMP = re.compile(r"asgi_lab (\d+) (\d+\.\d+)")


class WSClient(asyncio.Protocol):
    """One WebSocket client: handshake, a message now and then, count what comes back."""

    def __init__(self, run: "WSLoad", index: int, connect_started: float) -> None:
        self.run = run
        self.index = index
        self.connect_started = connect_started
        self.ws = WSConnection(ConnectionType.CLIENT)
        self.transport: asyncio.Transport | None = None
        self.open = False
        self.seq = 0
        self.timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:
        run, i = self.run, self.index
        self.transport = transport
        now = time.perf_counter()
        run.connect[i] = now - self.connect_started
        self.handshake_started = now
        run.open_clients[i] = self
        transport.write(self.ws.send(Request(host=run.host_header, target=run.target)))

    def data_received(self, data: bytes) -> None:
        now = time.time()
        try:
            self.ws.receive_data(data)
            for event in self.ws.events():
                self.handle(event, now)
        except RemoteProtocolError as exc:
            self.fail(f"bad frames: {exc}")

    def handle(self, event, now: float) -> None:
        run, i = self.run, self.index
        if isinstance(event, AcceptConnection):
            run.handshake[i] = time.perf_counter() - self.handshake_started
            run.accepted_at[i] = now
            self.open = True
            if run.send_interval > 0:
                self.timer = asyncio.get_running_loop().call_later(run.send_interval, self.send_one)
        elif isinstance(event, (RejectConnection, RejectData)):
            status = getattr(event, "status_code", None)
            self.fail(f"handshake rejected{f': status {status}' if status else ''}")
        elif isinstance(event, (TextMessage, BytesMessage)):
            if event.message_finished:
                self.message_received(event.data, now)
        elif isinstance(event, Ping):
            self.transport.write(self.ws.send(event.response()))
        elif isinstance(event, CloseConnection):
            if not run.leaving:
                self.fail(f"closed by the server: code {event.code}")
            elif self.ws.state.name == "REMOTE_CLOSING":
                self.transport.write(self.ws.send(event.response()))

    def message_received(self, data, now: float) -> None:
        run, i = self.run, self.index
        if run.first_message[i] is None:
            run.first_message[i] = now
        run.received[i] += 1
        run.total_received += 1
        text = data if isinstance(data, str) else data.decode("latin-1")
        match = STAMP.search(text)
        if match is not None:
            run.lags_ms.append(round((now - float(match.group(2))) * 1000, 3))

    def send_one(self) -> None:
        run = self.run
        if run.leaving or not self.open or self.transport.is_closing():
            return
        self.seq += 1
        self.transport.write(self.ws.send(TextMessage(data=f"asgi_lab {self.seq} {time.time():.6f}")))
        run.sent[self.index] += 1
        self.timer = asyncio.get_running_loop().call_later(run.send_interval, self.send_one)

    def close(self) -> None:
        """Leave politely: a close frame with code 1000 (the transport is aborted later)."""
        if self.timer is not None:
            self.timer.cancel()
        if self.open and self.ws.state.name == "OPEN":
            self.transport.write(self.ws.send(CloseConnection(code=1000)))

    def fail(self, error: str) -> None:
        if self.run.errors[self.index] is None:
            self.run.errors[self.index] = error
        if self.timer is not None:
            self.timer.cancel()
        self.transport.abort()

    def connection_lost(self, exc: Exception | None) -> None:
        run = self.run
        run.open_clients.pop(self.index, None)
        if self.timer is not None:
            self.timer.cancel()
        if not run.leaving and run.errors[self.index] is None:
            run.errors[self.index] = f"connection lost: {exc!r}" if exc else "closed by the server"


class WSLoad:
    """One process's share of the clients, and everything measured about them."""

    def __init__(self, url: str, clients: int, duration: float, send_interval: float = 1.0,
                 spread: float = 1.0, connect_concurrency: int = 256, connect_timeout: float = 10.0,
                 progress=None) -> None:
        parts = urlsplit(url)
        if parts.scheme != "ws" or not parts.hostname:
            raise ValueError(f"expected a ws:// URL, got {url!r}")
        self.host, self.port = parts.hostname, parts.port or 80
        self.host_header = parts.netloc
        self.target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        self.clients, self.duration, self.send_interval = clients, duration, send_interval
        self.spread, self.connect_concurrency = spread, connect_concurrency
        self.connect_timeout, self.progress = connect_timeout, progress
        self.connect: list[float | None] = [None] * clients
        self.handshake: list[float | None] = [None] * clients
        self.accepted_at: list[float | None] = [None] * clients
        self.first_message: list[float | None] = [None] * clients
        self.sent = [0] * clients
        self.received = [0] * clients
        self.errors: list[str | None] = [None] * clients
        self.lags_ms: list[float] = []
        self.total_received = 0
        self.open_clients: dict[int, WSClient] = {}
        self.leaving = False

    async def run(self) -> dict:
        started = time.time()
        reporter = asyncio.ensure_future(self.report_progress(started))
        await self.ramp(started)
        ramp_end = time.time()
        await asyncio.sleep(self.duration)
        end = time.time()
        self.leaving = True
        for client in list(self.open_clients.values()):
            client.close()
        await asyncio.sleep(0.2)  # let the close frames go out and the server answer
        for client in list(self.open_clients.values()):
            client.transport.abort()
        reporter.cancel()
        return self.result(started, ramp_end, end)

    async def ramp(self, started: float) -> None:
        loop = asyncio.get_running_loop()
        queue = list(range(self.clients))

        async def worker():
            while queue:
                i = queue.pop(0)
                delay = started + self.spread * i / max(self.clients, 1) - time.time()
                if delay > 0:
                    await asyncio.sleep(delay)
                begun = time.perf_counter()
                try:
                    async with asyncio.timeout(self.connect_timeout):
                        await loop.create_connection(lambda: WSClient(self, i, begun),
                                                     self.host, self.port)
                except (OSError, TimeoutError) as exc:
                    self.errors[i] = f"connect: {type(exc).__name__}: {exc}"

        await asyncio.gather(*(worker() for _ in range(min(self.connect_concurrency, self.clients))))

    async def report_progress(self, started: float) -> None:
        while self.progress is not None:
            await asyncio.sleep(PROGRESS_EVERY)
            self.progress({"open": len(self.open_clients), "messages": self.total_received,
                           "errors": sum(e is not None for e in self.errors),
                           "elapsed": round(time.time() - started, 2)})

    def result(self, started: float, ramp_end: float, end: float) -> dict:
        ms = lambda seconds: round(seconds * 1000, 3) if seconds is not None else None  # noqa: E731
        return {
            "clients": self.clients, "duration": self.duration, "send_interval": self.send_interval,
            "started": started, "ramp_s": round(ramp_end - started, 3), "ended": end,
            "connect_ms": [ms(c) for c in self.connect],
            "handshake_ms": [ms(h) for h in self.handshake],
            "ttfe_ms": [ms(first - accepted) if first is not None and accepted is not None else None
                        for first, accepted in zip(self.first_message, self.accepted_at)],
            "sent": self.sent, "received": self.received, "errors": self.errors,
            "lags_ms": self.lags_ms,
        }


def merge(results: list[dict]) -> dict:
    """Put the shares of several generator processes together."""
    merged = dict(results[0])
    merged["clients"] = sum(r["clients"] for r in results)
    merged["started"] = min(r["started"] for r in results)
    merged["ended"] = max(r["ended"] for r in results)
    merged["ramp_s"] = max(r["ramp_s"] for r in results)
    for key in ("connect_ms", "handshake_ms", "ttfe_ms", "sent", "received", "errors", "lags_ms"):
        merged[key] = [value for r in results for value in r[key]]
    merged["processes"] = len(results)
    return merged


def run_ws_load(url: str, clients: int, duration: float, *, send_interval: float = 1.0,
                spread: float = 1.0, processes: int = 1, progress=None,
                timeout: float | None = None) -> dict:
    """Run `clients` WebSocket clients in `processes` generator processes; merged result."""
    args = ["--duration", str(duration), "--send-interval", str(send_interval),
            "--spread", str(spread)]
    return merge(run_in_processes("asgi_lab.load.ws", url, clients, args, processes, progress,
                                  timeout or duration + spread + 120))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m asgi_lab.load.ws", description=__doc__.split("\n")[0])
    parser.add_argument("url", help="the WebSocket endpoint, e.g. ws://127.0.0.1:8000/")
    parser.add_argument("--clients", type=int, default=100)
    parser.add_argument("--duration", type=float, default=10.0, help="seconds to hold after the ramp")
    parser.add_argument("--send-interval", type=float, default=1.0,
                        help="seconds between a client's messages (0: send nothing)")
    parser.add_argument("--spread", type=float, default=1.0, help="seconds over which to spread the connects")
    parser.add_argument("--out", help="write the JSON result here (default: stdout)")
    parser.add_argument("--progress", action="store_true", help="print a JSON progress line now and then")
    args = parser.parse_args(argv)
    try:
        raise_open_files_limit(args.clients)
    except TooManyClients as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    progress = (lambda report: print(json.dumps({"progress": report}), flush=True)) if args.progress else None
    load = WSLoad(args.url, args.clients, args.duration, args.send_interval, spread=args.spread,
                  progress=progress)
    result = asyncio.run(load.run())
    if args.out:
        with open(args.out, "w") as f:
            json.dump(result, f)
    else:
        json.dump(result, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
