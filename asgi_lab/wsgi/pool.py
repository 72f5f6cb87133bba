"""The worker pool: N threads, the queue of ready connections, and how many threads run.

A WSGI app blocks, so every request in progress needs a thread (see `server.py`). How many of
those threads should be *running* at once is a different question. In CPython the answer is
"as few as keep the GIL busy", and this module is built around that answer.

Why. Only one thread runs Python code at a time: the one holding the GIL. A thread lets go of
the GIL at every system call (each `accept`, `recv`, `send`, `close`) and whenever it blocks.
If another thread is waiting for the GIL, that one takes it, and the first one, back from its
system call, has to wait in turn. Each hand-off costs two context switches, and on a
multi-core machine it wakes another core. With eight workers all ready to run, nearly every
system call hands the GIL over: about nine context switches per hello-world request, and half
of the server's CPU time spent switching (measured with `perf`; `benchmarks/wsgi_per_request.py`
counts the switches and system calls per request, ours beside waitress's). A pool
that wakes a sleeping worker for every queued connection, as most pools do, gets *slower* on
a fast app as the number of threads grows. So does a pool whose workers are woken, one
hand-off per request, by another thread that watches the sockets.

So in this pool:

- **A worker that runs out of work looks for more itself.** Before going to sleep, it asks
  the acceptor's watch list, without waiting, for connections whose next request has arrived
  (`find_ready`, see `server.py`). Under load a worker goes from one request to the next
  without a hand-off between threads: no context switch, no GIL changing hands.
- **The pool wants `wanted` workers awake**, and `put()` wakes a sleeping one only while
  fewer are awake. A worker back for more goes to sleep when more are awake than wanted, even
  if connections wait: the others get through them.
- **While a worker is awake, the acceptor looks** (`look()`) every `PATIENCE` seconds, or
  less often while the workers make steady progress (up to `MAX_PATIENCE`: `next_patience`;
  each look takes the GIL from the workers), and sets `wanted` anew with `workers_wanted()`,
  a pure function of what it saw: how many workers are
  *stuck* (still inside the request they were in at the last look: blocked in a database call,
  `time.sleep`, a slow client, a Server-Sent Events stream, or computing for long) and whether
  the GIL had time to spare. One worker that makes progress, plus one for each stuck one;
  every worker while the GIL has time to spare (the busy ones are blocked most of the time,
  in calls shorter than a look); and, when every awake worker is stuck, a worker for every
  connection waiting. Those connections are found by the look itself (`find_ready`), since
  no awake worker is free to look; until the next look, `put()` too wakes a sleeping worker
  for each connection.

"The GIL had time to spare" is measured: the process used less than `BUSY` of one core's CPU
time since the last look. CPU time alone cannot tell "blocked" from "preempted": on a machine
busy with other work, the kernel takes the core away from our threads, and the process uses
less CPU though the GIL is never free. So a look that finds the process was preempted
(involuntary context switches since the last look, `getrusage`) concludes nothing about spare
time; stuck workers are still seen. Without that guard, a loaded machine looks like a blocked
app, and the pool wakes every worker to fight over the GIL.

An app that blocks gets all N workers within a look or two, on a quiet machine; on one busy
with other processes the guard above cannot tell its short blocking calls from preemption,
and it may get fewer (`docs/design.md`, known limits). A fast app gets the one worker it can
use. The price: a connection that arrives while every awake worker is stuck waits for the
next look, up to `MAX_PATIENCE` after a long stretch of steady progress. CPU work that runs
without the GIL (NumPy, hashing big buffers) counts as busy: an app of many short such
requests gets fewer workers in parallel than the machine has cores. The same holds, for all
code, on free-threaded CPython (3.13t, 3.14t, PEP 703): there is no GIL to hand over,
threads run Python in parallel on every core, and this rule, tuned for one GIL, would hold
back workers that could run; there the classic pool (wake a worker for every waiting
connection) is the right one.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable

try:
    import resource  # Unix
except ImportError:  # Windows: CPU time only, no count of preemptions
    resource = None

logger = logging.getLogger("asgi_lab.error")

PATIENCE = 0.001
"""Seconds between two looks at the workers, while one is stuck or the GIL has time to spare."""

MAX_PATIENCE = 0.016
"""Seconds between two looks at the workers, at most, while they make progress."""

BUSY = 0.9
"""The share of one core, in CPU time, at which the GIL counts as busy."""


def workers_wanted(size: int, awake: int, stuck: int, waiting: int, gil_to_spare: bool) -> int:
    """How many of the pool's `size` workers should be awake, from one look (see the module
    docstring): `awake` workers were awake, `stuck` of them inside the same request as at the
    last look, `waiting` connections wait for a worker, and the GIL had time to spare or not.

    A pure function of those numbers, so that tests can try any situation; `look()` measures
    them. The result is at least 1 and at most `size`."""
    if gil_to_spare:
        return size
    if stuck >= awake:  # nobody is making progress: a worker for every connection waiting
        return max(1, min(size, awake + waiting))
    return min(size, stuck + 1)


def next_patience(patience: float, concern: bool) -> float:
    """Seconds until the next look: `PATIENCE` after a look that found connections waiting
    while the GIL had time to spare or a worker was stuck and another slept (`concern`);
    otherwise twice as long as last time, up to `MAX_PATIENCE` (SSE streams that hold
    their workers for minutes are looked at 60 times a second). Each look wakes the
    acceptor, which takes the GIL from the workers."""
    return PATIENCE if concern else min(2 * patience, MAX_PATIENCE)


def gil_had_time_to_spare(seconds: float, cpu_seconds: float, preempted: int) -> bool:
    """Since the last look, `seconds` ago: did the process use less than `BUSY` of a core,
    without having been preempted (`preempted` involuntary context switches)?"""
    return preempted == 0 and cpu_seconds < BUSY * seconds


def cpu_and_preemptions() -> tuple[float, int]:
    """The process's CPU seconds so far and how often the kernel preempted one of its threads."""
    if resource is None:
        return time.process_time(), 0
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime, usage.ru_nivcsw


