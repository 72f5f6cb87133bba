"""Hardening: floods, slow and idle peers, disconnects at every stage, shutdown under load.

Each test is a hostile or unlucky client a server meets in real life, pointed at a real server
over loopback sockets, with a small configuration (short timeouts, small grace period) so the
whole file runs in well under a minute. The figures at production scale (5,000 idle
connections, 100,000-request soaks) come from `benchmarks/floods.py` and `benchmarks/soak.py`.

Bounded memory is shown from inside the server: the background server runs in this process,
so a test can look at its connections and read how many bytes each one buffers.

Signal handling needs a real process: those tests start `python -m asgi_lab ...` as a
subprocess and send it SIGTERM / SIGINT.
"""

from __future__ import annotations

import json
import logging
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import wsproto
from wsproto.events import AcceptConnection, Request
from wsproto.frame_protocol import FrameProtocol, Opcode

from asgi_lab.apps import soak
from asgi_lab.background import serve_in_background
from asgi_lab.core import FIRST_REQUEST_WAIT
from rawhttp import on_loop, read_until_closed

KiB, MiB = 1024, 1024 * 1024
SOCKET_READ = 256 * KiB  # the most asyncio reads from a socket in one go (selector transport)


# -- helpers ------------------------------------------------------------------------------------


@pytest.fixture
def errors():
    """Every WARNING+ record from asgi_lab.* and asyncio (a crashed callback) during the test."""
    found: list[logging.LogRecord] = []

    class Collect(logging.Handler):
        def emit(self, record):
            found.append(record)

    handler = Collect(logging.WARNING)
    for name in ("asgi_lab", "asyncio"):
        logging.getLogger(name).addHandler(handler)
    yield found
    for name in ("asgi_lab", "asyncio"):
        logging.getLogger(name).removeHandler(handler)


def no_errors(found) -> None:
    assert not found, [f"{r.name}: {r.getMessage()} {r.exc_info[1]!r}" if r.exc_info else r.getMessage()
                       for r in found]


def connect(server, timeout: float = 10.0) -> socket.socket:
    return socket.create_connection(server.address, timeout=timeout)


