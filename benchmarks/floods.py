"""Floods and slow peers: the server's memory stays bounded, and idle connections are closed.

    python benchmarks/floods.py                  # both servers
    python benchmarks/floods.py --server asgi --idle 5000

Each scenario runs against a fresh server subprocess (`python -m asgi_lab ...soak app`) while a
thread samples the server's resident memory (RSS) every 5 ms. The table shows how much data
the client pushed or asked for, and the largest RSS growth the server showed meanwhile. A
server that buffered what it was sent would grow by the data's size; ours should grow by a
few hundred KiB at most (high-water marks: `read_high_water`, the transport's write buffer,
`ws_write_high_water`; see asgi_lab/config.py).

    upload      a 96 MiB body (the default limit is 100 MiB), sent as fast as possible to an app that reads it slowly
    slow reader a 256 MiB response that the client does not read for 2 s, then reads
    pipeline    100,000 pipelined requests sent without reading an answer, then read
    ws flood    (ASGI) 64 MiB of WebSocket messages to an echo the client never reads
    idle        N connections that never send a byte: how long until the idle timeout
                closes them all, and the fds before / with them open / after
    pool        (WSGI) 10x more concurrent slow requests than worker threads: all answered

`--json FILE` writes every row's figures; `markdown(result)` renders the tables from them.
"""

from __future__ import annotations

import argparse
import socket
import sys
import threading
import time

import wsproto
from wsproto.events import AcceptConnection, BytesMessage, Request

from harness import markdown_table, measured, text_table

from asgi_lab.experiments.results import write_result
from asgi_lab.experiments.servers import ServerProcess, ours

MiB = 1024 * 1024


class PeakRSS:
    """Samples the server's RSS in a thread: the peak growth over the value at start."""

    def __init__(self, server: ServerProcess) -> None:
        self.server, self.start = server, server.ps.memory_info().rss
        self.peak, self._stop = self.start, threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.server.ps.memory_info().rss)
            time.sleep(0.005)

    def __enter__(self) -> "PeakRSS":
        self._thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self._stop.set()
        self._thread.join()

    @property
    def growth_mib(self) -> float:
        return (self.peak - self.start) / MiB


def read_all(sock: socket.socket, size: int) -> int:
    received = 0
    while received < size:
        data = sock.recv(4 * MiB)
        if not data:
            break
        received += len(data)
    return received


