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
workers, or still on its way back) when the message was published. The clients ramp, hold
and leave as every generator's do (`clients.py`).
"""

from __future__ import annotations

import asyncio
import math
import sys
import time

import h11

from .clients import ClientLoad, HTTPClient, main as generator_main, run_generators, stamp


class LongPollClient(HTTPClient):
    """One client: a request, the (held) response, the next request, until the run ends."""

    def connection_made(self, transport) -> None:
        super().connection_made(transport)
        self.send_request()

    def send_request(self) -> None:
        run = self.run
        self.send_get()
        run.requests[self.index] += 1
        if run.first_request[self.index] is None:
            run.first_request[self.index] = time.time()

    def event_received(self, event, now: float) -> bool:
        event_type = type(event)
        if event_type is h11.Response:
            if event.status_code not in (200, 204):
                self.fail(f"status {event.status_code}")
                return False
            if event.status_code == 204:
                self.run.timeouts[self.index] += 1
        elif event_type is h11.Data:
            self.pending += event.data
        elif event_type is h11.EndOfMessage:
            self.response_complete(now)
            return False
        elif event_type is h11.ConnectionClosed:
            return False
        return True

    def response_complete(self, now: float) -> None:
        run, body = self.run, self.pending
        self.pending = b""
        if body:
            stamps = stamp(body)  # SEQ PUBLISHED SENT
            if stamps is not None:  # our format; another server's messages count, no lag
                published = stamps[1]
                run.lags_ms.append(round((now - published) * 1000, 3))
                run.published[self.index].append(published)
            run.received[self.index] += 1
            run.total += 1
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


class LongPollLoad(ClientLoad):
    """One process's share of the long-polling clients, and what was measured about them."""

    counted = "messages"
    per_client = ("requests", "messages", "expected", "timeouts", "reconnects", "lags_ms", "received")
    options = {"period": (2.0, "the server's seconds between messages")}

    def __init__(self, url: str, clients: int, duration: float, period: float = 2.0, **ramp) -> None:
        super().__init__(url, clients, duration, **ramp)
        self.period = period
        self.first_request: list[float | None] = [None] * clients
        self.requests = [0] * clients
        self.published: list[list[float]] = [[] for _ in range(clients)]
        self.timeouts = [0] * clients
        self.received = [0] * clients  # every non-empty answer, in our format or not
        self.reconnects = [0] * clients
        self.lags_ms: list[float] = []
        self.pending: set = set()

    def client(self, index: int, connect_started: float) -> LongPollClient:
        return LongPollClient(self, index, connect_started)

    def reconnect(self, index: int) -> None:
        task = asyncio.get_running_loop().create_task(self.connect_one(index))
        self.pending.add(task)
        task.add_done_callback(self.pending.discard)

    async def leave(self) -> None:
        for task in list(self.pending):
            task.cancel()
        await super().leave()

    def measurements(self, end: float) -> dict:
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
        return {"period": period, "requests": self.requests, "messages": messages,
                "expected": expected, "timeouts": self.timeouts, "reconnects": self.reconnects,
                "lags_ms": self.lags_ms, "received": self.received}


def run_longpoll_load(url: str, clients: int, duration: float, **options) -> dict:
    """Run `clients` long-polling clients in generator processes; the merged result.

    `options`: period (default 2 s), processes, progress, timeout, and the ramp's spread
    (default 1 s: the clients start over it, then hold for `duration`), connect_concurrency,
    connect_timeout, ramp_timeout (see `clients.ClientLoad`)."""
    return run_generators(LongPollLoad, url, clients, duration, **options)


def main(argv: list[str] | None = None) -> int:
    return generator_main(LongPollLoad, argv)


if __name__ == "__main__":
    sys.exit(main())
