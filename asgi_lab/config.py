"""Limits and timeouts shared by both servers: one dataclass, documented defaults.

Every number that decides how a server treats a slow, idle, greedy or hostile peer lives
here, so a reader can see the server's promises in one place. Both the ASGI server and the
WSGI server take a `Config`; the command line builds one from its flags.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

KiB = 1024
MiB = 1024 * KiB


@dataclass(slots=True)
class Config:
    """How a server listens, and how much it will put up with.

    The defaults are safe for a laptop in a classroom: bind to loopback only, bounded
    headers and bodies, and timeouts for peers that go quiet.
    """

    host: str = "127.0.0.1"
    """Loopback unless told otherwise: a teaching server is not put on the network by accident."""
    port: int = 8000
    """0 asks the OS for a free port; the server reports the one it got."""
    root_path: str = ""
    """ASGI `root_path` / WSGI `SCRIPT_NAME`: where the app is mounted behind a proxy."""
    uds: str | None = None
    """Listen on this Unix domain socket path instead of `host`:`port` (`unix_socket.py`): a
    stale socket file there is removed first, and the server removes its own when it stops."""

    # -- TLS (tls.py) ----------------------------------------------------------------
    ssl_certfile: str | None = None
    """The server's certificate chain (PEM). Set, the server speaks HTTPS (and WSS) only."""
    ssl_keyfile: str | None = None
    """The certificate's private key (PEM); None: it is in `ssl_certfile`."""
    ssl_keyfile_password: str | None = None
    """The password of an encrypted `ssl_keyfile`."""

    # -- HTTP/1.1 limits -------------------------------------------------------------
    max_header_bytes: int = 64 * KiB
    """Request line plus headers. Larger gets 431 (h11's `max_incomplete_event_size`)."""
    max_target_bytes: int = 8 * KiB
    """The request-target (path and query). Longer gets 414 (RFC 9110 §15.5.15); nginx and
    gunicorn refuse at about the same length. A target longer than `max_header_bytes` gets
    431: h11 cannot tell it from a long head."""
    max_body_bytes: int | None = 100 * MiB
    """A larger request body gets 413. None means no limit."""
    wsgi_early_body_bytes: int = 64 * KiB
    """WSGI: a worker thread is given a request only once its head and this much of its body
    (all of a smaller body) have arrived, so a client that sends slowly holds a socket, not a
    thread. A larger body streams to the app through `wsgi.input` as it comes. (waitress reads
    every whole request in its I/O thread first, in memory up to 512 KiB, then in a temporary
    file; 64 KiB bounds what each connection holds here.)"""
    read_high_water: int = 64 * KiB
    """Buffered request body above this stops reading from the socket until the app
    calls receive() (back-pressure: a fast client cannot fill our memory)."""

    # -- timeouts (seconds) ------------------------------------------------------------
    timeout_keep_alive: float = 5.0
    """An idle connection between requests, or one that never sends a byte, is closed."""
    timeout_request_header: float = 10.0
    """A client must finish sending its request line and headers within this time."""
    wsgi_timeout_write: float = 30.0
    """WSGI: a client that takes none of our bytes for this long is cut off, and the worker
    thread blocked writing to it is freed (each `send()` that makes progress starts it again,
    so a slow but steady download is never cut). Without it, a few clients that never read
    a large response would hold the whole pool."""
    wsgi_write_behind_bytes: int = 128 * MiB
    """WSGI: a *finished* response the client is slow to read is handed to the acceptor
    thread, which writes the rest as the client takes it, so the worker is free at once. At
    most this many bytes, over all connections, wait that way; beyond it, a worker writes
    the rest itself (blocking, under `wsgi_timeout_write`). A streaming response (a
    generator, SSE) is not finished until it ends: it keeps its worker while it streams."""
    timeout_graceful_shutdown: float = 5.0
    """On shutdown, in-flight work gets this long before connections are closed."""

    # -- WebSocket ---------------------------------------------------------------------
    ws_max_message_bytes: int = 16 * MiB
    """A larger message is refused with close code 1009 (Message Too Big)."""
    ws_ping_interval: float | None = None
    """Send a ping this often (None: never). A peer that does not answer is dropped."""
    ws_ping_timeout: float = 20.0
    """How long to wait for the pong to a keep-alive ping."""
    ws_write_high_water: int = 64 * KiB
    """send() waits while the socket's write buffer holds more than this."""
    ws_close_timeout: float = 3.0
    """After we send a Close frame, how long the peer has to answer before we drop TCP."""

    # -- WSGI --------------------------------------------------------------------------
    threads: int = 8
    """WSGI worker threads. 0 means one thread per connection."""
    wsgi_upgrade: bool = False
    """NON-PORTABLE, off by default: put `asgi_lab.upgrade` in every environ, a callable that
    sends `101 Switching Protocols` and hands the app the raw socket (`wsgi/upgrade.py`).
    Not WSGI (PEP 3333 forbids hop-by-hop headers to apps); no other server knows the key."""

    # -- logging -------------------------------------------------------------------------
    access_log: bool = True
    """One line per request, like every production server prints."""
    lifespan: str = "auto"
    """ASGI lifespan: "auto" (use it if the app supports it), "on" or "off"."""

    def replace(self, **changes) -> "Config":
        """A copy with some fields changed: `config.replace(port=0)`."""
        return dataclasses.replace(self, **changes)

    def __post_init__(self) -> None:
        if self.lifespan not in ("auto", "on", "off"):
            raise ValueError(f"lifespan must be 'auto', 'on' or 'off', not {self.lifespan!r}")
        if self.threads < 0:
            raise ValueError("threads must be 0 (one per connection) or a positive pool size")
