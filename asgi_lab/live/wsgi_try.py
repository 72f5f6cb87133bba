"""The chat on WSGI servers, measured: what a plain WSGI app can do with a WebSocket, on ours
and on real servers, and what our non-portable escape hatch costs.

    attempt = try_chat_on_wsgi(server.url)          # one WebSocket client, what it saw
    reports = compare_servers()                     # wsgiref, waitress, gunicorn, werkzeug, ours
    cost = chat_cost(members=4, threads=4)          # threads per member, the pool running out

The app is `asgi_lab.apps.wsgi_chat` (the same chat as `apps/chat.py`, written for WSGI).
What each server does with it is measured here, never assumed:

1. A WebSocket handshake is an ordinary GET to a WSGI app. The app can check it and compute
   the `Sec-WebSocket-Accept` of RFC 6455 §4.2.2. It can only *answer* through
   `start_response("101 Switching Protocols", ...)`, which PEP 3333 forbids (`Upgrade` and
   `Connection` are hop-by-hop headers). A server may refuse it (500), or let the 101 out.
2. After a 101, PEP 3333 has nothing left to offer: `wsgi.input` is the request body, the
   response is an iterable the server sends and ends. No standard way to read a frame, write
   one, or wait for "a frame from the client or a broadcast" at once. The call returns; the
   server closes the connection, or leaves it open and silent.
3. Some servers offer their own escape: a key in `environ` with the raw socket
   (`gunicorn.socket`, `werkzeug.socket`, and ours, `asgi_lab.upgrade`, off by default).
   Each key works on one server only. `compare_servers` lists the keys each one sets.
"""

from __future__ import annotations

import asyncio
import atexit
import http.client
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from wsproto import ConnectionType, WSConnection
from wsproto.events import Request
from wsproto.utilities import RemoteProtocolError

from ..apps.wsgi_chat import WSGIChat
from ..background import serve_in_background, server_errors
from ..experiments.servers import free_port
from .chat_client import ChatClient, client_loop
from .client import HandshakeRejected, WebSocketClient

#: The WSGI chat (one chat for the whole process; `WSGIChat()` makes another).
wsgi_chat = WSGIChat()


# -- one client's attempt ----------------------------------------------------------------------

@dataclass
class WSGIAttempt:
    """What one WebSocket client saw when it tried to join the chat on a WSGI server."""

    url: str
    request: bytes          # the upgrade request the client sent
    response: bytes         # the answer's head (and body), byte for byte
    status_code: int | None  # the HTTP status of that answer (101: switched)
    opened: bool            # did the WebSocket open?
    messages: list = field(default_factory=list)  # what arrived after we sent "hello"
    close_code: int | None = None  # how it ended (1006: TCP closed without a Close frame)
    error: str = ""
    server_log: list[str] = field(default_factory=list)  # what the server logged meanwhile

    @property
    def outcome(self) -> str:
        """One line: what the client could do."""
        if not self.opened:
            if self.status_code and self.error:  # e.g. a 101 whose headers wsproto refuses
                return f"HTTP {self.status_code}, refused by the client ({self.error})"
            return f"HTTP {self.status_code}: no WebSocket" if self.status_code else f"failed: {self.error}"
        if self.close_code is None:
            return f"101, chat works: {len(self.messages)} messages back"
        what = f"{len(self.messages)} messages back" if self.messages else "no frame ever"
        return f"101, then closed ({self.close_code}): {what}"

    def __str__(self) -> str:
        lines = [f"The client asked for a WebSocket at {self.url}:", ""]
        lines += ["  > " + line for line in self.request.decode("latin-1").splitlines() if line]
        lines += ["", "The server answered:", ""]
        head, _, body = self.response.partition(b"\r\n\r\n")
        lines += ["  < " + line for line in head.decode("latin-1").splitlines()
                  if not line.lower().startswith("date:")]
        if body.strip():
            lines += ["  <", "  < " + body.decode("utf-8", "replace").strip()]
        lines.append("")
        for entry in self.server_log:
            lines.append(f"The server logged: {entry}")
        if self.opened:
            lines.append("The WebSocket opened; the client sent 'hello'.")
            lines.append(f"Then: {self.outcome}.")
        else:
            lines.append(f"wsproto on the client: RejectConnection(status_code={self.status_code})"
                         if self.status_code else f"The handshake failed: {self.error}")
            lines.append("No 101 Switching Protocols, so no WebSocket: not one frame can be sent.")
        return "\n".join(lines)


