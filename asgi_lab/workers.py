"""gunicorn worker classes: our servers inside gunicorn's process manager, for more cores.

    gunicorn -k asgi_lab.workers.ASGIWorker -w 2 -b 127.0.0.1:8000 myapp:app
    gunicorn -k asgi_lab.workers.WSGIWorker -w 2 --threads 8 myapp:wsgi_app

One Python process runs Python code on one core at a time (the GIL). gunicorn's *arbiter*
(the master process) binds the listening socket, forks N worker processes that all accept on
it, and manages them: it restarts one that dies or stops reporting, reloads the app on
`SIGHUP` (new workers first, then the old ones are stopped gracefully), and stops them all
on `SIGTERM`. A worker class is the part that serves: these run our ASGI server (one event
loop) or our threaded WSGI server on the socket the arbiter hands them.

What a worker owes the arbiter (gunicorn's `Worker` base class, "Design" in its docs):

- **heartbeat**: call `self.notify()` more often than `--timeout` seconds, or the arbiter
  kills the worker as stuck. Here a timer on the event loop (ASGI) or the main thread's wait
  loop (WSGI) does it, so a worker whose loop is blocked by the app stops notifying and gets
  restarted: the arbiter's way of noticing a blocked event loop.
- **signals**: `SIGTERM` = graceful (stop accepting, finish what is in flight for at most
  `--graceful-timeout` seconds); `SIGINT` / `SIGQUIT` = quick; `SIGUSR1` = reopen log files.
- **parent watch**: if the arbiter dies (`os.getppid()` changes), stop.
- **max requests**: after `--max-requests` (plus jitter) requests, stop gracefully; the
  arbiter starts a fresh worker.

Settings taken from gunicorn: `--keep-alive` (our `timeout_keep_alive`), `--graceful-timeout`,
`--threads` (WSGIWorker), `--forwarded-allow-ips` (our proxy headers, `proxy_headers.py`:
gunicorn's own default trusts 127.0.0.1 and ::1), access log on when `--access-logfile` is
given. Only one `--bind` address per worker class here: our servers listen on one socket.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
import threading
import time

from gunicorn.arbiter import Arbiter
from gunicorn.workers.base import Worker

from .config import Config
from .loader import LoadError, check_app
from .proxy_headers import ProxyHeadersMiddleware, WSGIProxyHeadersMiddleware


class _Base(Worker):
    """What both worker classes share: logging, settings, the one socket, the app check."""

    interface = "asgi"

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        # Our loggers write through gunicorn's handlers (its --error-logfile / --access-logfile).
        for name, gunicorn_logger in (("asgi_lab.error", self.log.error_log),
                                      ("asgi_lab.access", self.log.access_log)):
            ours = logging.getLogger(name)
            ours.handlers = list(gunicorn_logger.handlers)
            ours.setLevel(gunicorn_logger.level)
            ours.propagate = False
        self.requests_served = 0
        self.stopping_reason: str | None = None

    def config(self) -> Config:
        """Our `Config` from gunicorn's settings. The socket is gunicorn's (`-b HOST:PORT` or
        `-b unix:PATH`, which gunicorn creates and removes, so `uds` stays None here); TLS is
        ours, from gunicorn's `--certfile`, `--keyfile` (`cfg.is_ssl`): gunicorn's own workers
        wrap each socket themselves, so gunicorn hands us the listening socket unwrapped."""
        name = self.listening_socket().getsockname()
        host, port = name[:2] if isinstance(name, tuple) else (Config.host, 0)  # a Unix socket: a path
        tls = {}
        if self.cfg.is_ssl:
            options = self.cfg.ssl_options
            tls = {"ssl_certfile": options.get("certfile"), "ssl_keyfile": options.get("keyfile"),
                   "ssl_keyfile_password": options.get("keyfile_password")}
        return Config(host=host, port=port, timeout_keep_alive=float(self.cfg.keepalive),
                      timeout_graceful_shutdown=float(self.cfg.graceful_timeout),
                      access_log=bool(self.cfg.accesslog), threads=max(self.cfg.threads, 1), **tls)

    def listening_socket(self):
        """The real socket under gunicorn's wrapper (`gunicorn.sock.TCPSocket.sock`)."""
        return getattr(self.sockets[0], "sock", self.sockets[0])

    def load_wsgi(self) -> None:
        """gunicorn's name for loading the app (`self.wsgi`); here it must also speak our
        interface, or the worker exits with gunicorn's APP_LOAD_ERROR and the arbiter stops."""
        super().load_wsgi()
        try:
            check_app(self.wsgi, self.interface, "the app")
        except LoadError as exc:
            self.log.error("%s", exc)
            sys.exit(Arbiter.APP_LOAD_ERROR)
        if len(self.sockets) != 1:
            self.log.error("asgi_lab workers serve one listening socket; got %d --bind "
                           "addresses", len(self.sockets))
            sys.exit(Arbiter.APP_LOAD_ERROR)
        trusted = self.cfg.forwarded_allow_ips
        if trusted:
            wrap = ProxyHeadersMiddleware if self.interface == "asgi" else WSGIProxyHeadersMiddleware
            self.wsgi = wrap(self.wsgi, trusted)

    def init_signals(self) -> None:
        """Back to the defaults (the arbiter's handlers were inherited through fork); `run()`
        installs ours for SIGTERM, SIGINT and SIGQUIT. Two keep gunicorn's meaning: SIGUSR1
        reopens the log files, SIGABRT (the arbiter's first blow to a worker that stopped
        notifying) runs the `worker_abort` hook and exits."""
        for sig in self.SIGNALS:
            signal.signal(sig, signal.SIG_DFL)
        signal.signal(signal.SIGUSR1, self.handle_usr1)
        signal.signal(signal.SIGABRT, self.abort_now)
        signal.siginterrupt(signal.SIGUSR1, False)

    def abort_now(self, sig, frame) -> None:
        """SIGABRT: the worker stopped notifying, most likely an app blocking the event loop.
        Run the `worker_abort` hook, then exit at once with `os._exit`: gunicorn's own handler
        raises SystemExit, which here would land inside the blocked app and could be caught
        there (our server treats what an app raises as the app's error), leaving it running."""
        self.alive = False
        try:
            self.cfg.worker_abort(self)
        finally:
            os._exit(1)

    def heartbeat_interval(self) -> float:
        return max(min(self.timeout / 2, 1.0), 0.1) if self.timeout else 1.0

    def should_stop(self) -> str | None:
        """A reason to stop that the heartbeat finds: the arbiter died, or max requests."""
        if self.ppid != os.getppid():
            return f"parent changed ({self.ppid} -> {os.getppid()})"
        if self.requests_served >= self.max_requests:
            return f"served {self.requests_served} requests (--max-requests)"
        return None


