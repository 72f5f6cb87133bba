"""N concurrent Server-Sent-Events clients against one server, from a process of its own.

    python -m asgi_lab.load.sse http://127.0.0.1:8000/events --clients 1000 --duration 10

or from Python (this starts the generator processes and merges what they measured):

    from asgi_lab.load.sse import run_sse_load
    result = run_sse_load("http://127.0.0.1:8000/events", clients=1000, duration=10)

What a run does:

1. *Ramp*: open the N connections, spread evenly over `spread` seconds (one interval by
   default, so the clients' event clocks are spread over the second as real clients' would
   be, instead of all ticking at once) and at most `connect_concurrency` handshakes at a
   time (a burst of 10,000 SYNs would overflow the server's listen backlog and turn into
   one-second retransmits). Each client sends `GET /events` as soon as it is connected.
2. *Hold*: keep all of them open for `duration` seconds after the last one connected.
3. *Leave*: close every connection (the server should notice each disconnect) and report.

For each client it records: the TCP connect time, the time to first event (request sent to
first `data:` line received), the number of events, the latest any of its events was sent
(`worst_late_ms`) and the error if any (refused, reset, closed by the server, a non-200
answer). For each event: the delivery lag (our receive
time minus the server's SENT stamp) and the server's lateness (SENT minus DUE); see
`asgi_lab/apps/sse.py` for the event format.

A client is *fully served* when it had no error and received every event it was due: one per
interval from its request to the end of the run, less the one that may still be in flight.
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


def stamped(data: bytes) -> tuple[float, float] | None:
    """(DUE, SENT) from an event's data in our format, `SEQ DUE SENT`; None for any other
    data (an app of yours that sends its own events: they count, without a lag)."""
    parts = data.split()
    if len(parts) != 3:
        return None
    try:
        return float(parts[1]), float(parts[2])
    except ValueError:
        return None


class SSEClient(asyncio.Protocol):
    """One SSE client: sends its GET when connected, counts and times the events it receives."""

    __slots__ = ("run", "index", "connect_started", "conn", "transport", "buffer")

    def __init__(self, run: "SSELoad", index: int, connect_started: float) -> None:
        self.run = run
        self.index = index
        self.connect_started = connect_started
        self.conn = h11.Connection(h11.CLIENT)
        self.transport: asyncio.Transport | None = None
        self.buffer = b""

    def connection_made(self, transport: asyncio.Transport) -> None:
        run, i = self.run, self.index
        self.transport = transport
        run.connect[i] = time.perf_counter() - self.connect_started
        run.open_clients[i] = self
        request = h11.Request(method="GET", target=run.target,
                              headers=[("host", run.host_header), ("accept", "text/event-stream")])
        transport.write(self.conn.send(request) + self.conn.send(h11.EndOfMessage()))
        run.request_sent[i] = time.time()

    def data_received(self, data: bytes) -> None:
        now = time.time()
        self.conn.receive_data(data)
        while True:
            try:
                event = self.conn.next_event()
            except h11.RemoteProtocolError as exc:
                self.fail(f"bad response: {exc}")
                return
            if event is h11.NEED_DATA:
                return
            event_type = type(event)
            if event_type is h11.Data:
                self.events_received(event.data, now)
            elif event_type is h11.Response:
                if event.status_code != 200:
                    self.fail(f"status {event.status_code}")
                    return
            elif event_type is h11.EndOfMessage or event_type is h11.ConnectionClosed:
                self.fail("stream ended by the server")
                return

    def events_received(self, data: bytes, now: float) -> None:
        """Split the text/event-stream into events (a blank line ends one) and time them."""
        run, i = self.run, self.index
        buffer = self.buffer + data
        *events, self.buffer = buffer.split(b"\n\n")
        for event in events:
            for line in event.split(b"\n"):
                if line.startswith(b"data:"):
                    stamps = stamped(line[5:])
                    if stamps is not None:  # our format; any other server's events just count
                        due, sent = stamps
                        late = round((sent - due) * 1000, 3)
                        run.lags_ms.append(round((now - sent) * 1000, 3))
                        run.lateness_ms.append(late)
                        if late > run.worst_late[i]:
                            run.worst_late[i] = late
                    if run.first_event[i] is None:
                        run.first_event[i] = now
                    run.events[i] += 1
                    run.total_events += 1

    def fail(self, error: str) -> None:
        if self.run.errors[self.index] is None:
            self.run.errors[self.index] = error
        self.transport.abort()

    def connection_lost(self, exc: Exception | None) -> None:
        run = self.run
        run.open_clients.pop(self.index, None)
        if not run.leaving and run.errors[self.index] is None:
            run.errors[self.index] = f"connection lost: {exc!r}" if exc else "closed by the server"


class SSELoad:
    """One process's share of the clients, and everything measured about them."""

    def __init__(self, url: str, clients: int, duration: float, interval: float = 1.0,
                 spread: float | None = None, connect_concurrency: int = 256,
                 connect_timeout: float = 10.0, ramp_timeout: float = 60.0, progress=None) -> None:
        parts = urlsplit(url)
        if parts.scheme != "http" or not parts.hostname:
            raise ValueError(f"expected an http:// URL, got {url!r}")
        self.host, self.port = parts.hostname, parts.port or 80
        self.host_header = parts.netloc
        self.target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        self.clients, self.duration, self.interval = clients, duration, interval
        self.spread = interval if spread is None else spread
        self.connect_concurrency = connect_concurrency
        self.connect_timeout, self.ramp_timeout = connect_timeout, ramp_timeout
        self.progress = progress
        # Per client, by index.
        self.connect: list[float | None] = [None] * clients
        self.request_sent: list[float | None] = [None] * clients
        self.first_event: list[float | None] = [None] * clients
        self.events = [0] * clients
        self.worst_late = [0.0] * clients
        self.errors: list[str | None] = [None] * clients
        # Per event, all clients together.
        self.lags_ms: list[float] = []
        self.lateness_ms: list[float] = []
        self.open_clients: dict[int, SSEClient] = {}
        self.total_events = 0
        self.leaving = False

    async def run(self) -> dict:
        loop = asyncio.get_running_loop()
        started = time.time()
        reporter = loop.create_task(self.report_progress(started))
        await self.connect_all(started + self.ramp_timeout)
        ramp_end = time.time()
        end = ramp_end + self.duration
        await asyncio.sleep(self.duration)
        self.leaving = True
        for client in list(self.open_clients.values()):
            client.transport.abort()
        reporter.cancel()
        await asyncio.sleep(0)  # let the transports finish closing
        return self.result(started, ramp_end, end)

    async def connect_all(self, deadline: float) -> None:
        """A few workers share the list of clients, so only so many handshakes are in flight."""
        loop = asyncio.get_running_loop()
        todo = iter(range(self.clients))

        first = time.time()
        pace = self.spread / self.clients

        async def worker() -> None:
            for i in todo:
                delay = first + i * pace - time.time()
                if delay > 0:
                    await asyncio.sleep(delay)
                if time.time() > deadline:
                    self.errors[i] = "not connected: ramp timeout"
                    continue
                started = time.perf_counter()
                try:
                    async with asyncio.timeout(self.connect_timeout):
                        await loop.create_connection(lambda: SSEClient(self, i, started),
                                                     self.host, self.port)
                except (OSError, TimeoutError) as exc:
                    self.errors[i] = f"connect: {type(exc).__name__}: {exc}"

        await asyncio.gather(*(worker() for _ in range(min(self.connect_concurrency, self.clients))))

    async def report_progress(self, started: float) -> None:
        while self.progress is not None:
            await asyncio.sleep(PROGRESS_EVERY)
            self.progress({"open": len(self.open_clients), "events": self.total_events,
                           "errors": sum(e is not None for e in self.errors),
                           "elapsed": round(time.time() - started, 2)})

    def result(self, started: float, ramp_end: float, end: float) -> dict:
        interval = self.interval
        expected = [max(1, int((end - sent) / interval)) if sent is not None else 0
                    for sent in self.request_sent]
        ttfe = [round((first - sent) * 1000, 3) if first is not None else None
                for first, sent in zip(self.first_event, self.request_sent)]
        return {
            "clients": self.clients, "duration": self.duration, "interval": interval,
            "started": started, "ramp_s": round(ramp_end - started, 3), "ended": end,
            "connect_ms": [round(c * 1000, 3) if c is not None else None for c in self.connect],
            "ttfe_ms": ttfe, "events": self.events, "expected": expected, "errors": self.errors,
            "worst_late_ms": self.worst_late,
            "lags_ms": self.lags_ms, "lateness_ms": self.lateness_ms,
        }


