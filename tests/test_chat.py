"""The chat app (asgi_lab/apps/chat.py) and the live demo pieces (asgi_lab/live/), on our server.

Every test runs the chat on our own ASGI server in the background and talks to it over real
loopback sockets with `ChatClient` (our wsproto client). The slow-client test uses a socket
with a tiny receive buffer that the client stops reading, so the server's writes back up fast.
"""

from __future__ import annotations

import asyncio
import json
import time

import httpx
import pytest
from wsproto.frame_protocol import FrameProtocol

from asgi_lab import Tracer, serve_in_background
from asgi_lab.apps.chat import ChatApp
from asgi_lab.live import ChatClient, FrameTap, HandshakeRejected, WebSocketClient
from asgi_lab.live.wsgi_try import try_chat_on_wsgi, wsgi_chat

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def chat():
    app = ChatApp(queue_size=32)
    with serve_in_background(app, name="test-chat", tracer=None, access_log=False,
                             timeout_graceful_shutdown=1.0) as server:
        server.chat = app
        yield server


def join(server, name, room="lobby") -> ChatClient:
    return ChatClient.connect(f"{server.ws_url}/ws/{room}?name={name}", timeout=5)


def of_type(messages, kind):
    return [m for m in messages if m["type"] == kind]


def texts(client):
    return [(m["name"], m["text"]) for m in of_type(client.messages, "message")]


# -- HTTP: the page ------------------------------------------------------------------------

def test_page_is_served_by_the_same_app(chat):
    response = httpx.get(chat.url + "/")
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/html; charset=utf-8"
    assert "new WebSocket(" in response.text and "/ws/" in response.text
    assert httpx.get(chat.url + "/missing").status_code == 404
    assert httpx.post(chat.url + "/").status_code == 405


# -- rooms, join and leave -----------------------------------------------------------------

def test_welcome_join_and_leave_notices(chat):
    ada = join(chat, "ada")
    ada.wait_for(lambda m: of_type(m, "join"))
    welcome = ada.messages[0]
    assert welcome == {"type": "welcome", "room": "lobby", "seq": 0, "you": "ada", "members": ["ada"]}
    bob = join(chat, "bob")
    bob.wait_for(lambda m: of_type(m, "join"))
    assert bob.messages[0]["members"] == ["ada", "bob"]
    ada.wait_for(lambda m: len(of_type(m, "join")) == 2)
    assert [(m["name"], m["members"]) for m in of_type(ada.messages, "join")] == [("ada", 1), ("bob", 2)]

    assert bob.close(1000) == 1000
    ada.wait_for(lambda m: of_type(m, "leave"))
    assert of_type(ada.messages, "leave") == [
        {"type": "leave", "room": "lobby", "seq": 2, "name": "bob", "members": 1, "reason": "left"}]
    ada.close()


def test_rooms_are_separate(chat):
    ada, bob = join(chat, "ada", "lobby"), join(chat, "bob", "lobby")
    cy = join(chat, "cy", "kitchen")
    ada.wait_for(lambda m: len(of_type(m, "join")) == 2)
    ada.send("lobby only")
    cy.send("kitchen only")
    bob.wait_for(lambda m: of_type(m, "message"))
    cy.wait_for(lambda m: of_type(m, "message"))
    time.sleep(0.1)  # give a wrongly routed message time to arrive
    assert texts(bob) == [("ada", "lobby only")]
    assert texts(cy) == [("cy", "kitchen only")]
    assert [m["name"] for m in of_type(cy.messages, "join")] == ["cy"]
    assert sorted(chat.chat.rooms) == ["kitchen", "lobby"]
    for client in (ada, bob, cy):
        client.close()


def test_broadcast_reaches_everyone_in_one_order(chat):
    """Three members send 40 messages each at the same time: every member receives all 120,
    in the same order, with consecutive `seq` numbers, each sender's messages in its order."""
    members = [join(chat, name) for name in ("ada", "bob", "cy")]
    members[0].wait_for(lambda m: len(of_type(m, "join")) == 3)
    for i in range(40):
        for member in members:
            member.send(f"{member.name} {i}")
    for member in members:
        member.wait_for(lambda m: len(of_type(m, "message")) == 120, timeout=10)
    orders = [texts(member) for member in members]
    assert orders[0] == orders[1] == orders[2]
    for member in members:
        seqs = [m["seq"] for m in member.messages[1:]]  # after the welcome
        assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))
    for name in ("ada", "bob", "cy"):
        assert [text for who, text in orders[0] if who == name] == [f"{name} {i}" for i in range(40)]
    for member in members:
        member.close()


