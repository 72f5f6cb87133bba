"""WebSocket in the ASGI server (asgi/websocket.py): the ASGI websocket spec and RFC 6455.

Two kinds of client talk to real servers on 127.0.0.1:
- the `websockets` library, an independent implementation, for everything a well-behaved
  client does (echo, subprotocols, close codes, pings, 100 clients at once, Starlette);
- `RawClient`: wsproto for the handshake and for reading the server's frames, plus frames made
  by hand (`frame()`) for what no library would send: reserved bits, unmasked or fragmented
  control frames, invalid UTF-8, oversized messages.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import queue
import socket
import struct
import threading
import time
from collections import deque

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus
from wsproto import ConnectionType, WSConnection
from wsproto.events import AcceptConnection, BytesMessage, CloseConnection, Pong, Request, TextMessage

from asgi_lab import Tracer, serve_in_background
from asgi_lab.apps.echo import app as echo_app
from rawhttp import exchange, read_until_closed

pytestmark = pytest.mark.timeout(60)

# -- a raw client ----------------------------------------------------------------------------------

TEXT, BINARY, CONTINUATION, CLOSE, PING, PONG = 0x1, 0x2, 0x0, 0x8, 0x9, 0xA
RSV1 = 0x40


def frame(opcode: int, payload: bytes = b"", *, fin: bool = True, rsv: int = 0,
          masked: bool = True) -> bytes:
    """One client frame (RFC 6455 §5.2), built by hand so that it can be wrong on purpose."""
    head = bytes([(0x80 if fin else 0) | rsv | opcode])
    mask_bit = 0x80 if masked else 0
    n = len(payload)
    if n < 126:
        head += bytes([mask_bit | n])
    elif n < 65536:
        head += bytes([mask_bit | 126]) + struct.pack("!H", n)
    else:
        head += bytes([mask_bit | 127]) + struct.pack("!Q", n)
    if not masked:
        return head + payload
    key = os.urandom(4)
    mask = (key * (n // 4 + 1))[:n]
    masked_payload = (int.from_bytes(payload, "big") ^ int.from_bytes(mask, "big")).to_bytes(n, "big")
    return head + key + masked_payload


class RawClient:
    """A blocking client on one socket: opening handshake with wsproto, then raw bytes."""

    def __init__(self, address, target: str = "/", timeout: float = 5.0) -> None:
        self.sock = socket.create_connection(address, timeout=timeout)
        self.ws = WSConnection(ConnectionType.CLIENT)
        self.pending: deque = deque()
        self.sock.sendall(self.ws.send(Request(host="127.0.0.1", target=target)))
        event = self.next_event()
        assert isinstance(event, AcceptConnection), event

    def send_raw(self, data: bytes) -> None:
        self.sock.sendall(data)

    def next_event(self, timeout: float = 5.0):
        """The next wsproto event from the server; CloseConnection(1006) once TCP has closed."""
        deadline = time.monotonic() + timeout
        while not self.pending:
            if time.monotonic() > deadline:
                raise TimeoutError("no event from the server")
            try:
                data = self.sock.recv(65536)
            except ConnectionResetError:
                data = b""
            self.ws.receive_data(data or None)
            self.pending.extend(self.ws.events())
        return self.pending.popleft()

    def next_message(self, timeout: float = 5.0):
        """The next whole text or binary message (wsproto hands over frames as they arrive)."""
        pieces = []
        while True:
            event = self.next_event(timeout)
            if isinstance(event, (TextMessage, BytesMessage)):
                pieces.append(event.data)
                if event.message_finished:
                    return ("" if isinstance(event, TextMessage) else b"").join(pieces)

    def close_frame(self, timeout: float = 5.0) -> CloseConnection:
        """Read until the server's Close (skipping messages and pings)."""
        while True:
            event = self.next_event(timeout)
            if isinstance(event, CloseConnection):
                return event

    def is_closed_by_server(self, timeout: float = 5.0) -> bool:
        """True once the server has closed the TCP connection (recv returns b"")."""
        self.sock.settimeout(timeout)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if not self.sock.recv(65536):
                    return True
            except ConnectionResetError:
                return True
            except socket.timeout:
                return False
        return False

    def close(self) -> None:
        self.sock.close()


