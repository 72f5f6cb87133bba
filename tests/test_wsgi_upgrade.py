"""WebSockets on WSGI: the opt-in escape hatch (`wsgi/upgrade.py`), the WSGI chat on it
(`apps/wsgi_chat.py`), what other WSGI servers do with the same app (`live/wsgi_try.py`), and
the chat split over a WSGI app and a separate WebSocket server (`live/split_chat.py`).

Real servers and real clients (the `websockets` library, wsproto on a raw socket) on
127.0.0.1, every wait bounded.
"""

from __future__ import annotations

import json
import socket
import threading
import time

import pytest
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect
from wsproto import ConnectionType, WSConnection
from wsproto.events import AcceptConnection, CloseConnection, Request, TextMessage

from asgi_lab import Tracer, serve_in_background
from asgi_lab.apps.wsgi_chat import WSGIChat
from asgi_lab.cli import build_parser, config_from
from asgi_lab.config import Config
from asgi_lab.live.wsgi_try import chat_cost, compare_servers, server_extensions, try_chat_on_wsgi
from asgi_lab.wsgi.upgrade import UPGRADE_KEY
from rawhttp import exchange

pytestmark = pytest.mark.timeout(90)


def extensions_app(environ, start_response):
    body = json.dumps(server_extensions(environ)).encode()
    start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
    return [body]


def get_json(server, path="/"):
    import urllib.request

    with urllib.request.urlopen(server.url + path, timeout=5) as answer:
        return json.loads(answer.read())


def member(server, name):
    """A `websockets` client in the lobby, once it has its welcome."""
    client = connect(f"{server.ws_url}/ws/lobby?name={name}", open_timeout=5, close_timeout=2,
                     legacy=True)  # closed by the test itself
    assert json.loads(client.recv(timeout=5))["type"] == "welcome"
    return client


def next_of(client, kind):
    while (message := json.loads(client.recv(timeout=5)))["type"] != kind:
        pass
    return message


def writer_threads():
    return [t for t in threading.enumerate() if t.name.startswith("wsgi-chat-writer-")]


def wait_until(condition, timeout=5.0):
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.02)


# -- the key: off by default, on by choice ---------------------------------------------------------

def test_the_key_is_absent_by_default():
    assert Config().wsgi_upgrade is False
    with serve_in_background(extensions_app, kind="wsgi", name="upgrade-off", access_log=False) as server:
        assert UPGRADE_KEY not in get_json(server)
    with serve_in_background(extensions_app, kind="wsgi", name="upgrade-on", access_log=False,
                             wsgi_upgrade=True) as server:
        assert get_json(server) == [UPGRADE_KEY]


def test_the_command_line_flag():
    parser = build_parser()
    assert config_from(parser.parse_args(["wsgi", "m:app"])).wsgi_upgrade is False
    assert config_from(parser.parse_args(["wsgi", "m:app", "--wsgi-upgrade"])).wsgi_upgrade is True


