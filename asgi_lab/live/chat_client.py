"""A chat member you can drive from a notebook cell, a widget callback or a test.

    ada = ChatClient.connect(server.ws_url + "/ws/lobby?name=ada")
    ada.send("hello")
    ada.wait_for(lambda messages: any(m["type"] == "message" for m in messages))
    ada.messages                       # every JSON message the server pushed, in order
    ada.close(4000, "bye")

Every method here is an ordinary (blocking) call, safe from any thread. Behind it, each
client's `WebSocketClient` lives on one shared *client loop*: an asyncio event loop in a
thread of its own (`client_loop()`), not the server's loop and not the kernel's. That is the
Jupyter rule from DESIGN.md: code on another thread (a cell, or a widget callback on an
ipykernel subshell thread) reaches a loop only through `run_coroutine_threadsafe` /
`call_soon_threadsafe`. Received messages are collected as data (`messages`) and handed to
listeners (an Output widget, say) from the client loop's thread.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
from typing import Any, Callable
from urllib.parse import parse_qs, urlsplit

from .. import background
from .client import ClientEvent, WebSocketClient
from .frames import WireFrame


class LoopThread:
    """An asyncio event loop running forever in a daemon thread."""

    def __init__(self, name: str = "asgi_lab-client-loop") -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name=name, daemon=True)
        self.thread.start()

    def run(self, coro, timeout: float | None = 10.0):
        """Run `coro` on the loop and wait for its result (from any other thread)."""
        if threading.current_thread() is self.thread:
            raise RuntimeError("LoopThread.run() would wait for itself; await the coroutine instead")
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def call(self, function: Callable, *args) -> None:
        """Call `function(*args)` on the loop's thread, soon; returns at once."""
        self.loop.call_soon_threadsafe(function, *args)


_client_loop: LoopThread | None = None
_client_loop_lock = threading.Lock()


def client_loop() -> LoopThread:
    """The one loop thread every `ChatClient` in this process shares (started on first use)."""
    global _client_loop
    with _client_loop_lock:
        if _client_loop is None:
            _client_loop = LoopThread()
        return _client_loop


#: Called on the client loop's thread with each item: a decoded message (dict), a `WireFrame`,
#: a `ClientEvent`, or None when the connection has closed.
Listener = Callable[["ChatClient", Any], None]


