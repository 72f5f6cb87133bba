"""What a server process costs, sampled every 100 ms: memory, threads, CPU time; and where
a threaded process's address space goes (`thread_address_space`).

    with ProcessSampler(pid) as sampler:
        ...                             # put load on the server
    sampler.samples                     # [Sample(t, rss, vms, threads, cpu), ...]

A sampler thread asks psutil about the process *and its children* (gunicorn serves from a
worker process forked by its master) and sums them:

- `rss`: resident set size, the memory really in RAM (bytes). Threads show up here through
  the pages of their stacks that they touched, and Python objects through the heap.
- `vms`: virtual size (bytes): address space *reserved*, touched or not. Every thread
  reserves a stack (8 MiB by default on Linux, `ulimit -s`), and glibc gives threads extra
  malloc arenas of 64 MiB each (up to 8 per core), so 1000 threads add about 9 GB of VMS
  while adding far less RSS. Address space is not memory, but it is a limit too: of 32-bit
  processes, of `ulimit -v`, of overcommit policies. `thread_address_space()` below splits it.
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


# -- where the address space goes ---------------------------------------------------------------

ARENA_RESERVE = 64 * 2**20
"""glibc reserves each extra malloc arena as one 64 MiB-aligned block of 64 MiB (on 64-bit)."""

IDLE_THREADS_CHILD = """
import sys, threading
stop = threading.Event()
def serve_one_client():
    buffer = bytearray(4096)   # a malloc on this thread, as reading a request does
    stop.wait()
for _ in range(int(sys.argv[1])):
    threading.Thread(target=serve_one_client, daemon=True).start()
print("ready", flush=True)
sys.stdin.read()               # until the parent closes our stdin
"""

PARTS = ("thread stacks", "malloc arenas", "main heap (brk)", "files (python, libraries)",
         "other anonymous")


def read_mappings(pid: int) -> list[dict]:
    """The process's memory mappings from `/proc/<pid>/smaps`: start, end, perms, path, rss."""
    mappings: list[dict] = []
    with open(f"/proc/{pid}/smaps") as f:
        for line in f:
            fields = line.split()
            if "-" in fields[0] and len(fields) >= 5 and ":" in fields[3]:
                start, end = (int(x, 16) for x in fields[0].split("-"))
                mappings.append({"start": start, "end": end, "perms": fields[1],
                                 "path": fields[5] if len(fields) > 5 else "", "rss": 0})
            elif fields[0] == "Rss:":
                mappings[-1]["rss"] = int(fields[1]) * 1024
    return mappings


def classify(mappings: list[dict]) -> dict[str, dict]:
    """Split the address space into PARTS: {part: {"mappings", "size", "rss"}} in bytes.

    - a *thread stack* is an anonymous read-write mapping right above a small inaccessible
      one, its guard page (glibc's pthread stacks; the main thread's is `[stack]`);
    - a *malloc arena* starts at a 64 MiB boundary: a little read-write heap, then the rest
      of its 64 MiB reserved with no access (glibc's `new_heap`); a thread's first malloc
      gets an arena of its own until there are 8 per core (`MALLOC_ARENA_MAX` lowers that);
    - `[heap]` is the main arena, grown with brk; files are the interpreter and libraries.
    """
    parts = {name: {"mappings": 0, "size": 0, "rss": 0} for name in PARTS}
    ordered = sorted(mappings, key=lambda m: m["start"])
    arenas = arena_mappings(ordered)
    stacks: set[int] = set()
    for i in range(len(ordered) - 1):  # a guard page, then the stack right above it
        if (is_guard(ordered, i) and i not in arenas and i + 1 not in arenas
                and ordered[i + 1]["perms"].startswith("rw")):
            stacks.update((i, i + 1))
    for i, m in enumerate(ordered):
        if m["path"] == "[heap]":
            part = "main heap (brk)"
        elif m["path"] == "[stack]" or i in stacks:
            part = "thread stacks"
        elif i in arenas:
            part = "malloc arenas"
        elif m["path"] == "" or m["path"].startswith("["):
            part = "other anonymous"
        else:
            part = "files (python, libraries)"
        parts[part]["mappings"] += 1
        parts[part]["size"] += m["end"] - m["start"]
        parts[part]["rss"] += m["rss"]
    parts["thread stacks"]["mappings"] -= len(stacks) // 2  # a stack and its guard: one
    return parts


def is_guard(ordered: list[dict], i: int) -> bool:
    """A small inaccessible anonymous mapping directly below another anonymous one."""
    m = ordered[i]
    return (m["path"] == "" and m["perms"].startswith("---") and m["end"] - m["start"] <= 65536
            and i + 1 < len(ordered) and ordered[i + 1]["path"] == ""
            and ordered[i + 1]["start"] == m["end"])


def arena_mappings(ordered: list[dict]) -> set[int]:
    """Indexes of the mappings that make up glibc malloc arenas: a read-write mapping at a
    64 MiB boundary and the anonymous mappings right after it, adding up to exactly 64 MiB."""
    found: set[int] = set()
    for i, m in enumerate(ordered):
        if m["path"] or not m["perms"].startswith("rw") or m["start"] % ARENA_RESERVE:
            continue
        j, end = i, m["end"]
        while (end < m["start"] + ARENA_RESERVE and j + 1 < len(ordered)
               and ordered[j + 1]["path"] == "" and ordered[j + 1]["start"] == end):
            j += 1
            end = ordered[j]["end"]
        if end == m["start"] + ARENA_RESERVE:
            found.update(range(i, j + 1))
    return found


def thread_address_space(threads: int = 200, arena_max: int | None = None) -> dict:
    """Start `threads` idle threads in a fresh Python process (each mallocs a little, as a
    server thread does) and split its virtual size and RSS into PARTS.

    `arena_max` sets `MALLOC_ARENA_MAX` for that process (None: glibc's default, 8 per core).
    Returns {"threads", "arena_max", "vms", "rss", "parts"} in bytes.
    """
    import os
    import subprocess
    import sys

    env = dict(os.environ)
    env.pop("MALLOC_ARENA_MAX", None)
    if arena_max is not None:
        env["MALLOC_ARENA_MAX"] = str(arena_max)
    child = subprocess.Popen([sys.executable, "-c", IDLE_THREADS_CHILD, str(threads)],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
    try:
        if child.stdout.readline().strip() != "ready":
            raise RuntimeError("the thread process did not start")
        parts = classify(read_mappings(child.pid))
        memory = psutil.Process(child.pid).memory_info()
    finally:
        child.stdin.close()
        child.wait(30)
    return {"threads": threads, "arena_max": arena_max, "vms": memory.vms, "rss": memory.rss,
            "parts": parts}


def address_space_rows(*measurements: dict) -> list[dict]:
    """Table rows (MB) comparing `thread_address_space` results, one column pair each."""
    rows = []
    for name in PARTS:
        row = {"part": name}
        for m in measurements:
            label = f"{m['threads']} threads" + (f", MALLOC_ARENA_MAX={m['arena_max']}"
                                                 if m["arena_max"] is not None else "")
            part = m["parts"][name]
            row[f"{label}: address space MB"] = round(part["size"] / 2**20, 1)
            row[f"{label}: RSS MB"] = round(part["rss"] / 2**20, 2)
        rows.append(row)
    total = {"part": "total (VMS, RSS)"}
    for m in measurements:
        keys = [k for k in rows[0] if k != "part"]
        for key in keys:
            total[key] = round(sum(r[key] for r in rows), 1 if "address" in key else 2)
    rows.append(total)
    return rows
