"""The ASGI server: listen, run lifespan, serve connections, shut down gracefully.

    server = Server(app, Config(port=0))
    await server.start()          # lifespan startup, then listen; server.url is ready
    ...
    await server.shutdown()       # stop accepting, let in-flight work finish, lifespan shutdown

`serve()` does both and waits in between for `request_shutdown()` (the CLI's signal handlers
call it); `wait_stopped()` returns once the shutdown is over. Each accepted connection gets an `HTTPProtocol` (see `asgi/http.py`); a WebSocket
upgrade hands the connection to `WebSocketProtocol` (see `asgi/websocket.py`).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import socket

from ..config import Config
from ..core import ResponseHeads, address, tick_interval, url
from ..http11 import bind_socket
from ..tls import server_ssl_context
from ..unix_socket import remove_socket_file
from .http import HTTPProtocol
from .lifespan import Lifespan
from .websocket import upgrade_to_websocket

logger = logging.getLogger("asgi_lab.error")


class Server:
    """An ASGI 3 server for HTTP/1.1 and WebSocket, with lifespan.

    Also the state every connection shares: `app`, `config`, `tracer`, the lifespan `state`
    dict copied into each scope, and the set of open `connections`.
    """

    def __init__(self, app, config: Config | None = None, tracer=None) -> None:
        self.app = app
        self.config = config or Config()
        self.tracer = tracer
        self.heads = ResponseHeads()  # the `date` header and the cache of checked response heads
        self.connections: set = set()
        self.tasks: set[asyncio.Task] = set()  # running app calls (asyncio keeps only weak refs)
        self.loop: asyncio.AbstractEventLoop | None = None
        self.clock = None  # the loop's time(), once started
        self.lifespan: Lifespan | None = None
        self.state: dict = {}
        self.address: tuple[str, int | None] | None = None  # (path, None) on a Unix socket
        # TLS (tls.py): asyncio makes the handshake; the scopes say https / wss.
        self.ssl_context = server_ssl_context(self.config)
        self.scheme = "https" if self.ssl_context is not None else "http"
        self.ws_scheme = "wss" if self.ssl_context is not None else "ws"
        self.websocket_handler = upgrade_to_websocket  # replaceable: None serves no WebSocket
        self._ids = itertools.count(1)
        self._listener: asyncio.base_events.Server | None = None
        self._housekeeping: asyncio.TimerHandle | None = None
        self._stop_requested: asyncio.Event | None = None
        self._stopped: asyncio.Event | None = None
        self._force_exit = False
        self._lifespan_shutdown: asyncio.Future | None = None

    @property
    def url(self) -> str:
        return url(self.address, self.scheme)

    def idle_connections(self) -> list:
        """The HTTP connections waiting for their next request (a snapshot): no request in
        progress, not yet closing. The same view as `WSGIServer.idle_connections()`."""
        return [connection for connection in list(self.connections)
                if type(connection) is HTTPProtocol and connection.cycle is None
                and not connection.transport.is_closing()]

    def new_connection_id(self) -> int:
        return next(self._ids)

    def run_app(self, call, finished=None, name: str | None = None, track: bool = True) -> asyncio.Task:
        """The one way this server runs an app call, for HTTP, WebSocket and lifespan alike:
        the coroutine `call` (the app's own, or a small wrapper) becomes a task. Tracked tasks
        (requests, sessions) are held in `tasks` (asyncio keeps only a weak reference) and
        waited for at shutdown; `finished(task)` runs when it ends and must drop it from
        `tasks` (one done-callback per request, not two: it costs a loop turn each).
        Lifespan's task is not tracked: it outlives the connections' shutdown."""
        task = self.loop.create_task(call, name=name)
        if track:
            self.tasks.add(task)
            task.add_done_callback(finished or self.tasks.discard)
        return task

    # -- start ---------------------------------------------------------------------------------

    async def start(self, sock: socket.socket | None = None) -> None:
        """Lifespan startup, then listen. Raises LifespanFailure if the app refuses to start."""
        self.loop = asyncio.get_running_loop()
        self.clock = self.loop.time  # the connections' deadline clock: one bound method, shared
        self._stop_requested = asyncio.Event()
        self._stopped = asyncio.Event()
        self.lifespan = Lifespan(self.app, self.config.lifespan, self.tracer, self.run_app)
        await self.lifespan.startup()
        self.state = self.lifespan.state
        sock = sock or bind_socket(self.config)
        tls = self.ssl_context
        self._listener = await self.loop.create_server(
            lambda: HTTPProtocol(self), sock=sock, backlog=2048, ssl=tls,
            # A client that has not finished its TLS handshake by then is cut off by asyncio.
            ssl_handshake_timeout=self.config.timeout_request_header if tls is not None else None)
        self.address = address(sock.getsockname())
        self._schedule_housekeeping()
        logger.debug("asgi_lab ASGI server listening on %s", self.url)

    def _schedule_housekeeping(self) -> None:
        """One timer for the whole server, not one per connection: every tick, each connection
        checks its own idle and slow-header deadlines. Cheap at 10,000 connections."""
        self._housekeeping = self.loop.call_later(tick_interval(self.config), self._tick)

    def _tick(self) -> None:
        self.check_deadlines()
        self._schedule_housekeeping()

    def check_deadlines(self, now: float | None = None) -> None:
        """(on the loop) One sweep of every connection's deadlines, as the housekeeping tick
        makes (`ConnectionCore.past_deadline`: a connection is closed at the second sweep
        that finds it past its deadline). Public, so a test can sweep when it chooses, and
        pass a later `now` (the loop's clock, `loop.time()`) instead of waiting for it."""
        if now is None:
            now = self.loop.time()
        for connection in list(self.connections):
            connection.check_timeouts(now)

    # -- run until told to stop ------------------------------------------------------------------

    async def serve(self, sock: socket.socket | None = None) -> None:
        """Start (unless `start()` already ran), serve until `request_shutdown()`, then shut
        down gracefully. The whole life of a server, for the CLI and `background.py`."""
        if self._listener is None:
            await self.start(sock)
        await self._stop_requested.wait()
        await self.shutdown()

    async def wait_stopped(self) -> None:
        """Return once `shutdown()` has finished (lifespan shutdown included)."""
        await self._stopped.wait()

    def request_shutdown(self) -> None:
        """Ask `serve()` to shut down gracefully. A second request forces it to hurry."""
        if self._stop_requested.is_set():
            self._force_exit = True
            for connection in list(self.connections):
                connection.transport.abort()
            if self._lifespan_shutdown is not None:
                self._lifespan_shutdown.cancel()  # the app's own shutdown is taking too long
        self._stop_requested.set()

    # -- stop ----------------------------------------------------------------------------------

    async def shutdown(self) -> None:
        """Graceful shutdown, in the order a client would want it:

        1. stop accepting new connections;
        2. close idle keep-alive connections; let responses in flight finish (a download
           completes), then close; tell long-lived ones that we are going away: a `receive()`
           after the request body returns `http.disconnect` (an SSE stream or long-poll that
           listens ends at once), a WebSocket gets Close 1001;
        3. after `timeout_graceful_shutdown`, close whatever is still open;
        4. run the app's lifespan shutdown.
        """
        if self._listener is None:
            if self._stopped is not None:
                self._stopped.set()
            return
        self._listener.close()
        remove_socket_file(self.config.uds)  # ours, if we listened on a Unix socket
        if self._housekeeping is not None:
            self._housekeeping.cancel()
        for connection in list(self.connections):
            connection.shutdown()

        deadline = self.loop.time() + self.config.timeout_graceful_shutdown
        while self.connections and self.loop.time() < deadline and not self._force_exit:
            await asyncio.sleep(0.02)
        for connection in list(self.connections):
            connection.transport.abort()
        await asyncio.sleep(0)  # let aborted connections deliver their disconnect to the apps
        if self.tasks:  # apps still running after the grace period (and their disconnect)
            # A moment for their `finally:` blocks, then cancel: the grace period is over.
            await asyncio.wait(self.tasks, timeout=0 if self._force_exit else 0.25)
            for task in self.tasks:
                task.cancel()
        self._listener = None
        if not self._force_exit:
            self._lifespan_shutdown = asyncio.ensure_future(self.lifespan.shutdown())
            try:
                await self._lifespan_shutdown
            except asyncio.CancelledError:
                if not self._force_exit:
                    raise  # cancelled from outside, not by a second Ctrl-C
                logger.warning("Lifespan shutdown cut short by a second interrupt")
        self._stopped.set()
        logger.info("asgi_lab ASGI server stopped")
