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

import asyncio
import re
import sys
import time

from wsproto import ConnectionType, WSConnection
from wsproto.events import (AcceptConnection, BytesMessage, CloseConnection, Ping, RejectConnection,
                            RejectData, Request, TextMessage)
from wsproto.utilities import RemoteProtocolError

from .clients import Client, ClientLoad, main as generator_main, run_generators

STAMP = re.compile(r"asgi_lab (\d+) (\d+\.\d+)")


class WSClient(Client):
    """One WebSocket client: handshake, a message now and then, count what comes back."""

    __slots__ = ("ws", "open", "seq", "timer", "handshake_started")

    def __init__(self, run: "WSLoad", index: int, connect_started: float) -> None:
        super().__init__(run, index, connect_started)
        self.ws = WSConnection(ConnectionType.CLIENT)
        self.open = False
        self.seq = 0
        self.timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport) -> None:
        super().connection_made(transport)
        self.handshake_started = time.perf_counter()
        transport.write(self.ws.send(Request(host=self.run.host_header, target=self.run.target)))

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
        run.total += 1
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
        if self.timer is not None:
            self.timer.cancel()
        super().fail(error)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.timer is not None:
            self.timer.cancel()
        super().connection_lost(exc)


class WSLoad(ClientLoad):
    """One process's share of the clients, and everything measured about them."""

    scheme = "ws"
    counted = "messages"
    per_client = ("handshake_ms", "ttfe_ms", "sent", "received", "lags_ms")
    options = {"send_interval": (1.0, "seconds between a client's messages (0: send nothing)")}

    def __init__(self, url: str, clients: int, duration: float, send_interval: float = 1.0,
                 **ramp) -> None:
        super().__init__(url, clients, duration, **ramp)
        self.send_interval = send_interval
        self.handshake: list[float | None] = [None] * clients
        self.accepted_at: list[float | None] = [None] * clients
        self.first_message: list[float | None] = [None] * clients
        self.sent = [0] * clients
        self.received = [0] * clients
        self.lags_ms: list[float] = []

    def client(self, index: int, connect_started: float) -> WSClient:
        return WSClient(self, index, connect_started)

    async def leave(self) -> None:
        """Close frames first (code 1000), a moment for the server's answers, then abort."""
        for client in list(self.open_clients.values()):
            client.close()
        await asyncio.sleep(0.2)
        await super().leave()

    def measurements(self, end: float) -> dict:
        ms = lambda seconds: round(seconds * 1000, 3) if seconds is not None else None  # noqa: E731
        return {
            "send_interval": self.send_interval,
            "handshake_ms": [ms(h) for h in self.handshake],
            "ttfe_ms": [ms(first - accepted) if first is not None and accepted is not None else None
                        for first, accepted in zip(self.first_message, self.accepted_at)],
            "sent": self.sent, "received": self.received, "lags_ms": self.lags_ms,
        }


def run_ws_load(url: str, clients: int, duration: float, **options) -> dict:
    """Run `clients` WebSocket clients in generator processes; the merged result. `options`:
    send_interval (default 1 s), processes, progress, timeout, and the ramp's (`clients.py`)."""
    return run_generators(WSLoad, url, clients, duration, **options)


def main(argv: list[str] | None = None) -> int:
    return generator_main(WSLoad, argv)


if __name__ == "__main__":
    sys.exit(main())
