"""What every primer server shares: a listening socket, a record of whom it served, a stop.

    with BlockingServer() as server:      # or ThreadedServer(), LoopServer(), CoroutineServer()
        run = clients.measure(server, ["/?ms=300", "/?ms=300"])
    server.served                          # one `Served` per answered connection

Each server listens on 127.0.0.1, on a port the kernel picks (port 0), and runs in a
background thread of its own, so that its caller (a notebook cell, a test) stays free to be
the client. `stop()`, or the end of the `with` block, ends it and closes its sockets: nothing
it started outlives it.
"""

from __future__ import annotations

import socket
import threading
import time
from dataclasses import dataclass

LOOPBACK = "127.0.0.1"
BACKLOG = 128
"""How many connections the kernel may hold, handshake done, until the server accepts them
(`socket.listen(backlog)`). A blocking server's waiting clients wait there."""
STOP_CHECK = 0.05
"""The server thread looks at its stop flag at least this often (seconds)."""
READ_SIZE = 65536


@dataclass(frozen=True)
class Served:
    """One connection the server answered, seen from the server (times: `time.perf_counter()`)."""

    client_port: int
    """The client's port, which tells the clients apart."""
    accepted: float
    """When the server accepted the connection: from here on, someone works on it."""
    answered: float
    """When the last byte of the answer went to the kernel."""
    thread: str
    """The name of the thread that served it."""


class PrimerServer:
    """The shared part: listen, run `serve_forever()` on a thread, stop. Subclasses say how
    to serve (`blocking.py`, `loop_server.py`)."""

    label = "a primer server"
    """How the notebook's figures name this kind of server."""

    def __init__(self) -> None:
        self.listener: socket.socket | None = None
        self.served: list[Served] = []
        self.errors: list[str] = []
        """What went wrong with a client (it left, it reset, it went silent): data, not a log."""
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def address(self) -> tuple[str, int]:
        return self.listener.getsockname()

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> "PrimerServer":
        """Listen on a free loopback port and serve in the background; returns at once."""
        self.listener = socket.create_server((LOOPBACK, 0), backlog=BACKLOG)
        self._thread = threading.Thread(target=self.serve_forever, name=type(self).__name__,
                                        daemon=True)
        self._thread.start()
        return self

    def serve_forever(self) -> None:
        raise NotImplementedError

    def stop(self, timeout: float = 15.0) -> None:
        """Stop serving, wait for the server's thread, close the listening socket."""
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout)
        if self.listener is not None:
            self.listener.close()

    def record(self, client: tuple[str, int], accepted: float) -> None:
        """Note that the connection from `client`, accepted at `accepted`, is answered."""
        self.served.append(Served(client[1], accepted, time.perf_counter(),
                                  threading.current_thread().name))

    def __enter__(self) -> "PrimerServer":
        if self._thread is None:
            self.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return f"<{type(self).__name__} {state}, {len(self.served)} served>"
