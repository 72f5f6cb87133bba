"""The WSGI comparison server: threads, blocking calls, PEP 3333; on the same h11 core and
with the same limits, tracer and background runner as the ASGI server.

Read in this order: `environ.py` (pure: an h11.Request -> the PEP 3333 environ),
`streams.py` (wsgi.input and wsgi.file_wrapper), `connection.py` (h11 over a blocking socket:
one connection's requests, and the start_response / iterable cycle of each), `pool.py` (the
worker threads and their queue; when to wake one), `watchlist.py` (the acceptor's epoll set),
`server.py` (listening, the acceptor, graceful shutdown). Off the path, and off by default:
`upgrade.py`, a non-portable escape hatch that hands an app the raw socket after a 101.
"""

from .connection import ClientDisconnected, RequestBodyError
from .environ import build_environ, environ_base
from .server import WSGIServer
from .streams import FileWrapper, RequestBody

__all__ = ["ClientDisconnected", "FileWrapper", "RequestBody", "RequestBodyError", "WSGIServer",
           "build_environ", "environ_base"]
