"""A tiny event loop: generator tasks, one selector, a heap of timers, one thread.

A *task* is a generator. It runs until it has to wait, and then yields what it waits for:

    yield "recv", sock      # resume me when `sock` has bytes to read (or, on a listening
                            # socket, a connection to accept)
    yield "send", sock      # resume me when `sock` can take more bytes
    yield "sleep", seconds  # resume me after `seconds`

The loop parks the task until then: a socket goes into the selector, with the task as its
`data` (`selectors` docs: `register(fileobj, events, data)`); a timer goes onto a heap ordered
by deadline. Then the loop asks the selector which sockets are ready, waiting at most until
the next deadline (`select(timeout)`), and resumes every task whose wait is over with
`task.send(None)`. `DefaultSelector` is "the most efficient implementation available on the
current platform" (epoll on Linux, kqueue on macOS).

One task runs at a time, on one thread, until its next `yield`. Waiting costs a task nothing
but a place in the selector or on the heap, so one thread can keep thousands of clients
waiting. The flip side: a task that does something slow *without* yielding (a `time.sleep`, a
blocking library call, a long computation) holds up every other task, the loop included.

`recv`, `send_all` and `sleep` below wrap those yields, so that a task reads like blocking
code: `data = yield from recv(sock)`. asyncio is built from the same parts, grown up: a
selector, a heap of timers, and tasks that are coroutines suspended at `await` (see
`coroutines.py`).
"""

from __future__ import annotations

import heapq
import itertools
import selectors
import threading
import time
from collections import deque

from .server import READ_SIZE, STOP_CHECK


class Loop:
    """Run generator tasks until told to stop."""

    def __init__(self) -> None:
        self.selector = selectors.DefaultSelector()
        self.ready: deque = deque()  # tasks to resume now
        self.timers: list = []       # a heap of (deadline, tie-breaker, task)
        self.tasks: set = set()      # every task not finished yet
        self.errors: list[str] = []  # tasks that raised: data, not a log
        self._tie_breakers = itertools.count()

    def spawn(self, task) -> None:
        """Add a new task (a generator, not yet started); it runs at the next turn."""
        self.tasks.add(task)
        self.ready.append(task)

    def run(self, stop: threading.Event) -> None:
        """Turn until `stop` is set; then close every task left, which closes its sockets."""
        try:
            while not stop.is_set():
                self.run_ready()
                self.wait()
        finally:
            self.close()

    def run_ready(self) -> None:
        """Resume each task that is ready now (those woken meanwhile go at the next turn)."""
        for _ in range(len(self.ready)):
            self.step(self.ready.popleft())

    def step(self, task) -> None:
        """Run `task` until its next `yield`, and park it on what it waits for."""
        try:
            what, arg = task.send(None)
            self.park(task, what, arg)
        except StopIteration:  # the task returned: it is done
            self.tasks.discard(task)
        except Exception as exc:  # a task that fails must not take the loop with it
            self.fail(task, f"{type(exc).__name__}: {exc}")

    def park(self, task, what: str, arg) -> None:
        """Remember what `task` waits for: a socket in the selector, or a timer on the heap."""
        if what == "recv":
            self.selector.register(arg, selectors.EVENT_READ, task)
        elif what == "send":
            self.selector.register(arg, selectors.EVENT_WRITE, task)
        elif what == "sleep":
            deadline = time.monotonic() + arg
            heapq.heappush(self.timers, (deadline, next(self._tie_breakers), task))
        else:
            raise ValueError(f"yielded {what!r}; a task yields 'recv', 'send' or 'sleep'")

    def wait(self) -> None:
        """Wait for a socket to be ready or a timer to expire; move those tasks to `ready`."""
        timeout = 0 if self.ready else STOP_CHECK  # look at the stop flag now and then
        if self.timers:
            timeout = min(timeout, max(0.0, self.timers[0][0] - time.monotonic()))
        if self.selector.get_map():
            for key, _ in self.selector.select(timeout):
                self.selector.unregister(key.fileobj)
                self.ready.append(key.data)
        else:
            time.sleep(timeout)  # no socket to watch (select() on Windows needs one)
        now = time.monotonic()
        while self.timers and self.timers[0][0] <= now:
            self.ready.append(heapq.heappop(self.timers)[2])

    def fail(self, task, why: str) -> None:
        self.errors.append(f"{getattr(task, '__name__', task)}: {why}")
        self.tasks.discard(task)
        task.close()

    def close(self) -> None:
        self.selector.close()
        for task in list(self.tasks):
            task.close()  # GeneratorExit at its yield: its `with sock:` closes the socket
        self.tasks.clear()


def recv(sock) -> bytes:
    """Wait until `sock` has bytes, then read them (`b""`: the peer closed its side)."""
    yield "recv", sock
    return sock.recv(READ_SIZE)


def send_all(sock, data: bytes) -> None:
    """Send every byte, waiting whenever the socket's buffer is full. A non-blocking
    `send()` takes what fits and says how much (socket docs: `socket.send`)."""
    view = memoryview(data)
    while view:
        yield "send", sock
        view = view[sock.send(view):]


def sleep(seconds: float) -> None:
    """Wait `seconds` without holding up anyone: the loop runs other tasks meanwhile."""
    yield "sleep", seconds
