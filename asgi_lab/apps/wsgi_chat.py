"""The chat of `apps/chat.py`, written as a WSGI app: what it takes, and what it costs.

    python -m asgi_lab wsgi asgi_lab.apps.wsgi_chat:app --wsgi-upgrade --threads 8

Same page, same URL (`/ws/{room}?name=...`), same JSON messages as the ASGI chat, so the
same page and clients work with both. What differs is everything under the app:

**Without a socket (any WSGI server).** A WebSocket handshake reaches the app as an
ordinary GET with `HTTP_UPGRADE: websocket` in `environ`. The app can check it and compute
the answer RFC 6455 §4.2.2 asks for (`Sec-WebSocket-Accept`), and call
`start_response("101 Switching Protocols", [...])`. PEP 3333 forbids it (`Upgrade` and
`Connection` are hop-by-hop headers, "the exclusive province of the actual web server"), so
most servers answer 500; a server that lets the 101 through then has nothing to hand over:
`wsgi.input` is the request's (empty) body, the response is an iterable the server sends and
ends, and the app returns. No frame can be read or written. `attempt_without_socket` is that.

**With our server's escape hatch** (`Config.wsgi_upgrade`, `wsgi/upgrade.py`): the app calls
`environ["asgi_lab.upgrade"](headers)`, gets the raw socket, and runs the chat on it with
wsproto (sans-IO frames), inside the WSGI call. Per member that means:

- the WSGI call itself, on a server thread, blocked in `sock.recv()` for the member's frames,
  for as long as the member stays: a pool of 8 threads holds 8 members, the 9th waits;
- a **writer thread**, because that blocked thread cannot also wait for the room's
  broadcasts. WSGI has no way to wait for "a frame from the client *or* a message for the
  client" at once (ASGI: two tasks on one loop, `receive()` and a queue). So each member gets
  a bounded outbox that any thread may fill and one thread drains;
- a **lock**, because two threads now share one wsproto connection and one socket.

Two threads per member where the ASGI chat needs two coroutines, and an app that runs only on
this server.
"""

from __future__ import annotations

import itertools
import json
import socket
import threading
import time
from collections import deque
from urllib.parse import parse_qs

from wsproto import ConnectionType
from wsproto.connection import Connection, ConnectionState
from wsproto.events import BytesMessage, CloseConnection, Ping, TextMessage
from wsproto.utilities import LocalProtocolError, generate_accept_token

from ..wsgi.upgrade import UPGRADE_KEY
from .chat import CLOSE_MESSAGE_TOO_BIG, CLOSE_UNSUPPORTED_DATA, NAME, ROOM_PATH, chat_page

RECV_BUFFER = 64 * 1024


def handshake_answer(environ) -> list[tuple[str, str]] | None:
    """RFC 6455 §4.2.1/§4.2.2 from the app's side: the headers of the 101, or None if the
    request is not a WebSocket handshake we can accept. (On ASGI the server does this.)"""
    if environ.get("REQUEST_METHOD") != "GET" \
            or environ.get("HTTP_UPGRADE", "").lower() != "websocket" \
            or "upgrade" not in environ.get("HTTP_CONNECTION", "").lower() \
            or environ.get("HTTP_SEC_WEBSOCKET_VERSION") != "13" \
            or not environ.get("HTTP_SEC_WEBSOCKET_KEY"):
        return None
    accept = generate_accept_token(environ["HTTP_SEC_WEBSOCKET_KEY"].encode("latin-1"))
    return [("Upgrade", "websocket"), ("Connection", "Upgrade"),
            ("Sec-WebSocket-Accept", accept.decode("ascii"))]


def attempt_without_socket(environ, start_response, headers):
    """All PEP 3333 offers for a handshake: a status and headers through `start_response`.
    What happens next is up to the server (some answer 500, some let the 101 out); then the
    call ends."""
    start_response("101 Switching Protocols", headers)
    return []  # ...and nothing in environ reads or writes a frame


class Member:
    """One chat member on WSGI: a socket and wsproto connection shared by two threads.

    The WSGI call's thread reads (`receive`); the writer thread sends what `offer()` queued.
    `lock` keeps them from using wsproto and the socket at the same time.
    """

    def __init__(self, name: str, sock: socket.socket, queue_size: int) -> None:
        self.name = name
        self.sock = sock
        self.ws = Connection(ConnectionType.SERVER)  # frames only: the handshake is done
        self.lock = threading.Lock()
        self.queue_size = queue_size
        self.outbox: deque[str] = deque()
        self.changed = threading.Condition()         # outbox grew, or the member left
        self.stopped = False
        self.writer = threading.Thread(target=self.write_queued, name=f"wsgi-chat-writer-{name}",
                                       daemon=True)

    def send(self, event) -> None:
        """Frame `event` with wsproto and write it (blocks while the client is slow)."""
        with self.lock:
            data = self.ws.send(event)
            self.sock.sendall(data)

    def receive(self, data: bytes | None) -> list:
        """Feed bytes from the socket (None: it closed) and take wsproto's events."""
        with self.lock:
            self.ws.receive_data(data)
            return list(self.ws.events())

    def offer(self, text: str) -> bool:
        """(any thread) Queue a message for the writer without waiting; False if full."""
        with self.changed:
            if len(self.outbox) >= self.queue_size:
                return False
            self.outbox.append(text)
            self.changed.notify()
        return True

    def write_queued(self) -> None:
        """The writer thread: wait for the outbox, send, until the member leaves."""
        while True:
            with self.changed:
                self.changed.wait_for(lambda: self.outbox or self.stopped)
                if self.stopped:
                    return
                text = self.outbox.popleft()
            try:
                self.send(TextMessage(data=text))
            except (OSError, LocalProtocolError):  # gone, or closing: the reader will notice
                return

    def stop(self) -> None:
        with self.changed:
            self.stopped = True
            self.changed.notify()


