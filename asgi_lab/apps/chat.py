"""A chat room over WebSocket: the app that shows what ASGI is for.

    python -m asgi_lab asgi asgi_lab.apps.chat:app     # then open http://127.0.0.1:8000/

One ASGI app answers both kinds of connection (ASGI www spec):

- `http`: `GET /` is the chat page (`static/chat.html`, HTML and JavaScript in one file);
- `websocket` at `/ws/{room}?name=...`: one chat member. Every text frame it sends is a chat
  message; the server pushes JSON text frames to every member of the room:

      {"type": "welcome", "room": "lobby", "seq": 7, "you": "ada", "members": ["ada", "bob"]}
      {"type": "join",    "room": "lobby", "seq": 7, "name": "ada", "members": 2}
      {"type": "message", "room": "lobby", "seq": 8, "name": "ada", "text": "hello"}
      {"type": "leave",   "room": "lobby", "seq": 9, "name": "bob", "members": 1, "reason": "left"}

  `seq` counts the room's broadcasts, so a client can check it saw every one, in order.
  (The welcome, sent to the newcomer only, carries the `seq` the next broadcast will have.)

How the broadcast works, and why it is built this way:

- A member joins the room only after `websocket.accept` has been sent: before that, the
  handshake may still be refused and there is nobody to send to. (The book's chat adds the
  member first: a message broadcast in between would go to a connection that is not open.)
- `Room.broadcast` never awaits. It serialises the message once and puts it on every member's
  own bounded queue (`put_nowait`); each member has a writer task that takes from its queue and
  calls `send()`. So the server's back-pressure (a `send()` that waits because that client's
  socket is full) holds up that one writer, never the room. Compare the obvious
  `for member in room: await member.send(...)`: one client that stops reading stops the chat.
- A member whose queue is full is **disconnected with close code 1013** ("Try Again Later",
  RFC 6455 §7.4.1, IANA registry) and the room is told it left with reason "too slow". We chose
  this over dropping the oldest queued messages: a chat that silently loses lines is wrong in a
  way the reader cannot see, while a closed connection is an error the client can see and act
  on (reconnect). Memory per member stays bounded either way: `queue_size` messages here, plus
  the server's write buffer (`Config.ws_write_high_water`) and the kernel's socket buffers.
- On disconnect, for any reason, the member leaves the room at once (so no broadcast touches
  it again), its writer task is cancelled and the others get a `leave` notice. An empty room
  is forgotten.
- What a member sends is checked: a binary frame is refused with close 1003 (Unsupported Data),
  a message longer than `max_message_chars` with 1009 (Message Too Big), a bad room or name
  refuses the handshake (close before accept: the server answers HTTP 403).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import re
from importlib import resources
from urllib.parse import parse_qs

#: RFC 6455 §7.4.1 and the IANA registry of close codes this app uses.
CLOSE_NORMAL = 1000
CLOSE_UNSUPPORTED_DATA = 1003
CLOSE_POLICY_VIOLATION = 1008
CLOSE_MESSAGE_TOO_BIG = 1009
CLOSE_TRY_AGAIN_LATER = 1013

ROOM_PATH = re.compile(r"^/ws/([A-Za-z0-9_-]{1,32})/?$")
NAME = re.compile(r"^[\w .-]{1,32}$")


def chat_page() -> bytes:
    """The HTML+JavaScript client, shipped inside the package (`apps/static/chat.html`)."""
    return resources.files("asgi_lab.apps").joinpath("static/chat.html").read_bytes()


class Member:
    """One open WebSocket in a room: a name, a bounded send queue and a writer task."""

    def __init__(self, name: str, send, queue_size: int) -> None:
        self.name = name
        self.send = send                      # the connection's ASGI send callable
        self.queue: asyncio.Queue[str] = asyncio.Queue(queue_size)
        self.too_slow = False                 # set when the queue overflowed
        self.writer: asyncio.Task | None = None

    def offer(self, text: str) -> bool:
        """Queue one outgoing message without waiting. False if the queue is full."""
        try:
            self.queue.put_nowait(text)
        except asyncio.QueueFull:
            return False
        return True

    async def write_queued(self) -> None:
        """The writer task: send queued messages, one at a time, for as long as it runs.

        `send()` waits while this client's socket is full (the server's back-pressure); only
        this task waits, and the queue keeps filling until `offer` finds it full.
        """
        while True:
            text = await self.queue.get()
            await self.send({"type": "websocket.send", "text": text})


class Room:
    """The members of one room and the room's broadcast counter."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.members: list[Member] = []
        self.next_seq = 0

    def names(self) -> list[str]:
        return [member.name for member in self.members]

    def broadcast(self, message: dict) -> None:
        """Number `message`, serialise it once and queue it for every member. Never waits."""
        message["room"] = self.name
        message["seq"] = self.next_seq
        self.next_seq += 1
        text = json.dumps(message, ensure_ascii=False)
        too_slow = [member for member in self.members if not member.offer(text)]
        if too_slow:
            self.drop(too_slow)

    def drop(self, too_slow: list[Member]) -> None:
        """Members whose queue overflowed: out of the room, all at once, then the others are
        told. Each one's writer is cancelled; its own task closes the connection with 1013
        (see `ChatApp.session`)."""
        self.members = [member for member in self.members if member not in too_slow]
        for member in too_slow:
            member.too_slow = True
            if member.writer is not None:
                member.writer.cancel()
        for member in too_slow:
            self.broadcast({"type": "leave", "name": member.name, "members": len(self.members),
                            "reason": "too slow"})

    def leave(self, member: Member) -> None:
        """A member's connection ended: out of the room, and the others are told."""
        if member in self.members:
            self.members.remove(member)
            self.broadcast({"type": "leave", "name": member.name, "members": len(self.members),
                            "reason": "left"})


