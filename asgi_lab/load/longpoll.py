"""N concurrent long-polling clients against one server, from a process of their own.

    python -m asgi_lab.load.longpoll http://127.0.0.1:8000/poll --clients 1000 --duration 10

Each client asks `GET /poll`, and as soon as an answer comes back asks again, on the same
keep-alive connection (a new one if the server closed it): the pattern of a chat page that
polls for news. The server holds each request until it publishes a message (every `period`
seconds, at wall-clock multiples of the period; see `asgi_lab/apps/sse.py`) or its timeout
passes (204 No Content).

Per client it records how many messages it got and how many it was due (one per
publication while it was polling, less a period of grace at each end), requests, timeouts
and errors;
per message, the delivery lag: our receive time minus the server's PUBLISHED stamp.
A client *missed* a message when it was not waiting at the server (queued behind busy
workers, or still on its way back) when the message was published.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import sys
import time
from urllib.parse import urlsplit

import h11

from . import TooManyClients, raise_open_files_limit
from .process import run_in_processes

PROGRESS_EVERY = 0.5


def published_stamp(body: bytes) -> float | None:
    """PUBLISHED from a message in our format, `SEQ PUBLISHED SENT`; None for any other."""
    parts = body.split()
    if len(parts) != 3:
        return None
    try:
        return float(parts[1])
    except ValueError:
        return None


class LongPollClient(asyncio.Protocol):
    """One client: a request, the (held) response, the next request, until the run ends."""

    __slots__ = ("run", "index", "conn", "transport", "body", "retired")

    def __init__(self, run: "LongPollLoad", index: int) -> None:
        self.run = run
        self.index = index
        self.conn = h11.Connection(h11.CLIENT)
        self.transport: asyncio.Transport | None = None
        self.body = b""
        self.retired = False  # replaced by a new connection: its closing is no error

    def connection_made(self, transport: asyncio.Transport) -> None:
        self.transport = transport
        self.run.open_clients[self.index] = self
        self.send_request()

    def send_request(self) -> None:
        run = self.run
        request = h11.Request(method="GET", target=run.target, headers=[("host", run.host_header)])
        self.transport.write(self.conn.send(request) + self.conn.send(h11.EndOfMessage()))
        run.requests[self.index] += 1
        if run.first_request[self.index] is None:
            run.first_request[self.index] = time.time()

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
            if event_type is h11.Response:
                if event.status_code not in (200, 204):
                    self.fail(f"status {event.status_code}")
                    return
                if event.status_code == 204:
                    self.run.timeouts[self.index] += 1
            elif event_type is h11.Data:
                self.body += event.data
            elif event_type is h11.EndOfMessage:
                self.response_complete(now)
                return
            elif event_type is h11.ConnectionClosed:
                return

    def response_complete(self, now: float) -> None:
        run, body = self.run, self.body
        self.body = b""
        if body:
            published = published_stamp(body)
            if published is not None:  # our format; another server's messages count, no lag
                run.lags_ms.append(round((now - published) * 1000, 3))
                run.published[self.index].append(published)
            run.received[self.index] += 1
            run.total_messages += 1
        if run.leaving:
            return
        if self.conn.our_state is h11.DONE and self.conn.their_state is h11.DONE:
            self.conn.start_next_cycle()
            self.send_request()
        else:  # the server closes after each response: poll again on a new connection
            run.reconnects[self.index] += 1
            self.retired = True
            self.transport.close()
            run.reconnect(self.index)

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


class LongPollLoad:
    """One process's share of the long-polling clients, and what was measured about them."""

    def __init__(self, url: str, clients: int, duration: float, period: float,
                 spread: float = 1.0, connect_concurrency: int = 256,
                 connect_timeout: float = 10.0, progress=None) -> None:
        parts = urlsplit(url)
        if parts.scheme != "http" or not parts.hostname:
            raise ValueError(f"expected an http:// URL, got {url!r}")
        self.host, self.port = parts.hostname, parts.port or 80
        self.host_header = parts.netloc
        self.target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        self.clients, self.duration, self.period = clients, duration, period
        self.spread, self.connect_concurrency = spread, connect_concurrency
        self.connect_timeout = connect_timeout
        self.progress = progress
        self.first_request: list[float | None] = [None] * clients
        self.requests = [0] * clients
        self.published: list[list[float]] = [[] for _ in range(clients)]
        self.timeouts = [0] * clients
        self.received = [0] * clients  # every non-empty answer, in our format or not
        self.reconnects = [0] * clients
        self.errors: list[str | None] = [None] * clients
        self.lags_ms: list[float] = []
        self.open_clients: dict[int, LongPollClient] = {}
        self.total_messages = 0
        self.leaving = False
        self.pending: set[asyncio.Task] = set()

    async def connect(self, index: int) -> None:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self.connect_timeout):
                await loop.create_connection(lambda: LongPollClient(self, index), self.host, self.port)
        except (OSError, TimeoutError) as exc:
            self.errors[index] = f"connect: {type(exc).__name__}: {exc}"

    def reconnect(self, index: int) -> None:
        task = asyncio.get_running_loop().create_task(self.connect(index))
        self.pending.add(task)
        task.add_done_callback(self.pending.discard)

    async def run(self) -> dict:
        started = time.time()
        reporter = asyncio.get_running_loop().create_task(self.report_progress(started))
        todo = iter(range(self.clients))
        pace = self.spread / self.clients

        async def worker() -> None:
            for i in todo:
                delay = started + i * pace - time.time()
                if delay > 0:
                    await asyncio.sleep(delay)
                await self.connect(i)

        await asyncio.gather(*(worker() for _ in range(min(self.connect_concurrency, self.clients))))
        ramp_end = time.time()
        end = ramp_end + self.duration
        await asyncio.sleep(self.duration)
        self.leaving = True
        for task in list(self.pending):
            task.cancel()
        for client in list(self.open_clients.values()):
            client.transport.abort()
        reporter.cancel()
        await asyncio.sleep(0)
        return self.result(started, ramp_end, end)

    async def report_progress(self, started: float) -> None:
        while self.progress is not None:
            await asyncio.sleep(PROGRESS_EVERY)
            self.progress({"open": len(self.open_clients), "messages": self.total_messages,
                           "errors": sum(e is not None for e in self.errors),
                           "elapsed": round(time.time() - started, 2)})

    def result(self, started: float, ramp_end: float, end: float) -> dict:
        period = self.period
        # Publications happen at multiples of the period: number k at k * period. A client is
        # due every k from one period after its first request (its first request may still be
        # on its way to the server) to one period before the end (the last message may still
        # be on its way back). Only those count, both in what it was due and in what it got.
        grace = max(period, 0.5)
        last = math.floor((end - grace) / period)
        firsts = [math.floor((first + grace) / period) if first is not None else last
                  for first in self.first_request]
        expected = [max(0, last - k0) for k0 in firsts]
        messages = [len({k for k in (round(p / period) for p in published) if k0 < k <= last})
                    for k0, published in zip(firsts, self.published)]
        return {
            "clients": self.clients, "duration": self.duration, "period": period,
            "started": started, "ramp_s": round(ramp_end - started, 3), "ended": end,
            "requests": self.requests, "messages": messages, "expected": expected,
            "timeouts": self.timeouts, "reconnects": self.reconnects, "errors": self.errors,
            "lags_ms": self.lags_ms, "received": self.received,
        }


