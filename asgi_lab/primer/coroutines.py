"""`async def` and `await` on the same tiny loop: a coroutine is a task that yields.

A coroutine object has the methods the loop uses on a generator: `send(None)` runs it to
its next suspension point and returns what was yielded there; `close()` ends it. Where does
a coroutine yield? Inside whatever it awaits, in the end: PEP 492 defines `await` with "the
`yield from` implementation with an extra step of validating its argument", and an object
whose `__await__` is a generator is awaitable. `Wait` below is such an object: it yields
`("recv", sock)` and the like, exactly what a generator task yields, so `Loop` runs
`async def` tasks unchanged.

asyncio works the same way with other values: its `Future.__await__` yields the future
itself, the running `Task` receives it from `send()` and resumes the coroutine once the
future has a result.

`CoroutineServer` is `LoopServer` with `handle` and `reply` as coroutines: each `yield from`
became an `await`, and nothing else changed.
"""

from __future__ import annotations

import time

from .exchange import BadRequest, Exchange
from .loop_server import LoopServer
from .server import READ_SIZE


class Wait:
    """Awaitable: suspends the coroutine with one request to the loop, e.g. ("recv", sock)."""

    def __init__(self, what: str, arg) -> None:
        self.what, self.arg = what, arg

    def __await__(self):
        yield self.what, self.arg


async def recv(sock) -> bytes:
    await Wait("recv", sock)
    return sock.recv(READ_SIZE)


async def send_all(sock, data: bytes) -> None:
    view = memoryview(data)
    while view:
        await Wait("send", sock)
        view = view[sock.send(view):]


async def sleep(seconds: float) -> None:
    await Wait("sleep", seconds)


class CoroutineServer(LoopServer):
    """`LoopServer` whose connection tasks are `async def` coroutines."""

    label = "the same loop, async def tasks"

    async def handle(self, sock, client, accepted: float):
        with sock:
            try:
                answer = await self.reply(sock, Exchange())
                await send_all(sock, answer)
            except OSError as exc:
                self.errors.append(f"{client}: {type(exc).__name__}: {exc}")
                return
            self.record(client, accepted)

    async def reply(self, sock, exchange: Exchange):
        try:
            while not exchange.feed(await recv(sock)):
                pass
            seconds = exchange.work_seconds()
        except BadRequest as problem:
            return exchange.reject(problem)
        if exchange.path == "/block":
            time.sleep(seconds)  # the same mistake, in async clothes
        else:
            await sleep(seconds)
        return exchange.answer(seconds)