# -- servers and apps ----------------------------------------------------------------------------

def run(coro, timeout: float = 15.0):
    """Run a client coroutine on a fresh loop in this (the test's) thread, bounded in time."""
    return asyncio.run(asyncio.wait_for(coro, timeout))


def serve(app, **settings):
    settings.setdefault("access_log", False)
    settings.setdefault("timeout_graceful_shutdown", 2.0)
    name = getattr(app, "__name__", type(app).__name__)
    return serve_in_background(app, name=f"test-websocket-{name}", **settings)


@pytest.fixture(scope="module")
def echo_server():
    with serve(echo_app) as server:
        yield server


async def echo_once(url: str, message) -> None:
    async with connect(url) as ws:
        await ws.send(message)
        assert await ws.recv() == message


def assert_still_serving(server) -> None:
    """After whatever a misbehaving client did, a new client gets its echo."""
    run(echo_once(server.ws_url + "/", "still here"))


class Recorder:
    """An app that accepts, echoes, and puts everything it receives on a thread-safe queue.

    `script(receive, send)` may replace the echo loop after accept.
    """

    def __init__(self, script=None, accept: dict | None = None) -> None:
        self.events: queue.Queue = queue.Queue()
        self.scopes: list[dict] = []
        self.script = script
        self.accept = accept or {"type": "websocket.accept"}
        self.__name__ = "recorder"

    async def __call__(self, scope, receive, send):
        if scope["type"] == "lifespan":
            message = await receive()
            scope["state"]["greeting"] = "hello from lifespan"
            await send({"type": "lifespan.startup.complete"})
            await receive()
            await send({"type": "lifespan.shutdown.complete"})
            return
        self.scopes.append(scope)
        message = await receive()
        self.events.put(message)
        await send(self.accept)
        if self.script is not None:
            await self.script(receive, send)
            return
        while True:
            message = await receive()
            self.events.put(message)
            if message["type"] == "websocket.disconnect":
                return
            await send({"type": "websocket.send", "text": message["text"], "bytes": message["bytes"]})

    def next(self, kind: str, timeout: float = 5.0) -> dict:
        """The next recorded message of type `kind` (others are skipped)."""
        deadline = time.monotonic() + timeout
        while True:
            message = self.events.get(timeout=max(0.01, deadline - time.monotonic()))
            if message["type"] == kind:
                return message


# -- the scope and the ASGI events ---------------------------------------------------------------

def test_scope_has_every_field_of_the_spec():
    app = Recorder()
    with serve(app) as server:
        async def client():
            async with connect(server.ws_url + "/chat%20room?x=1&y=%C3%A9",
                               subprotocols=["one", "two"],
                               additional_headers={"X-Custom": "yes"}) as ws:
                await ws.send("hi")
                assert await ws.recv() == "hi"
        run(client())
        assert app.next("websocket.connect") == {"type": "websocket.connect"}
        assert app.next("websocket.receive") == {"type": "websocket.receive", "bytes": None, "text": "hi"}
        assert app.next("websocket.disconnect")["code"] == 1000
    scope = app.scopes[0]
    assert scope["type"] == "websocket"
    assert scope["asgi"] == {"version": "3.0", "spec_version": "2.4"}
    assert scope["http_version"] == "1.1"
    assert scope["scheme"] == "ws"
    assert scope["path"] == "/chat room"
    assert scope["raw_path"] == b"/chat%20room"
    assert scope["query_string"] == b"x=1&y=%C3%A9"
    assert scope["root_path"] == ""
    assert (b"x-custom", b"yes") in [tuple(h) for h in scope["headers"]]
    assert scope["client"][0] == "127.0.0.1" and scope["server"] == tuple(server.address)
    assert scope["subprotocols"] == ["one", "two"]
    assert scope["state"] == {"greeting": "hello from lifespan"}
    assert "websocket.http.response" in scope["extensions"]