class ChatApp:
    """The chat as an ASGI 3 application. Rooms live in the app instance, so each instance
    (one per test, one per notebook server) is a separate chat.

    `queue_size`: messages a member may have waiting before it is dropped as too slow.
    `max_message_chars`: the longest chat message accepted.
    """

    def __init__(self, queue_size: int = 256, max_message_chars: int = 4096) -> None:
        self.queue_size = queue_size
        self.max_message_chars = max_message_chars
        self.rooms: dict[str, Room] = {}
        self._guests = itertools.count(1)
        self._page: bytes | None = None

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "websocket":
            await self.session(scope, receive, send)
        elif scope["type"] == "http":
            await self.http(scope, receive, send)
        elif scope["type"] == "lifespan":
            await lifespan(receive, send)

    # -- HTTP: the page --------------------------------------------------------------------

    async def http(self, scope, receive, send) -> None:
        """ASGI HTTP: `GET /` is the chat page; anything else is 404 (405 for other methods)."""
        if scope["path"] != "/":
            status, body, content_type = 404, b"404 Not Found\n", b"text/plain; charset=utf-8"
        elif scope["method"] not in ("GET", "HEAD"):
            status, body, content_type = 405, b"405 Method Not Allowed\n", b"text/plain; charset=utf-8"
        else:
            if self._page is None:
                self._page = chat_page()
            status, body, content_type = 200, self._page, b"text/html; charset=utf-8"
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", content_type),
                                (b"content-length", str(len(body)).encode("ascii")),
                                (b"cache-control", b"no-store")]})
        await send({"type": "http.response.body", "body": body})

    # -- WebSocket: one member -------------------------------------------------------------

    async def session(self, scope, receive, send) -> None:
        """ASGI WebSocket: connect, accept, join, then read and write until either side ends."""
        message = await receive()
        if message["type"] != "websocket.connect":  # the client left during the handshake
            return
        match = ROOM_PATH.match(scope["path"])
        name = parse_qs(scope["query_string"].decode("latin-1")).get("name", [""])[0].strip()
        name = name or f"guest-{next(self._guests)}"
        if match is None or not NAME.match(name):
            # Closing before accepting refuses the handshake: the client gets HTTP 403.
            await send({"type": "websocket.close", "code": CLOSE_POLICY_VIOLATION})
            return
        await send({"type": "websocket.accept"})

        room = self.rooms.get(match.group(1))
        if room is None:
            room = self.rooms[match.group(1)] = Room(match.group(1))
        member = Member(name, send, self.queue_size)
        member.offer(json.dumps({"type": "welcome", "room": room.name, "seq": room.next_seq,
                                 "you": name, "members": room.names() + [name]}))
        room.members.append(member)  # only now, after accept: see the module docstring
        room.broadcast({"type": "join", "name": name, "members": len(room.members)})

        member.writer = asyncio.create_task(member.write_queued())
        reader = asyncio.create_task(self.read_messages(room, member, receive, send))
        try:
            await asyncio.wait({reader, member.writer}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            reader.cancel()
            member.writer.cancel()
            room.leave(member)  # no-op if it was dropped already
            if not room.members and self.rooms.get(room.name) is room:
                del self.rooms[room.name]
            # Collect both tasks' outcomes (a send() on a connection that just closed raises).
            await asyncio.gather(reader, member.writer, return_exceptions=True)
        if member.too_slow:
            await close_quietly(send, CLOSE_TRY_AGAIN_LATER, "too slow: send queue full")

    async def read_messages(self, room: Room, member: Member, receive, send) -> None:
        """The reader task: every text frame the member sends is broadcast to the room."""
        while True:
            message = await receive()
            if message["type"] == "websocket.disconnect":
                return
            text = message.get("text")
            if text is None:
                await close_quietly(send, CLOSE_UNSUPPORTED_DATA, "text frames only")
                return
            if len(text) > self.max_message_chars:
                await close_quietly(send, CLOSE_MESSAGE_TOO_BIG,
                                    f"messages are at most {self.max_message_chars} characters")
                return
            room.broadcast({"type": "message", "name": member.name, "text": text})
            # Let the writers run before the next message. A burst of frames can be in the
            # server's buffer already, so receive() may return at once, again and again:
            # without this, a healthy member's queue would fill before its writer got a turn,
            # and it would be dropped as "too slow" for nothing.
            await asyncio.sleep(0)


async def close_quietly(send, code: int, reason: str = "", timeout: float = 1.0) -> None:
    """Send `websocket.close`, unless the connection is already gone or too full to take it.

    A client that stopped reading may never make room for the Close frame; the app does not
    wait for it longer than `timeout` (the server drops the connection when the app returns).
    """
    try:
        await asyncio.wait_for(send({"type": "websocket.close", "code": code, "reason": reason}),
                               timeout)
    except (OSError, RuntimeError, asyncio.TimeoutError):
        pass  # closed already, or the server refused a second close: nothing left to tell


async def lifespan(receive, send) -> None:
    """ASGI lifespan spec: nothing to set up or tear down, but say so properly."""
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


#: `python -m asgi_lab asgi asgi_lab.apps.chat:app`
app = ChatApp()
