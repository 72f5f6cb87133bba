"""The same server as generator tasks on one event loop: one thread, many clients at once.

Put `handle` and `reply` beside `BlockingServer.handle` and `.reply` in `blocking.py`: the
steps are the same, line for line. Where the blocking server *calls* `sock.recv(...)` and
waits, a task *yields* (`yield from recv(sock)`) and the loop runs other tasks until the
socket is ready. Sockets are put in non-blocking mode (`sock.setblocking(False)`): a call on
one either does its work at once or raises, so the only place a task ever waits is a `yield`.

One more task accepts: it waits until the listening socket is "readable", which for a
listening socket means a connection is waiting (`selectors` docs), accepts it, and spawns a
task for it.

`GET /block?ms=N` shows the mistake of notebook 05: that task calls `time.sleep()` instead of
yielding `sleep()`. Nothing else runs meanwhile: not the other tasks, not the accepting task.

The project's ASGI server (`asgi_lab/asgi/`) is this server grown up, on asyncio: its loop
does what `Loop` does, and its app is a coroutine that awaits where these tasks yield.
"""

from __future__ import annotations

import time

from .exchange import BadRequest, Exchange
from .loop import Loop, recv, send_all, sleep
from .server import PrimerServer


class LoopServer(PrimerServer):
    """Generator tasks on one `Loop`, on one thread."""

    label = "an event loop of generators"

    def __init__(self) -> None:
        super().__init__()
        self.loop = Loop()

    def serve_forever(self) -> None:
        self.listener.setblocking(False)
        self.loop.spawn(self.accept_forever())
        self.loop.run(stop=self._stopping)

    def accept_forever(self):
        """The accepting task: one new task per connection."""
        while True:
            yield "recv", self.listener
            try:
                sock, client = self.listener.accept()
            except (BlockingIOError, ConnectionAbortedError):  # gone before we got to it
                continue
            sock.setblocking(False)
            self.loop.spawn(self.handle(sock, client, time.perf_counter()))

    def handle(self, sock, client, accepted: float):
        """Read the request, work, answer, close: yielding wherever blocking code waits."""
        with sock:
            try:
                answer = yield from self.reply(sock, Exchange())
                yield from send_all(sock, answer)
            except OSError as exc:  # the client left or reset the connection
                self.errors.append(f"{client}: {type(exc).__name__}: {exc}")
                return
            self.record(client, accepted)  # before the close that the client waits for

    def reply(self, sock, exchange: Exchange):
        """The answer's bytes, once the request is read and the work done."""
        try:
            while not exchange.feed((yield from recv(sock))):
                pass
            seconds = exchange.work_seconds()
        except BadRequest as problem:
            return exchange.reject(problem)
        if exchange.path == "/block":
            time.sleep(seconds)  # the mistake: a blocking call in a task stops the whole loop
        else:
            yield from sleep(seconds)  # the "work": this task waits; the others run
        return exchange.answer(seconds)
