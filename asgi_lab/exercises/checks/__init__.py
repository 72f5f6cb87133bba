"""One check per exercise: run the student's callable, say in plain words what is wrong.

Each `check_*` function either prints "✓ ... passed" or raises `ExerciseFailed` with the
problem and a hint. They use two instruments:

- the in-process harness (`harness.py`) where the *order and shape of messages* is the
  point: it sees every message and knows the spec, so it can say "http.response.body before
  http.response.start" rather than "connection reset";
- our real servers over loopback where the *network* is the point: a client that vanishes
  (SSE), requests that must not wait for each other (a blocking handler), bytes on the wire
  (chunked framing).

One module per topic, each readable on its own:

    wsgi.py       1. a WSGI app              2. WSGI middleware
    http.py       3. a streamed request body    spot the bug: a response that frames itself
    sse.py        4. SSE that stops when the client leaves
    websocket.py  5. a WebSocket chat           spot the bug: registering before the accept
    lifespan.py   6. lifespan state             spot the bugs: state on one shared scope,
                                                middleware that swallows lifespan.startup
    blocking.py   7. unblock the event loop
    middleware.py 9. (stretch) an ASGI middleware that wraps send
    server.py    10. (stretch) an HTTP server on asyncio.start_server, with h11
    bridge.py    11. (stretch) a WSGI app calling async code on one shared event loop
    common.py     what they share

The exercises are in `notebooks/exercises/`; every check accepts any correct solution, not
only ours (see `tests/test_exercises.py` for the alternatives it is tested with).
"""

from ..feedback import ExerciseFailed
from .blocking import check_unblocked
from .http import check_streamed_body, check_streaming
from .middleware import check_asgi_middleware
from .server import check_asyncio_server
from .bridge import check_async_bridge
from .lifespan import check_lifespan_middleware, check_lifespan_state
from .sse import check_sse
from .websocket import check_chat
from .wsgi import check_wsgi_app, check_wsgi_middleware

__all__ = ["check_wsgi_app", "check_wsgi_middleware", "check_streamed_body", "check_sse",
           "check_chat", "check_lifespan_state", "check_unblocked", "check_streaming",
           "check_lifespan_middleware", "check_asgi_middleware", "check_asyncio_server", "check_async_bridge",
           "ExerciseFailed"]