def merge(results: list[dict]) -> dict:
    """Put the shares of several generator processes together, as if one process ran them."""
    merged = dict(results[0])
    merged["clients"] = sum(r["clients"] for r in results)
    merged["started"] = min(r["started"] for r in results)
    merged["ended"] = max(r["ended"] for r in results)
    merged["ramp_s"] = max(r["ramp_s"] for r in results)
    for key in ("connect_ms", "ttfe_ms", "events", "expected", "errors", "worst_late_ms", "lags_ms",
                "lateness_ms"):
        merged[key] = [value for r in results for value in r[key]]
    merged["processes"] = len(results)
    return merged


def fully_served(result: dict) -> list[bool]:
    """Per client: no error, and every event it was due (see the module docstring)."""
    return [error is None and events >= expected > 0
            for error, events, expected in zip(result["errors"], result["events"], result["expected"])]


def run_sse_load(url: str, clients: int, duration: float, *, interval: float = 1.0,
                 spread: float | None = None, processes: int = 1, progress=None,
                 timeout: float | None = None) -> dict:
    """Run `clients` SSE clients in `processes` separate generator processes; merged result.

    `spread` is the ramp (default: one interval). `progress(report)` is called now and then
    with the totals so far: open connections, events, errors, elapsed seconds.
    """
    args = ["--duration", str(duration), "--interval", str(interval)]
    if spread is not None:
        args += ["--spread", str(spread)]
    return merge(run_in_processes("asgi_lab.load.sse", url, clients, args, processes, progress,
                                  timeout or duration + 120))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m asgi_lab.load.sse", description=__doc__.split("\n")[0])
    parser.add_argument("url", help="the SSE endpoint, e.g. http://127.0.0.1:8000/events")
    parser.add_argument("--clients", type=int, default=100)
    parser.add_argument("--duration", type=float, default=10.0, help="seconds to hold after the ramp")
    parser.add_argument("--interval", type=float, default=1.0, help="the server's seconds between events")
    parser.add_argument("--spread", type=float, default=None,
                        help="seconds over which to spread the connects (default: one interval)")
    parser.add_argument("--connect-concurrency", type=int, default=256)
    parser.add_argument("--out", help="write the JSON result here (default: stdout)")
    parser.add_argument("--progress", action="store_true", help="print a JSON progress line now and then")
    args = parser.parse_args(argv)
    try:
        raise_open_files_limit(args.clients)
    except TooManyClients as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    progress = (lambda report: print(json.dumps({"progress": report}), flush=True)) if args.progress else None
    load = SSELoad(args.url, args.clients, args.duration, args.interval, spread=args.spread,
                   connect_concurrency=args.connect_concurrency, progress=progress)
    result = asyncio.run(load.run())
    if args.out:
        with open(args.out, "w") as f:
            json.dump(result, f)
    else:
        json.dump(result, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
