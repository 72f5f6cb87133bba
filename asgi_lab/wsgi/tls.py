"""The WSGI server's connection over TLS: `Connection` with an `ssl.SSLSocket` underneath.

The server uses this class instead of `Connection` when it has a certificate (`tls.py`);
without one nothing here runs, and the plain connection's path is untouched. Everything
about HTTP stays in `Connection` and the core; what changes is only how bytes move:

- **The handshake, without holding a thread.** The acceptor only accepts (and never touches
  TLS). A worker wraps the socket and makes one *non-blocking* handshake step each time the
  client's bytes arrive, then gives the connection back to the acceptor's selector, exactly
  as for a request head that arrives in pieces. A client that never finishes the handshake
  therefore holds a socket, not a worker, and the head deadline (`timeout_request_header`,
  from the connection's start) closes it. With `threads=0` the connection's own thread makes
  the handshake, blocking, within the same deadline.
- **No MSG_DONTWAIT, no MSG_PEEK.** An `SSLSocket` refuses flags on `recv`/`send` (the bytes
  on the wire are not the bytes the app reads). A read that must not wait is made on a
  non-blocking socket (timeout 0.0) instead, and bytes that TLS already decrypted but we have
  not read yet (`SSLSocket.pending()`) are read at once: the selector cannot see them.
- **No write-behind** (`Connection.hand_over`): a TLS connection's bytes must be encrypted
  and written by one thread at a time, in order, so a worker writes its whole response.
- **No sendfile(2)**: the kernel would send the file's bytes unencrypted; the file is read
  and written through TLS in pieces.
"""

from __future__ import annotations

import logging
import os
import socket
import ssl
import time

from ..core import ClientDisconnected, Wait
from ..tls import handshake_failure
from .connection import RECV_BUFFER, Connection
from .streams import FileRegion

logger = logging.getLogger("asgi_lab.error")

WRITE_PIECE = 64 * 1024
"""Bytes per TLS write. Python's `SSLSocket.send` must finish a whole write within the
socket's timeout, so a large body is written in pieces: each piece gets `wsgi_timeout_write`,
and a slow but steady download is never cut (the rule `Connection.sendall` keeps)."""


class TLSConnection(Connection):
    """One client connection over TLS (see the module docstring)."""

    def __init__(self, server, sock: socket.socket, client, conn_id: int) -> None:
        super().__init__(server, sock, client, conn_id)
        self.handshaken = False
        # The handshake is the start of the first request: the head's deadline applies to it
        # (`ConnectionCore.time_left`), not the idle one.
        self.core.head_bytes = 1

    # -- the handshake ---------------------------------------------------------------------

    def serve_ready(self) -> bool:
        if not self.handshaken and not self.handshake(0.0):
            return not self.closed  # open: wait in the selector for the client's next bytes
        return super().serve_ready()

    def serve_forever(self) -> None:
        if self.handshake(max(self.core.time_left(time.monotonic()), 0.001)):
            super().serve_forever()

    def handshake(self, timeout: float) -> bool:
        """One handshake step (`timeout` 0.0: never wait) or, with a timeout, the whole
        handshake. True once it is complete; False while it needs more bytes from the client,
        or after it failed (one log line, and the connection is closed)."""
        if not isinstance(self.sock, ssl.SSLSocket):  # the first step: wrap (no I/O yet)
            self.sock = self.server.ssl_context.wrap_socket(self.sock, server_side=True,
                                                            do_handshake_on_connect=False)
            self.socket_timeout = self.sock.gettimeout()
        self.set_timeout(timeout)
        try:
            try:
                self.sock.do_handshake()
            except ssl.SSLWantWriteError:
                # Our handshake bytes did not fit in the socket's buffer (rare: it is empty
                # at this point). Finish the handshake here, blocking, within the deadline.
                self.set_timeout(max(self.core.time_left(time.monotonic()), 0.001))
                self.sock.do_handshake()
        except ssl.SSLWantReadError:
            return False
        except OSError as exc:  # ssl.SSLError, a timeout, a reset, EOF
            level, words = handshake_failure(exc)
            logger.log(level, "Connection %s from %s: TLS handshake failed: %s", self.id,
                       self.client, words)
            self.close()
            return False
        self.handshaken = True
        self.core.head_bytes = 0
        self.core.waiting_for(Wait.HEAD)  # now the first request: the idle deadline
        if self.tracer is not None:
            self.tracer.emit(self.id, "socket", "tls_handshake",
                             {"version": self.sock.version(), "cipher": self.sock.cipher()[0]})
        return True

    # -- bytes in and out --------------------------------------------------------------------

    def recv(self, timeout: float | None, flags: int = 0) -> bytes:
        """One read of decrypted bytes. `flags` (MSG_DONTWAIT, from `serve_ready`) becomes a
        non-blocking socket; "nothing yet" is BlockingIOError, as for a plain socket."""
        self.set_timeout(0.0 if flags else timeout)
        sock = self.sock
        try:
            data = sock.recv(RECV_BUFFER)
        except ssl.SSLWantReadError:
            raise BlockingIOError("no TLS record complete yet") from None
        pending = sock.pending()  # decrypted already, but invisible to the selector
        if pending:
            data += sock.recv(pending)
        return data

    def sendall(self, data: bytes, last: bool = False) -> None:
        """Write everything, in pieces, each within `wsgi_timeout_write` (see `WRITE_PIECE`);
        never handed over to the acceptor (see the module docstring)."""
        if not data:
            return
        self.prepare_write()
        self.set_timeout(self.config.wsgi_timeout_write)
        view = memoryview(data)
        try:
            while view:
                view = view[self.sock.send(view[:WRITE_PIECE]):]
        except OSError as exc:  # TimeoutError included: the client stopped reading
            self.close()
            raise ClientDisconnected(f"client {self.client} disconnected: {exc}") from exc

    def sendfile(self, region: FileRegion) -> None:
        """`wsgi.file_wrapper` over TLS: read the file and write it through TLS, in pieces."""
        if self.tracer is not None:
            self.tracer.emit(self.id, "socket", "bytes_out", {"file": getattr(region.file, "name", None),
                                                              "size": region.count})
        fd = region.file.fileno()
        offset, left = region.offset, region.count
        while left:
            piece = os.pread(fd, min(left, WRITE_PIECE), offset)
            if not piece:  # the file got shorter while we sent it
                raise RuntimeError(f"file ended after {region.count - left} of {region.count} bytes")
            self.sendall(piece)
            offset += len(piece)
            left -= len(piece)

    def has_bytes_waiting(self) -> bool:
        """Decrypted bytes unread, or raw bytes in the socket (peeked under TLS: they stay)."""
        if self.handshaken and self.sock.pending():
            return True
        self.set_timeout(0.0)  # a socket with a timeout would poll() before the peek
        try:
            return bool(socket.socket.recv(self.sock, 1, socket.MSG_PEEK | socket.MSG_DONTWAIT))
        except OSError:
            return False

    def abort(self) -> None:
        """From another thread: cut the TCP connection under TLS. (`SSLSocket.shutdown` would
        also drop the TLS state that the owning thread may be using right now.)"""
        try:
            socket.socket.shutdown(self.sock, socket.SHUT_RDWR)
        except OSError:
            pass