class Room:
    """The members of one room; `lock` makes numbering and queueing one step for all threads."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.members: list[Member] = []
        self.next_seq = 0
        self.lock = threading.Lock()

    def broadcast(self, message: dict) -> None:
        with self.lock:
            self._broadcast(message)

    def _broadcast(self, message: dict) -> None:
        message["room"] = self.name
        message["seq"] = self.next_seq
        self.next_seq += 1
        text = json.dumps(message, ensure_ascii=False)
        too_slow = [member for member in self.members if not member.offer(text)]
        for member in too_slow:
            # Its writer is stuck in sendall() to a client that does not read, holding the
            # member's lock: no Close frame can get through. Cut the connection.
            self.members.remove(member)
            member.stop()
            _shutdown(member.sock)
        for member in too_slow:
            self._broadcast({"type": "leave", "name": member.name, "members": len(self.members),
                             "reason": "too slow"})

    def join(self, member: Member) -> None:
        with self.lock:
            member.offer(json.dumps({"type": "welcome", "room": self.name, "seq": self.next_seq,
                                     "you": member.name,
                                     "members": [m.name for m in self.members] + [member.name]}))
            self.members.append(member)
            self._broadcast({"type": "join", "name": member.name, "members": len(self.members)})

    def leave(self, member: Member) -> None:
        with self.lock:
            if member in self.members:
                self.members.remove(member)
                self._broadcast({"type": "leave", "name": member.name,
                                 "members": len(self.members), "reason": "left"})


class WSGIChat:
    """The chat as a PEP 3333 app. Each instance is its own chat (rooms live in it).

    `queue_size`: messages a member's outbox holds before the member is cut as too slow. Keep
    it well above a burst: the OS and the GIL, not the app, decide when a writer thread runs.
    """

    def __init__(self, queue_size: int = 256, max_message_chars: int = 4096) -> None:
        self.queue_size = queue_size
        self.max_message_chars = max_message_chars
        self.rooms: dict[str, Room] = {}
        self.rooms_lock = threading.Lock()
        self._guests = itertools.count(1)

    def __call__(self, environ, start_response):
        path = environ.get("PATH_INFO", "/")
        if path == "/":
            return _answer(start_response, "200 OK", chat_page(), "text/html; charset=utf-8")
        match = ROOM_PATH.match(path)
        headers = handshake_answer(environ) if match else None
        if headers is None:
            return _answer(start_response, "404 Not Found", b"404 Not Found\n")
        name = parse_qs(environ.get("QUERY_STRING", "")).get("name", [""])[0].strip()
        name = name or f"guest-{next(self._guests)}"
        if not NAME.match(name):
            return _answer(start_response, "403 Forbidden", b"bad name\n")
        upgrade = environ.get(UPGRADE_KEY)
        if upgrade is None:  # any other server, or ours with the hatch off
            return attempt_without_socket(environ, start_response, headers)
        sock, buffered = upgrade(headers)
        self.session(match.group(1), Member(name, sock, self.queue_size), buffered)
        return []  # the server closes the connection: it was never going to be HTTP again

    def session(self, room_name: str, member: Member, buffered: bytes) -> None:
        """One member, from the 101 to the end, on the WSGI call's thread."""
        with self.rooms_lock:
            room = self.rooms.get(room_name) or self.rooms.setdefault(room_name, Room(room_name))
        member.writer.start()
        room.join(member)
        try:
            self.read_messages(room, member, buffered)
        finally:
            room.leave(member)
            member.stop()
            member.writer.join(2.0)
            with self.rooms_lock:
                if not room.members and self.rooms.get(room_name) is room:
                    del self.rooms[room_name]

    def read_messages(self, room: Room, member: Member, data: bytes) -> None:
        """Block in recv() for the member's frames; broadcast each text message."""
        parts: list[str] = []
        while True:
            for event in member.receive(data) if data != b"" else ():
                if isinstance(event, TextMessage):
                    parts.append(event.data)
                    if sum(map(len, parts)) > self.max_message_chars:
                        return self.close(member, CLOSE_MESSAGE_TOO_BIG, "message too long")
                    if event.message_finished:
                        room.broadcast({"type": "message", "name": member.name, "text": "".join(parts)})
                        parts = []
                        # Let the writers have the GIL before the next message: one recv() may
                        # bring a burst of frames, and a healthy member's outbox must not fill
                        # up before its writer got a turn (the ASGI chat awaits sleep(0) here).
                        time.sleep(0)
                elif isinstance(event, BytesMessage):
                    return self.close(member, CLOSE_UNSUPPORTED_DATA, "text frames only")
                elif isinstance(event, Ping):
                    member.send(event.response())
                elif isinstance(event, CloseConnection):
                    if member.ws.state is ConnectionState.REMOTE_CLOSING:
                        member.send(event.response())
                    return
            if data is None:  # the TCP connection ended without a Close frame (1006)
                return
            try:
                data = member.sock.recv(RECV_BUFFER) or None
            except OSError:
                return

    def close(self, member: Member, code: int, reason: str) -> None:
        try:
            member.send(CloseConnection(code=code, reason=reason))
        except (OSError, LocalProtocolError):
            pass


def _answer(start_response, status: str, body: bytes, content_type: str = "text/plain"):
    start_response(status, [("Content-Type", content_type), ("Content-Length", str(len(body))),
                            ("Cache-Control", "no-store")])
    return [body]


def _shutdown(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass


#: `python -m asgi_lab wsgi asgi_lab.apps.wsgi_chat:app --wsgi-upgrade`
app = WSGIChat()