def test_echo_text_and_bytes(echo_server):
    async def client():
        async with connect(echo_server.ws_url + "/anywhere") as ws:
            await ws.send("héllo, wörld")
            assert await ws.recv() == "héllo, wörld"
            await ws.send(b"\x00\x01\xff")
            assert await ws.recv() == b"\x00\x01\xff"
            await ws.send("")
            assert await ws.recv() == ""
    run(client())


def test_echo_app_answers_plain_http_with_its_page(echo_server):
    response = httpx.get(echo_server.url + "/", timeout=5)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert b"new WebSocket(" in response.content


def test_one_mebibyte_binary_message(echo_server):
    payload = os.urandom(1024 * 1024)

    async def client():
        async with connect(echo_server.ws_url, max_size=None) as ws:
            await ws.send(payload)
            assert await ws.recv() == payload
            text = "é" * (600 * 1024)  # large text: split into frames on a UTF-8 boundary
            await ws.send(text)
            assert await ws.recv() == text
    run(client())


def test_subprotocol_negotiation_and_extra_response_header():
    async def choose(scope, receive, send):
        if scope["type"] != "websocket":
            return  # lifespan: not used
        await receive()
        chosen = "chat.v2" if "chat.v2" in scope["subprotocols"] else None
        await send({"type": "websocket.accept", "subprotocol": chosen,
                    "headers": [(b"x-powered-by", b"asgi_lab")]})
        await send({"type": "websocket.send", "text": f"you speak {chosen}"})
        await receive()

    with serve(choose) as server:
        async def client():
            async with connect(server.ws_url, subprotocols=["chat.v1", "chat.v2"]) as ws:
                assert ws.subprotocol == "chat.v2"
                assert ws.response.headers["x-powered-by"] == "asgi_lab"
                assert ws.response.headers["server"] == "asgi_lab"
                assert await ws.recv() == "you speak chat.v2"
        run(client())


def test_close_before_accept_is_http_403():
    async def refuse(scope, receive, send):
        if scope["type"] != "websocket":
            return  # lifespan: not used
        assert (await receive())["type"] == "websocket.connect"
        await send({"type": "websocket.close"})
        assert (await receive())["type"] == "websocket.disconnect"

    with serve(refuse) as server:
        with pytest.raises(InvalidStatus) as info:
            run(echo_once(server.ws_url, "x"))
        assert info.value.response.status_code == 403


def test_denial_response_extension():
    async def deny(scope, receive, send):
        if scope["type"] != "websocket":
            return  # lifespan: not used
        assert "websocket.http.response" in scope["extensions"]
        await receive()
        await send({"type": "websocket.http.response.start", "status": 401,
                    "headers": [(b"content-type", b"text/plain"), (b"www-authenticate", b"Token")]})
        await send({"type": "websocket.http.response.body", "body": b"log in ", "more_body": True})
        await send({"type": "websocket.http.response.body", "body": b"first"})

    with serve(deny) as server:
        with pytest.raises(InvalidStatus) as info:
            run(echo_once(server.ws_url, "x"))
        response = info.value.response
        assert response.status_code == 401
        assert response.headers["www-authenticate"] == "Token"
        assert response.body == b"log in first"


def test_app_close_with_code_and_reason_reaches_the_client():
    async def close_4001(receive, send):
        await send({"type": "websocket.close", "code": 4001, "reason": "go away"})
        app.events.put(await receive())  # the disconnect, once the client answered

    app = Recorder(script=close_4001)
    with serve(app) as server:
        async def client():
            async with connect(server.ws_url) as ws:
                with pytest.raises(ConnectionClosed):
                    await ws.recv()
                return ws.close_code, ws.close_reason
        assert run(client()) == (4001, "go away")
        assert app.next("websocket.disconnect")["code"] == 4001  # the code the peer echoed