def try_chat_on_wsgi(url: str, room: str = "lobby", name: str = "ada", timeout: float = 5.0,
                     listen: float = 1.0) -> WSGIAttempt:
    """Open a chat WebSocket against `url` (an http:// URL), say "hello", listen for `listen`
    seconds, and report what happened, with what the server (if it runs in this process)
    logged meanwhile."""
    ws_url = "ws" + url[len("http"):] + f"/ws/{room}?name={name}"
    with server_errors(logging.ERROR) as records:
        attempt = _attempt(ws_url, timeout, listen)
    attempt.server_log = [_one_line(record) for record in records]
    return attempt


def _attempt(ws_url: str, timeout: float, listen: float) -> WSGIAttempt:
    try:
        client = ChatClient.connect(ws_url, timeout=timeout)
    except HandshakeRejected as exc:
        return WSGIAttempt(ws_url, exc.request_bytes, exc.response_bytes, exc.status_code, False)
    except (ConnectionError, OSError) as exc:
        return WSGIAttempt(ws_url, b"", b"", None, False, error=repr(exc))
    except RemoteProtocolError as exc:  # an answer wsproto refuses: look at it ourselves
        request, response = _raw_exchange(ws_url, timeout)
        status = int(response.split(b" ", 2)[1]) if response.startswith(b"HTTP/") else None
        return WSGIAttempt(ws_url, request, response, status, False, error=f"wsproto: {exc}")
    raw = client.client
    attempt = WSGIAttempt(ws_url, raw.request_bytes, raw.response_bytes, 101, True)
    if not client.closed:
        client.send("hello")
    try:  # the chat answers with a welcome, a join and our message back
        client.wait_for(lambda messages: any(m.get("type") == "message" for m in messages), listen)
    except TimeoutError:
        pass
    attempt.messages = list(client.messages)
    attempt.close_code = client.close_code if client.closed else None
    client.close(timeout=1.0)
    return attempt


def try_with_websockets(url: str, room: str = "lobby", name: str = "bo", listen: float = 1.0) -> str:
    """The same attempt with another client, the `websockets` library (lenient where wsproto
    is strict, as browsers are): one line, what it could do."""
    from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus
    from websockets.sync.client import connect

    ws_url = "ws" + url[len("http"):] + f"/ws/{room}?name={name}"
    with server_errors(logging.ERROR):
        try:
            with connect(ws_url, open_timeout=5, close_timeout=1) as websocket:
                received = 0
                try:
                    websocket.send("hello")
                    while json.loads(websocket.recv(timeout=listen))["type"] != "message":
                        received += 1
                    return f"101, chat works: {received + 1} messages back"
                except TimeoutError:
                    return f"101, then silence: {received} messages in {listen:g} s, still open"
                except ConnectionClosed:
                    return f"101, then closed (no Close frame): {received} messages back"
        except InvalidStatus as exc:
            return f"HTTP {exc.response.status_code}: no WebSocket"
        except (InvalidHandshake, OSError) as exc:
            return f"handshake failed: {exc}"


def _raw_exchange(ws_url: str, timeout: float) -> tuple[bytes, bytes]:
    """The same handshake (wsproto writes it) on a plain socket: the request, and the answer's
    head as the server sent it."""
    parts = urlsplit(ws_url)
    request = WSConnection(ConnectionType.CLIENT).send(
        Request(host=parts.netloc, target=f"{parts.path}?{parts.query}"))
    with socket.create_connection((parts.hostname, parts.port), timeout) as sock:
        sock.sendall(request)
        answer = b""
        while b"\r\n\r\n" not in answer and (data := sock.recv(4096)):
            answer += data
    return request, answer.partition(b"\r\n\r\n")[0] + b"\r\n\r\n"


def _one_line(record: logging.LogRecord) -> str:
    """A log record as one line: its message and the exception's last line, no traceback."""
    error = record.exc_info[1] if record.exc_info else None
    return record.getMessage() + (f": {type(error).__name__}: {error}" if error is not None else "")


# -- the same app on real WSGI servers -----------------------------------------------------------