# -- a slow client cannot stall the room ---------------------------------------------------

def test_a_client_that_never_reads_is_dropped_and_does_not_stall_the_others(chat):
    """`lazy` joins and stops reading; ada floods the room. bob receives every message while
    lazy is stuck; when lazy's queue overflows it leaves the room ("too slow") and its
    connection is closed with 1013, or cut if even the Close frame cannot get through."""
    lazy = ChatClient.connect(f"{chat.ws_url}/ws/lobby?name=lazy", receive_buffer=4096, record=False)
    lazy.pause_reading()

    ada, bob = join(chat, "ada"), join(chat, "bob")
    ada.wait_for(lambda m: len(of_type(m, "join")) == 2)
    # ada floods; after each batch of 50, bob must have received all of it (within 10 s).
    sent = ada.flood(bob, until=lambda m: of_type(m, "leave"), size=4000, batch=50, limit=5000)
    leave = of_type(bob.messages, "leave")
    assert leave and leave[0]["name"] == "lazy" and leave[0]["reason"] == "too slow", sent
    assert chat.chat.rooms["lobby"].names() == ["ada", "bob"]

    ada.send("after lazy left")
    bob.wait_for(lambda m: of_type(m, "message")[-1]["text"] == "after lazy left")
    assert [int(m["text"].split()[0]) for m in of_type(bob.messages, "message")[:-1]] == list(range(sent))

    lazy.resume_reading()  # now read what was queued for lazy, up to the Close frame
    code = lazy.wait_closed(10)
    assert code in (1013, 1006), code  # 1006 only if the server had to cut it
    print("lazy closed with", code, "after", sent, "messages")
    ada.close()
    bob.close()


def test_many_members_overflowing_at_once_are_dropped_together():
    """Room logic without a server: 1,500 members with full queues and 2 healthy ones. One
    broadcast drops all 1,500 (one pass, no recursion through the leave notices) and the
    healthy members get the message and every leave notice, in order."""
    from asgi_lab.apps.chat import Member, Room

    async def scenario():
        room = Room("crowd")
        healthy = [Member(name, send=None, queue_size=2000) for name in ("ada", "bob")]
        slow = [Member(f"slow{i}", send=None, queue_size=1) for i in range(1500)]
        for member in slow:
            member.offer("already one message waiting")
        room.members = healthy[:1] + slow + healthy[1:]
        room.broadcast({"type": "message", "name": "ada", "text": "hi"})
        assert room.names() == ["ada", "bob"]
        assert all(member.too_slow for member in slow)
        received = [json.loads(healthy[1].queue.get_nowait()) for _ in range(healthy[1].queue.qsize())]
        assert received[0]["text"] == "hi"
        assert [m["name"] for m in received[1:]] == [f"slow{i}" for i in range(1500)]
        assert {m["reason"] for m in received[1:]} == {"too slow"}
        assert [m["seq"] for m in received] == list(range(1501))

    asyncio.run(scenario())


# -- disconnects and bad input ---------------------------------------------------------------

def test_a_dropped_connection_is_removed(chat):
    ada, bob = join(chat, "ada", "attic"), join(chat, "bob", "attic")
    ada.wait_for(lambda m: len(of_type(m, "join")) == 2)
    bob.loop.call(bob.client.abort)  # TCP reset: no Close frame
    ada.wait_for(lambda m: of_type(m, "leave"))
    assert of_type(ada.messages, "leave")[0]["name"] == "bob"
    assert chat.chat.rooms["attic"].names() == ["ada"]
    ada.close()
    deadline = time.monotonic() + 5
    while "attic" in chat.chat.rooms and time.monotonic() < deadline:
        time.sleep(0.01)
    assert "attic" not in chat.chat.rooms  # an empty room is forgotten


def test_binary_and_oversized_messages_are_refused(chat):
    ada = join(chat, "ada")
    ada.loop.call(ada.client.send_bytes, b"\x00\x01")
    assert ada.wait_closed() == 1003
    bob = join(chat, "bob")
    bob.send("y" * (chat.chat.max_message_chars + 1))
    assert bob.wait_closed() == 1009


