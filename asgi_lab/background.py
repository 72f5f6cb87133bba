"""Run either server in the background: from a script, a test, or a Jupyter cell.

    with serve_in_background(app) as server:        # ASGI by default; kind="wsgi" for WSGI
        httpx.get(server.url)

    server = serve_in_background(app, name="demo")  # in a notebook cell
    ...
    server.stop()

Why a thread? Jupyter's kernel already runs an event loop, so `asyncio.run()` raises inside a
cell. The ASGI server therefore gets a thread with an event loop of its own; the WSGI server
is threads already. The same helper then works in a script, under pytest and in Jupyter.
Code on another thread (a widget callback, say) reaches the server's loop with
`loop.call_soon_threadsafe` / `asyncio.run_coroutine_threadsafe(coro, server.loop)`.

Re-running a cell must not leave a stray server: every background server has a `name`,
and starting one stops the server already running under that name (and says so in one INFO
line on the `asgi_lab.error` logger). All of them are stopped when the interpreter exits.
The default name is the kind and what the app *is*, never its `repr()` (which holds a
memory address, new each time a cell rebuilds the app): `asgi:myapp.app` for a function,
`asgi:fastapi.applications.FastAPI` for an instance, named after its class. So a cell that
builds a FastAPI app and serves it replaces its own server when run again; to run two apps
of one class side by side, give each a `name=`.

A client that finds a stopped server (a cell run again after the notebook's clean-up) gets
`ServerStopped`, one sentence naming the cell that starts the server again, not a page of
`ConnectionRefusedError` traceback: see `refused()`. Asking a stopped server for its `url`
(or `ws_url`) raises the same `ServerStopped` sentence; its `address` and `port` still say
where it was.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import functools
import logging
import sys
import threading

from .config import Config
from .core import url
from .http11 import bind_socket
from .unix_socket import remove_socket_file

_running: dict[str, "BackgroundServer"] = {}
_stopped: dict[tuple[str, int], tuple[str, int | None]] = {}  # address -> (name, started_in)
_running_lock = threading.Lock()
logger = logging.getLogger("asgi_lab.error")


class ServerStopped(ConnectionRefusedError):
    """A client connected to the address of a background server that was stopped."""

    def _render_traceback_(self) -> list[str]:
        """What IPython shows instead of a traceback: the sentence alone."""
        return [str(self)]


def default_name(app, kind: str) -> str:
    """`kind:module.qualname` of the app if it is a function or a class, else of its class.
    Never `repr(app)`: that holds a memory address, new each time a cell builds the app."""
    while isinstance(app, functools.partial):
        app = app.func
    named = app if hasattr(app, "__qualname__") and hasattr(app, "__module__") else type(app)
    return f"{kind}:{named.__module__}.{named.__qualname__}"


def _stopped_message(name: str, cell: int | None) -> str:
    again = f"run cell [{cell}] again (the cell that started it)" if cell else "start it again"
    return f"the server of this notebook ({name!r}) is stopped; {again}, then this one."


def _cell_number() -> int | None:
    """The number Jupyter shows beside the cell running now (its `[N]`), or None outside
    IPython. IPython's `In` list holds the source of every cell run so far, this one last."""
    ipython = sys.modules.get("IPython")
    shell = ipython.get_ipython() if ipython is not None else None
    inputs = getattr(shell, "user_ns", {}).get("In")
    return len(inputs) - 1 if inputs else None