class Worker:
    """One pool thread, the lock it sleeps on when there is nothing to do, and what a look
    needs to know: is it inside a request, which one (a count), and which one at the last look."""

    __slots__ = ("thread", "wake_up", "connection", "busy", "started", "seen")

    def __init__(self) -> None:
        self.thread: threading.Thread | None = None
        self.wake_up = threading.Lock()
        self.wake_up.acquire()   # held: acquiring it again puts this worker to sleep
        self.connection = None   # what the waker hands over (None: stop)
        self.busy = False        # serving a connection
        self.started = 0         # connections it has started serving, ever
        self.seen = -1           # `started` at the last look


class WorkerPool:
    """`size` threads that call `serve(connection)` for every connection `put()` here, or
    returned by `find_ready()` (connections whose request has arrived: see `server.py`).
    The acceptor calls `look(now)` as often as it asks (see the module docstring)."""

    def __init__(self, size: int, serve: Callable[[object], None],
                 find_ready: Callable[[], list] = list, name: str = "wsgi-worker",
                 measure: Callable[[], tuple[float, int]] = cpu_and_preemptions) -> None:
        self.serve = serve
        self.find_ready = find_ready
        self.measure = measure  # (CPU seconds, preemptions) so far; tests pass made-up numbers
        self.size = size
        self.workers = [Worker() for _ in range(size)]
        for number, worker in enumerate(self.workers, 1):
            worker.thread = threading.Thread(target=self._run, args=(worker,), name=f"{name}-{number}",
                                             daemon=True)
        self._lock = threading.Lock()        # guards everything below
        self._waiting: deque = deque()       # ready connections, oldest first
        self._sleeping: list[Worker] = []    # the most recent sleeper is woken first
        self.awake = size                    # workers not asleep (each starts awake)
        self.wanted = 1                      # how many should be awake (see `look`)
        self.all_asleep = threading.Event()  # set while every worker sleeps (the acceptor waits on it)
        self.all_stuck = False               # every awake worker was stuck at the last look, and still is
        self.patience = PATIENCE             # seconds from one look to the next
        self._woken_from_all_asleep = False  # since the last look (see `look`)
        self._last_look = (time.monotonic(), *measure())  # when, CPU, preemptions
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
        """A connection has a request to answer: a sleeping worker gets it at once if fewer
        than `wanted` are awake, or if the last look found every awake worker stuck;
        otherwise it waits in the queue for an awake one."""
        with self._lock:
            if self._sleeping and (self.awake < self.wanted or self.all_stuck or self._hurry):
                self._hand(self._sleeping.pop(), connection)
            else:
                self._waiting.append(connection)

    def look(self, now: float) -> float | None:
        """(the acceptor, at every turn of its loop) Once `patience` seconds have passed since
        the last look, look at the workers and set `wanted` (`workers_wanted`); wake
        sleeping workers for the connections waiting, up to that number. Returns how soon to
        look again: None while a look could change nothing (`_worth_a_look`)."""
        if not self._worth_a_look():
            return None
        since, cpu_since, preempted_since = self._last_look
        if now - since < self.patience:  # too soon to look
            return since + self.patience - now
        cpu, preempted = self.measure()
        self._last_look = (now, cpu, preempted)
        if self._woken_from_all_asleep:  # the interval began while all slept: it tells nothing
            self._woken_from_all_asleep = False
            spare = False
        else:
            spare = gil_had_time_to_spare(now - since, cpu - cpu_since, preempted - preempted_since)
        with self._lock:
            awake = self.awake
            stuck = 0
            for worker in self.workers:
                if worker.busy and worker.started == worker.seen:
                    stuck += 1
                worker.seen = worker.started
            self.all_stuck = stuck >= awake
        found = []
        if self.all_stuck and awake > 0 and self._sleeping:
            # Nobody awake is free to look for the connections whose request has arrived.
            found = self.find_ready()
        with self._lock:
            waiting = bool(found or self._waiting)
            concern = waiting and (spare or (stuck > 0 and bool(self._sleeping)))
            self._waiting.extend(found)
            self.wanted = workers_wanted(self.size, awake, stuck, len(self._waiting), spare)
            while self._waiting and self._sleeping and self.awake < self.wanted:
                self._hand(self._sleeping.pop(), self._waiting.popleft())
        self.patience = next_patience(self.patience, concern)
        return self.patience if self._worth_a_look() else None

    @property
    def looking(self) -> bool:
        """Will an awake worker look at the watch list soon? (As far as the last look knows.)"""
        return self.awake > 0 and not self.all_stuck

    def _worth_a_look(self) -> bool:
        """Could a look change anything? Not while every worker sleeps (the acceptor waits in
        select() then, and the next worker woken is the first to look); nor while every awake
        worker is stuck and nothing waits (the acceptor selects, and `put()` wakes a worker
        for whatever arrives: SSE streams that hold workers for minutes cost no looks)."""
        return self.awake > 0 and (not self.all_stuck or bool(self._waiting))

    def _hand(self, worker: Worker, connection) -> None:
        """(with the lock) Wake a sleeping worker with a connection to serve."""
        worker.connection = connection
        if self.awake == 0:
            self.all_asleep.clear()
            self._woken_from_all_asleep = True
            self.patience = PATIENCE
        self.awake += 1
        worker.wake_up.release()

    def _hand_out_waiting(self) -> None:
        """(with the lock) Wake a sleeping worker for each waiting connection, oldest first."""
        while self._waiting and self._sleeping:
            self._hand(self._sleeping.pop(), self._waiting.popleft())

    # -- a worker's side ----------------------------------------------------------------------

    def _run(self, worker: Worker) -> None:
        while (connection := self._next(worker)) is not None:
            worker.started += 1
            worker.busy = True
            try:
                self.serve(connection)
            except BaseException as exc:  # `serve` handles its errors; this is a last resort
                logger.critical("%s: serving a connection failed", threading.current_thread().name,
                                exc_info=exc)
            worker.busy = False

    def _next(self, worker: Worker):
        """The next connection to serve: the oldest waiting one, or one `find_ready()`
        finds; if there is none, or more workers are awake than wanted, sleep until handed one."""
        with self._lock:
            self.all_stuck = False  # this one is not (any more)
            if self.awake <= self.wanted or self._stopping:
                if self._waiting:
                    return self._waiting.popleft()
                look = not self._stopping
            else:
                look = False  # one too many awake: leave the queue to the others
        if look:
            found = self.find_ready()  # outside the lock: a system call
            if found:
                with self._lock:
                    self._waiting.extend(found[1:])
                    while self._waiting and self._sleeping and self.awake < self.wanted:
                        self._hand(self._sleeping.pop(), self._waiting.popleft())
                return found[0]
        with self._lock:
            if self._waiting and (self.awake <= self.wanted or self._stopping):
                return self._waiting.popleft()  # put() while we looked
            if self._stopping:
                return None
            self.awake -= 1
            self._sleeping.append(worker)
            if self.awake == 0:
                self.all_asleep.set()
        worker.wake_up.acquire()
        connection, worker.connection = worker.connection, None
        return connection

    # -- stop ------------------------------------------------------------------------------------

    def hurry(self) -> None:
        """Shutting down: from now on, a connection put here goes to a sleeping worker (if
        any) at once; so do the ones already waiting."""
        with self._lock:
            self._hurry = True
            self.wanted = self.size
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