class ASGIWorker(_Base):
    """Our ASGI server (`asgi/server.py`) on gunicorn's socket, one event loop per worker."""

    interface = "asgi"

    def run(self) -> None:
        code = asyncio.run(self.serve())
        if code:
            sys.exit(code)

    def count_requests(self, app):
        async def counted(scope, receive, send):
            if scope["type"] in ("http", "websocket"):
                self.requests_served += 1
            return await app(scope, receive, send)
        return counted

    async def serve(self) -> int:
        from .asgi.lifespan import LifespanFailure
        from .asgi.server import Server

        server = Server(self.count_requests(self.wsgi), self.config())
        loop = asyncio.get_running_loop()
        wake = asyncio.Event()
        requested: list[str] = []

        def on_signal(sig: int, quick: bool) -> None:
            requested.append("quick" if quick else "graceful")
            self.alive = False
            wake.set()

        loop.add_signal_handler(signal.SIGTERM, on_signal, signal.SIGTERM, False)
        loop.add_signal_handler(signal.SIGINT, on_signal, signal.SIGINT, True)
        loop.add_signal_handler(signal.SIGQUIT, on_signal, signal.SIGQUIT, True)
        try:
            await server.start(self.listening_socket())
        except LifespanFailure as exc:
            self.log.error("%s", exc)
            return Arbiter.WORKER_BOOT_ERROR
        self.log.info("asgi_lab ASGI worker serving (pid %d)", os.getpid())
        interval = self.heartbeat_interval()
        while self.alive:
            self.notify()
            reason = self.should_stop()
            if reason:
                self.log.info("Worker stopping: %s", reason)
                break
            try:
                await asyncio.wait_for(wake.wait(), interval)
            except asyncio.TimeoutError:
                pass
        server.request_shutdown()
        if "quick" in requested:
            server.request_shutdown()  # a second request: cut connections at once
        shutdown = asyncio.ensure_future(server.shutdown())
        while not shutdown.done():  # keep the heartbeat going through a long grace period
            self.notify()
            await asyncio.wait([shutdown], timeout=interval)
        shutdown.result()
        return 0


class WSGIWorker(_Base):
    """Our threaded WSGI server (`wsgi/server.py`) on gunicorn's socket, `--threads` workers."""

    interface = "wsgi"

    def count_requests(self, app):
        lock = threading.Lock()

        def counted(environ, start_response):
            with lock:
                self.requests_served += 1
            return app(environ, start_response)
        return counted

    def run(self) -> None:
        from .wsgi.server import WSGIServer

        server = WSGIServer(self.count_requests(self.wsgi), self.config())
        quick: list[bool] = []

        def on_signal(sig, frame) -> None:
            quick.append(sig != signal.SIGTERM)
            self.alive = False

        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT):
            signal.signal(sig, on_signal)
        signal.siginterrupt(signal.SIGTERM, False)
        server.start(self.listening_socket())
        self.log.info("asgi_lab WSGI worker serving with %d threads (pid %d)",
                      server.config.threads, os.getpid())
        interval = self.heartbeat_interval()
        while self.alive:
            self.notify()
            reason = self.should_stop()
            if reason:
                self.log.info("Worker stopping: %s", reason)
                break
            time.sleep(min(interval, 0.2))  # a signal handler runs between two sleeps
        done = threading.Event()
        threading.Thread(target=lambda: (server.shutdown(0.0 if any(quick) else None), done.set()),
                         name="wsgi-shutdown", daemon=True).start()
        while not done.wait(interval):  # heartbeat through the grace period
            self.notify()