def read_response(sock: socket.socket) -> tuple[int, bytes]:
    """One response with a content-length (what the soak app sends for small answers)."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, f"connection closed before a response: {data!r}"
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    length = int(re.search(rb"(?i)content-length: (\d+)", head).group(1))
    while len(body) < length:
        chunk = sock.recv(65536)
        assert chunk, "connection closed in the middle of a body"
        body += chunk
    return status, body


def get(server, target: str = "/") -> tuple[int, bytes]:
    with connect(server) as sock:
        sock.sendall(f"GET {target} HTTP/1.1\r\nhost: test\r\n\r\n".encode())
        return read_response(sock)


def closed_by_peer(sock: socket.socket, within: float) -> bool:
    """True if the server closes `sock` within `within` seconds (EOF or reset)."""
    sock.settimeout(within)
    try:
        while sock.recv(65536):
            pass
        return True
    except ConnectionResetError:
        return True
    except socket.timeout:
        return False


def wait_until(condition, timeout: float, interval: float = 0.02) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(interval)
    return condition()


def http_connections(server) -> list:
    return [c for c in list(server.server.connections) if hasattr(c, "cycle")]


def start(kind: str, name: str, **settings):
    """The soak app (asgi_lab/apps/soak.py) on a background server of either kind."""
    app = soak.app if kind == "asgi" else soak.wsgi_app
    return serve_in_background(app, kind=kind, name=f"hardening-{name}-{kind}", access_log=False,
                               **settings)


def settled(server) -> bool:
    """No connection open, and no request being handled (ASGI: no app task running)."""
    if server.kind == "asgi":
        return not server.server.connections and not server.server.tasks
    return not server.server.connections and server.server.stats()["busy"] == 0


KINDS = pytest.mark.parametrize("kind", ["asgi", "wsgi"])


# -- floods and slow peers: bounded memory -------------------------------------------------------


def test_body_faster_than_the_app_reads_is_held_at_the_high_water_mark(errors):
    """A client uploads 16 MiB as fast as it can to an app that reads slowly: the server stops
    reading the socket (pause_reading) once `read_high_water` bytes wait for the app, so what
    it buffers stays below high water + one socket read, whatever the body size."""
    high_water = 64 * KiB
    with serve_in_background(soak.app, name="hardening-upload", access_log=False,
                             read_high_water=high_water) as server:
        size = 16 * MiB
        biggest = 0
        done = threading.Event()

        def sample():
            nonlocal biggest
            while not done.is_set():
                for connection in http_connections(server):
                    cycle = connection.cycle
                    if cycle is not None:
                        biggest = max(biggest, len(cycle.body))
                time.sleep(0.001)

        sampler = threading.Thread(target=sample)
        sampler.start()
        try:
            with connect(server) as sock:
                sock.sendall(b"POST /slow-read?delay=0.002 HTTP/1.1\r\nhost: t\r\n"
                             b"content-length: %d\r\n\r\n" % size)
                chunk = b"x" * (1 * MiB)
                for _ in range(size // len(chunk)):
                    sock.sendall(chunk)
                status, body = read_response(sock)
        finally:
            done.set()
            sampler.join()
    assert (status, body) == (200, str(size).encode())
    assert 0 < biggest <= high_water + SOCKET_READ, biggest
    no_errors(errors)


def test_a_client_that_never_reads_its_response_holds_bounded_memory(errors):
    """A client asks for 64 MiB and reads nothing: the app's send() waits on the transport's
    write buffer (pause_writing / drain), so the server holds at most high water + one chunk,
    and the client still gets every byte once it reads."""
    size = 64 * MiB
    with serve_in_background(soak.app, name="hardening-slow-reader", access_log=False) as server:
        with connect(server) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * KiB)
            sock.sendall(b"GET /big?size=%d HTTP/1.1\r\nhost: t\r\n\r\n" % size)
            # The kernel buffers fill up, then the server's: the app's send() waits.
            assert wait_until(lambda: any(c.writing_paused for c in http_connections(server)), 10.0)
            buffered = [c.transport.get_write_buffer_size() for c in http_connections(server)]
            high = [c.transport.get_write_buffer_limits()[1] for c in http_connections(server)]
            assert buffered and buffered[0] <= high[0] + soak.CHUNK, (buffered, high)
            received = 0
            while True:
                data = sock.recv(4 * MiB)
                received += len(data)
                if not data or received >= size:
                    break
    head_size = received - size
    assert 0 < head_size < 300, "the whole response (head + 64 MiB body) arrived"
    no_errors(errors)


def test_pipelined_flood_without_reading_is_bounded(errors):
    """5,000 pipelined requests for 4 KiB each, sent without reading a single answer: the
    server answers in order, stops reading requests while its answers cannot drain, and holds
    at most one socket read of requests plus its write buffer's high-water mark. Then we read,
    and every answer arrives."""
    count, size = 5_000, 4096
    request = b"GET /big?size=%d HTTP/1.1\r\nhost: t\r\n\r\n" % size
    with serve_in_background(soak.app, name="hardening-pipeline", access_log=False) as server:
        with connect(server) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * KiB)
            sender = threading.Thread(target=sock.sendall, args=(request * count,))
            sender.start()
            # 20 MiB of answers: the server gets stuck behind our buffer, and stops reading.
            assert wait_until(lambda: any(c.reading_paused for c in http_connections(server)), 10.0)
            [connection] = http_connections(server)
            assert len(connection.conn.trailing_data[0]) <= SOCKET_READ + len(request)
            high = connection.transport.get_write_buffer_limits()[1]
            assert connection.transport.get_write_buffer_size() <= high + size + 1 * KiB
            received, expected = 0, None
            while expected is None or received < expected:
                data = sock.recv(4 * MiB)
                assert data, "connection closed before all answers came"
                received += len(data)
                if expected is None:  # every answer has the same head: learn its size
                    head = data[: data.index(b"\r\n\r\n") + 4]
                    expected = count * (len(head) + size)
            sender.join()
    assert received == expected
    no_errors(errors)


def open_websocket(address) -> socket.socket:
    """A socket with an accepted WebSocket on the soak app's /ws echo."""
    sock = socket.create_connection(address, timeout=10)
    client = wsproto.WSConnection(wsproto.ConnectionType.CLIENT)
    sock.sendall(client.send(Request(host="t", target="/ws")))
    while not any(isinstance(e, AcceptConnection) for e in client.events()):
        data = sock.recv(65536)
        assert data, "WebSocket refused"
        client.receive_data(data)
    return sock


def client_frame(opcode: int, payload: bytes, mask: bytes = b"mask") -> bytes:
    """A masked client frame (RFC 6455 §5.2), final, any size."""
    size = len(payload)
    if size < 126:
        header = bytes([0x80 | opcode, 0x80 | size])
    elif size <= 0xFFFF:
        header = bytes([0x80 | opcode, 0x80 | 126]) + size.to_bytes(2, "big")
    else:
        header = bytes([0x80 | opcode, 0x80 | 127]) + size.to_bytes(8, "big")
    return header + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