def server_extensions(environ) -> list[str]:
    """The `environ` keys a server adds beyond CGI and `wsgi.*`: its own extensions."""
    return sorted(key for key in environ if "." in key and not key.startswith("wsgi."))


def probe_app(environ, start_response):
    """`/extensions`: the server's own environ keys, as JSON; anything else: the WSGI chat."""
    if environ.get("PATH_INFO") == "/extensions":
        body = json.dumps(server_extensions(environ)).encode()
        start_response("200 OK", [("Content-Type", "application/json"),
                                  ("Content-Length", str(len(body)))])
        return [body]
    return wsgi_chat(environ, start_response)


PROBE = "asgi_lab.live.wsgi_try:probe_app"

#: Other WSGI servers, each started in a process of its own on `probe_app`.
FOREIGN = {
    "wsgiref": lambda port: [sys.executable, "-m", "asgi_lab.live.wsgi_try", "wsgiref", str(port)],
    "werkzeug": lambda port: [sys.executable, "-m", "asgi_lab.live.wsgi_try", "werkzeug", str(port)],
    "waitress": lambda port: [sys.executable, "-m", "waitress", f"--listen=127.0.0.1:{port}", PROBE],
    "gunicorn": lambda port: [sys.executable, "-m", "gunicorn", PROBE, "--bind", f"127.0.0.1:{port}",
                              "--workers", "1", "--graceful-timeout", "1", *_gunicorn_quiet()],
}


def _gunicorn_quiet() -> list[str]:
    """Newer gunicorns open a control socket in the home directory: not for a probe."""
    from gunicorn import config

    return ["--no-control-socket"] if hasattr(config, "ControlSocketDisable") else []


def installed(names=FOREIGN) -> list[str]:
    """The servers of `names` that are installed here (werkzeug comes with Flask; waitress and
    gunicorn with the `bench` extra)."""
    import importlib.util

    return [name for name in names if importlib.util.find_spec(name) is not None]


@dataclass
class ServerReport:
    """One server, the same app and client: what it put in environ, what the client saw."""

    server: str
    extensions: list[str]
    attempt: WSGIAttempt
    log: list[str]           # the server's error lines while we tried (stderr or log records)
    other_client: str = ""   # the same with the `websockets` library

    def row(self) -> dict:
        return {"server": self.server, "status": self.attempt.status_code,
                "wsproto client (ours)": self.attempt.outcome,
                "websockets client": self.other_client,
                "its own environ keys": ", ".join(self.extensions) or "(none)",
                "the server logged": self.log[-1] if self.log else ""}


class ForeignServer:
    """A WSGI server in a child process, on a free port: `with ForeignServer("waitress") as s:`."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen | None = None
        self.stderr: list[str] = []

    def __enter__(self) -> "ForeignServer":
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        self.process = subprocess.Popen(FOREIGN[self.name](self.port), stdin=subprocess.DEVNULL,
                                        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                        text=True, env=env)
        _running.add(self)
        self._collector = threading.Thread(target=self._collect, daemon=True)
        self._collector.start()
        deadline = time.monotonic() + 20
        while True:
            try:
                self.extensions = self.get_json("/extensions")
                return self
            except OSError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    self.__exit__()
                    raise RuntimeError(f"{self.name} did not start: {''.join(self.stderr)[-1000:]}")
                time.sleep(0.1)

    def get_json(self, path: str):
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=2)
        try:
            connection.request("GET", path)
            return json.loads(connection.getresponse().read())
        finally:
            connection.close()

    def _collect(self) -> None:
        for line in self.process.stderr:
            self.stderr.append(line.rstrip())

    def __exit__(self, *exc_info) -> None:
        _running.discard(self)
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self.process is not None:
            self._collector.join(2)  # its last lines (the log of our attempt) come with EOF
            self.process.stderr.close()

    def errors(self) -> list[str]:
        """The error lines it printed: the exception's last line, not the traceback."""
        return [line.strip() for line in self.stderr
                if "Error" in line and not line.startswith((" ", "Traceback"))]


_running: set[ForeignServer] = set()
atexit.register(lambda: [server.__exit__() for server in list(_running)])  # none outlives us


def try_foreign(name: str, listen: float = 1.0) -> ServerReport:
    """Start server `name`, try the chat on it, stop it."""
    with ForeignServer(name) as server:
        attempt = try_chat_on_wsgi(server.url, listen=listen)
        other = try_with_websockets(server.url, listen=listen)
    return ServerReport(name, server.extensions, attempt, server.errors(), other)