def upload(server: ServerProcess) -> tuple[str, bool]:
    size = 96 * MiB  # under the default max_body_bytes (100 MiB)
    with socket.create_connection(server.address) as sock:
        sock.sendall(b"POST /slow-read?delay=0.0005 HTTP/1.1\r\nhost: f\r\ncontent-length: %d\r\n\r\n" % size)
        chunk = b"x" * MiB
        for _ in range(size // MiB):
            sock.sendall(chunk)
        answer = sock.recv(65536)
    return "96 MiB body", answer.endswith(str(size).encode())


def slow_reader(server: ServerProcess) -> tuple[str, bool]:
    size = 256 * MiB
    with socket.create_connection(server.address) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
        sock.sendall(b"GET /big?size=%d HTTP/1.1\r\nhost: f\r\n\r\n" % size)
        time.sleep(2.0)
        received = read_all(sock, size)
    return "256 MiB response", received > size


def pipeline(server: ServerProcess) -> tuple[str, bool]:
    count = 100_000
    with socket.create_connection(server.address) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
        sender = threading.Thread(target=sock.sendall, args=(b"GET / HTTP/1.1\r\nhost: f\r\n\r\n" * count,))
        sender.start()
        time.sleep(1.0)
        answers, tail, end = 0, b"", b"\r\n\r\nok"  # each answer ends with its body, "ok"
        while answers < count:
            chunk = sock.recv(4 * MiB)
            if not chunk:
                break
            data = tail + chunk  # an answer's end may straddle two reads
            answers += data.count(end)
            tail = data[-(len(end) - 1):]
        sender.join()
    return f"{count:,} requests", answers == count


def ws_flood(server: ServerProcess) -> tuple[str, bool]:
    """Send 64 MiB of 64 KiB messages to the echo and never read: the server stops reading
    once its queue and write buffer are full, so our sendall blocks; then we read it all."""
    total, size = 64 * MiB, 64 * 1024
    with socket.create_connection(server.address) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
        ws = wsproto.WSConnection(wsproto.ConnectionType.CLIENT)
        sock.sendall(ws.send(Request(host="f", target="/ws")))
        accepted = False
        while not accepted:
            ws.receive_data(sock.recv(65536))
            accepted = any(isinstance(e, AcceptConnection) for e in ws.events())
        frames = b"".join(ws.send(BytesMessage(data=b"x" * size)) for _ in range(16))
        sender = threading.Thread(target=lambda: [sock.sendall(frames) for _ in range(total // size // 16)])
        sender.start()
        time.sleep(2.0)
        echoed = 0
        while echoed < total:
            data = sock.recv(4 * MiB)
            if not data:
                break
            ws.receive_data(data)
            echoed += sum(len(e.data) for e in ws.events() if isinstance(e, BytesMessage))
        sender.join()
    return "64 MiB of messages", echoed == total


def idle(server: ServerProcess, count: int, timeout: float) -> dict:
    """Open `count` connections that never send a byte; time until the server closed them all."""
    before = server.ps.num_fds()
    first = time.monotonic()
    sockets = [socket.create_connection(server.address) for _ in range(count)]
    last = time.monotonic()
    time.sleep(0.3)
    with_them = server.ps.num_fds()
    for sock in sockets:
        sock.settimeout(timeout + 30)
    closed = sum(1 for sock in sockets if sock.recv(1) == b"")
    took = time.monotonic() - last
    for sock in sockets:
        sock.close()
    time.sleep(0.3)
    return {"connections": count, "closed": closed, "seconds": round(took, 3), "idle_timeout": timeout,
            "opening_seconds": round(last - first, 3),
            "fds": [before, with_them, server.ps.num_fds()]}


def idle_text(row: dict) -> str:
    before, with_them, after = row["fds"]
    return (f"{row['closed']:,} of {row['connections']:,} idle connections closed by the server, all within "
            f"{row['seconds']:.1f} s of the last one opening (idle timeout {row['idle_timeout']:g} s; opening "
            f"them took {row['opening_seconds']:.1f} s); server fds {before} -> {with_them} -> {after}")


def pool(server: ServerProcess, threads: int) -> dict:
    """10x more concurrent 0.2 s requests than worker threads: are all answered, and how soon?"""
    count = threads * 10
    results: list[bytes] = []

    def one():
        with socket.create_connection(server.address, timeout=60) as sock:
            sock.sendall(b"GET /sleep?s=0.2 HTTP/1.1\r\nhost: f\r\nconnection: close\r\n\r\n")
            data = b""
            while chunk := sock.recv(65536):
                data += chunk
            results.append(data)

    started = time.monotonic()
    clients = [threading.Thread(target=one) for _ in range(count)]
    for client in clients:
        client.start()
    for client in clients:
        client.join()
    took = time.monotonic() - started
    ok = sum(1 for r in results if r.startswith(b"HTTP/1.1 200 ") and r.endswith(b"slept"))
    return {"requests": count, "threads": threads, "answered": ok, "seconds": round(took, 3),
            "ideal_seconds": round(count / threads * 0.2, 3)}


def pool_text(row: dict) -> str:
    return (f"{row['requests']} concurrent 0.2 s requests on {row['threads']} threads: {row['answered']} of "
            f"{row['requests']} answered 200 in {row['seconds']:.1f} s (ideal {row['ideal_seconds']:.1f} s)")


def start_server(kind: str, threads: int, keep_alive: float = 1.0) -> ServerProcess:
    """Our `kind` server on the soak app (`asgi_lab/apps/soak.py`), in its own process."""
    options = ["--timeout-graceful-shutdown", "1", "--timeout-keep-alive", str(keep_alive),
               *(["--threads", str(threads)] if kind == "wsgi" else [])]
    app = "asgi_lab.apps.soak:" + ("app" if kind == "asgi" else "wsgi_app")
    return ServerProcess(ours(kind, *options), threads, app=app, ready_path="/").start()


def run(kind: str, idle_count: int, threads: int) -> list[dict]:
    """Every scenario on a fresh `kind` server: the table's rows, printed and returned."""
    rows = []
    print(f"\n== {kind.upper()} server")
    print(f"   {'scenario':<12} {'pushed':>20} {'peak RSS growth':>17}  complete")
    scenarios = [upload, slow_reader, pipeline] + ([ws_flood] if kind == "asgi" else [])
    for scenario in scenarios:
        server = start_server(kind, threads)
        try:
            time.sleep(0.3)
            with PeakRSS(server) as rss:
                pushed, complete = scenario(server)
            print(f"   {scenario.__name__:<12} {pushed:>20} {rss.growth_mib:>13.1f} MiB  "
                  f"{'yes' if complete else 'NO'}", flush=True)
            rows.append({"server": kind, "scenario": scenario.__name__, "pushed": pushed,
                         "peak_rss_growth_mib": round(rss.growth_mib, 2), "complete": complete})
        finally:
            server.stop()
    timeout = 2.0
    server = start_server(kind, threads, keep_alive=timeout)
    try:
        for name, check, text in (("idle", lambda: idle(server, idle_count, timeout), idle_text),
                                  *((("pool", lambda: pool(server, threads), pool_text),) if kind == "wsgi" else ())):
            row = {"server": kind, "scenario": name, **check()}
            print(f"   {name}:", text(row), flush=True)
            rows.append(row)
    finally:
        server.stop()
    return rows


FLOOD_HEADER = ["server", "scenario", "pushed", "peak RSS growth", "complete"]


def flood_rows(result: dict) -> list[list[str]]:
    return [[row["server"], row["scenario"], row["pushed"], f"{row['peak_rss_growth_mib']:.1f} MiB",
             "yes" if row["complete"] else "NO"] for row in result["runs"] if "pushed" in row]


def other_lines(result: dict) -> list[str]:
    """The idle and pool checks, each a sentence made from its figures."""
    texts = {"idle": idle_text, "pool": pool_text}
    return [f"{row['server']} {row['scenario']}: {texts[row['scenario']](row)}"
            for row in result["runs"] if row["scenario"] in texts]


def markdown(result: dict) -> str:
    """The table of a result file and its idle and pool checks, from the rows' figures."""
    return "\n".join([
        "Each flood against a fresh server process, its RSS sampled every 5 ms: the largest growth over "
        "its value at the start. A server that buffered what it was sent would grow by the data's size.", "",
        markdown_table(FLOOD_HEADER, flood_rows(result), left=3), "",
        *(f"- {line}" for line in other_lines(result)), "",
        f"{result['threads']} WSGI worker threads. {measured(result)}"])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--server", choices=("asgi", "wsgi", "both"), default="both")
    parser.add_argument("--idle", type=int, default=5000, help="idle connections to open")
    parser.add_argument("--threads", type=int, default=8, help="WSGI worker threads")
    parser.add_argument("--json", metavar="FILE", help="write every row and the machine here")
    args = parser.parse_args()
    rows = [row for kind in (("asgi", "wsgi") if args.server == "both" else (args.server,))
            for row in run(kind, args.idle, args.threads)]
    result = {"benchmark": "floods", "idle": args.idle, "threads": args.threads, "runs": rows}
    print()
    print(text_table(FLOOD_HEADER, flood_rows(result)))
    for line in other_lines(result):
        print(line)
    if args.json:
        write_result(result, args.json, indent=1)
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
