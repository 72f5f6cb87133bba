"""Classroom exercises: checks that run a student's app and explain what is wrong.

    from asgi_lab.exercises import check_streamed_body
    check_streamed_body(app)     # prints "✓ ... passed", or raises ExerciseFailed in plain words

The exercises themselves are notebooks (`notebooks/exercises/`), each with a stub to fill in,
a check cell, and a solution notebook beside it. The pieces:

- `feedback.py`: `ExerciseFailed`, the friendly failure (no traceback in a notebook), and the
  graduated hints: the idea first, then the API, then the code (`hint(check_sse)` asks for the
  next step);
- `harness.py`: an in-process driver for ASGI apps (we play the server, message by message)
  and for WSGI apps (we build the environ and play start_response);
- `client.py`: small loopback clients for the checks that use our real servers;
- `checks/`: one `check_*` per exercise, one module per topic;
- `fakes.py`: stand-ins handed to students (`PriceService`).
"""

from .checks import (check_asgi_middleware, check_async_bridge, check_asyncio_server, check_chat, check_lifespan_middleware, check_lifespan_state, check_sse,
                     check_streamed_body, check_streaming, check_unblocked, check_wsgi_app,
                     check_wsgi_middleware)
from .fakes import PriceService, prices
from .feedback import ExerciseFailed, hint, reset_hints
from .harness import ASGIDriver, call_wsgi, http_request, run

__all__ = ["ASGIDriver", "check_asgi_middleware", "check_async_bridge", "check_asyncio_server", "ExerciseFailed", "call_wsgi", "check_chat", "hint",
           "reset_hints", "PriceService", "prices",
           "check_lifespan_middleware", "check_lifespan_state", "check_sse", "check_streamed_body",
           "check_streaming", "check_unblocked", "check_wsgi_app", "check_wsgi_middleware",
           "http_request", "run"]