class ChatClient:
    """A blocking facade over a `WebSocketClient` that runs on the client loop."""

    def __init__(self, client: WebSocketClient, loop: LoopThread) -> None:
        self.client = client
        self.loop = loop
        self.messages: list[Any] = []      # JSON-decoded messages, in arrival order
        self.listeners: list[Listener] = []
        self._changed = threading.Condition()
        self._reader: asyncio.Future | None = None

    @classmethod
    def connect(cls, url: str, timeout: float = 5.0, loop: LoopThread | None = None,
                record: bool = True, receive_buffer: int | None = None) -> "ChatClient":
        """Open a WebSocket to `url` and start collecting what arrives.
        Raises `HandshakeRejected` if the server answers with plain HTTP, and
        `background.ServerStopped` (one sentence, no traceback in a notebook) if nothing
        listens there because the notebook's server was stopped.

        `receive_buffer`: a small kernel receive buffer (SO_RCVBUF, bytes) makes a client
        that stops reading (`pause_reading()`) back up the server quickly: a slow phone.
        """
        loop = loop or client_loop()
        chat: ChatClient | None = None

        def on_event(_client, item) -> None:  # on the client loop: frames and wsproto events
            if chat is not None:
                chat._notify(item)

        parts = urlsplit(url)
        sock = None
        try:
            if receive_buffer is not None:
                sock = socket.socket()
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)  # before connect
                sock.settimeout(timeout)
                sock.connect((parts.hostname, parts.port or 80))
                sock.setblocking(False)
            client = loop.run(WebSocketClient.open(url, timeout, sock=sock, record=record,
                                                   on_event=on_event), timeout + 1)
        except ConnectionRefusedError:
            if sock is not None:
                sock.close()
            stopped = background.refused(parts.hostname, parts.port or 80)
            if stopped is None:
                raise
            raise stopped from None
        chat = cls(client, loop)
        chat._reader = asyncio.run_coroutine_threadsafe(chat._read_forever(), loop.loop)
        return chat

    async def _read_forever(self) -> None:
        while (data := await self.client.receive()) is not None:
            message = json.loads(data) if isinstance(data, str) else data
            with self._changed:
                self.messages.append(message)
                self._changed.notify_all()
            self._notify(message)
        with self._changed:
            self._changed.notify_all()  # wake wait_for(): the connection is over
        self._notify(None)  # and tell the listeners (a chat box shows "closed")

    def _notify(self, item) -> None:
        for listener in list(self.listeners):
            try:
                listener(self, item)
            except Exception:  # a broken display must not break the connection
                pass

    # -- what a user does ----------------------------------------------------------------

    def send(self, text: str) -> None:
        """Send a chat message. Returns at once; the write happens on the client loop."""
        self.loop.call(self.client.send_text, text)

    def ping(self, payload: bytes = b"", timeout: float = 5.0) -> float:
        """Send a ping; return as soon as its pong arrives, with the round trip in seconds."""
        return self.loop.run(self.client.ping_pong(payload, timeout), timeout + 1)

    def ping_soon(self, payload: bytes = b"", done: Callable[[float | BaseException], None] | None = None) -> None:
        """Send a ping without waiting (for a button's callback): `done(round_trip)` is called
        on the client loop when the pong arrives, or `done(error)` if it never does."""
        future = asyncio.run_coroutine_threadsafe(self.client.ping_pong(payload), self.loop.loop)
        if done is not None:
            future.add_done_callback(lambda f: done(f.exception() or f.result()))

    def close_soon(self, code: int = 1000, reason: str = "",
                   done: Callable[[int | None | BaseException], None] | None = None) -> None:
        """Start the closing handshake without waiting (for a button's callback): `done(code)`
        is called with the server's close code once the connection has ended."""
        future = asyncio.run_coroutine_threadsafe(self.client.close(code, reason), self.loop.loop)
        if done is not None:
            future.add_done_callback(lambda f: done(f.exception() or f.result()))

    def pause_reading(self) -> None:
        """Stop reading from the socket: the server's frames pile up in the kernel's buffers,
        then in the server's. The connection stays open."""
        self.loop.call(self.client.transport.pause_reading)

    def resume_reading(self) -> None:
        self.loop.call(self.client.transport.resume_reading)

    def close(self, code: int = 1000, reason: str = "", timeout: float = 3.0) -> int | None:
        """Closing handshake with `code`; returns the close code the server answered with."""
        return self.loop.run(self.client.close(code, reason, timeout), timeout + 2)

    def wait_for(self, predicate: Callable[[list], bool], timeout: float = 5.0) -> list:
        """Block until `predicate(messages)` is true; TimeoutError if it stays false."""
        with self._changed:
            if not self._changed.wait_for(lambda: predicate(self.messages) or self.closed, timeout) \
                    or not predicate(self.messages):
                raise TimeoutError(f"{self.name}: condition not met within {timeout} s "
                                   f"({len(self.messages)} messages, closed={self.closed})")
        return self.messages

    def wait_closed(self, timeout: float = 5.0) -> int | None:
        return self.loop.run(self.client.wait_closed(timeout), timeout + 1)

    def flood(self, watcher: "ChatClient", until: Callable[[list], bool], size: int = 4000,
              batch: int = 50, limit: int = 10_000, timeout: float = 10.0) -> int:
        """Send batches of `size`-character messages until `until(watcher.messages)`.

        After each batch, wait until `watcher` received all of it: the flood goes on only as
        fast as a healthy member keeps up. Returns how many messages were sent.
        """
        sent = 0
        first = len([m for m in watcher.messages if m.get("type") == "message"])
        while not until(watcher.messages):
            if sent >= limit:
                raise RuntimeError(f"still not done after {limit} messages")
            for _ in range(batch):
                self.send(f"{sent} {'x' * size}")
                sent += 1
            watcher.wait_for(lambda messages: len([m for m in messages if m.get("type") == "message"])
                             >= first + sent, timeout)
        return sent

    # -- what it saw -------------------------------------------------------------------------

    @property
    def name(self) -> str:
        """The name the room knows us by (from the welcome; until then, from the URL)."""
        welcome = next((m for m in self.messages if isinstance(m, dict) and m.get("type") == "welcome"), None)
        if welcome is not None:
            return welcome["you"]
        return parse_qs(urlsplit(self.client.target).query).get("name", [self.client.target])[0]

    @property
    def chat_lines(self) -> list[str]:
        """The conversation as text: "ada: hello", "* bob joined", ..."""
        lines = []
        for m in self.messages:
            if m.get("type") == "message":
                lines.append(f"{m['name']}: {m['text']}")
            elif m.get("type") in ("join", "leave"):
                why = "" if m.get("reason", "left") == "left" else f" ({m['reason']})"
                lines.append(f"* {m['name']} {m['type'] == 'join' and 'joined' or 'left'}{why}")
        return lines

    @property
    def frames(self) -> list[WireFrame]:
        return list(self.client.frames)

    @property
    def events(self) -> list[ClientEvent]:
        return list(self.client.events)

    @property
    def closed(self) -> bool:
        return self.client.closed

    @property
    def close_code(self) -> int | None:
        return self.client.close_code

    @property
    def closed_by(self) -> str | None:
        """Who started the closing handshake: "client", "server", or None (no Close frame yet,
        or the TCP connection dropped without one: code 1006)."""
        first = next((e for e in self.client.events if e.name == "CloseConnection"), None)
        if first is None:
            return None
        return "client" if first.direction == "sent" else "server"

    def describe_state(self) -> str:
        """"open", or how it ended: "closed by the client, code 4000 'bye'"."""
        if not self.closed:
            return "open"
        by = {"client": "closed by the client", "server": "closed by the server"}.get(
            self.closed_by, "connection lost, no Close frame" if self.close_code == 1006 else "closed")
        reason = f" {self.client.close_reason!r}" if self.client.close_reason else ""
        return f"{by}, code {self.close_code}{reason}"

    @property
    def local_port(self) -> int | None:
        address = self.client.local_address
        return address[1] if address else None

    def __repr__(self) -> str:
        state = f"closed {self.close_code}" if self.closed else "open"
        return f"<ChatClient {self.name} {state}, {len(self.messages)} messages>"
