"""`--uds PATH`: both servers listen on a Unix domain socket instead of a TCP port.

    python -m asgi_lab asgi app:app --uds /tmp/app.sock
    curl --unix-socket /tmp/app.sock http://localhost/

A reverse proxy on the same machine (nginx's `proxy_pass http://unix:/tmp/app.sock;`) then
talks to the server through a file: no port to pick, none open to the network, and who may
connect is decided by the file's permissions (those the umask gives it at bind time).

The socket file outlives the process that bound it: a server killed without a chance to clean
up leaves it behind, and the next `bind()` on that path fails with "address already in use"
although nobody listens. So `bind_unix_socket` first *connects* to a file it finds there: if
that is refused, the file is stale and is removed; if a server answers, the path is in use and
we say so (removing it would silently cut that server off). A path that is not a socket at all
is never removed. The server that bound the path removes the file when it stops
(`remove_socket_file`).

What the app sees (ASGI www spec, "HTTP Connection Scope": `server` "for unix sockets, this
can be [path, None]"): `scope["server"] == (path, None)` and `scope["client"] is None` (the
peer has no network address). WSGI (PEP 3333 takes CGI's variables, which know only TCP/IP):
`REMOTE_ADDR` is the empty string and `REMOTE_PORT` is absent, as gunicorn does;
`SERVER_NAME` is "localhost" and `SERVER_PORT` the scheme's default port, so a URL rebuilt
from them (when the request has no Host header) is still a URL.
"""

from __future__ import annotations

import errno
import os
import socket
import stat


def bind_unix_socket(path: str) -> socket.socket:
    """A listening, non-blocking Unix socket at `path`, after removing a stale socket file.

    Raises OSError: EADDRINUSE if a server listens there, EEXIST if `path` is not a socket,
    EACCES if its directory is not writable."""
    remove_stale_socket(path)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(path)
        sock.listen(2048)
    except BaseException:
        sock.close()
        raise
    sock.setblocking(False)
    return sock


def remove_stale_socket(path: str) -> None:
    """Remove `path` if it is a socket file nobody listens on (a crashed server's)."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(mode):
        raise OSError(errno.EEXIST, "the path exists and is not a socket", path)
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.settimeout(1.0)
    try:
        probe.connect(path)
    except ConnectionRefusedError:  # nobody listens: a stale file
        os.remove(path)
        return
    except OSError:  # a full backlog (timeout), or another error: assume someone is there
        pass
    finally:
        probe.close()
    raise OSError(errno.EADDRINUSE, "a server is already listening on this socket", path)


def remove_socket_file(path: str | None) -> None:
    """At shutdown: remove the socket file at `path`, if it is still there and a socket (a
    regular file that replaced it is left alone). Safe to call twice."""
    if not path:
        return
    try:
        if stat.S_ISSOCK(os.stat(path).st_mode):
            os.remove(path)
    except FileNotFoundError:
        pass