def test_a_close_code_no_endpoint_may_send_is_refused():
    outcome: queue.Queue = queue.Queue()

    async def bad_code(receive, send):
        try:
            await send({"type": "websocket.close", "code": 1006})
        except ValueError as exc:
            outcome.put(exc)
        await send({"type": "websocket.close", "code": 1000})

    with serve(Recorder(script=bad_code)) as server:
        client = RawClient(server.address)
        assert "1006" in str(outcome.get(timeout=5))
        assert client.close_frame().code == 1000
        client.close()


def test_client_close_code_and_reason_reach_the_app():
    app = Recorder()
    with serve(app) as server:
        async def client():
            async with connect(server.ws_url) as ws:
                await ws.close(code=4002, reason="bye now")
        run(client())
        assert app.next("websocket.disconnect") == {"type": "websocket.disconnect", "code": 4002,
                                                     "reason": "bye now"}
        # A Close frame without a code: the app sees 1005 (RFC 6455 §7.1.5).
        client = RawClient(server.address)
        client.send_raw(frame(CLOSE))
        assert client.close_frame().code == 1005  # the server echoes an empty Close
        assert client.is_closed_by_server()
        assert app.next("websocket.disconnect")["code"] == 1005


def test_tcp_drop_without_close_is_1006():
    app = Recorder()
    with serve(app) as server:
        client = RawClient(server.address)
        client.send_raw(frame(TEXT, b"hello"))
        assert app.next("websocket.receive")["text"] == "hello"
        client.close()
        assert app.next("websocket.disconnect")["code"] == 1006


def test_send_after_disconnect_raises_an_oserror():
    outcome: queue.Queue = queue.Queue()

    async def keep_sending(receive, send):
        assert (await receive())["type"] == "websocket.disconnect"
        try:
            await send({"type": "websocket.send", "text": "anyone there?"})
        except OSError as exc:
            outcome.put(exc)

    with serve(Recorder(script=keep_sending)) as server:
        RawClient(server.address).close()
        assert isinstance(outcome.get(timeout=5), OSError)


def test_app_errors_become_500_or_close_1011(caplog):
    async def fails_before_accept(scope, receive, send):
        if scope["type"] != "websocket":
            return  # lifespan: not used
        await receive()
        raise RuntimeError("boom")

    with serve(fails_before_accept) as server:
        with pytest.raises(InvalidStatus) as info:
            run(echo_once(server.ws_url, "x"))
        assert info.value.response.status_code == 500

    async def fails_after_accept(receive, send):
        raise RuntimeError("boom")

    with serve(Recorder(script=fails_after_accept)) as server:
        client = RawClient(server.address)
        assert client.close_frame().code == 1011
        client.close()
    assert "Exception in ASGI application" in caplog.text


def test_bad_handshakes_get_http_errors(echo_server):
    host, port = echo_server.address
    base = (f"GET / HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\n")
    no_key = base + "Sec-WebSocket-Version: 13\r\n\r\n"
    assert exchange(echo_server.address, no_key.encode()).startswith(b"HTTP/1.1 400 ")
    old_version = base + "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 8\r\n\r\n"
    answer = exchange(echo_server.address, old_version.encode())
    assert answer.startswith(b"HTTP/1.1 426 ") and b"sec-websocket-version: 13" in answer.lower()
    http_1_0 = no_key.replace("HTTP/1.1", "HTTP/1.0").replace(f"Host: {host}:{port}\r\n", "")
    assert exchange(echo_server.address, http_1_0.encode()).startswith(b"HTTP/1.1 400 ")
    assert_still_serving(echo_server)


