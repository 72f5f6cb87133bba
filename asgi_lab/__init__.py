"""asgi_lab: see, by running real code, why ASGI exists and what WSGI cannot do.

The public face:

- `serve_in_background(app, kind="asgi"|"wsgi")`: a server on a free port, for notebooks,
  tests and scripts (see `background.py`);
- `Config`: every limit and timeout, with documented defaults (see `config.py`);
- `Tracer`: record every event both servers see (see `trace.py`).
"""

from .background import BackgroundServer, running_servers, serve_in_background, stop_all
from .config import Config
from .trace import TraceEvent, Tracer

__all__ = ["BackgroundServer", "Config", "TraceEvent", "Tracer", "running_servers",
           "serve_in_background", "stop_all"]
__version__ = "0.1.0"