def websocket_close_code(sock: socket.socket, timeout: float) -> int | None:
    """Read until the server's Close frame (answering it, as a client should); its code."""
    parser = FrameProtocol(client=True, extensions=[])
    sock.settimeout(timeout)
    try:
        while data := sock.recv(65536):
            parser.receive_bytes(data)
            for received in parser.received_frames():
                if received.opcode is Opcode.CLOSE:
                    code = int(received.payload[0])
                    try:
                        sock.sendall(client_frame(0x8, code.to_bytes(2, "big")))
                    except OSError:
                        pass
                    return code
    except (ConnectionResetError, socket.timeout):
        pass
    return None


def websocket_connections(server) -> list:
    return [c for c in list(server.server.connections) if not hasattr(c, "cycle")]


def test_a_websocket_client_that_never_reads_holds_bounded_memory(errors):
    """A client sends 32 MiB of messages to the echo and reads nothing: the app's send() waits
    on `ws_write_high_water`, the server stops reading once its receive queue is full, and our
    sendall() blocks. What the server holds stays bounded; then every echo arrives."""
    message, count = b"m" * (64 * KiB), 512
    frames = client_frame(0x2, message) * 16
    with serve_in_background(soak.app, name="hardening-ws-flood", access_log=False) as server:
        sock = open_websocket(server.address)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * KiB)
        sender = threading.Thread(target=lambda: [sock.sendall(frames) for _ in range(count // 16)])
        sender.start()
        # The echoes fill our buffers, then the server's; its receive queue fills: it stops reading.
        assert wait_until(lambda: any(c.reading_paused for c in websocket_connections(server)), 10.0)
        [connection] = websocket_connections(server)
        config = server.config
        assert connection.transport.get_write_buffer_size() <= config.ws_write_high_water + len(message) + 64
        # Messages parsed from the read that crossed the high-water mark are queued too.
        assert connection.queued_bytes <= config.read_high_water + SOCKET_READ + len(message)
        assert sender.is_alive(), "the server should have stopped reading from us by now"
        parser, echoed = FrameProtocol(client=True, extensions=[]), 0
        while echoed < count * len(message):
            data = sock.recv(4 * MiB)
            assert data
            parser.receive_bytes(data)
            echoed += sum(len(f.payload) for f in parser.received_frames() if f.opcode is not Opcode.PING)
        sender.join()
        sock.close()
    assert echoed == count * len(message)
    no_errors(errors)


def test_a_ping_flood_from_a_client_that_never_reads_holds_bounded_memory(errors):
    """Pings, sent as fast as possible by a client that reads nothing: each would get a Pong,
    but while the write buffer is full only the latest ping is remembered (RFC 6455 §5.5.3
    allows answering just the most recent one), so the server's buffer stays bounded."""
    with serve_in_background(soak.app, name="hardening-ping-flood", access_log=False) as server:
        sock = open_websocket(server.address)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * KiB)
        pings = client_frame(0x9, b"p" * 125) * 1000  # 131 KiB of pings
        sent, started = 0, time.monotonic()
        while sent < 8 * MiB and time.monotonic() - started < 10:
            sock.sendall(pings)
            sent += len(pings)
        [connection] = websocket_connections(server)
        buffered = connection.transport.get_write_buffer_size()
        assert buffered <= server.config.ws_write_high_water + 1 * KiB, buffered
        sock.sendall(client_frame(0x1, b"still echoing?"))
        parser, texts = FrameProtocol(client=True, extensions=[]), []
        while not texts:
            parser.receive_bytes(sock.recv(1 * MiB))
            texts = [f.payload for f in parser.received_frames() if f.opcode is Opcode.TEXT]
        assert texts == ["still echoing?"]
        sock.close()
    no_errors(errors)


def test_websockets_that_drop_without_closing_leave_nothing_behind(errors):
    """WebSockets whose TCP connection is cut (no Close frame) while the echo is busy: the
    app gets websocket.disconnect (1006), its task ends, the connection is gone."""
    with serve_in_background(soak.app, name="hardening-ws-drop", access_log=False) as server:
        for n in range(30):
            sock = open_websocket(server.address)
            sock.sendall(client_frame(0x1, b"hello") * n)
            if n % 2:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
            sock.close()
        assert wait_until(lambda: settled(server), 3.0), (server.server.connections, server.server.tasks)
        assert get(server) == (200, b"ok")
    no_errors(errors)


# -- idle and slow peers: timeouts ------------------------------------------------------------------


@KINDS
def test_idle_connections_are_closed_by_the_idle_timeout(kind, errors):
    """500 connections that never send a byte, and 50 that sent one request and went quiet:
    all closed by the server once `timeout_keep_alive` has passed (and not before)."""
    timeout = 0.5
    with start(kind, "idle", timeout_keep_alive=timeout) as server:
        first = connect(server)
        first.setblocking(False)
        time.sleep(timeout * 0.7)
        with pytest.raises(BlockingIOError):  # not closed too early
            first.recv(1)
        first.setblocking(True)
        silent = [first] + [connect(server) for _ in range(499)]
        after_one = []
        for _ in range(50):
            sock = connect(server)
            sock.sendall(b"GET / HTTP/1.1\r\nhost: t\r\n\r\n")
            assert read_response(sock) == (200, b"ok")
            after_one.append(sock)
        assert wait_until(lambda: not server.server.connections, timeout + 3.0)
        for sock in silent + after_one:
            assert closed_by_peer(sock, within=1.0)
            sock.close()
        assert get(server) == (200, b"ok")
    no_errors(errors)


@KINDS
def test_slow_headers_are_cut_off(kind, errors):
    """Slowloris: a request head sent one byte every 50 ms never finishes; the server closes
    it after `timeout_request_header` even though bytes keep trickling in."""
    with start(kind, "slowloris", timeout_request_header=0.5, timeout_keep_alive=5) as server:
        head = b"GET / HTTP/1.1\r\nhost: t\r\nx-padding: " + b"a" * 1000
        started = time.monotonic()
        with connect(server) as sock:
            try:
                for byte in head:
                    sock.sendall(bytes([byte]))
                    time.sleep(0.05)
                    if time.monotonic() - started > 5:
                        break
            except OSError:
                pass  # closed on us: what we wanted
            assert closed_by_peer(sock, within=1.0)
        assert time.monotonic() - started < 2.5
        assert get(server) == (200, b"ok")
    no_errors(errors)


@KINDS
def test_a_stalled_upload_gets_408_but_a_slow_steady_one_completes(kind, errors):
    """A body that stops arriving while the app waits for it is answered 408 after
    `timeout_request_header` of silence; one that trickles in, slower than that in total but
    never silent that long, is read to the end."""
    with start(kind, "408", timeout_request_header=0.5, timeout_keep_alive=5) as server:
        with connect(server) as stalled:
            stalled.sendall(b"POST /echo HTTP/1.1\r\nhost: t\r\ncontent-length: 100\r\n\r\nsome")
            started = time.monotonic()
            answer = read_until_closed(stalled, 5)
            assert answer.startswith(b"HTTP/1.1 408 "), answer
            assert time.monotonic() - started < 2.5
        with connect(server) as steady:
            steady.sendall(b"POST /echo HTTP/1.1\r\nhost: t\r\ncontent-length: 15\r\n\r\n")
            for _ in range(15):
                time.sleep(0.1)
                steady.sendall(b"x")
            assert read_response(steady) == (200, b"15")
        assert wait_until(lambda: settled(server), 3.0)
    no_errors(errors)


@KINDS
def test_huge_headers_get_431_and_the_server_goes_on(kind, errors):
    with start(kind, "431", max_header_bytes=16 * KiB) as server:
        with connect(server) as sock:
            try:
                sock.sendall(b"GET / HTTP/1.1\r\nhost: t\r\n" + b"x-big: " + b"a" * (1 * MiB))
            except OSError:
                pass  # the server may answer and close while we still send
            data = b""
            try:
                while chunk := sock.recv(65536):
                    data += chunk
            except ConnectionResetError:
                pass
        assert data == b"" or data.startswith(b"HTTP/1.1 431 "), data[:100]
        assert get(server) == (200, b"ok")
    no_errors(errors)


# -- disconnects at every stage ------------------------------------------------------------------


@KINDS
def test_disconnect_at_every_byte_of_a_request(kind, errors):
    """Close (and reset) the connection after each prefix of a request with a body: the server
    never logs an error and the app sees http.disconnect; a good client is served afterwards."""
    request = (b"POST /echo HTTP/1.1\r\nhost: t\r\ntransfer-encoding: chunked\r\n\r\n"
               b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n")
    with start(kind, "disconnects") as server:
        for cut in range(len(request)):
            for reset in (False, True):
                sock = connect(server)
                sock.sendall(request[:cut])
                if reset:  # SO_LINGER 0: close() sends RST instead of FIN
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
                sock.close()
        assert wait_until(lambda: settled(server), 3.0)
        assert get(server) == (200, b"ok")
    no_errors(errors)


@KINDS
def test_disconnect_during_the_response(kind, errors):
    """Clients that leave while the app sleeps, while it streams, and in the middle of SSE."""
    with start(kind, "leave") as server:
        for target in ("/sleep?s=0.2", "/stream?chunks=2000&size=4096", "/sse?interval=0.01",
                       "/big?size=33554432"):
            for _ in range(5):
                sock = connect(server)
                sock.sendall(f"GET {target} HTTP/1.1\r\nhost: t\r\n\r\n".encode())
                if target != "/sleep?s=0.2":
                    sock.recv(10)  # the response has started
                sock.close()
        # Every app call ends (the sleeping ones after their sleep), every connection closes.
        assert wait_until(lambda: settled(server), 3.0), server.server.connections
        assert get(server) == (200, b"ok")
    no_errors(errors)


# -- shutdown under load -------------------------------------------------------------------------


class ServerProcess:
    """`python -m asgi_lab KIND asgi_lab.apps.soak:APP --port 0 ...` in a subprocess."""

    def __init__(self, kind: str, *options: str) -> None:
        app = "asgi_lab.apps.soak:app" if kind == "asgi" else "asgi_lab.apps.soak:wsgi_app"
        self.process = subprocess.Popen(
            [sys.executable, "-m", "asgi_lab", kind, app, "--port", "0", "--no-access-log", *options],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        assert wait_until(lambda: self.url is not None or self.process.poll() is not None, 15.0)
        assert self.url, "".join(self.lines)
        host, port = self.url.removeprefix("http://").rsplit(":", 1)
        self.address = (host, int(port))

    def _read(self) -> None:
        for line in self.process.stdout:
            self.lines.append(line)

    @property
    def url(self) -> str | None:
        for line in self.lines:
            found = re.search(r"http://[\d.]+:\d+", line)
            if found and "serving" in line:
                return found.group(0)
        return None

    @property
    def output(self) -> str:
        return "".join(self.lines)

    def signal(self, number: int) -> None:
        self.process.send_signal(number)

    def wait(self, timeout: float) -> int:
        code = self.process.wait(timeout)
        self._reader.join(5)
        return code

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(5)


@pytest.fixture
def processes():
    started: list[ServerProcess] = []

    def start(kind: str, *options: str) -> ServerProcess:
        started.append(ServerProcess(kind, *options))
        return started[-1]

    yield start
    for process in started:
        process.kill()


def in_flight(address, target: str) -> socket.socket:
    sock = socket.create_connection(address, timeout=10)
    sock.sendall(f"GET {target} HTTP/1.1\r\nhost: t\r\n\r\n".encode())
    return sock


def sleeping(server) -> int:
    """How many requests are inside the soak app's /sleep (it says so in /debug)."""
    status, body = get(server, "/debug")
    assert status == 200, body
    return json.loads(body)["sleeping"]


def server_options(kind: str, grace: float) -> list[str]:
    # WSGI: enough threads for every stream and request in flight (a pool smaller than the
    # number of endless streams would queue the ordinary requests behind them forever).
    return ["--timeout-graceful-shutdown", str(grace)] + (["--threads", "32"] if kind == "wsgi" else [])


@KINDS
def test_sigterm_finishes_in_flight_requests_and_ends_streams(kind, processes):
    """SIGTERM under load: requests in flight get their answers, SSE streams and idle
    keep-alive connections are closed, new connections are refused, the app's lifespan
    shutdown runs (ASGI), WebSockets get a Close frame with 1001 (ASGI), and the process
    exits 0 within the grace period.

    Responses in flight are let finish (issue #22): an ASGI app that listens to receive() is
    told at once with http.disconnect (tests/test_asgi_http.py), but these SSE streams never
    call receive(), and WSGI has no way to tell an app: in both servers such streams are cut
    when the grace period ends, and the process exits right after it."""
    grace = 2.0
    server = processes(kind, *server_options(kind, grace))
    sleepers = [in_flight(server.address, "/sleep?s=1") for _ in range(10)]
    streams = [in_flight(server.address, "/sse?interval=0.02") for _ in range(10)]
    idle = [socket.create_connection(server.address) for _ in range(10)]
    websockets = [open_websocket(server.address) for _ in range(10)] if kind == "asgi" else []
    for stream in streams:
        assert stream.recv(100).startswith(b"HTTP/1.1 200 ")
    assert wait_until(lambda: sleeping(server) == 10, 10.0)  # the sleepers are inside the app

    sent = time.monotonic()
    server.signal(signal.SIGTERM)
    with ThreadPoolExecutor(40) as pool:
        answers = pool.map(lambda s: read_until_closed(s, grace + 3), sleepers + streams + idle)
        close_codes = pool.map(lambda s: websocket_close_code(s, grace + 3), websockets)
        answers, close_codes = list(answers), list(close_codes)
    code = server.wait(grace + 5)
    took = time.monotonic() - sent

    assert code == 0, server.output
    assert took < grace + 1.0, f"shutdown took {took:.1f} s; the grace period is {grace} s"
    for answer in answers[:10]:
        assert answer.startswith(b"HTTP/1.1 200 ") and answer.endswith(b"slept"), answer
    for answer in answers[10:20]:
        assert b"data: 1\n\n" in answer  # the stream was cut, with what it had sent
    assert answers[20:] == [b""] * 10  # idle keep-alive connections: just closed
    assert all(code in (1001, 1012) for code in close_codes), close_codes  # going away / restart
    if kind == "asgi":
        assert "soak: lifespan shutdown complete" in server.output
    assert "Traceback" not in server.output, server.output
    with pytest.raises(OSError):
        socket.create_connection(server.address, timeout=2).close()


@KINDS
def test_sigterm_closes_what_does_not_finish_within_the_grace_period(kind, processes):
    """A request whose app outlives the grace period is cut off when the grace period ends;
    the process still exits 0, soon after the grace period. (The WSGI server then waits up
    to 2 s more for the worker threads, one of which is still asleep inside the app.)"""
    grace = 1.0
    server = processes(kind, *server_options(kind, grace))
    stuck = in_flight(server.address, "/sleep?s=60")
    assert wait_until(lambda: sleeping(server) == 1, 10.0)  # inside the app
    sent = time.monotonic()
    server.signal(signal.SIGTERM)
    assert read_until_closed(stuck, grace + 3) == b""
    assert server.wait(grace + 5) == 0, server.output
    took = time.monotonic() - sent
    assert grace * 0.9 <= took < grace + (2.5 if kind == "asgi" else 4.0), took
    if kind == "asgi":
        assert "soak: lifespan shutdown complete" in server.output


@KINDS
def test_a_second_sigint_exits_at_once(kind, processes):
    grace = 30.0
    server = processes(kind, *server_options(kind, grace))
    stuck = in_flight(server.address, "/sleep?s=60")
    assert wait_until(lambda: sleeping(server) == 1, 10.0)  # inside the app
    server.signal(signal.SIGINT)
    # Handled (a second signal sent before would merge with it)...
    assert wait_until(lambda: "Shutting down (SIGINT)" in server.output, 10.0), server.output
    with pytest.raises(subprocess.TimeoutExpired):  # ...and it waits for the request in flight
        server.process.wait(0.3)  # (kept: a "not yet" needs some time to be seen)
    sent = time.monotonic()
    server.signal(signal.SIGINT)
    server.wait(5)
    assert time.monotonic() - sent < 1.5
    assert read_until_closed(stuck, 2) == b""


@KINDS
def test_requests_arriving_as_shutdown_begins_are_answered_not_reset(kind):
    """Keep-alive connections whose next request arrives just as the server stops: each is
    answered (then closed), not reset with the request unread. 3 rounds of 50 connections."""
    lost = 0
    for round_number in range(3):
        server = start(kind, f"arriving-{round_number}", timeout_graceful_shutdown=2)
        sockets = []
        for _ in range(50):
            sock = connect(server, timeout=3)
            sock.sendall(b"GET / HTTP/1.1\r\nhost: t\r\n\r\n")
            assert read_response(sock) == (200, b"ok")
            sockets.append(sock)
        # All idle, waiting for their next request (WSGI: given back to the acceptor).
        assert wait_until(lambda: len(server.server.idle_connections()) == 50, 5.0)
        for sock in sockets:
            sock.sendall(b"GET / HTTP/1.1\r\nhost: t\r\n\r\n")
        server.stop()
        for sock in sockets:
            try:
                if not sock.recv(1000).startswith(b"HTTP/1.1 200 "):
                    lost += 1
            except OSError:
                lost += 1
            sock.close()
    assert lost == 0, f"{lost} of 150 requests were not answered"


def test_an_asgi_request_not_read_yet_when_shutdown_closes_idle_connections_is_answered():
    """The race of the test above, made certain: the next request is in the socket, unread
    (its reading paused), when shutdown closes the idle connections. It is answered with
    `Connection: close`, then the connection closes: no reset."""
    with start("asgi", "unread") as server:
        sock = connect(server, timeout=5)
        sock.sendall(b"GET / HTTP/1.1\r\nhost: t\r\n\r\n")
        assert read_response(sock) == (200, b"ok")
        (protocol,) = on_loop(server, list, server.server.connections)
        on_loop(server, protocol.transport.pause_reading)
        sock.sendall(b"GET / HTTP/1.1\r\nhost: t\r\n\r\n")
        assert wait_until(lambda: on_loop(server, protocol.has_bytes_waiting), 5.0)
        on_loop(server, protocol.shutdown)  # as the server's shutdown does for each connection
        assert not on_loop(server, protocol.transport.is_closing)
        on_loop(server, protocol.transport.resume_reading)
        answer = read_until_closed(sock, 5)
        assert answer.startswith(b"HTTP/1.1 200 ") and b"connection: close" in answer.lower()
        sock.close()


@pytest.mark.parametrize("kind, threads", [("asgi", None), ("wsgi", 8), ("wsgi", 0)],
                         ids=["asgi", "wsgi-pool", "wsgi-thread-per-connection"])
def test_a_first_request_sent_just_after_shutdown_began_is_answered(kind, threads):
    """Clients that connected before the server stopped listening, whose first request arrives
    after shutdown began (a reload under load: gunicorn -HUP), are answered, not reset; a
    client that connected and says nothing is closed after `FIRST_REQUEST_WAIT`, well within
    the grace period."""
    settings = {"timeout_graceful_shutdown": 3} | ({"threads": threads} if kind == "wsgi" else {})
    server = start(kind, f"first-request-{threads}", **settings)
    address = server.address
    sockets = [connect(server, timeout=5) for _ in range(20)]
    silent = connect(server, timeout=5)
    if threads != 0:  # (a thread per connection: each is in its own thread's recv())
        assert wait_until(lambda: len(server.server.idle_connections()) == 21, 5.0)
    started = time.monotonic()
    stopping = threading.Thread(target=server.stop)
    stopping.start()

    def refused() -> bool:  # the server no longer listens: shutdown has begun
        try:
            socket.create_connection(address, timeout=1).close()
            return False
        except OSError:
            return True

    assert wait_until(refused, 5.0)
    for sock in sockets:
        sock.sendall(b"GET / HTTP/1.1\r\nhost: t\r\n\r\n")
    answers = [read_until_closed(sock, 5) for sock in sockets]
    assert all(answer.startswith(b"HTTP/1.1 200 ") for answer in answers), answers
    assert all(b"connection: close" in answer.lower() for answer in answers)
    assert read_until_closed(silent, 5) == b""
    stopping.join(10)
    assert not stopping.is_alive()
    assert time.monotonic() - started < FIRST_REQUEST_WAIT + 2.0  # not the 3 s grace period
    for sock in [*sockets, silent]:
        sock.close()


@KINDS
def test_programmatic_stop_under_load(kind, capsys):
    """The notebook's stop(): the same graceful shutdown as SIGTERM, from another thread,
    WebSockets (ASGI) included: each gets a Close frame with 1001."""
    grace = 1.0
    server = start(kind, "stop", timeout_graceful_shutdown=grace, threads=16)
    asleep_before = soak.sleeping  # (this process's count: the server runs here)
    sleepers = [in_flight(server.address, "/sleep?s=0.5") for _ in range(5)]
    streams = [in_flight(server.address, "/sse?interval=0.02") for _ in range(5)]
    websockets = [open_websocket(server.address) for _ in range(5)] if kind == "asgi" else []
    for stream in streams:
        assert stream.recv(100).startswith(b"HTTP/1.1 200 ")
    assert wait_until(lambda: soak.sleeping >= asleep_before + 5, 5.0)  # the sleepers are inside
    address = server.address
    with ThreadPoolExecutor(5) as pool:
        close_codes = pool.map(lambda s: websocket_close_code(s, grace + 3), websockets)
        started = time.monotonic()
        server.stop()
        took = time.monotonic() - started
        close_codes = list(close_codes)
    answers = [read_until_closed(s, 2) for s in sleepers + streams]
    assert all(code in (1001, 1012) for code in close_codes), close_codes
    assert took < grace + 1.0, took  # deaf streams run to the end of the grace period
    for answer in answers[:5]:
        assert answer.startswith(b"HTTP/1.1 200 ") and answer.endswith(b"slept"), answer
    for answer in answers[5:]:
        assert b"data: 1\n\n" in answer
    assert not server.running
    if kind == "asgi":
        assert "soak: lifespan shutdown complete" in capsys.readouterr().out
    with pytest.raises(OSError):
        socket.create_connection(address, timeout=2).close()


# -- WSGI: a pool that runs out of threads ----------------------------------------------------------


def test_wsgi_pool_exhaustion_queues_and_recovers_without_losing_a_request(errors):
    """Ten times more concurrent slow requests than worker threads: the extra ones wait in the
    queue (visible in stats()), every one is answered, and the pool is idle again after."""
    threads, count, seconds = 4, 40, 0.1
    with start("wsgi", "pool", threads=threads) as server:
        queued = []
        done = threading.Event()

        def watch():
            while not done.is_set():
                queued.append(server.server.stats()["queued"])
                time.sleep(0.005)

        def one(_):
            with connect(server) as sock:
                sock.sendall(f"GET /sleep?s={seconds} HTTP/1.1\r\nhost: t\r\n\r\n".encode())
                return read_response(sock)

        watcher = threading.Thread(target=watch)
        watcher.start()
        started = time.monotonic()
        with ThreadPoolExecutor(count) as pool:
            answers = list(pool.map(one, range(count)))
        took = time.monotonic() - started
        done.set()
        watcher.join()
        assert answers == [(200, b"slept")] * count
        assert max(queued) >= count - threads - 5, max(queued)  # they really had to wait
        assert took >= count / threads * seconds * 0.9  # ... in batches of `threads`
        assert wait_until(lambda: server.server.stats()["busy"] == 0, 2.0)
        assert get(server) == (200, b"ok")
    no_errors(errors)


# -- safe defaults ---------------------------------------------------------------------------------


def test_defaults_bind_loopback_and_limit_everything():
    from asgi_lab.cli import build_parser
    from asgi_lab.config import Config

    config = Config()
    assert config.host == "127.0.0.1"
    for kind in ("asgi", "wsgi"):
        assert build_parser().parse_args([kind, "x:y"]).host == "127.0.0.1"
    assert config.max_header_bytes and config.max_body_bytes and config.ws_max_message_bytes
    assert config.timeout_keep_alive and config.timeout_request_header


def test_every_limit_can_be_set_from_the_command_line():
    from asgi_lab.cli import build_parser, config_from

    args = build_parser().parse_args(
        ["asgi", "x:y", "--max-header-size", "1000", "--max-body-size", "2000", "--ws-max-size", "3000",
         "--timeout-keep-alive", "1", "--timeout-request-header", "2", "--timeout-graceful-shutdown", "3"])
    config = config_from(args)
    assert (config.max_header_bytes, config.max_body_bytes, config.ws_max_message_bytes) == (1000, 2000, 3000)
    assert (config.timeout_keep_alive, config.timeout_request_header,
            config.timeout_graceful_shutdown) == (1, 2, 3)
    assert config_from(build_parser().parse_args(["wsgi", "x:y", "--max-body-size", "0"])).max_body_bytes is None


def failing_asgi_app(scope, receive, send):
    async def app():
        if scope["type"] == "http":
            raise RuntimeError("the database password is hunter2")
    return app()


def failing_wsgi_app(environ, start_response):
    raise RuntimeError("the database password is hunter2")


@KINDS
def test_an_app_error_reaches_the_log_not_the_client(kind, errors):
    app = failing_asgi_app if kind == "asgi" else failing_wsgi_app
    with serve_in_background(app, kind=kind, name=f"hardening-500-{kind}", access_log=False,
                             lifespan="off") as server:
        with connect(server) as sock:
            sock.sendall(b"GET / HTTP/1.1\r\nhost: t\r\n\r\n")
            status, body = read_response(sock)
    assert status == 500 and body == b"500 Internal Server Error\n"
    assert any(r.exc_info and "hunter2" in str(r.exc_info[1]) for r in errors)


@KINDS
def test_request_body_over_the_limit_gets_413(kind, errors):
    with start(kind, "413", max_body_bytes=1000) as server:
        for head, body in [(b"content-length: 5000\r\n", b"x" * 5000),
                           (b"transfer-encoding: chunked\r\n", b"".join([b"400\r\n" + b"x" * 1024 + b"\r\n"] * 5) + b"0\r\n\r\n")]:
            with connect(server) as sock:
                try:
                    sock.sendall(b"POST /echo HTTP/1.1\r\nhost: t\r\n" + head + b"\r\n" + body)
                except OSError:
                    pass
                assert read_until_closed(sock, 5).startswith(b"HTTP/1.1 413 ")
        assert get(server) == (200, b"ok")
    no_errors(errors)


def test_websocket_message_over_the_limit_is_closed_with_1009(errors):
    with serve_in_background(soak.app, name="hardening-1009", access_log=False,
                             ws_max_message_bytes=1000) as server:
        sock = open_websocket(server.address)
        sock.sendall(client_frame(0x2, b"x" * 1001))
        assert websocket_close_code(sock, 5) == 1009
        sock.close()
    no_errors(errors)