def test_trace_records_socket_wsproto_and_asgi_layers():
    tracer = Tracer()
    with serve_in_background(echo_app, name="test-websocket-trace", tracer=tracer,
                             access_log=False) as server:
        run(echo_once(server.ws_url, "traced"))
    layers = {(e.layer, e.kind) for e in tracer.events}
    for expected in [("socket", "bytes_in"), ("socket", "bytes_out"), ("wsproto", "Request"),
                     ("wsproto", "TextMessage"), ("wsproto", "CloseConnection"),
                     ("asgi", "receive"), ("asgi", "send"), ("socket", "connection_lost")]:
        assert expected in layers


# -- frames: fragmentation, control frames, violations ------------------------------------------

def test_fragmented_message_is_delivered_whole_and_pings_are_answered(echo_server):
    client = RawClient(echo_server.address)
    client.send_raw(frame(TEXT, "frag".encode(), fin=False)
                    + frame(PING, b"between fragments")  # control frames may interleave (§5.4)
                    + frame(CONTINUATION, "men".encode(), fin=False)
                    + frame(CONTINUATION, "ted é".encode()))
    events = [client.next_event(), client.next_event()]
    assert isinstance(events[0], Pong) and events[0].payload == b"between fragments"
    assert isinstance(events[1], TextMessage) and events[1].data == "fragmented é"
    client.close()


def test_a_message_in_thousands_of_tiny_fragments_arrives_whole(echo_server):
    client = RawClient(echo_server.address)
    for opcode, piece in ((TEXT, "é".encode()), (BINARY, b"\x00")):
        frames = [frame(opcode if i == 0 else CONTINUATION, piece, fin=i == 2999) for i in range(3000)]
        client.send_raw(b"".join(frames))
        assert client.next_message() == (piece * 3000 if opcode == BINARY else "é" * 3000)
    client.close()


def test_frames_sent_right_behind_the_handshake_are_not_lost(echo_server):
    """A client may pipeline frames after its upgrade request; they wait for the app's accept."""
    sock = socket.create_connection(echo_server.address, timeout=5)
    ws = WSConnection(ConnectionType.CLIENT)
    sock.sendall(ws.send(Request(host="127.0.0.1", target="/")) + frame(TEXT, b"early bird"))
    events = []
    while len(events) < 2:
        ws.receive_data(sock.recv(65536))
        events.extend(ws.events())
    assert isinstance(events[0], AcceptConnection)
    assert isinstance(events[1], TextMessage) and events[1].data == "early bird"
    sock.close()


def test_ping_from_a_library_client_gets_its_pong(echo_server):
    async def client():
        async with connect(echo_server.ws_url) as ws:
            latency = await asyncio.wait_for(await ws.ping(b"are you there"), 5)
            assert latency >= 0
    run(client())


VIOLATIONS = {
    "reserved bit without an extension": (frame(TEXT, b"hi", rsv=RSV1), 1002),
    "invalid UTF-8 in a text message": (frame(TEXT, b"\xff\xfe bad"), 1007),
    "invalid UTF-8 across fragments": (frame(TEXT, b"ok \xe2\x82", fin=False)
                                       + frame(CONTINUATION, b"\x28 bad"), 1007),
    "fragmented control frame": (frame(PING, b"x", fin=False), 1002),
    "control frame over 125 bytes": (frame(PING, b"x" * 126), 1002),
    "unmasked client frame": (frame(TEXT, b"hi", masked=False), 1002),
    "continuation with nothing to continue": (frame(CONTINUATION, b"hi"), 1002),
    "unknown opcode": (frame(0x3, b"hi"), 1002),
}


@pytest.mark.parametrize("name", VIOLATIONS)
def test_protocol_violations_get_the_right_close_code(echo_server, name):
    data, code = VIOLATIONS[name]
    bystander = RawClient(echo_server.address)  # connected throughout: must be unaffected
    client = RawClient(echo_server.address)
    client.send_raw(data)
    close = client.close_frame()
    assert close.code == code, close
    assert client.is_closed_by_server()
    bystander.send_raw(frame(TEXT, b"unaffected"))
    assert bystander.next_message() == "unaffected"
    bystander.close()
    assert_still_serving(echo_server)