def try_ours(wsgi_upgrade: bool, listen: float = 1.0) -> ServerReport:
    """Our WSGI server in this process, with the escape hatch off or on."""
    label = "asgi_lab" + (" --wsgi-upgrade" if wsgi_upgrade else "")
    with serve_in_background(probe_app, kind="wsgi", name=f"wsgi-try-{wsgi_upgrade}", access_log=False,
                             wsgi_upgrade=wsgi_upgrade, timeout_graceful_shutdown=1) as server:
        with server_errors(logging.ERROR):  # the /extensions GET is not what we report
            extensions = json.loads(_get(server.url + "/extensions"))
        attempt = try_chat_on_wsgi(server.url, listen=listen)
        other = try_with_websockets(server.url, listen=listen)
    return ServerReport(label, extensions, attempt, list(attempt.server_log), other)


def compare_servers(foreign=("wsgiref", "werkzeug", "waitress", "gunicorn"),
                    listen: float = 1.0) -> list[ServerReport]:
    """The same app and client on every server: ours (hatch off, then on) and `foreign`."""
    reports = [try_ours(False, listen)]
    reports += [try_foreign(name, listen) for name in installed(foreign)]
    reports.append(try_ours(True, listen))
    return reports


def _get(url: str) -> bytes:
    import urllib.request

    with urllib.request.urlopen(url, timeout=5) as response:
        return response.read()


# -- what the server sees after the hand-over ---------------------------------------------------

@dataclass
class HandOver:
    """One member's session on the WSGI chat, seen from both ends."""

    tracer: object            # the server's trace (a `Tracer`)
    frames_on_wire: int       # WebSocket frames the client sent and received
    session_seconds: float    # from the app call to its return: the whole session

    def server_events(self) -> list[str]:
        return [f"{event.layer} {event.kind}" for event in self.tracer.events]

    def events_after_upgrade(self) -> list[str]:
        names = self.server_events()
        return names[names.index("wsgi upgrade") + 1:]


def trace_one_member(messages: int = 3) -> HandOver:
    """A member joins the WSGI chat (escape hatch on, traced), says `messages` things, leaves."""
    from ..trace import Tracer

    tracer = Tracer()
    with serve_in_background(WSGIChat(), kind="wsgi", name="wsgi-chat-traced", access_log=False,
                             wsgi_upgrade=True, tracer=tracer) as server:
        ada = _join(server.ws_url, "ada")
        for i in range(messages):
            ada.send(f"message {i}")
        ada.wait_for(lambda seen: sum(m.get("type") == "message" for m in seen) == messages)
        ada.close()
        tracer.wait_for(layer="socket", kind="connection_lost", timeout=5)
    times = {event.kind: event.t for event in tracer.events if event.layer == "wsgi"}
    return HandOver(tracer, len(ada.frames), times["app_return"] - times["app_call"])


# -- the cost: threads per member, and a pool that runs out ------------------------------------

@dataclass
class ChatCost:
    """N members in one room, on the WSGI chat (escape hatch) and on the ASGI chat."""

    members: int
    pool: int                      # the WSGI server's worker threads
    wsgi_busy_workers: int         # pool threads held inside the app (one per member)
    wsgi_writer_threads: int       # the extra writer thread per member
    wsgi_new_threads: int          # threads in the process after the members joined, minus before
    asgi_new_threads: int          # the same, for the ASGI chat
    asgi_new_tasks: int            # coroutines (asyncio tasks) the ASGI chat added
    waiting_member_opened_in: float | None  # the (pool+1)-th member: seconds until its 101
    waited_until_one_left: bool    # ...and it opened only after a member left

    def rows(self) -> list[dict]:
        n = self.members
        return [
            {"": "WSGI chat (escape hatch)", "members": n,
             "threads held": self.wsgi_busy_workers + self.wsgi_writer_threads,
             "per member": (self.wsgi_busy_workers + self.wsgi_writer_threads) / n,
             "of which from the pool": self.wsgi_busy_workers, "tasks": 0},
            {"": "ASGI chat", "members": n, "threads held": self.asgi_new_threads,
             "per member": self.asgi_new_threads / n, "of which from the pool": 0,
             "tasks": self.asgi_new_tasks},
        ]


