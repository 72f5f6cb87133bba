"""N concurrent Server-Sent-Events clients against one server, from a process of its own.

    python -m asgi_lab.load.sse http://127.0.0.1:8000/events --clients 1000 --duration 10

or from Python (this starts the generator processes and merges what they measured):

    from asgi_lab.load.sse import run_sse_load
    result = run_sse_load("http://127.0.0.1:8000/events", clients=1000, duration=10)

A run ramps, holds and leaves as every generator's does (`clients.py`); the connects are
spread over one interval by default, so the clients' event clocks are spread over the second
as real clients' would be, instead of all ticking at once. Each client sends `GET /events` as
soon as it is connected, and leaving closes every connection (the server should notice each
disconnect).

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

import sys
import time

import h11

from .clients import ClientLoad, HTTPClient, main as generator_main, run_generators, stamp


class SSEClient(HTTPClient):
    """One SSE client: sends its GET when connected, counts and times the events it receives."""

    def connection_made(self, transport) -> None:
        super().connection_made(transport)
        self.send_get(("accept", "text/event-stream"))
        self.run.request_sent[self.index] = time.time()

    def event_received(self, event, now: float) -> bool:
        event_type = type(event)
        if event_type is h11.Data:
            self.events_received(event.data, now)
        elif event_type is h11.Response:
            if event.status_code != 200:
                self.fail(f"status {event.status_code}")
                return False
        elif event_type is h11.EndOfMessage or event_type is h11.ConnectionClosed:
            self.fail("stream ended by the server")
            return False
        return True

    def events_received(self, data: bytes, now: float) -> None:
        """Split the text/event-stream into events (a blank line ends one) and time them."""
        run, i = self.run, self.index
        buffer = self.pending + data
        *events, self.pending = buffer.split(b"\n\n")
        for event in events:
            for line in event.split(b"\n"):
                if line.startswith(b"data:"):
                    stamps = stamp(line[5:])  # SEQ DUE SENT
                    if stamps is not None:  # our format; any other server's events just count
                        _, due, sent = stamps
                        late = round((sent - due) * 1000, 3)
                        run.lags_ms.append(round((now - sent) * 1000, 3))
                        run.lateness_ms.append(late)
                        if late > run.worst_late[i]:
                            run.worst_late[i] = late
                    if run.first_event[i] is None:
                        run.first_event[i] = now
                    run.events[i] += 1
                    run.total += 1


class SSELoad(ClientLoad):
    """One process's share of the SSE clients, and everything measured about them."""

    counted = "events"
    per_client = ("ttfe_ms", "events", "expected", "worst_late_ms", "lags_ms", "lateness_ms")
    options = {"interval": (1.0, "the server's seconds between events")}

    def __init__(self, url: str, clients: int, duration: float, interval: float = 1.0,
                 spread: float | None = None, **ramp) -> None:
        super().__init__(url, clients, duration, spread=interval if spread is None else spread, **ramp)
        self.interval = interval
        # Per client, by index.
        self.request_sent: list[float | None] = [None] * clients
        self.first_event: list[float | None] = [None] * clients
        self.events = [0] * clients
        self.worst_late = [0.0] * clients
        # Per event, all clients together.
        self.lags_ms: list[float] = []
        self.lateness_ms: list[float] = []

    def client(self, index: int, connect_started: float) -> SSEClient:
        return SSEClient(self, index, connect_started)

    def measurements(self, end: float) -> dict:
        interval = self.interval
        expected = [max(1, int((end - sent) / interval)) if sent is not None else 0
                    for sent in self.request_sent]
        ttfe = [round((first - sent) * 1000, 3) if first is not None else None
                for first, sent in zip(self.first_event, self.request_sent)]
        return {"interval": interval, "ttfe_ms": ttfe, "events": self.events, "expected": expected,
                "worst_late_ms": self.worst_late, "lags_ms": self.lags_ms,
                "lateness_ms": self.lateness_ms}


def fully_served(result: dict) -> list[bool]:
    """Per client: no error, and every event it was due (see the module docstring)."""
    return [error is None and events >= expected > 0
            for error, events, expected in zip(result["errors"], result["events"], result["expected"])]


def run_sse_load(url: str, clients: int, duration: float, **options) -> dict:
    """Run `clients` SSE clients in separate generator processes; the merged result.

    `options`: interval (default 1 s), processes (1), progress (called now and then with the
    totals so far: open connections, events, errors, elapsed seconds), timeout, and the ramp's
    spread (default: one interval), connect_concurrency, connect_timeout, ramp_timeout
    (see `clients.ClientLoad`)."""
    return run_generators(SSELoad, url, clients, duration, **options)


def main(argv: list[str] | None = None) -> int:
    return generator_main(SSELoad, argv)


if __name__ == "__main__":
    sys.exit(main())