random_frames = st.lists(st.builds(
    lambda opcode, payload, fin, rsv, masked: frame(opcode, payload, fin=fin, rsv=rsv, masked=masked),
    opcode=st.sampled_from([0x0, 0x1, 0x2, 0x3, 0x8, 0x9, 0xA, 0xB]),
    payload=st.binary(max_size=200),
    fin=st.booleans(),
    rsv=st.sampled_from([0, 0, 0, RSV1, 0x20, 0x10]),
    masked=st.booleans() | st.just(True),
), max_size=6)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(frames=random_frames)
def test_random_frames_never_break_the_server(echo_server, frames):
    """Whatever frames arrive, the server answers with a sensible close code and hangs up
    (a final Close from us ends the well-formed cases), and goes on serving."""
    client = RawClient(echo_server.address)
    client.send_raw(b"".join(frames) + frame(CLOSE, struct.pack("!H", 1000)))
    try:
        close = client.close_frame(timeout=5)
        allowed = {1000, 1002, 1007, 1009}  # our Close echoed, or the connection failed
        if any(f[0] & 0x0F == CLOSE for f in frames):  # a random Close came first: its code echoed
            allowed |= {1001, 1003, 1005, *range(1007, 1015), *range(3000, 5000)}
        assert close.code in allowed, close
        assert client.is_closed_by_server()
    finally:
        client.close()


def test_server_still_serves_after_the_random_frames(echo_server):
    assert_still_serving(echo_server)


def test_protocol_violation_reaches_the_app_with_its_code():
    app = Recorder()
    with serve(app) as server:
        client = RawClient(server.address)
        client.send_raw(frame(TEXT, b"\xc3\x28"))
        assert client.close_frame().code == 1007
        assert app.next("websocket.disconnect")["code"] == 1007


def test_message_over_the_size_limit_is_closed_with_1009():
    app = Recorder()
    with serve(app, ws_max_message_bytes=1000) as server:
        client = RawClient(server.address)
        client.send_raw(frame(BINARY, b"x" * 1000))  # exactly the limit: fine
        assert client.next_message() == b"x" * 1000
        client.send_raw(frame(BINARY, b"x" * 1001))
        assert client.close_frame().code == 1009
        assert app.next("websocket.disconnect")["code"] == 1009
        # The same limit holds for a message sent in many small fragments, and for text.
        client = RawClient(server.address)
        client.send_raw(b"".join(frame(TEXT if i == 0 else CONTINUATION, "é".encode() * 50, fin=False)
                                 for i in range(11)))
        assert client.close_frame().code == 1009
        assert_still_serving(server)


# -- keep-alive, shutdown, flow control, load -------------------------------------------------------

def test_keepalive_ping_drops_a_dead_peer_but_not_a_live_one():
    app = Recorder()
    with serve(app, ws_ping_interval=0.2, ws_ping_timeout=0.4, timeout_keep_alive=0.4) as server:
        async def live_client():
            async with connect(server.ws_url, ping_interval=None) as ws:  # answers pings itself
                await asyncio.sleep(1.2)
                await ws.send("still alive")
                return await ws.recv()

        dead = RawClient(server.address)  # never reads, so never answers a ping
        assert run(live_client()) == "still alive"
        disconnects = [app.next("websocket.disconnect")["code"] for _ in range(2)]
        assert sorted(disconnects) == [1000, 1006]  # the live client closed normally
        assert dead.is_closed_by_server()


