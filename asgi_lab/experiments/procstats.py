"""What a server process costs, sampled every 100 ms: memory, threads, CPU time.

    with ProcessSampler(pid) as sampler:
        ...                             # put load on the server
    sampler.samples                     # [Sample(t, rss, vms, threads, cpu), ...]

A sampler thread asks psutil about the process *and its children* (gunicorn serves from a
worker process forked by its master) and sums them:

- `rss`: resident set size, the memory really in RAM (bytes). Threads show up here through
  the pages of their stacks that they touched, and Python objects through the heap.
- `vms`: virtual size (bytes). Every thread reserves a stack (8 MiB by default on Linux) of
  address space, so 1000 threads add about 8 GB of VMS while adding far less RSS: address
  space is not memory, but it is the first limit a 32-bit or containerised process hits.
- `threads`: the number of OS threads.
- `cpu`: user + system CPU seconds used so far.
"""

from __future__ import annotations

import threading
import time
from typing import NamedTuple

import psutil

INTERVAL = 0.1


class Sample(NamedTuple):
    t: float        # seconds since the sampler started
    rss: int        # bytes
    vms: int        # bytes
    threads: int
    cpu: float      # user + system seconds since the process started


def sample_tree(process: psutil.Process) -> tuple[int, int, int, float]:
    """(rss, vms, threads, cpu seconds) of a process and its descendants, summed."""
    rss = vms = threads = 0
    cpu = 0.0
    try:
        members = [process, *process.children(recursive=True)]
    except psutil.NoSuchProcess:
        members = []
    for member in members:
        try:
            with member.oneshot():
                memory = member.memory_info()
                times = member.cpu_times()
                rss += memory.rss
                vms += memory.vms
                threads += member.num_threads()
                cpu += times.user + times.system
        except (psutil.NoSuchProcess, psutil.ZombieProcess, psutil.AccessDenied):
            continue  # a child that just exited
    return rss, vms, threads, cpu


class ProcessSampler:
    """Sample a process (tree) every `interval` seconds on a thread, until `stop()`."""

    def __init__(self, pid: int, interval: float = INTERVAL) -> None:
        self.process = psutil.Process(pid)
        self.interval = interval
        self.samples: list[Sample] = []
        self.marks: dict[str, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"sampler-{pid}", daemon=True)
        self._started = 0.0
        self._wall_offset = 0.0

    def start(self) -> "ProcessSampler":
        self._started = time.monotonic()
        self._wall_offset = time.time() - time.monotonic()  # wall clock -> monotonic
        self.sample()
        self._thread.start()
        return self

    def sample(self) -> Sample | None:
        """Take one sample now (also called by the thread)."""
        rss, vms, threads, cpu = sample_tree(self.process)
        if threads == 0:
            return None  # the process is gone
        sample = Sample(round(time.monotonic() - self._started, 3), rss, vms, threads, round(cpu, 3))
        self.samples.append(sample)
        return sample

    def mark(self, name: str, wall_time: float | None = None) -> float:
        """Remember this moment (e.g. "load start"), in the samples' time base; or the moment
        `wall_time` (a `time.time()` taken elsewhere, e.g. by the load generator)."""
        now = time.monotonic() if wall_time is None else wall_time - self._wall_offset
        self.marks[name] = round(now - self._started, 3)
        return self.marks[name]

    def _run(self) -> None:
        next_time = time.monotonic()
        while not self._stop.is_set():
            next_time += self.interval
            self._stop.wait(max(0.0, next_time - time.monotonic()))
            if not self._stop.is_set() and self.sample() is None:
                return

    def stop(self) -> list[Sample]:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()
        return self.samples

    def __enter__(self) -> "ProcessSampler":
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()

    # -- summaries --------------------------------------------------------------------------

    def between(self, start: str | None = None, end: str | None = None) -> list[Sample]:
        """The samples taken between two marks (None: the first / the last sample)."""
        low = self.marks[start] if start else float("-inf")
        high = self.marks[end] if end else float("inf")
        return [s for s in self.samples if low <= s.t <= high]
