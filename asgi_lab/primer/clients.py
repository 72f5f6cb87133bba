"""Many clients at once, and when each one got its answer.

    run = measure(server, ["/?ms=300"] * 4)   # 4 connections, opened one right after another
    run.visits[1].answered                     # seconds after the first connection opened

`measure()` opens one connection per target, sends each request at once, then waits for all
the answers, noting when each is complete (the primer's servers close the connection after
answering). It needs no threads: one thread waits on every socket with a selector (the
client side of `loop.py`'s idea, without the generators). So `threading.active_count()`,
sampled while the clients wait, counts the threads of this process *before* the clients
began plus those the server added for them. h11 writes the requests and reads the answers.
"""

from __future__ import annotations

import selectors
import socket
import threading
import time
from dataclasses import dataclass

import h11

from .server import PrimerServer


@dataclass(frozen=True)
class Visit:
    """One client's request, seen from both ends. Times in seconds after the first client
    began to connect; `sent` is when this one began (its request follows at once);
    `accepted` and `thread` come from the server's own record."""

    client: int
    target: str
    sent: float
    accepted: float | None
    answered: float
    status: int
    body: bytes
    thread: str | None

    @property
    def waited(self) -> float:
        """From sending the request to having the whole answer."""
        return self.answered - self.sent


@dataclass(frozen=True)
class Run:
    """What `measure()` saw."""

    label: str
    visits: list[Visit]
    threads_before: int
    """`threading.active_count()` just before the first client connected."""
    threads_peak: int
    """The most `threading.active_count()` showed while the clients waited."""

    @property
    def elapsed(self) -> float:
        """From the first connection to the last answer."""
        return max(visit.answered for visit in self.visits)

    @property
    def server_threads(self) -> set[str]:
        """The names of the server's threads that served these clients."""
        return {visit.thread for visit in self.visits if visit.thread}

    def table(self) -> str:
        rows = [f"{'client':>6} {'target':<16} {'sent':>6} {'accepted':>9} {'answered':>9}  "
                f"served by (ms after the first connection)"]
        for v in self.visits:
            accepted = "-" if v.accepted is None else f"{v.accepted * 1000:.0f}"
            rows.append(f"{v.client:>6} {v.target:<16} {v.sent * 1000:>6.0f} {accepted:>9} "
                        f"{v.answered * 1000:>9.0f}  {v.thread or '-'}")
        return "\n".join(rows)


def request_bytes(target: str) -> bytes:
    """A GET request for `target`, as h11 writes it."""
    client = h11.Connection(h11.CLIENT)
    request = h11.Request(method="GET", target=target,
                          headers=[("host", "primer"), ("connection", "close")])
    return client.send(request) + client.send(h11.EndOfMessage())


def parse_response(raw: bytes) -> tuple[int, bytes]:
    """The status and body of a response (status 0 if `raw` holds no complete one)."""
    client = h11.Connection(h11.CLIENT)
    client.send(h11.Request(method="GET", target="/", headers=[("host", "primer")]))
    client.send(h11.EndOfMessage())
    client.receive_data(raw)
    client.receive_data(b"")
    status, body = 0, b""
    try:
        while (event := client.next_event()) not in (h11.NEED_DATA, h11.PAUSED):
            if isinstance(event, h11.Response):
                status = event.status_code
            elif isinstance(event, h11.Data):
                body += event.data
            elif isinstance(event, (h11.EndOfMessage, h11.ConnectionClosed)):
                return status, body
    except h11.RemoteProtocolError:
        pass
    return 0, body


def measure(server: PrimerServer, targets: list[str], timeout: float = 20.0) -> Run:
    """Open a connection per target, all at once, and wait for every answer.

    Raises TimeoutError if answers are still missing after `timeout` seconds.
    """
    threads_before = threading.active_count()
    selector = selectors.DefaultSelector()
    start = time.perf_counter()
    opened = []
    try:
        for number, target in enumerate(targets, 1):
            sent = time.perf_counter() - start
            sock = socket.create_connection(server.address, timeout=timeout)
            sock.sendall(request_bytes(target))
            sock.setblocking(False)
            opened.append(sock)
            selector.register(sock, selectors.EVENT_READ,
                              dict(client=number, target=target, raw=b"",
                                   port=sock.getsockname()[1], sent=sent))
        threads_peak, answers = threading.active_count(), []
        while selector.get_map():
            if time.perf_counter() - start > timeout:
                raise TimeoutError(f"{len(selector.get_map())} of {len(targets)} answers "
                                   f"still missing after {timeout} s")
            for key, _ in selector.select(0.005):
                if _read(key.fileobj, key.data):
                    key.data["answered"] = time.perf_counter() - start
                    selector.unregister(key.fileobj)
                    answers.append(key.data)
            threads_peak = max(threads_peak, threading.active_count())
    finally:
        selector.close()
        for sock in opened:
            sock.close()
    return Run(server.label, _visits(answers, server, start), threads_before, threads_peak)


def _read(sock: socket.socket, state: dict) -> bool:
    """Read what arrived; True once the server has closed the connection."""
    try:
        chunk = sock.recv(65536)
    except BlockingIOError:
        return False
    except ConnectionResetError:
        return True
    state["raw"] += chunk
    return not chunk


def _visits(answers: list[dict], server: PrimerServer, start: float) -> list[Visit]:
    served = {record.client_port: record for record in server.served}
    visits = []
    for state in sorted(answers, key=lambda s: s["client"]):
        status, body = parse_response(state["raw"])
        record = served.get(state["port"])
        visits.append(Visit(state["client"], state["target"], state["sent"],
                            None if record is None else record.accepted - start,
                            state["answered"], status, body,
                            None if record is None else record.thread))
    return visits