def _join(url: str, name: str, timeout: float = 5.0) -> ChatClient:
    """A member that has its welcome (so it is in the room)."""
    member = ChatClient.connect(f"{url}/ws/lobby?name={name}", timeout=timeout)
    member.wait_for(lambda messages: any(m.get("type") == "welcome" for m in messages), timeout)
    return member


def chat_cost(members: int = 4, threads: int = 4, wait: float = 1.0) -> ChatCost:
    """Join `members` members to the WSGI chat (pool of `threads`) and to the ASGI chat; count
    threads and tasks. If members == threads, one more member tries to join: it waits for a
    worker until `wait` seconds have passed and a member leaves."""
    from ..apps.chat import ChatApp

    client_loop()  # the clients' own thread exists before we count
    before = threading.active_count()
    with serve_in_background(WSGIChat(), kind="wsgi", name="wsgi-chat-cost", access_log=False,
                             threads=threads, wsgi_upgrade=True, timeout_graceful_shutdown=1) as server:
        clients = [_join(server.ws_url, f"m{i}") for i in range(members)]
        stats = server.server.stats()
        writers = sum(m.writer.is_alive() for room in list(server.app.rooms.values()) for m in room.members)
        wsgi_new = threading.active_count() - before
        opened_in, waited = None, False
        if members >= threads:
            started = time.monotonic()
            late = asyncio.run_coroutine_threadsafe(
                WebSocketClient.open(f"{server.ws_url}/ws/lobby?name=late", timeout=wait + 5,
                                     record=False), client_loop().loop)
            time.sleep(wait)
            waited = not late.done()
            clients.pop().close()         # a member leaves: its worker takes the next connection
            opened = late.result(10)
            opened_in = time.monotonic() - started
            client_loop().run(opened.close())
        for client in clients:
            client.close()
    before = threading.active_count()
    with serve_in_background(ChatApp(), name="asgi-chat-cost", access_log=False) as server:
        tasks_before = _tasks(server)
        clients = [_join(server.ws_url, f"m{i}") for i in range(members)]
        asgi_new = threading.active_count() - before - 1  # minus the server's own loop thread
        asgi_tasks = _tasks(server) - tasks_before
        for client in clients:
            client.close()
    return ChatCost(members, threads, stats["busy"], writers, wsgi_new - threads - 1, asgi_new,
                    asgi_tasks, opened_in, waited)


def _tasks(server) -> int:
    async def count() -> int:
        return len(asyncio.all_tasks())

    return asyncio.run_coroutine_threadsafe(count(), server.loop).result(5)


def chat_cost_sweep(members=(1, 2, 3, 4), threads: int = 4, wait: float = 1.0) -> list[ChatCost]:
    """`chat_cost` for each number of members (the last run, at the pool's size, also tries
    one member more)."""
    return [chat_cost(n, threads, wait) for n in members]


# -- tables, figures and sentences from what ran ------------------------------------------------

def markdown_table(rows: list[dict]) -> str:
    """Rows of equal keys as a Markdown table (for `IPython.display.Markdown`)."""
    columns = list(rows[0])

    def cell(value) -> str:
        text = f"{value:g}" if isinstance(value, float) else str(value)
        return text.replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(row[c]) for c in columns) + " |" for row in rows]
    return "\n".join(lines)


def details(text: str) -> str:
    """Markdown inside the course's "What happened, and why" fold."""
    return f"<details><summary>What happened, and why</summary>\n\n{text}\n\n</details>"