def merge(results: list[dict]) -> dict:
    merged = dict(results[0])
    merged["clients"] = sum(r["clients"] for r in results)
    merged["started"] = min(r["started"] for r in results)
    merged["ended"] = max(r["ended"] for r in results)
    merged["ramp_s"] = max(r["ramp_s"] for r in results)
    for key in ("requests", "messages", "expected", "timeouts", "reconnects", "errors", "lags_ms",
                "received"):
        merged[key] = [value for r in results for value in r.get(key, ())]
    merged["processes"] = len(results)
    return merged


def run_longpoll_load(url: str, clients: int, duration: float, *, period: float = 2.0,
                      spread: float = 1.0, processes: int = 1, progress=None,
                      timeout: float | None = None) -> dict:
    """Run `clients` long-polling clients in `processes` generator processes; merged result.

    The clients start over `spread` seconds (then hold for `duration`)."""
    args = ["--duration", str(duration), "--period", str(period), "--spread", str(spread)]
    return merge(run_in_processes("asgi_lab.load.longpoll", url, clients, args, processes,
                                  progress, timeout or duration + 120))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m asgi_lab.load.longpoll",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("url", help="the long-polling endpoint, e.g. http://127.0.0.1:8000/poll")
    parser.add_argument("--clients", type=int, default=100)
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--period", type=float, default=2.0, help="the server's seconds between messages")
    parser.add_argument("--spread", type=float, default=1.0, help="seconds over which to spread the connects")
    parser.add_argument("--out", help="write the JSON result here (default: stdout)")
    parser.add_argument("--progress", action="store_true")
    args = parser.parse_args(argv)
    try:
        raise_open_files_limit(args.clients)
    except TooManyClients as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    progress = (lambda report: print(json.dumps({"progress": report}), flush=True)) if args.progress else None
    load = LongPollLoad(args.url, args.clients, args.duration, args.period, spread=args.spread,
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
