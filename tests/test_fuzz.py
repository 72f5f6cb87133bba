"""Property-based fuzzing of both servers over real sockets (hypothesis).

What every example checks, whatever bytes it sends:

1. the server answers with well-formed HTTP/1.1 responses (an error status for bad input, and
   never a traceback in the body), or a WebSocket Close frame, or just closes the connection;
2. it never raises out of its connection handler: nothing is logged at WARNING or above on
   `asgi_lab.*` or `asyncio` (where the event loop reports a crashed callback), and no thread
   dies with an uncaught exception;
3. it keeps serving: a well-behaved client gets its answer right after.

The strategies: arbitrary bytes; a valid request with exactly one field broken; a valid
request split at random points into pieces sent with small delays (the answer must be the same
as unsplit); random WebSocket frames after a valid handshake, and valid WebSocket messages
split at random points (the echo must be the same).

`make test` runs a bounded number of examples (profile "ci"); `make fuzz` sets
HYPOTHESIS_PROFILE=long for a longer run. Each server is started once per module, not once per
example, so examples are cheap.
"""

from __future__ import annotations

import logging
import os
import re
import socket
import threading
import time

import h11
import pytest
import wsproto
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from wsproto.events import AcceptConnection, Request
from wsproto.frame_protocol import FrameProtocol, Opcode

from asgi_lab.apps import soak
from asgi_lab.background import serve_in_background