def test_graceful_shutdown_closes_with_1001_and_tells_the_app():
    app = Recorder()
    server = serve(app, timeout_graceful_shutdown=5.0)

    async def client():
        async with connect(server.ws_url) as ws:
            await ws.send("before shutdown")
            assert await ws.recv() == "before shutdown"
            started = time.monotonic()
            stopper = threading.Thread(target=server.stop)
            stopper.start()
            with pytest.raises(ConnectionClosed):
                await ws.recv()
            await asyncio.get_running_loop().run_in_executor(None, stopper.join, 10)
            return ws.close_code, time.monotonic() - started

    code, took = run(client())
    assert code == 1001
    assert took < 2.0  # the close handshake ended it, not the 5 s grace period
    assert app.next("websocket.disconnect")["code"] == 1001


def test_shutdown_during_the_handshake_answers_503_and_tells_the_app(caplog):
    seen: queue.Queue = queue.Queue()

    async def undecided(scope, receive, send):
        if scope["type"] != "websocket":
            return  # lifespan: not used
        seen.put(await receive())  # websocket.connect; the app has not answered yet...
        seen.put(await receive())  # ...when the server shuts down
        with pytest.raises(OSError):
            await send({"type": "websocket.accept"})  # too late
        seen.put("done")

    server = serve(undecided, access_log=True)
    sock = socket.create_connection(server.address, timeout=5)
    ws = WSConnection(ConnectionType.CLIENT)
    sock.sendall(ws.send(Request(host="127.0.0.1", target="/chat?room=1")))
    assert seen.get(timeout=5)["type"] == "websocket.connect"
    with caplog.at_level(logging.INFO, logger="asgi_lab.access"):
        server.stop()
    assert seen.get(timeout=5) == {"type": "websocket.disconnect", "code": 1001,
                                   "reason": "server shutting down"}
    assert seen.get(timeout=5) == "done"
    answer = read_until_closed(sock)
    assert answer.startswith(b"HTTP/1.1 503 ")
    sock.close()
    # The 503 is the server's own answer, logged as its other error responses are: one line.
    lines = [r.getMessage() for r in caplog.records if r.name == "asgi_lab.access"]
    assert len(lines) == 1, lines
    assert re.fullmatch(r'127\.0\.0\.1:\d+ - "GET /chat\?room=1 HTTP/1\.1" 503 Service Unavailable '
                        rf"{len(answer)} B \d+\.\d ms", lines[0]), lines


@pytest.mark.parametrize("refusal", ["bad handshake", "app closes"])
def test_a_refused_handshake_has_one_access_line_with_status_bytes_and_time(refusal, caplog):
    async def refuse(scope, receive, send):
        if scope["type"] == "websocket":
            await receive()  # websocket.connect
            await send({"type": "websocket.close"})  # before accepting: 403

    with serve(refuse, access_log=True, lifespan="off") as server, \
            caplog.at_level(logging.INFO, logger="asgi_lab.access"):
        if refusal == "bad handshake":  # no Sec-WebSocket-Key: wsproto refuses it
            answer = exchange(server.address, b"GET /ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\n"
                              b"Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\n\r\n")
        else:
            ws = WSConnection(ConnectionType.CLIENT)
            answer = exchange(server.address, ws.send(Request(host="127.0.0.1", target="/ws")))
    status = 400 if refusal == "bad handshake" else 403
    assert answer.startswith(b"HTTP/1.1 %d " % status)
    lines = [r.getMessage() for r in caplog.records if r.name == "asgi_lab.access"]
    assert len(lines) == 1, lines
    assert re.fullmatch(rf'127\.0\.0\.1:\d+ - "GET /ws HTTP/1\.1" {status} \w[\w ]+ {len(answer)} B '
                        r"\d+\.\d ms", lines[0]), lines



