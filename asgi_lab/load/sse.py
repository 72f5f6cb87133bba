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

from .clients import Client, ClientLoad, main as generator_main, merge, ramp_arguments
from .process import run_in_processes


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


class SSEClient(Client):
    """One SSE client: sends its GET when connected, counts and times the events it receives."""

    __slots__ = ("conn", "buffer")

    def __init__(self, run: "SSELoad", index: int, connect_started: float) -> None:
        super().__init__(run, index, connect_started)
        self.conn = h11.Connection(h11.CLIENT)
        self.buffer = b""

    def connection_made(self, transport) -> None:
        super().connection_made(transport)
        run = self.run
        request = h11.Request(method="GET", target=run.target,
                              headers=[("host", run.host_header), ("accept", "text/event-stream")])
        transport.write(self.conn.send(request) + self.conn.send(h11.EndOfMessage()))
        run.request_sent[self.index] = time.time()

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
                    run.total += 1


class SSELoad(ClientLoad):
    """One process's share of the SSE clients, and everything measured about them."""

    counted = "events"
    per_client = ("ttfe_ms", "events", "expected", "worst_late_ms", "lags_ms", "lateness_ms")

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


def run_sse_load(url: str, clients: int, duration: float, *, interval: float = 1.0,
                 spread: float | None = None, connect_concurrency: int | None = None,
                 connect_timeout: float | None = None, ramp_timeout: float | None = None,
                 processes: int = 1, progress=None, timeout: float | None = None) -> dict:
    """Run `clients` SSE clients in `processes` separate generator processes; merged result.

    `spread` is the ramp (default: one interval); the other ramp options are the
    generator's (`clients.ClientLoad`). `progress(report)` is called now and then with the
    totals so far: open connections, events, errors, elapsed seconds.
    """
    args = ["--duration", str(duration), "--interval", str(interval), *ramp_arguments(
        dict(spread=spread, connect_concurrency=connect_concurrency,
             connect_timeout=connect_timeout, ramp_timeout=ramp_timeout))]
    results = run_in_processes("asgi_lab.load.sse", url, clients, args, processes, progress,
                               timeout or duration + (ramp_timeout or 60) + 60)
    return merge(results, SSELoad.per_client)


def main(argv: list[str] | None = None) -> int:
    def add_arguments(parser):
        parser.add_argument("--interval", type=float, default=1.0,
                            help="the server's seconds between events (default: 1)")

    return generator_main(SSELoad, argv, add_arguments, lambda args: {"interval": args.interval})


if __name__ == "__main__":
    sys.exit(main())