def test_a_plain_request_cannot_upgrade():
    """h11 sends a 101 only when the request proposed it: the app gets a clear error (500)."""
    def app(environ, start_response):
        environ[UPGRADE_KEY]([("Upgrade", "websocket")])
        return []

    with serve_in_background(app, kind="wsgi", name="upgrade-plain", access_log=False,
                             wsgi_upgrade=True) as server:
        from asgi_lab.background import server_errors

        with server_errors() as records:
            answer = exchange(server.address, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert answer.startswith(b"HTTP/1.1 500 ")
    assert "no Upgrade header" in str(records[0].exc_info[1])


def test_the_socket_comes_with_the_bytes_h11_already_read():
    """A client may send its first frame in the same packet as the handshake: the app must
    get those bytes (h11's `trailing_data`) with the socket, or the frame is lost."""
    got = []

    def app(environ, start_response):
        from asgi_lab.apps.wsgi_chat import handshake_answer

        sock, buffered = environ[UPGRADE_KEY](handshake_answer(environ))
        got.append(buffered)
        return []

    tracer = Tracer()
    with serve_in_background(app, kind="wsgi", name="upgrade-buffered", access_log=False,
                             wsgi_upgrade=True, tracer=tracer) as server:
        client = WSConnection(ConnectionType.CLIENT)
        handshake = client.send(Request(host="127.0.0.1", target="/ws"))
        with socket.create_connection(server.address, timeout=5) as sock:
            # wsproto lets us frame before the answer only through a second connection object
            sock.sendall(handshake + _masked_text_frame("early"))
            answer = sock.recv(4096)
            client.receive_data(answer)
            assert isinstance(next(client.events()), AcceptConnection)
            assert sock.recv(10) == b""  # the app returned: the server closed the connection
    assert got and got[0].endswith(b"early"[:0]) and len(got[0]) == len(_masked_text_frame("early"))
    upgrade = [event for event in tracer.events if event.kind == "upgrade"]
    assert upgrade and upgrade[0].data["h11_state"] == "SWITCHED_PROTOCOL"
    assert upgrade[0].data["buffered"] == len(got[0])


def _masked_text_frame(text: str) -> bytes:
    """One masked client frame, framed by wsproto (an open client connection of its own)."""
    from wsproto.connection import Connection

    return Connection(ConnectionType.CLIENT).send(TextMessage(data=text))


# -- the chat on WSGI, through the hatch -------------------------------------------------------------

@pytest.fixture
def wsgi_chat_server():
    with serve_in_background(WSGIChat(), kind="wsgi", name="test-wsgi-chat", access_log=False,
                             wsgi_upgrade=True, threads=4, timeout_graceful_shutdown=1) as server:
        yield server


def test_a_websockets_client_chats_through_the_wsgi_chat(wsgi_chat_server):
    ada = member(wsgi_chat_server, "ada")
    bob = member(wsgi_chat_server, "bob")
    assert next_of(ada, "join")["name"] == "ada"
    ada.send("hello from ada")
    bob.send("hi ada")
    seen = [next_of(ada, "message") for _ in range(2)]
    assert {(m["name"], m["text"]) for m in seen} == {("ada", "hello from ada"), ("bob", "hi ada")}
    assert ada.response.status_code == 101
    assert ada.response.headers["Upgrade"].lower() == "websocket"
    ada.ping().wait(5)  # the app answers pings (wsproto gives it the Ping, it sends the Pong)
    bob.close()
    left = next_of(ada, "leave")
    assert left["name"] == "bob" and left["members"] == 1
    ada.close()
    assert ada.close_code == 1000
    wait_until(lambda: wsgi_chat_server.server.stats()["busy"] == 0 and not writer_threads())


def test_n_members_cost_two_threads_each_and_the_pool_runs_out():
    cost = chat_cost(members=3, threads=3, wait=0.5)
    assert cost.wsgi_busy_workers == 3          # one pool thread inside the app per member
    assert cost.wsgi_writer_threads == 3        # and one writer thread per member
    assert cost.wsgi_new_threads == 3           # the writers are new threads; the pool was there
    assert cost.waited_until_one_left           # the 4th member waited for a worker...
    assert cost.waiting_member_opened_in >= 0.5  # ...until one of the three left
    assert cost.asgi_new_threads == 0 and cost.asgi_new_tasks >= 3
    assert [row["per member"] for row in cost.rows()] == [2.0, 0.0]


def test_the_cost_counts_only_its_own_members(wsgi_chat_server):
    """Notebook 06 in JupyterLab: the chat page embedded under section 3 is a member of
    another WSGI chat in the same kernel; its writer thread is not one of the measured chat's."""
    bystander = member(wsgi_chat_server, "iframe")
    cost = chat_cost(members=2, threads=2, wait=0.2)
    assert cost.wsgi_writer_threads == 2 and cost.rows()[0]["per member"] == 2.0
    bystander.close()


def test_shutdown_ends_the_sessions_within_the_grace_period():
    """WSGI cannot tell the app "the server is going away": the sessions end when the grace
    period is over and the server cuts the connections."""
    server = serve_in_background(WSGIChat(), kind="wsgi", name="test-wsgi-chat-stop",
                                 access_log=False, wsgi_upgrade=True, timeout_graceful_shutdown=0.5)
    ada = member(server, "ada")
    started = time.monotonic()
    server.stop()
    assert 0.4 < time.monotonic() - started < 5
    with pytest.raises(Exception):
        while True:
            ada.recv(timeout=5)
    wait_until(lambda: not writer_threads())


# -- without the key: the same app on other servers -------------------------------------------------

def test_without_the_key_the_hatch_off_server_answers_500():
    with serve_in_background(WSGIChat(), kind="wsgi", name="test-wsgi-chat-off", access_log=False) as server:
        with pytest.raises(InvalidStatus) as refused:
            connect(server.ws_url + "/ws/lobby?name=ada", open_timeout=5, legacy=True)
        assert refused.value.response.status_code == 500
        attempt = try_chat_on_wsgi(server.url, listen=0.2)
    assert not attempt.opened and attempt.server_log  # the app's 101 was refused, and logged


def test_each_server_measured():
    for module in ("werkzeug", "waitress", "gunicorn"):  # the test and bench extras
        pytest.importorskip(module)
    reports = {report.server: report for report in compare_servers(listen=0.5)}
    ours_off, ours_on = reports["asgi_lab"], reports["asgi_lab --wsgi-upgrade"]
    assert ours_off.attempt.status_code == 500 and ours_off.extensions == []
    assert ours_on.attempt.opened and ours_on.attempt.close_code is None
    assert [m["type"] for m in ours_on.attempt.messages] == ["welcome", "join", "message"]
    assert ours_on.extensions == [UPGRADE_KEY]
    # Nobody else knows our key; two of them have a raw-socket key of their own.
    assert all(UPGRADE_KEY not in report.extensions for name, report in reports.items()
               if name != "asgi_lab --wsgi-upgrade")
    assert "gunicorn.socket" in reports["gunicorn"].extensions
    assert "werkzeug.socket" in reports["werkzeug"].extensions
    # The hop-by-hop rule, enforced: wsgiref and waitress answer 500 and say why.
    for name in ("wsgiref", "waitress"):
        assert reports[name].attempt.status_code == 500
        assert any("hop-by-hop" in line.lower() for line in reports[name].log)
    # gunicorn lets the 101 out; then the call is over and the connection with it.
    gunicorn = reports["gunicorn"]
    assert gunicorn.attempt.opened and gunicorn.attempt.close_code == 1006
    assert gunicorn.attempt.messages == [] and gunicorn.other_client.startswith("101, then closed")
    # werkzeug too, with a Connection: close of its own: wsproto refuses, websockets waits.
    werkzeug = reports["werkzeug"]
    assert werkzeug.attempt.status_code == 101 and not werkzeug.attempt.opened
    assert werkzeug.other_client.startswith("101, then ")  # silence, or closed: it varies
    assert "0 messages" in werkzeug.other_client
    assert ours_on.other_client.startswith("101, chat works")


# -- a separate WebSocket server beside the WSGI app -----------------------------------------------

def test_the_split_chat_works_end_to_end_and_leaves_no_process():
    from asgi_lab.live.split_chat import SplitChat, measure_split

    with SplitChat() as chat:
        processes = [chat.relay.process, chat.wsgi.process]
        assert chat.relay.port != chat.wsgi.port
        result = measure_split(chat, lines=3)
        # The WSGI app is plain HTTP: a WebSocket handshake there gets no 101.
        with pytest.raises(InvalidStatus):
            connect("ws" + chat.wsgi.url[4:] + "/ws/lobby", open_timeout=5, legacy=True)
    assert result.delivered == 3 and result.processes == 2 and result.ports == 2
    assert all(process.poll() is not None for process in processes)  # both stopped


# -- what the notebook shows ------------------------------------------------------------------------

def test_the_server_sees_no_frame_after_the_hand_over():
    from asgi_lab.live.wsgi_try import trace_one_member

    session = trace_one_member(messages=2)
    # welcome, join and 2 messages in, 2 messages out, and the two Close frames
    assert session.frames_on_wire == 8
    assert session.events_after_upgrade() == ["wsgi app_return", "socket connection_lost"]
    upgrade = session.tracer.filter(layer="wsgi", kind="upgrade")[0]
    assert upgrade.data["status"] == 101 and upgrade.data["h11_state"] == "SWITCHED_PROTOCOL"


def test_the_notebook_sentences_and_figure_come_from_the_numbers():
    from asgi_lab.live.split_chat import SetUp, explain_split
    from asgi_lab.live.wsgi_try import ChatCost, details, explain_cost, markdown_table, plot_chat_threads

    costs = [ChatCost(n, 7, n, n, n, 0, 3 * n, None, False) for n in (1, 2)]
    costs.append(ChatCost(7, 7, 7, 7, 7, 0, 21, 2.25, True))
    text = explain_cost(costs)
    assert "held **2** threads" in text and "7 of the pool's 7 workers" in text
    assert "Member 8" in text and "**2.2 s**" in text and "21 tasks (3 per member" in text
    assert markdown_table(costs[-1].rows()).count("\n") == 3
    assert details("x").startswith("<details><summary>What happened, and why</summary>")
    figure = plot_chat_threads(costs)
    assert len(figure.axes[0].lines) == 4  # WSGI total, its pool workers, ASGI, the pool's size
    split = SetUp("split", 2, 2, "a -> b -> c -> d", "two", 3.0, 5)
    asgi = SetUp("asgi", 1, 1, "a -> b -> c", "one", 0.5, 5)
    assert "**3 network hops**" in explain_split(split, asgi) and "6×" in explain_split(split, asgi)


def test_a_member_that_never_reads_is_cut_and_does_not_stall_the_room():
    """As in the ASGI chat, a bounded outbox per member: when lazy's overflows, lazy leaves
    ("too slow") and its connection is cut; bob got every message meanwhile. (The ASGI chat's
    test uses outboxes of 32; here threads and the GIL, not the app, decide when a writer runs,
    and a burst of 50 can fill a healthy member's outbox of 32 before its writer's turn.)"""
    from asgi_lab.live.chat_client import ChatClient

    app = WSGIChat(queue_size=128)
    with serve_in_background(app, kind="wsgi", name="test-wsgi-chat-slow", access_log=False,
                             wsgi_upgrade=True, threads=4, timeout_graceful_shutdown=1) as server:
        lazy = ChatClient.connect(f"{server.ws_url}/ws/lobby?name=lazy", receive_buffer=4096,
                                  record=False)
        lazy.pause_reading()
        ada, bob = (ChatClient.connect(f"{server.ws_url}/ws/lobby?name={name}") for name in ("ada", "bob"))
        ada.wait_for(lambda m: any(x["type"] == "join" and x.get("name") == "bob" for x in m), 10)
        sent = ada.flood(bob, until=lambda m: any(x["type"] == "leave" for x in m), size=4000,
                         batch=50, limit=5000)
        leave = [m for m in bob.messages if m["type"] == "leave"]
        assert leave[0]["name"] == "lazy" and leave[0]["reason"] == "too slow", sent
        assert [m.name for m in app.rooms["lobby"].members] == ["ada", "bob"]
        texts = [m["text"] for m in bob.messages if m["type"] == "message"]
        assert [int(text.split()[0]) for text in texts] == list(range(sent))
        lazy.resume_reading()
        assert lazy.wait_closed(10) == 1006  # cut: a Close frame could not have got through
        ada.close()
        bob.close()
        wait_until(lambda: server.server.stats()["busy"] == 0 and not writer_threads())


# -- a real browser ------------------------------------------------------------------------------

def test_a_browser_chats_on_the_wsgi_server_with_the_hatch_on():
    """The chat page the browser test of notebook 04 sees fail on WSGI (1006) works once the
    escape hatch is on: same page, same JSON, a Python member in the same room."""
    import os
    import shutil

    chromium = shutil.which("chromium") or "/usr/bin/chromium"
    if not os.path.exists(chromium):
        pytest.skip("Chromium is not installed")
    sync_api = pytest.importorskip("playwright.sync_api")
    from asgi_lab.live.chat_client import ChatClient

    with serve_in_background(WSGIChat(), kind="wsgi", name="browser-wsgi-chat", access_log=False,
                             wsgi_upgrade=True, timeout_graceful_shutdown=1) as server, \
            sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, headless=True, timeout=30_000,
                                             args=["--headless", "--no-sandbox", "--disable-gpu"])
        page = browser.new_page()
        page.goto(f"{server.url}/?room=lobby&name=tab", timeout=15_000)
        page.wait_for_function("document.getElementById('status').textContent === 'connected'",
                               timeout=10_000)
        python = ChatClient.connect(server.ws_url + "/ws/lobby?name=python")
        page.fill("#text", "hello from the browser")
        page.press("#text", "Enter")
        python.wait_for(lambda m: any(x.get("text") == "hello from the browser" for x in m), 10)
        python.send("hello, tab")
        page.wait_for_function("window.received.some(m => m.text === 'hello, tab')", timeout=10_000)
        python.close()
        browser.close()


def test_the_command_line_serves_the_wsgi_chat_with_the_flag():
    """`python -m asgi_lab wsgi asgi_lab.apps.wsgi_chat:app --wsgi-upgrade`, in its own process."""
    from asgi_lab.live.split_chat import ChildServer

    server = ChildServer("wsgi", "asgi_lab.apps.wsgi_chat:app", None, "--wsgi-upgrade").start()
    try:
        with connect("ws" + server.url[4:] + "/ws/lobby?name=cli", open_timeout=5,
                     close_timeout=2) as ada:
            assert json.loads(ada.recv(timeout=5))["type"] == "welcome"
            ada.send("over the command line")
            assert next_of(ada, "message")["text"] == "over the command line"
    finally:
        server.stop()
    assert not server.running and server.stderr == []