@pytest.mark.parametrize("target", ["/ws/no%20spaces", "/ws/lobby?name=%3Cscript%3E", "/elsewhere"])
def test_bad_room_or_name_refuses_the_handshake(chat, target):
    with pytest.raises(HandshakeRejected) as info:
        ChatClient.connect(chat.ws_url + target)
    assert info.value.status_code == 403


def test_server_shutdown_closes_every_member_promptly():
    """Chat sessions never end on their own: a graceful shutdown must tell each member the
    server is going away (1001 or 1012) and finish well within the grace period."""
    server = serve_in_background(ChatApp(), name="test-chat-shutdown", access_log=False,
                                 timeout_graceful_shutdown=3.0)
    members = [join(server, name) for name in ("ada", "bob", "cy")]
    members[0].wait_for(lambda m: len(of_type(m, "join")) == 3)
    started = time.monotonic()
    server.stop()
    assert time.monotonic() - started < 2.5
    assert [member.wait_closed() for member in members] in ([1001] * 3, [1012] * 3)


# -- the frame inspector's data ------------------------------------------------------------

def test_client_records_frames_and_both_sides_events(chat):
    tracer = Tracer()
    with serve_in_background(ChatApp(), name="test-chat-traced", tracer=tracer,
                             access_log=False) as server:
        ada = join(server, "ada")
        ada.send("hello")
        ada.ping(b"are you there")
        ada.wait_for(lambda m: of_type(m, "message"))
        deadline = time.monotonic() + 5
        while not any(f.opcode == "PONG" for f in ada.frames) and time.monotonic() < deadline:
            time.sleep(0.01)
        assert ada.close(4000, "bye") == 4000

        sent = [f for f in ada.frames if f.direction == "sent"]
        assert [(f.opcode, f.fin, f.masked, f.payload) for f in sent] == [
            ("TEXT", True, True, b"hello"), ("PING", True, True, b"are you there"),
            ("CLOSE", True, True, b"\x0f\xa0bye")]
        assert all(len(f.mask_key) == 4 for f in sent)
        received = [f for f in ada.frames if f.direction == "received"]
        assert not any(f.masked for f in received)
        # The server answers the ping at once; the broadcast goes through ada's writer task,
        # so the pong may overtake the message.
        assert sorted(f.opcode for f in received[:-1]) == ["PONG", "TEXT", "TEXT", "TEXT"]
        assert received[-1].opcode == "CLOSE"
        assert json.loads(received[0].payload)["type"] == "welcome"
        assert received[-1].describe() == "code=4000 reason='bye'"
        names = [e.name for e in ada.events if e.direction == "received"]
        assert names[0] == "AcceptConnection" and names[-1] == "CloseConnection"
        assert sorted(names[1:-1]) == ["Pong", "TextMessage", "TextMessage", "TextMessage"]
        assert ada.client.response_bytes.startswith(b"HTTP/1.1 101 ")

        from asgi_lab.live.widgets import server_events

        kinds = [(e.layer, e.kind) for e in server_events(tracer, ada)]
        assert ("wsproto", "CloseConnection") in kinds
        disconnect = [e for e in server_events(tracer, ada) if e.kind == "receive"][-1]
        assert disconnect.data["type"] == "websocket.disconnect" and disconnect.data["code"] == 4000


def test_frame_tap_decodes_fragments_and_long_frames():
    """Sans-IO: frames split across reads, a 16-bit and a 64-bit length, continuation."""
    client = FrameProtocol(client=True, extensions=[])
    wire = (client.send_data("part one, ", fin=False) + client.send_data("part two", fin=True)
            + client.send_data(b"z" * 300, fin=True) + client.send_data(b"q" * 70_000, fin=True))
    tap = FrameTap("sent", frames_from_client=True)
    frames = []
    for i in range(0, len(wire), 7):
        frames += tap.feed(wire[i:i + 7])
    assert [(f.opcode, f.fin, f.length) for f in frames] == [
        ("TEXT", False, 10), ("CONT", True, 8), ("BINARY", True, 300), ("BINARY", True, 70_000)]
    assert frames[0].payload == b"part one, " and frames[3].payload == b"q" * 70_000
    assert all(f.masked for f in frames)
    bad = FrameTap("received", frames_from_client=False)  # a server never masks
    assert bad.feed(wire) == [] and "masked" in bad.error