class BackgroundServer:
    """A server on a free port, in the background, until `stop()` (or the `with` block ends)."""

    def __init__(self, app, kind: str = "asgi", config: Config | None = None, tracer=None,
                 name: str | None = None) -> None:
        if kind not in ("asgi", "wsgi"):
            raise ValueError(f"kind must be 'asgi' or 'wsgi', not {kind!r}")
        self.app = app
        self.kind = kind
        self.config = config or Config(port=0)
        self.tracer = tracer
        self.name = name or default_name(app, kind)
        self.server = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._sock = None  # ASGI: bound in start(), before the lifespan startup
        self._address: tuple[str, int] | None = None
        self.started_in: int | None = None  # the notebook cell that started it: its [N]
        self.stopped = False

    # -- where it listens ------------------------------------------------------------------------

    @property
    def address(self) -> tuple[str, int | None]:
        """Where it listens (or listened: still there after `stop()`, for a test that checks
        what the scope said): (host, port), or (path, None) on a Unix socket (`uds=`).
        RuntimeError before `start()`."""
        if self._address is None:
            raise RuntimeError(f"the server {self.name!r} is not started yet: call .start()")
        return self._address

    @property
    def host(self) -> str:
        return self.address[0]

    @property
    def port(self) -> int:
        return self.address[1]

    @property
    def url(self) -> str:
        """The base URL; a stopped server raises `ServerStopped` (one sentence) instead of
        handing out a URL nobody serves."""
        if self.stopped:
            raise ServerStopped(_stopped_message(self.name, self.started_in))
        return url(self.address, self.server.scheme)  # https with TLS; http+unix://... on a Unix socket

    @property
    def ws_url(self) -> str:
        return "ws" + self.url[len("http"):]

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive() if self.kind == "asgi" \
            else self.server is not None and self.server.address is not None

    def __repr__(self) -> str:
        where = "stopped" if self.stopped else self.url if self.server is not None \
            and self.server.address else "not started"
        return f"<BackgroundServer {self.name!r} {self.kind} {where}>"

    # -- start and stop ------------------------------------------------------------------------

    def start(self, timeout: float = 10.0) -> "BackgroundServer":
        """Start serving; returns once the server listens. Stops a namesake first."""
        with _running_lock:
            previous = _running.pop(self.name, None)
        if previous is not None and previous is not self:
            try:
                was = previous.url
            except (ServerStopped, RuntimeError):
                was = "stopped"
            previous.stop()
            logger.info("Replaced the background server %r (%s%s) with a new one", self.name, was,
                        f", started in cell [{previous.started_in}]" if previous.started_in else "")
        self.stopped = False
        if self.kind == "asgi":
            self._start_asgi(timeout)
        else:
            from .wsgi.server import WSGIServer

            self.server = WSGIServer(self.app, self.config, tracer=self.tracer)
            self.server.start()
        self._address = tuple(self.server.address[:2])
        with _running_lock:
            _running[self.name] = self
            if self.server.address is not None:
                _stopped.pop(tuple(self.server.address[:2]), None)
        self.started_in = _cell_number()
        return self

    def _start_asgi(self, timeout: float) -> None:
        from .asgi.server import Server

        # Bind here, before the app's lifespan startup runs on the server's thread: an address
        # in use is an OSError for the caller, and no startup ran that would need undoing.
        self.server = Server(self.app, self.config, tracer=self.tracer)  # a bad TLS file raises here
        self._sock = bind_socket(self.config)
        self._ready.clear()  # started again after a stop: wait for this run's start
        self._error = None
        self._thread = threading.Thread(target=self._run_loop, name=f"asgi-server-{self.name}",
                                        daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout):
            raise TimeoutError(f"ASGI server did not start within {timeout} s")
        if self._error is not None:
            raise self._error

    def _run_loop(self) -> None:
        self.loop = asyncio.new_event_loop()
        try:
            self.loop.run_until_complete(self._serve())
        finally:
            self.loop.close()

    async def _serve(self) -> None:
        try:
            await self.server.start(self._sock)
        except BaseException as exc:  # report it to the thread that called start()
            self._error = exc
            self._sock.close()
            remove_socket_file(self.config.uds)
            return
        finally:
            self._ready.set()
        await self.server.serve()

    def stop(self, timeout: float | None = None) -> None:
        """Graceful shutdown (the same as Ctrl-C on the command line); waits until done."""
        with _running_lock:
            if _running.get(self.name) is self:
                del _running[self.name]
            if self.server is not None and self.server.address is not None:
                _stopped[tuple(self.server.address[:2])] = (self.name, self.started_in)
        if self.server is None:
            return
        self.stopped = True
        grace = self.config.timeout_graceful_shutdown
        timeout = grace + 5.0 if timeout is None else timeout
        if self.kind == "asgi":
            thread, loop = self._thread, self.loop
            if thread is not None and thread.is_alive() and loop is not None:
                try:
                    loop.call_soon_threadsafe(self.server.request_shutdown)
                except RuntimeError:  # the loop already closed
                    pass
                thread.join(timeout)
            self._thread = None
        else:
            self.server.shutdown(timeout)

    def __enter__(self) -> "BackgroundServer":
        if self.server is None:
            self.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self.stop()


def serve_in_background(app, kind: str = "asgi", *, name: str | None = None, tracer=None,
                        config: Config | None = None, **settings) -> BackgroundServer:
    """Start `app` on a free loopback port in the background and return the running server.

    `settings` are `Config` fields (e.g. `threads=4`, `timeout_keep_alive=1`); the port is
    0 (a free one) unless given.
    """
    config = (config or Config(port=0)).replace(**settings) if settings else (config or Config(port=0))
    return BackgroundServer(app, kind, config, tracer, name).start()


@contextlib.contextmanager
def server_errors(level: int = logging.WARNING):
    """Collect what the servers log on "asgi_lab.error" at `level` or above, as a list of
    `logging.LogRecord` filled while the block runs, and keep it out of stderr meanwhile:
    for a notebook cell or an exercise check that reports the server's errors its own way."""
    records: list[logging.LogRecord] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    logger = logging.getLogger("asgi_lab.error")
    handler, propagate = Collect(level), logger.propagate
    logger.addHandler(handler)
    logger.propagate = False
    try:
        yield records
    finally:
        logger.removeHandler(handler)
        logger.propagate = propagate


def refused(host: str, port: int) -> ServerStopped | None:
    """If a background server of this process listened at `host:port` and was stopped, the
    error a client should raise instead of its `ConnectionRefusedError`; else None."""
    with _running_lock:
        stopped = _stopped.get((host, port))
    if stopped is None:
        return None
    return ServerStopped(_stopped_message(*stopped))


def running_servers() -> list[BackgroundServer]:
    """Every background server started in this process and not yet stopped."""
    with _running_lock:
        return list(_running.values())


def stop_all() -> None:
    for server in running_servers():
        server.stop()


atexit.register(stop_all)