# A failure prints a blob to replay it: @reproduce_failure(...) on the test.
settings.register_profile("ci", max_examples=60, deadline=None, print_blob=True,
                          suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("long", max_examples=3000, deadline=None, print_blob=True,
                          suppress_health_check=[HealthCheck.too_slow])
# Applied per test (not loaded globally) so other test modules keep their own settings.
PROFILE = "long" if os.environ.get("HYPOTHESIS_PROFILE") == "long" else "ci"
FUZZ = settings(settings.get_profile(PROFILE))
# pytest-timeout counts all of a test's examples together: give the long run room.
pytestmark = pytest.mark.timeout(120 if PROFILE == "ci" else 3600)

# Small limits, so that fuzzing reaches them: 431, 413 and friends.
LIMITS = dict(max_header_bytes=8 * 1024, max_body_bytes=64 * 1024, ws_max_message_bytes=4096,
              access_log=False,
              timeout_keep_alive=5.0, timeout_request_header=5.0, timeout_graceful_shutdown=1.0)

KINDS = ["asgi", "wsgi"]


# -- watching for errors --------------------------------------------------------------------------


class Problems(logging.Handler):
    """Collects every WARNING+ record of asgi_lab.* and asyncio, and every uncaught thread error."""

    WATCHED = ("asgi_lab", "asyncio")

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.found: list[str] = []
        self._previous_hook = None

    def emit(self, record: logging.LogRecord) -> None:
        text = record.getMessage()
        if record.exc_info and record.exc_info[1] is not None:
            text += f" ({record.exc_info[1]!r})"
        self.found.append(f"{record.name}: {text}")

    def thread_died(self, args) -> None:
        self.found.append(f"thread {args.thread.name if args.thread else '?'} died: {args.exc_value!r}")

    def __enter__(self) -> "Problems":
        for name in self.WATCHED:
            logging.getLogger(name).addHandler(self)
        self._previous_hook = threading.excepthook
        threading.excepthook = self.thread_died
        return self

    def __exit__(self, *exc_info) -> None:
        for name in self.WATCHED:
            logging.getLogger(name).removeHandler(self)
        threading.excepthook = self._previous_hook

    def check(self) -> None:
        found, self.found = self.found, []
        assert not found, "the server reported an unexpected error:\n" + "\n".join(found)


@pytest.fixture(scope="module")
def problems():
    with Problems() as watcher:
        yield watcher
        time.sleep(0.2)  # anything the servers still had to say
        watcher.check()


@pytest.fixture(scope="module", params=KINDS)
def server(request, problems):
    app = soak.app if request.param == "asgi" else soak.wsgi_app
    with serve_in_background(app, kind=request.param, name=f"fuzz-{request.param}", **LIMITS) as srv:
        yield srv


# -- talking to the server ------------------------------------------------------------------------


def exchange(address, pieces: list[bytes], delay: float = 0.0, timeout: float = 5.0) -> bytes:
    """Send `pieces` (sleeping `delay` between them), half-close, and read until the server
    closes. Fails if the server keeps the connection open `timeout` seconds after our EOF."""
    with socket.create_connection(address, timeout=timeout) as sock:
        try:
            for i, piece in enumerate(pieces):
                if i and delay:
                    time.sleep(delay)
                sock.sendall(piece)
            sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass  # the server answered and closed before we finished: allowed
        received = bytearray()
        deadline = time.monotonic() + timeout
        while True:
            try:
                data = sock.recv(65536)
            except ConnectionResetError:
                # The server closed with our bytes unread (after an error response): the
                # kernel sends RST, which may even discard the tail of what it sent.
                return bytes(received) + b"<reset>"
            except socket.timeout:
                pytest.fail(f"the server did not close the connection {timeout} s after our EOF; "
                            f"received so far: {bytes(received)[:200]!r}")
            if not data:
                return bytes(received)
            received += data
            assert time.monotonic() < deadline, "the server kept talking for too long"


def parse_responses(data: bytes, method: bytes = b"GET") -> list[tuple[int, list, bytes]]:
    """Every complete response in `data`, parsed by h11 acting as the client.

    Raises h11.RemoteProtocolError if the server sent something that is not HTTP/1.1.
    A connection reset (marked b"<reset>") may cut the last response short: that one is
    dropped, since the kernel, not the server, discarded it.
    """
    reset = data.endswith(b"<reset>")
    if reset:
        data = data[: -len(b"<reset>")]
    client = h11.Connection(h11.CLIENT)
    client.receive_data(data)
    client.receive_data(b"")
    responses, current = [], None
    while True:
        if client.our_state is h11.IDLE:
            # h11 only accepts a response to a request it sent: "send" a placeholder one.
            client.send(h11.Request(method=method, target="/", headers=[("host", "fuzz")]))
            client.send(h11.EndOfMessage())
        try:
            event = client.next_event()
        except h11.RemoteProtocolError:
            if reset or (current is None and not client.trailing_data[0]):
                return responses  # closed between responses: fine
            raise
        if isinstance(event, h11.Response):
            current = (event.status_code, list(event.headers), bytearray())
        elif isinstance(event, h11.Data):
            current[2].extend(event.data)
        elif isinstance(event, h11.EndOfMessage):
            responses.append((current[0], current[1], bytes(current[2])))
            current = None
            if client.our_state is h11.DONE and client.their_state is h11.DONE:
                client.start_next_cycle()
        elif isinstance(event, h11.ConnectionClosed) or event is h11.NEED_DATA:
            return responses
        # InformationalResponse (100 Continue): nothing to check


def check_answer(data: bytes, request: bytes = b"") -> list[tuple[int, list, bytes]]:
    """Valid HTTP/1.1 (or nothing), and no internal detail leaked to the client."""
    assert b"Traceback" not in data and b'File "' not in data, data[:500]
    # A response to HEAD has no body: h11 must know to parse it.
    responses = parse_responses(data, b"HEAD" if request.startswith(b"HEAD ") else b"GET")
    for status, _headers, _body in responses:
        assert 200 <= status < 600
        assert status != 500, f"the server (or app) failed on this input: {data[:300]!r}"
    return responses


def still_serving(server) -> None:
    """A well-behaved client, on a new connection, gets its answer."""
    data = exchange(server.address, [b"GET / HTTP/1.1\r\nhost: well-behaved\r\n\r\n"])
    [(status, _headers, body)] = parse_responses(data)
    assert (status, body) == (200, b"ok")


def without_date(data: bytes) -> bytes:
    return re.sub(rb"(?im)^date: [^\r\n]*\r\n", b"", data)


# -- strategies ------------------------------------------------------------------------------------

NASTY = st.sampled_from([
    b"", b" ", b"  ", b"\t", b"\r\n", b"\n", b"\r", b"\r\n\r\n", b"\x00", b"\xff", b"\xc3\x28",
    b":", b";", b",", b"-1", b"+5", b"0x10", b"1e3", b"99999999999999999999", b"0", b"1 1",
    b"HTTP/1.1", b"HTTP/1.0", b"HTTP/2.0", b"HTTP/0.9", b"http/1.1", b"HTTP/1.1 ", b"HTTP/1.10",
    b"GET", b"HEAD", b"CONNECT", b"chunked", b"gzip, chunked", b"chunked, gzip", b"identity",
    b"%", b"%zz", b"%00", b"/\xff", b"?", b"#", b"*", b"http://evil.example/", b"/../..",
    b"a" * 9000, b"x:" * 3000, b"100-continue", b"close", b"upgrade", b"websocket",
])
FIELD_VALUE = st.one_of(NASTY, st.binary(max_size=64), st.text(max_size=20).map(str.encode))


def request_parts(kind: str, body: bytes) -> list[tuple[str, bytes]]:
    """A valid request as a list of (field name, bytes): a mutation replaces exactly one."""
    if kind == "upgrade":  # a WebSocket opening handshake (RFC 6455 §4.1)
        return [("method", b"GET"), ("sp", b" "), ("target", b"/ws"), ("sp", b" "),
                ("version", b"HTTP/1.1"), ("eol", b"\r\n"),
                ("name", b"host"), ("colon", b": "), ("value", b"fuzz"), ("eol", b"\r\n"),
                ("name", b"upgrade"), ("colon", b": "), ("value", b"websocket"), ("eol", b"\r\n"),
                ("name", b"connection"), ("colon", b": "), ("value", b"Upgrade"), ("eol", b"\r\n"),
                ("name", b"sec-websocket-key"), ("colon", b": "),
                ("value", b"dGhlIHNhbXBsZSBub25jZQ=="), ("eol", b"\r\n"),
                ("name", b"sec-websocket-version"), ("colon", b": "), ("value", b"13"),
                ("eol", b"\r\n"), ("eol", b"\r\n")]
    if kind == "get":
        head = [("method", b"GET"), ("sp", b" "), ("target", b"/"), ("sp", b" "),
                ("version", b"HTTP/1.1"), ("eol", b"\r\n"),
                ("name", b"host"), ("colon", b": "), ("value", b"fuzz"), ("eol", b"\r\n"),
                ("name", b"x-extra"), ("colon", b": "), ("value", b"1"), ("eol", b"\r\n")]
        return head + [("eol", b"\r\n")]
    head = [("method", b"POST"), ("sp", b" "), ("target", b"/echo"), ("sp", b" "),
            ("version", b"HTTP/1.1"), ("eol", b"\r\n"),
            ("name", b"host"), ("colon", b": "), ("value", b"fuzz"), ("eol", b"\r\n")]
    if kind == "length":
        return head + [("name", b"content-length"), ("colon", b": "),
                       ("length", str(len(body)).encode()), ("eol", b"\r\n"), ("eol", b"\r\n"),
                       ("body", body)]
    return head + [("name", b"transfer-encoding"), ("colon", b": "), ("value", b"chunked"),
                   ("eol", b"\r\n"), ("eol", b"\r\n"),
                   ("chunk-size", b"%x" % len(body)), ("eol", b"\r\n"), ("body", body),
                   ("eol", b"\r\n"), ("chunk-size", b"0"), ("eol", b"\r\n"), ("eol", b"\r\n")]


@st.composite
def broken_requests(draw) -> bytes:
    """A valid request with exactly one field replaced by something hostile."""
    kind = draw(st.sampled_from(["get", "length", "chunked"]))
    parts = request_parts(kind, draw(st.binary(max_size=200)))
    index = draw(st.integers(0, len(parts) - 1))
    parts[index] = (parts[index][0], draw(FIELD_VALUE))
    return b"".join(value for _field, value in parts)


VALID_REQUESTS = st.sampled_from([
    b"GET / HTTP/1.1\r\nhost: a\r\n\r\n",
    b"GET /stream?chunks=3&size=5 HTTP/1.1\r\nhost: a\r\n\r\n",
    b"POST /echo HTTP/1.1\r\nhost: a\r\ncontent-length: 11\r\n\r\nhello world",
    b"POST /echo HTTP/1.1\r\nhost: a\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n",
    b"GET /nowhere HTTP/1.1\r\nhost: a\r\n\r\n",
])
LAST_REQUESTS = st.sampled_from([  # the server closes after these: only last in a pipeline
    b"", b"GET / HTTP/1.0\r\n\r\n", b"GET /stream HTTP/1.0\r\n\r\n",
    b"GET / HTTP/1.1\r\nhost: a\r\nconnection: close\r\n\r\n",
])


@st.composite
def split_pipelines(draw) -> tuple[bytes, list[bytes]]:
    """One to three valid requests back to back (pipelined), cut at random points."""
    whole = b"".join(draw(st.lists(VALID_REQUESTS, min_size=1, max_size=3))) + draw(LAST_REQUESTS)
    cuts = sorted(draw(st.sets(st.integers(1, len(whole) - 1), max_size=8)))
    edges = [0, *cuts, len(whole)]
    return whole, [whole[a:b] for a, b in zip(edges, edges[1:])]


# -- the properties -----------------------------------------------------------------------------------


@FUZZ
@given(data=st.binary(max_size=4096))
def test_arbitrary_bytes(server, problems, data):
    check_answer(exchange(server.address, [data]), data)
    still_serving(server)
    problems.check()


@FUZZ
@given(start=st.sampled_from([b"GET / HTTP/1.1\r\n", b"POST /echo HTTP/1.1\r\nhost: a\r\n",
                              b"POST /echo HTTP/1.1\r\nhost: a\r\ntransfer-encoding: chunked\r\n\r\n"]),
       rest=st.binary(max_size=2048))
def test_valid_start_then_garbage(server, problems, start, rest):
    check_answer(exchange(server.address, [start, rest]))
    still_serving(server)
    problems.check()


@FUZZ
@given(request=broken_requests())
def test_one_field_broken(server, problems, request):
    responses = check_answer(exchange(server.address, [request]), request)
    for status, _headers, _body in responses[1:]:
        assert status >= 400  # the mutation may create a second (bad) request, never a good one
    still_serving(server)
    problems.check()


@st.composite
def broken_handshakes(draw) -> bytes:
    parts = request_parts("upgrade", b"")
    index = draw(st.integers(0, len(parts) - 1))
    parts[index] = (parts[index][0], draw(FIELD_VALUE))
    return b"".join(value for _field, value in parts)


@FUZZ
@given(request=broken_handshakes())
def test_websocket_handshake_with_one_field_broken(server, problems, request):
    """An HTTP error, or (the mutation left it valid) a WebSocket that then ends cleanly when
    we close our side. The WSGI server has no WebSocket: it answers the request like any other."""
    answer = exchange(server.address, [request])
    if answer.startswith(b"HTTP/1.1 101 "):
        check_ws_answer(answer.partition(b"\r\n\r\n")[2])
    else:
        check_answer(answer, request)
    still_serving(server)
    problems.check()


@FUZZ
@given(pipeline=split_pipelines(), delay=st.sampled_from([0.0, 0.001, 0.005]))
def test_split_requests_get_the_same_answer(server, problems, pipeline, delay):
    whole, pieces = pipeline
    expected = exchange(server.address, [whole])
    answer = exchange(server.address, pieces, delay=delay)
    assert without_date(answer) == without_date(expected)
    responses = check_answer(answer)
    assert responses and responses[0][0] in (200, 404)
    problems.check()


# -- WebSocket (the ASGI server) ----------------------------------------------------------------------
#
# The attacker builds frames by hand (RFC 6455 §5.2), so that it can break every rule; the
# server side never does: wsproto parses them. What comes back is parsed by wsproto's frame
# parser acting as the client, which fails on anything that is not a valid server frame.

@pytest.fixture(scope="module")
def asgi_server(problems):
    with serve_in_background(soak.app, name="fuzz-ws", **LIMITS) as srv:
        yield srv


def websocket_handshake(address) -> socket.socket:
    """A socket on which the server has accepted a WebSocket at /ws (the soak app's echo)."""
    sock = socket.create_connection(address, timeout=5)
    client = wsproto.WSConnection(wsproto.ConnectionType.CLIENT)
    sock.sendall(client.send(Request(host="fuzz", target="/ws")))
    while True:
        data = sock.recv(65536)
        assert data, "the server closed instead of accepting the WebSocket"
        client.receive_data(data)
        if any(isinstance(event, AcceptConnection) for event in client.events()):
            return sock


def frame(opcode: int, payload: bytes, fin: bool = True, rsv: int = 0, mask: bytes | None = b"abcd",
          length_form: str = "shortest") -> bytes:
    """One frame as a client would send it, or deliberately not (RFC 6455 §5.2)."""
    first = (0x80 if fin else 0) | (rsv << 4) | opcode
    size = len(payload)
    mask_bit = 0x80 if mask is not None else 0
    if length_form == "64" or size > 0xFFFF:
        header = bytes([first, mask_bit | 127]) + size.to_bytes(8, "big")
    elif length_form == "16" or size > 125:
        header = bytes([first, mask_bit | 126]) + size.to_bytes(2, "big")
    else:
        header = bytes([first, mask_bit | size])
    if mask is None:
        return header + payload
    return header + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


def server_frames(data: bytes) -> list:
    """Parse what the server sent as a client would; ParseFailed if it is not valid."""
    parser = FrameProtocol(client=True, extensions=[])
    parser.receive_bytes(data)
    return list(parser.received_frames())


def ws_exchange(sock: socket.socket, pieces: list[bytes], delay: float = 0.0) -> bytes:
    try:
        for i, piece in enumerate(pieces):
            if i and delay:
                time.sleep(delay)
            sock.sendall(piece)
        sock.shutdown(socket.SHUT_WR)
    except OSError:
        pass  # the server failed the connection and closed while we were still sending
    received = bytearray()
    try:
        while data := sock.recv(65536):
            received += data
    except ConnectionResetError:
        pass
    except socket.timeout:
        pytest.fail(f"the server did not close the WebSocket after our EOF: {bytes(received)[:200]!r}")
    finally:
        sock.close()
    return bytes(received)


def check_ws_answer(data: bytes) -> list:
    """Valid server frames (the parser also checks that a Close carries a legal code, RFC 6455
    §7.4: one the server chose, such as 1002, 1007 or 1009, or the client's own, echoed), and
    nothing after the Close."""
    frames = server_frames(data)
    closes = [i for i, received in enumerate(frames) if received.opcode is Opcode.CLOSE]
    assert closes in ([], [len(frames) - 1]), "the server sent frames after its Close"
    return frames


def ws_still_serving(server) -> None:
    """A well-behaved WebSocket client gets its echo and a clean closing handshake."""
    sock = websocket_handshake(server.address)
    sock.sendall(frame(0x1, b"still there?"))
    echo = b""
    while not server_frames(echo):
        echo += sock.recv(65536)
    frames = server_frames(echo + ws_exchange(sock, [frame(0x8, b"\x03\xe8")]))
    assert [f.opcode for f in frames] == [Opcode.TEXT, Opcode.CLOSE]
    assert frames[0].payload == "still there?" and int(frames[1].payload[0]) == 1000
    still_serving(server)


OPCODES = st.sampled_from([0x0, 0x1, 0x2, 0x8, 0x9, 0xA, 0x3, 0x7, 0xB, 0xF])
WS_PAYLOADS = st.one_of(
    st.binary(max_size=300),
    st.text(max_size=60).map(str.encode),
    st.sampled_from([b"", b"\xff\xfe", b"\xc3", b"\xed\xa0\x80", b"\x03\xe8", b"\x03\xe8bye",
                     b"\x00\x00", b"\x03\xed", b"\x0b\xb8", b"\x13\x88", b"\x03", b"x" * 126,
                     b"y" * 5000]),
)


@st.composite
def random_frames(draw) -> bytes:
    frames = []
    for _ in range(draw(st.integers(1, 6))):
        frames.append(frame(
            draw(OPCODES), draw(WS_PAYLOADS),
            fin=draw(st.sampled_from([True, True, True, False])),
            rsv=draw(st.sampled_from([0, 0, 0, 0, 0, 1, 2, 4, 7])),
            mask=draw(st.sampled_from([b"abcd", b"\x00\x00\x00\x00", None])),
            length_form=draw(st.sampled_from(["shortest", "shortest", "16", "64"])),
        ))
    data = b"".join(frames)
    if draw(st.booleans()):  # sometimes cut the last frame short
        data = data[: draw(st.integers(0, len(data)))]
    return data


@FUZZ
@given(data=random_frames())
def test_random_websocket_frames(asgi_server, problems, data):
    sock = websocket_handshake(asgi_server.address)
    check_ws_answer(ws_exchange(sock, [data]))
    ws_still_serving(asgi_server)
    problems.check()


@FUZZ
@given(data=st.binary(max_size=2048))
def test_arbitrary_bytes_after_the_websocket_handshake(asgi_server, problems, data):
    sock = websocket_handshake(asgi_server.address)
    check_ws_answer(ws_exchange(sock, [data]))
    ws_still_serving(asgi_server)
    problems.check()


@st.composite
def split_messages(draw) -> tuple[list, list[bytes]]:
    """Valid messages (some fragmented, with pings between them), cut at random points."""
    messages, wire = [], b""
    for _ in range(draw(st.integers(1, 4))):
        if draw(st.booleans()):
            text = draw(st.text(max_size=40))
            messages.append(text)
            payload, opcode = text.encode(), 0x1
        else:
            payload = draw(st.binary(max_size=300))
            messages.append(payload)
            opcode = 0x2
        cuts = sorted(draw(st.sets(st.integers(1, max(len(payload) - 1, 1)), max_size=2))) \
            if len(payload) > 1 else []
        edges = [0, *cuts, len(payload)]
        pieces = [payload[a:b] for a, b in zip(edges, edges[1:])]
        for i, piece in enumerate(pieces):  # a fragmented message: opcode, then continuations
            wire += frame(opcode if i == 0 else 0x0, piece, fin=i == len(pieces) - 1)
            if draw(st.integers(0, 4)) == 0:
                wire += frame(0x9, b"ping")  # a control frame between fragments is allowed
    cuts = sorted(draw(st.sets(st.integers(1, len(wire) - 1), max_size=8)))
    edges = [0, *cuts, len(wire)]
    return messages, [wire[a:b] for a, b in zip(edges, edges[1:])]


@FUZZ
@given(case=split_messages(), delay=st.sampled_from([0.0, 0.001, 0.003]))
def test_split_websocket_messages_are_echoed_whole(asgi_server, problems, case, delay):
    messages, pieces = case
    sock = websocket_handshake(asgi_server.address)
    for i, piece in enumerate(pieces):
        if i and delay:
            time.sleep(delay)
        sock.sendall(piece)
    received = b""  # wait for every echo, then close (a Close sent at once may overtake them)
    while sum(f.opcode in (Opcode.TEXT, Opcode.BINARY) for f in server_frames(received)) < len(messages):
        data = sock.recv(65536)
        assert data, f"the server closed before echoing everything: {received!r}"
        received += data
    frames = check_ws_answer(received + ws_exchange(sock, [frame(0x8, b"\x03\xe8")]))
    echoed = [f.payload for f in frames if f.opcode in (Opcode.TEXT, Opcode.BINARY)]
    pongs = [f for f in frames if f.opcode is Opcode.PONG]
    assert echoed == [m if isinstance(m, str) else bytes(m) for m in messages]
    assert all(bytes(p.payload) == b"ping" for p in pongs)
    assert frames[-1].opcode is Opcode.CLOSE and int(frames[-1].payload[0]) == 1000
    problems.check()