def wait_until(condition, timeout=5.0):
    deadline = time.monotonic() + timeout
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert condition()


def test_widgets_render_without_a_front_end(chat):
    from asgi_lab.live.widgets import ChatBox, CloseButton, FrameInspector, frames_text

    ada, bob = join(chat, "ada"), join(chat, "bob")
    box = ChatBox(ada)
    inspector = FrameInspector([ada, bob])
    close = CloseButton(bob, inspector)
    assert not close.close_button.disabled and close.status_view.value == "open"
    box.entry.value = "typed in the box"  # what pressing Enter does
    bob.wait_for(lambda m: texts(bob) == [("ada", "typed in the box")])
    assert box.entry.value == ""
    wait_until(lambda: "ada: typed in the box" in box.log_view.value)  # the throttled redraw
    inspector.picker.value = "bob"
    inspector.ping_button.click()
    wait_until(lambda: "pong after" in inspector.status_view.value)
    assert [f.payload for f in bob.frames if f.opcode in ("PING", "PONG")] == [b"ping!", b"ping!"]
    close.code_picker.value = 1001
    close.close_button.click()
    assert bob.wait_closed() == 1001
    wait_until(lambda: close.close_button.disabled and "code 1001" in close.status_view.value)
    assert close.status_view.value == "bob is closed by the client, code 1001 &#x27;bye&#x27;"
    assert close.code_picker.disabled and close.reason_box.disabled
    wait_until(lambda: inspector.ping_button.disabled)  # bob is selected, and closed
    inspector.redraw()
    assert "code=1001" in inspector.frames_view.value and "CloseConnection" in inspector.events_view.value
    assert "bob: closed by the client, code 1001" in inspector.status_view.value
    assert "client → server" in frames_text(bob.frames)
    ada.close()
    wait_until(lambda: "closed by the client, code 1000" in box.header.value)  # the box says so
    assert box.entry.disabled and box.send_button.disabled
    box.entry.value = "too late"  # ignored: nothing is sent on a closed connection
    assert texts(ada) == [("ada", "typed in the box")]


def test_close_button_of_a_member_closed_elsewhere_is_disabled_and_says_who_closed(chat):
    """A cell closed bob before the button was shown: the button must not offer to close
    him again, nor claim a close it never sent. The server closing ada disables hers too."""
    from asgi_lab.live.widgets import CloseButton, FrameInspector

    bob = join(chat, "bob")
    assert bob.close(4000, "bye") == 4000
    close = CloseButton(bob)
    assert close.close_button.disabled and close.code_picker.disabled
    assert close.status_view.value == "bob is closed by the client, code 4000 &#x27;bye&#x27;"
    close.close_button.click()  # a click that slipped through does nothing new
    assert "code 4000" in close.status_view.value and len(
        [f for f in bob.frames if f.opcode == "CLOSE" and f.direction == "sent"]) == 1

    ada = join(chat, "ada")
    ada_close, inspector = CloseButton(ada), FrameInspector([ada])
    assert not ada_close.close_button.disabled and not inspector.ping_button.disabled
    chat.stop()  # the server says goodbye: 1001 Going Away (or 1012 Service Restart)
    wait_until(lambda: ada_close.close_button.disabled)
    assert ada_close.status_view.value.startswith("ada is closed by the server, code 10")
    wait_until(lambda: inspector.ping_button.disabled)


def test_widgets_leave_a_static_rendering_for_readers_without_a_kernel(chat):
    from asgi_lab.live.widgets import ChatBox, CloseButton, FrameInspector

    ada = join(chat, "ada")
    ada.send("<b>not bold</b>")
    ada.wait_for(lambda m: of_type(m, "message"))
    for widget, expected in ((ChatBox(ada), "ada: &lt;b&gt;not bold&lt;/b&gt;"),
                             (FrameInspector([ada]), "server → client"),
                             (CloseButton(ada), "ada is open")):
        bundle = widget._repr_mimebundle_()
        assert "application/vnd.jupyter.widget-view+json" in bundle  # the live widget...
        assert expected in bundle["text/html"]                       # ...and its picture
        assert "live widget" in bundle["text/plain"]
    ada.close()


