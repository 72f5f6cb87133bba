"""Talking to a server over a plain socket, the bytes as they are: the notebooks' clients.

- `GET_REQUEST`, `POST_REQUEST`: the two requests of the demo and of the first notebooks;
- `exchange`: send raw bytes, read until the server closes (or until some bytes arrived);
- `trace_exchange`: the same with a traced server, returning that connection's events,
  complete (it waits until the server has closed the connection too);
- `time_to_first_byte`: when the answer starts; `leave_early`: a client that hangs up
  half-way and says when; `concurrent_requests`: many clients at once, a thread each.
"""

from __future__ import annotations

import socket
import threading
import time

from .trace import TraceEvent, Tracer

#: The two requests of the demo and of the first notebooks. `Connection: close` makes the
#: end of each exchange part of the trace: the server closes after its response.
GET_REQUEST = b"GET /hello HTTP/1.1\r\nHost: lab\r\nConnection: close\r\n\r\n"
POST_REQUEST = (b"POST /echo HTTP/1.1\r\nHost: lab\r\nContent-Type: text/plain\r\n"
                b"Content-Length: 11\r\nConnection: close\r\n\r\nhello there")


def exchange(address: tuple[str, int], request: bytes, timeout: float = 5.0,
             until: bytes | None = None) -> bytes:
    """Send `request` in one `sendall` and read until the server closes; return what came back.

    With `until`, stop reading as soon as those bytes have arrived and close the connection
    ourselves: a client that leaves in the middle of a (streamed) response.
    """
    with socket.create_connection(address, timeout=timeout) as sock:
        sock.sendall(request)
        received = bytearray()
        while chunk := sock.recv(65536):
            received += chunk
            if until is not None and until in received:
                break
    return bytes(received)


def time_to_first_byte(address: tuple[str, int], request: bytes,
                       timeout: float = 5.0) -> tuple[float, bytes]:
    """Send `request`; return how many seconds passed before the first byte of the answer
    arrived, and the whole answer (read until the server closes)."""
    with socket.create_connection(address, timeout=timeout) as sock:
        sent = time.monotonic()
        sock.sendall(request)
        received = bytearray(sock.recv(65536))
        first = time.monotonic() - sent
        while chunk := sock.recv(65536):
            received += chunk
    return first, bytes(received)


def leave_early(address: tuple[str, int], request: bytes, *, until: bytes | None = None,
                after: float | None = None, timeout: float = 5.0) -> float:
    """A client that goes away before its answer is complete: send `request`, read until
    `until` has arrived (or wait `after` seconds), then close the socket. Returns the
    `time.monotonic()` of the close, to measure how long the server takes to notice."""
    with socket.create_connection(address, timeout=timeout) as sock:
        sock.sendall(request)
        received = bytearray()
        while until is not None and until not in received and (chunk := sock.recv(65536)):
            received += chunk
        if after is not None:
            time.sleep(after)
    return time.monotonic()


def trace_exchange(server, tracer: Tracer, request: bytes, timeout: float = 5.0,
                   until: bytes | None = None) -> list[TraceEvent]:
    """`exchange` with a traced server: return the events of that connection, complete.

    The server runs on other threads; after the client has its answer, the server may still
    be closing its side. We wait for `connection_lost`, so nothing arrives after we return.
    """
    mark = len(tracer.events)
    exchange(server.address, request, timeout, until)
    opened = [e for e in tracer.events[mark:] if e.kind == "connection_made"]
    if not opened:
        raise RuntimeError("the server recorded no connection_made: is the tracer its tracer?")
    conn = opened[0].conn
    tracer.wait_for(conn=conn, kind="connection_lost", timeout=timeout)
    return tracer.filter(conn=conn)


def concurrent_requests(server, count: int = 8, request: bytes = GET_REQUEST,
                        timeout: float = 10.0) -> None:
    """`count` clients at once, one thread each, every one with its own connection. With a
    traced server, returns once the server has closed all of them (the trace is complete)."""
    tracer = getattr(server, "tracer", None)
    mark = len(tracer.events) if tracer is not None else 0
    clients = [threading.Thread(target=exchange, args=(server.address, request, timeout))
               for _ in range(count)]
    for client in clients:
        client.start()
    for client in clients:
        client.join(timeout)
    deadline = time.monotonic() + timeout
    while tracer is not None and time.monotonic() < deadline:
        if sum(e.kind == "connection_lost" for e in tracer.events[mark:]) >= count:
            break
        time.sleep(0.005)