def explain_servers(reports: list[ServerReport]) -> str:
    """What the server comparison showed, in sentences computed from it."""
    refused = [r for r in reports if r.attempt.status_code != 101]
    switched = [r for r in reports if r.attempt.status_code == 101]
    talked = [r.server for r in switched if "chat works" in r.attempt.outcome + r.other_client]
    statuses = sorted({r.attempt.status_code for r in refused}, key=str)
    lines = [f"- **{len(refused)} of {len(reports)}** servers answered the app's 101 with "
             + "; ".join(f"{status}: " + ", ".join(r.server for r in refused if r.attempt.status_code == status)
                         for status in statuses) + "."]
    hop = [r.server for r in refused if any("hop" in line.lower() for line in r.log)]
    if hop:
        lines[-1] += (f" {' and '.join(hop)} {'says' if len(hop) == 1 else 'say'} why in "
                      f"{'its' if len(hop) == 1 else 'their'} log: `Upgrade` is a hop-by-hop "
                      "header, which PEP 3333 reserves to the server.")
    for r in switched:
        lines.append(f"- **{r.server}** let a 101 out. Our wsproto client: {r.attempt.outcome}; "
                     f"the `websockets` client: {r.other_client}.")
    lines.append(f"- Servers on which a client exchanged a chat message: **{len(talked)}** "
                 f"({', '.join(talked) or 'none'}).")
    keys = [f"{r.server}: `{key}`" for r in reports for key in r.extensions
            if "socket" in key or "upgrade" in key]
    if keys:
        lines.append("- Raw-socket keys the servers put in `environ`: " + "; ".join(keys) +
                     ". Each exists on one server only.")
    return "\n".join(lines)


def explain_cost(costs: list[ChatCost]) -> str:
    """What the thread count showed, in sentences computed from it."""
    last = costs[-1]
    per_member = {(c.wsgi_busy_workers + c.wsgi_writer_threads) / c.members for c in costs}
    lines = [f"- On WSGI each member held **{' or '.join(f'{p:g}' for p in sorted(per_member))}** "
             f"threads: one pool worker inside the app, blocked in `recv()`, and one writer thread "
             f"for the broadcasts. {last.members} members: {last.wsgi_busy_workers} of the pool's "
             f"{last.pool} workers and {last.wsgi_writer_threads} writer threads.",
             f"- The ASGI chat added **{last.asgi_new_threads}** threads for {last.members} members, "
             f"and {last.asgi_new_tasks} tasks ({last.asgi_new_tasks / last.members:g} per member: "
             "the session, its reader and its writer), all on the server's one event-loop thread."]
    if last.waiting_member_opened_in is not None:
        lines.append(f"- Member {last.members + 1} got no 101 while the pool was full "
                     f"({'still waiting' if last.waited_until_one_left else 'answered'} after the "
                     f"first second); its handshake finished "
                     f"**{last.waiting_member_opened_in:.1f} s** after it connected, once a member left "
                     "and gave back its worker.")
    return "\n".join(lines)


def plot_chat_threads(costs: list[ChatCost]):
    """Threads held against members, WSGI chat and ASGI chat, the pool's size marked."""
    from ..viz.charts import COLORS, _figure

    fig, (ax,) = _figure(6.4, 3.4)
    members = [c.members for c in costs]
    ax.plot(members, [c.wsgi_busy_workers + c.wsgi_writer_threads for c in costs], marker="v",
            color=COLORS["wsgi-pool"], label="WSGI chat (escape hatch): worker + writer")
    ax.plot(members, [c.wsgi_busy_workers for c in costs], marker="v", ls=":",
            color=COLORS["wsgi-pool"], label="...of which pool workers")
    ax.plot(members, [c.asgi_new_threads for c in costs], marker="o", color=COLORS["asgi"],
            label="ASGI chat: coroutines on one thread")
    pool = costs[-1].pool
    ax.axhline(pool, color="#999999", lw=0.8, ls="--")
    waited = costs[-1].waiting_member_opened_in
    note = (f"pool of {pool} workers: member {pool + 1} waited until one left ({waited:.1f} s) "
            if waited else f"pool of {pool} workers ")
    ax.text(members[-1], pool, note, ha="right", va="bottom", fontsize=8, color="#555555")
    ax.set_xticks(members)
    ax.set_ylim(bottom=0)
    ax.set_xlabel("chat members connected")
    ax.set_ylabel("threads held by the chat")
    ax.set_title("Two threads per member on WSGI, none on ASGI")
    ax.legend(loc="upper left", frameon=False, fontsize=8)
    return fig


# -- `python -m asgi_lab.live.wsgi_try wsgiref|werkzeug PORT`: serve probe_app ------------------

def _serve(name: str, port: int) -> None:
    if name == "wsgiref":
        from wsgiref.simple_server import make_server

        make_server("127.0.0.1", port, probe_app).serve_forever()
    else:
        from werkzeug.serving import make_server

        make_server("127.0.0.1", port, probe_app, threaded=True).serve_forever()


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    _serve(sys.argv[1], int(sys.argv[2]))