def test_a_client_that_does_not_read_cannot_make_the_server_buffer_without_bound():
    sent = []
    chunk = b"x" * 65536

    async def firehose(receive, send):
        while True:
            await send({"type": "websocket.send", "bytes": chunk})
            sent.append(len(chunk))

    with serve(Recorder(script=firehose), ws_write_high_water=64 * 1024) as server:
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 32 * 1024)  # small, and never read
        sock.connect(server.address)
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                     b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
        previous, deadline = -1, time.monotonic() + 10
        while sum(sent) != previous and time.monotonic() < deadline:  # until send() stays blocked
            previous = sum(sent)
            time.sleep(0.3)
        assert sum(sent) == previous  # send() is waiting: the app is held back
        assert previous < 16 * 1024 * 1024  # kernel buffers plus our high-water mark, not more
        connections = list(server.server.connections)
        assert all(c.transport.get_write_buffer_size() <= 64 * 1024 + len(chunk) + 16
                   for c in connections)
        sock.close()


def test_a_flooding_client_is_read_only_as_fast_as_the_app_receives():
    go = threading.Event()
    received = []

    async def slow_reader(receive, send):
        await asyncio.get_running_loop().run_in_executor(None, go.wait, 10)
        while True:
            message = await receive()
            if message["type"] == "websocket.disconnect":
                return
            received.append(message["bytes"])
            if len(received) == 2000:
                await send({"type": "websocket.send", "text": "got them all"})

    with serve(Recorder(script=slow_reader), read_high_water=64 * 1024) as server:
        client = RawClient(server.address)
        flood = frame(BINARY, b"y" * 1000) * 2000  # 2 MB, 30 times the read high-water mark
        client.sock.sendall(flood)  # the kernel's buffers on loopback can hold all of it
        time.sleep(0.3)
        [protocol] = list(server.server.connections)
        assert protocol.reading_paused  # we stopped reading: the flood waits in the kernel
        # What the server holds is bounded: the high-water mark plus at most one read.
        assert protocol.queued_bytes <= 64 * 1024 + 256 * 1024
        assert len(protocol.queue) < 2000 - 1000
        go.set()  # now the app receives, and reading resumes as it does
        assert client.next_message() == "got them all"
        assert len(received) == 2000 and all(m == b"y" * 1000 for m in received)
        client.close()


def test_one_hundred_concurrent_clients_each_get_their_own_echoes(echo_server):
    async def one(n):
        async with connect(echo_server.ws_url + f"/client/{n}") as ws:
            for i in range(5):
                message = f"client {n} message {i}" if i % 2 else f"{n}:{i}".encode() * 50
                await ws.send(message)
                assert await ws.recv() == message
            return n

    async def all_clients():
        return await asyncio.gather(*(one(n) for n in range(100)))

    assert run(all_clients(), timeout=30) == list(range(100))


# -- a framework -------------------------------------------------------------------------------------

def test_starlette_websocket_endpoint():
    from starlette.applications import Starlette
    from starlette.routing import WebSocketRoute
    from starlette.websockets import WebSocket

    async def shout(websocket: WebSocket):
        await websocket.accept(subprotocol="shout")
        while True:
            text = await websocket.receive_text()
            if text == "bye":
                await websocket.close(code=4000, reason="as you wish")
                return
            await websocket.send_json({"upper": text.upper(), "path": websocket.url.path,
                                       "name": websocket.query_params["name"]})

    app = Starlette(routes=[WebSocketRoute("/shout", shout)])
    with serve(app) as server:
        async def client():
            async with connect(server.ws_url + "/shout?name=ada", subprotocols=["shout"]) as ws:
                assert ws.subprotocol == "shout"
                await ws.send("hello")
                assert json.loads(await ws.recv()) == {"upper": "HELLO", "path": "/shout", "name": "ada"}
                await ws.send("bye")
                with pytest.raises(ConnectionClosed):
                    await ws.recv()
                return ws.close_code, ws.close_reason
        assert run(client()) == (4000, "as you wish")
        with pytest.raises(InvalidStatus) as info:  # no such route: Starlette closes -> 403
            run(echo_once(server.ws_url + "/nowhere", "x"))
        assert info.value.response.status_code == 403
