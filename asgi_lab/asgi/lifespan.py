"""ASGI lifespan: tell the app when the server starts and stops (asgiref `specs/lifespan.rst`).

The app is called once with a `lifespan` scope and lives for as long as the server does:

    server                                 app
    receive() -> lifespan.startup      ──▶ open the database pool, fill scope["state"]
                 lifespan.startup.complete ◀── (or .failed with a message)
    ... the server serves requests; each request scope gets a copy of scope["state"] ...
    receive() -> lifespan.shutdown     ──▶ close the pool
                 lifespan.shutdown.complete ◀── (or .failed)

Modes: "on" requires the app to support lifespan; "auto" tolerates an app that raises on the
lifespan scope (many simple apps only know "http"), but logs the exception in one INFO line
(its traceback at DEBUG) so a real startup bug is not mistaken for "unsupported"; "off" never
calls the app with it.
"""

from __future__ import annotations

import asyncio
import logging

from .scope import ASGI_VERSION

logger = logging.getLogger("asgi_lab.error")


class LifespanFailure(RuntimeError):
    """The app reported lifespan.startup.failed (or failed in "on" mode): do not serve."""


class Lifespan:
    def __init__(self, app, mode: str = "auto", tracer=None, run_app=None) -> None:
        self.app = app
        self.run_app = run_app  # the server's `run_app` (None: a plain task, for tests)
        self.mode = mode
        self.tracer = tracer
        self.state: dict = {}
        self.supported = mode != "off"
        self.inbox: asyncio.Queue = asyncio.Queue()
        self.startup_done = asyncio.Event()
        self.shutdown_done = asyncio.Event()
        self.failure: str | None = None
        self.task: asyncio.Task | None = None

    async def startup(self) -> None:
        """Run the app's startup. Raises LifespanFailure if the app reports it failed."""
        if not self.supported:
            return
        scope = {"type": "lifespan", "asgi": ASGI_VERSION, "state": self.state}
        if self.run_app is not None:
            self.task = self.run_app(self.main(scope), name="lifespan", track=False)
        else:
            self.task = asyncio.get_running_loop().create_task(self.main(scope), name="lifespan")
        await self.inbox.put({"type": "lifespan.startup"})
        await self.startup_done.wait()
        if self.failure is not None:
            raise LifespanFailure(f"Application startup failed: {self.failure}")

    async def shutdown(self) -> None:
        """Run the app's shutdown and wait for it to finish."""
        if not self.supported or self.task is None:
            return
        await self.inbox.put({"type": "lifespan.shutdown"})
        try:
            await self.shutdown_done.wait()
        except asyncio.CancelledError:  # the server was told to stop at once
            self.task.cancel()
            raise
        if self.failure is not None:
            logger.error("Application shutdown failed: %s", self.failure)

    async def main(self, scope: dict) -> None:
        try:
            await self.app(scope, self.receive, self.send)
        except asyncio.CancelledError:
            raise  # a forced exit, not an app error: nothing to log
        except BaseException as exc:
            if not self.startup_done.is_set() and self.mode == "auto":
                # Not supported, most likely. Say so, with the exception, and serve anyway.
                self.supported = False
                # One INFO line naming the exception (Django: "Django can only handle ASGI/HTTP
                # connections, not lifespan."); its traceback only at DEBUG.
                logger.info("ASGI 'lifespan' protocol appears unsupported (the app raised %r); "
                            "serving without it", exc)
                logger.debug("The app's lifespan exception:", exc_info=exc)
            else:
                self.failure = self.failure or f"exception in lifespan: {exc!r}"
                logger.error("Exception in 'lifespan' protocol", exc_info=exc)
            if not isinstance(exc, Exception):
                raise
        else:
            if not self.startup_done.is_set() and self.mode == "on":
                self.failure = "the app returned without answering lifespan.startup"
        finally:
            self.startup_done.set()
            self.shutdown_done.set()

    async def receive(self) -> dict:
        message = await self.inbox.get()
        if self.tracer is not None:
            self.tracer.emit(0, "asgi", "receive", message)
        return message

    async def send(self, message: dict) -> None:
        if self.tracer is not None:
            self.tracer.emit(0, "asgi", "send", message)
        message_type = message["type"]
        if message_type == "lifespan.startup.complete":
            self.startup_done.set()
        elif message_type == "lifespan.startup.failed":
            self.failure = message.get("message", "") or "lifespan.startup.failed"
            self.startup_done.set()
        elif message_type == "lifespan.shutdown.complete":
            self.shutdown_done.set()
        elif message_type == "lifespan.shutdown.failed":
            self.failure = message.get("message", "") or "lifespan.shutdown.failed"
            self.shutdown_done.set()
        else:
            raise RuntimeError(f"Unexpected ASGI lifespan message {message_type!r}")
