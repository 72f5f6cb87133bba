"""The worker pool: N threads, and the queue of ready connections they take in turn.

A WSGI app blocks, so every request in progress needs a thread (see `server.py`). How many of
those threads should be *running* at once is a different question. In CPython the answer is
"as few as keep the GIL busy", and this module is built around that answer.

Why. Only one thread runs Python code at a time: the one holding the GIL. A thread lets go of
the GIL at every system call (each `accept`, `recv`, `send`, `close`) and whenever it blocks.
If another thread is waiting for the GIL, that one takes it, and the first one, back from its
system call, has to wait in turn. Each hand-off costs two context switches, and on a
multi-core machine it wakes another core. With eight workers all ready to run, nearly every
system call hands the GIL over: about nine context switches per hello-world request, and half
of the server's CPU time spent switching (measured with `perf`; see the README). A pool
that wakes a sleeping worker for every queued connection, as most pools do, gets *slower* on
a fast app as the number of threads grows.

So this pool wakes a sleeping worker only when one could use the GIL:

- A connection that arrives while every worker sleeps goes to one of them at once.
- Otherwise it waits in the queue, and a busy worker takes it when it finishes its request.
- While connections wait, the acceptor calls `check()` every `PATIENCE` seconds (1 ms). It
  looks at two things since the last look. How much CPU time did the whole process use? Less
  than `BUSY` of one core means the GIL sat unused part of that time: the busy workers are
  blocked (in a database call, `time.sleep`, a slow client, a Server-Sent Events stream...).
  And did any busy worker finish a request? None did means they are stuck on long requests,
  blocked or computing, and a short request should not wait behind them. In either case the
  waiting connections go to sleeping workers, as in any pool; and while the GIL has time to
  spare, `put()` wakes a worker at once, too.
- Otherwise the busy workers keep the GIL busy and get through the queue, and another
  thread could only fight them over it. A worker that finds the queue empty goes to sleep, so
  a pool woken up by a burst of slow requests shrinks back by itself.

An app that blocks still gets all N workers, within a millisecond or so; a fast app gets the
one or two it can use. The price: a connection that arrives while every busy worker is stuck
waits up to `PATIENCE` longer. And CPU work that runs without the GIL (NumPy, hashing big
buffers) counts as busy: an app of many short such requests gets fewer workers in parallel
than the machine has cores. The same holds, for all code, on free-threaded CPython (3.13t,
3.14t, PEP 703): there is no GIL to hand over, threads run Python in parallel on every core,
and this rule, tuned for one GIL, would hold back workers that could run; there the classic
pool (wake a worker for every waiting connection) is the right one.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable

logger = logging.getLogger("asgi_lab.error")

PATIENCE = 0.001
"""Seconds between two looks at the queue, while connections wait in it."""

BUSY = 0.9
"""The share of one core, in CPU time, at which the busy workers keep the GIL busy."""


class Worker:
    """One pool thread, and the lock it sleeps on when there is nothing to do."""

    __slots__ = ("thread", "wake_up", "connection")

    def __init__(self) -> None:
        self.thread: threading.Thread | None = None
        self.wake_up = threading.Lock()
        self.wake_up.acquire()   # held: acquiring it again puts this worker to sleep
        self.connection = None   # what the waker hands over (None: stop)


class WorkerPool:
    """`size` threads that call `serve(connection)` for every connection `put()` here."""

    def __init__(self, size: int, serve: Callable[[object], None], name: str = "wsgi-worker") -> None:
        self.serve = serve
        self.workers = [Worker() for _ in range(size)]
        for number, worker in enumerate(self.workers, 1):
            worker.thread = threading.Thread(target=self._run, args=(worker,), name=f"{name}-{number}",
                                             daemon=True)
        self._lock = threading.Lock()        # guards everything below
        self._waiting: deque = deque()       # ready connections, oldest first
        self._sleeping: list[Worker] = []    # the most recent sleeper is woken first
        self._awake = size                   # workers not asleep (each starts awake)
        self._finished = 0                   # requests finished by the workers, ever
        self._gil_to_spare = True            # what check() found at its last look
        self._last_look = (time.monotonic(), time.process_time(), 0)  # when, CPU, _finished
        self._hurry = False                  # shutting down: no more patience (hurry())
        self._stopping = False               # the threads end once the queue is empty (stop())

    @property
    def queued(self) -> int:
        """Connections waiting for a worker."""
        return len(self._waiting)

    def start(self) -> None:
        for worker in self.workers:
            worker.thread.start()

    # -- the acceptor's side -------------------------------------------------------------------

    def put(self, connection) -> None:
        """A connection has a request to answer. A sleeping worker gets it at once if every
        worker sleeps, or if the GIL had time to spare between the last two looks of
        `check()`; otherwise it waits in the queue for a busy worker to finish.

        After a quiet spell, the last look found the GIL idle: a burst of connections that
        ends the quiet wakes workers as in any pool. They go back to sleep as soon as they
        find the queue empty, and stay asleep while looks find the GIL busy."""
        with self._lock:
            if self._sleeping and (self._awake == 0 or self._gil_to_spare or self._hurry):
                self._hand(self._sleeping.pop(), connection)
            else:
                self._waiting.append(connection)

    def check(self, now: float) -> float | None:
        """(the acceptor, at every turn of its loop) At most every `PATIENCE` seconds, look
        at what happened since the last look: if the GIL had time to spare, or the busy
        workers finished nothing, give the waiting connections to sleeping workers.
        Returns how soon to call again: None while no connection waits for a sleeping
        worker, otherwise the time until the next look is due."""
        since, cpu_since, finished_since = self._last_look
        if now - since < PATIENCE:  # too soon to look
            return since + PATIENCE - now if self._waiting and self._sleeping else None
        cpu = time.process_time()
        self._last_look = (now, cpu, self._finished)
        self._gil_to_spare = cpu - cpu_since < BUSY * (now - since)
        stuck = self._finished == finished_since
        if (self._gil_to_spare or stuck) and self._waiting and self._sleeping:
            with self._lock:
                self._hand_out_waiting()
        return PATIENCE if self._waiting and self._sleeping else None

    def _hand(self, worker: Worker, connection) -> None:
        """(with the lock) Wake a sleeping worker with a connection to serve."""
        worker.connection = connection
        self._awake += 1
        worker.wake_up.release()

    def _hand_out_waiting(self) -> None:
        """(with the lock) Wake a sleeping worker for each waiting connection, oldest first."""
        while self._waiting and self._sleeping:
            self._hand(self._sleeping.pop(), self._waiting.popleft())

    # -- a worker's side ----------------------------------------------------------------------

    def _run(self, worker: Worker) -> None:
        while (connection := self._next(worker)) is not None:
            try:
                self.serve(connection)
            except BaseException as exc:  # `serve` handles its errors; this is a last resort
                logger.critical("%s: serving a connection failed", threading.current_thread().name,
                                exc_info=exc)

    def _next(self, worker: Worker):
        """The oldest waiting connection; if there is none, sleep until handed one."""
        with self._lock:
            self._finished += 1  # back for more: a request finished (or the thread just started)
            if self._waiting:
                return self._waiting.popleft()
            if self._stopping:
                return None
            self._awake -= 1
            self._sleeping.append(worker)
        worker.wake_up.acquire()
        connection, worker.connection = worker.connection, None
        return connection

    # -- stop ------------------------------------------------------------------------------------

    def hurry(self) -> None:
        """Shutting down: from now on, a connection put here goes to a sleeping worker (if
        any) at once; so do the ones already waiting."""
        with self._lock:
            self._hurry = True
            self._hand_out_waiting()

    def stop(self) -> None:
        """Let every worker finish what is queued, then end its thread (see `threads`)."""
        with self._lock:
            self._stopping = True
            while self._sleeping:
                worker = self._sleeping.pop()
                self._hand(worker, self._waiting.popleft() if self._waiting else None)

    @property
    def threads(self) -> list[threading.Thread]:
        return [worker.thread for worker in self.workers]
