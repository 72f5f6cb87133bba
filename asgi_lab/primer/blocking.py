"""Blocking servers: every socket call waits until it is done, so a thread does one thing.

`BlockingServer` accepts a connection, reads the request, works, answers, closes, and only
then accepts the next one. A second client is not refused meanwhile: the kernel completes its
TCP handshake and keeps it in the listening socket's backlog (`socket.listen(backlog)`), its
request bytes in a buffer. The client has connected and sent, and waits for an answer that
nobody has started on (socket docs: `accept()` and `recv()` block until there is something).

`ThreadedServer` is the classic fix: the accepting thread hands each connection to a new
thread and goes straight back to `accept()`. Clients are then served at the same time,
because a thread blocked in `recv()` or `time.sleep()` lets the others run (CPython releases
the GIL around blocking calls; a free-threaded 3.13t/3.14t build has no GIL to release, and the
waiting works the same). The price is one thread per connection, each with a stack of its
own, created and scheduled by the operating system, however long the client takes
(the standard library's version is `socketserver.ThreadingMixIn`). The project's WSGI server
(`asgi_lab/wsgi/server.py`) is this server grown up: keep-alive, a bounded pool, timeouts.
"""

from __future__ import annotations

import itertools
import threading
import time

from .exchange import BadRequest, Exchange
from .server import READ_SIZE, STOP_CHECK, PrimerServer

CLIENT_TIMEOUT = 5.0
"""Seconds a blocking read or write may wait for a silent client before giving up on it."""


class BlockingServer(PrimerServer):
    """One connection at a time, start to finish, on one thread."""

    label = "blocking: one at a time"

    def serve_forever(self) -> None:
        self.listener.settimeout(STOP_CHECK)  # so that accept() returns now and then to look
        while not self._stopping.is_set():    # at the stop flag
            try:
                sock, client = self.listener.accept()
            except TimeoutError:
                continue
            self.take(sock, client, time.perf_counter())

    def take(self, sock, client, accepted: float) -> None:
        """Serve the connection right here: nothing else happens until it is answered."""
        self.handle(sock, client, accepted)

    def handle(self, sock, client, accepted: float) -> None:
        """Read the request, work, answer, close: blocking at every step."""
        with sock:
            try:
                sock.settimeout(CLIENT_TIMEOUT)
                sock.sendall(self.reply(sock, Exchange()))
            except OSError as exc:  # the client left, reset the connection, or went silent
                self.errors.append(f"{client}: {type(exc).__name__}: {exc}")
                return
            self.record(client, accepted)  # before the close that the client waits for

    def reply(self, sock, exchange: Exchange) -> bytes:
        """The answer's bytes, once the request is read and the work done."""
        try:
            while not exchange.feed(sock.recv(READ_SIZE)):
                pass
            seconds = exchange.work_seconds()
        except BadRequest as problem:
            return exchange.reject(problem)
        time.sleep(seconds)  # the "work": this thread waits, and it is the only one
        return exchange.answer(seconds)


class ThreadedServer(BlockingServer):
    """A thread per connection: the accepting thread never waits for a client."""

    label = "a thread per connection"

    def __init__(self) -> None:
        super().__init__()
        self.threads: set[threading.Thread] = set()
        self._numbers = itertools.count(1)

    def take(self, sock, client, accepted: float) -> None:
        """Start a thread that serves the connection, and return to `accept()` at once."""
        thread = threading.Thread(target=self.handle, args=(sock, client, accepted), daemon=True,
                                  name=f"primer-conn-{next(self._numbers)}")
        self.threads = {t for t in self.threads if t.is_alive()}  # forget finished ones
        self.threads.add(thread)
        thread.start()

    def stop(self, timeout: float = 15.0) -> None:
        """Stop accepting, then wait for the threads still serving someone."""
        super().stop(timeout)
        for thread in list(self.threads):
            thread.join(timeout)