def test_ping_returns_when_the_pong_arrives_with_the_same_payload(chat):
    ada = join(chat, "ada")
    started = time.monotonic()
    round_trip = ada.ping(b"still there?", timeout=5)
    assert time.monotonic() - started < 2.5  # returned on the pong, not at the timeout
    assert 0 < round_trip < 2.5
    pongs = [f for f in ada.frames if f.opcode == "PONG"]
    assert [f.payload for f in pongs] == [b"still there?"]  # RFC 6455 §5.5.3: echoed
    ada.close()
    with pytest.raises(ConnectionError, match="closed"):
        ada.ping(b"anyone?")


def test_a_stopped_notebook_server_is_named_not_a_connection_refused_traceback():
    from asgi_lab.background import ServerStopped

    server = serve_in_background(ChatApp(), name="test-chat-stopped", access_log=False)
    url = f"{server.ws_url}/ws/lobby?name=late"
    join(server, "early").close()
    server.stop()
    with pytest.raises(ServerStopped) as caught:
        ChatClient.connect(url)
    message = str(caught.value)
    assert "the server of this notebook ('test-chat-stopped') is stopped" in message
    assert caught.value._render_traceback_() == [message]  # what IPython shows: one line
    assert isinstance(caught.value, ConnectionRefusedError)
    with pytest.raises(ServerStopped):  # a slow member's socket too
        ChatClient.connect(url, receive_buffer=4096)
    # A port no background server ever had gives the ordinary error.
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(ConnectionRefusedError) as caught:
        ChatClient.connect(f"ws://127.0.0.1:{port}/ws/lobby")
    assert not isinstance(caught.value, ServerStopped)


# -- the same chat on the WSGI server --------------------------------------------------------

def test_wsgi_try_shows_a_failed_handshake():
    with serve_in_background(wsgi_chat, kind="wsgi", name="test-chat-wsgi", access_log=False) as server:
        page = httpx.get(server.url + "/")
        assert page.status_code == 200 and "new WebSocket(" in page.text  # the page is fine
        attempt = try_chat_on_wsgi(server.url)
    assert not attempt.opened
    assert attempt.status_code == 500
    assert attempt.request.startswith(b"GET /ws/lobby?name=ada HTTP/1.1\r\n")
    assert b"upgrade: websocket" in attempt.request.lower()
    assert attempt.response.startswith(b"HTTP/1.1 500 ")
    assert "RejectConnection(status_code=500)" in str(attempt)


def test_async_client_against_the_chat(chat):
    """The async API the benchmark uses, on an event loop of the test's own."""

    async def scenario():
        ada = await WebSocketClient.open(f"{chat.ws_url}/ws/lobby?name=ada", record=False)
        assert json.loads(await ada.receive(5))["type"] == "welcome"
        ada.send_text("hi")
        seen = [json.loads(await ada.receive(5)) for _ in range(2)]
        assert [m["type"] for m in seen] == ["join", "message"]
        return await ada.close()

    assert asyncio.run(scenario()) == 1000


def test_in_a_kernel_the_stopped_server_message_is_one_line_naming_the_cell(tmp_path):
    """What a student sees when re-running the chat-box cell after the clean-up: one line
    naming the cell that starts the server, no ConnectionRefusedError traceback."""
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    notebook = nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_code_cell("from asgi_lab import serve_in_background\n"
                                  "from asgi_lab.apps.chat import ChatApp\n"
                                  "from asgi_lab.live import ChatClient"),
        nbformat.v4.new_code_cell('server = serve_in_background(ChatApp(), name="nb-stopped", access_log=False)'),
        nbformat.v4.new_code_cell("server.stop()"),
        nbformat.v4.new_code_cell('me = ChatClient.connect(server.ws_url + "/ws/lobby?name=notebook")'),
    ])
    client = nbclient.NotebookClient(notebook, timeout=60, kernel_name="python3", allow_errors=True,
                                     resources={"metadata": {"path": str(tmp_path)}})
    client.execute()
    [error] = notebook.cells[3].outputs
    assert error.output_type == "error" and error.ename == "ServerStopped"
    assert error.traceback == [
        "the server of this notebook ('nb-stopped') is stopped; run cell [2] again "
        "(the cell that started it), then this one."]
