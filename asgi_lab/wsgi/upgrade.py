"""A non-portable escape hatch: the raw socket for a WSGI app, after `101 Switching Protocols`.

    python -m asgi_lab wsgi asgi_lab.apps.wsgi_chat:app --wsgi-upgrade    # Config(wsgi_upgrade=True)

    def app(environ, start_response):
        upgrade = environ.get(UPGRADE_KEY)           # None on every other server
        sock, buffered = upgrade([("Upgrade", "websocket"), ("Connection", "Upgrade"), ...])
        ...                                          # the connection is the app's now
        return []

Off by default. When `Config.wsgi_upgrade` is on, every `environ` carries one more key,
`"asgi_lab.upgrade"`: a callable that

1. reads the rest of the request (a GET's empty body), so that h11 sees the whole request;
2. sends `101 Switching Protocols` with the app's headers, as an `h11.InformationalResponse`:
   h11 accepts it only if the request proposed the switch (an `Upgrade` header: h11 then
   waits in `MIGHT_SWITCH_PROTOCOL`), and then both sides are in its `SWITCHED_PROTOCOL` state (h11 docs, "Switching protocols");
3. hands back the socket and the bytes h11 had already read past the request
   (`conn.trailing_data`: a client may send its first frame right behind the handshake).

From then on the connection belongs to the app: no keep-alive, no idle timeout, no response.
The worker thread stays inside the app until it returns; then the server closes the socket.

Why this is not WSGI. PEP 3333 ("The start_response() Callable"): "Applications and
middleware are forbidden from using HTTP/1.1 "hop-by-hop" features or headers, any equivalent
features in HTTP/1.0, or any headers that would affect the persistence of the client's
connection to the web server. These features are the exclusive province of the actual web
server". `Upgrade` and `Connection` are hop-by-hop, and a switched connection is the end of
HTTP on it. So the PEP has no place for this, and every server that offers something like it
offers its own key (gunicorn's `gunicorn.socket`, werkzeug's `werkzeug.socket`): an app
written against one runs on no other. That is the point the lab makes with it.
"""

from __future__ import annotations

import socket

import h11

from ..http11 import event_name

UPGRADE_KEY = "asgi_lab.upgrade"
"""The environ key. Namespaced with the server's name, as PEP 3333 asks of server extensions."""


class Upgrade:
    """The callable behind `environ["asgi_lab.upgrade"]`, for one request."""

    def __init__(self, cycle) -> None:
        self.cycle = cycle          # the wsgi.connection.RequestResponseCycle of this request
        self.switched = False

    def __call__(self, headers: list[tuple[str, str]]) -> tuple[socket.socket, bytes]:
        """Send the 101 with `headers` (native strings, as for start_response); return the
        socket and the bytes already received after the request."""
        cycle = self.cycle
        connection, conn = cycle.connection, cycle.conn
        if self.switched or cycle.head_sent:
            raise RuntimeError("too late to upgrade: a response has already started")
        while cycle.read_body_chunk():     # 1. the request must be complete before the switch
            pass
        if conn.their_state is not h11.MIGHT_SWITCH_PROTOCOL:  # h11 would refuse the 101
            raise RuntimeError("cannot switch protocols: the request did not ask to "
                               "(no Upgrade header)")
        raw_headers = [(name.encode("latin-1"), value.encode("latin-1")) for name, value in headers]
        connection.sendall(cycle.core.switch_protocols(raw_headers))  # 2.
        self.switched = True
        buffered, _closed = conn.trailing_data  # 3.
        if connection.tracer is not None:
            connection.tracer.emit(connection.id, "wsgi", "upgrade",
                                   {"status": 101, "headers": headers, "buffered": len(buffered),
                                    "h11_state": event_name(conn.our_state)})
        sock = connection.sock
        sock.settimeout(None)               # the app's socket blocks, with no server timeout
        connection.socket_timeout = None
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # frames are small: no Nagle
        except OSError:  # not a TCP socket
            pass
        return sock, buffered

