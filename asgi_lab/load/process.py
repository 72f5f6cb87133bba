"""Run a load generator in one or more child processes and collect what they measured.

Each child is `python -m <module> URL --clients K --out FILE --progress ...`: it prints a JSON
progress line now and then, and writes its result to FILE when done. Several children split
the clients between them when one process cannot hold them all (open files, or one core).
"""

from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
import tempfile
import threading
import time


def split(total: int, parts: int) -> list[int]:
    """`total` clients over `parts` processes, as evenly as possible: 10 over 3 -> [4, 3, 3]."""
    parts = max(1, min(parts, total))
    return [total // parts + (1 if i < total % parts else 0) for i in range(parts)]


def run_in_processes(module: str, url: str, clients: int, args: list[str], processes: int = 1,
                     progress=None, timeout: float = 300.0) -> list[dict]:
    """Start the generators, forward their summed progress to `progress`, return their results.

    `progress` is called on the calling thread (safe for a notebook widget). A generator that
    fails (e.g. too many clients for its open-files limit) raises RuntimeError with its message.
    """
    shares = split(clients, processes)
    reports: queue.Queue = queue.Queue()
    children = []
    with tempfile.TemporaryDirectory(prefix="asgi_lab-load-") as tmp:
        for n, share in enumerate(shares):
            out = os.path.join(tmp, f"result-{n}.json")
            command = [sys.executable, "-m", module, url, "--clients", str(share), "--out", out,
                       "--progress", *args]
            child = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     text=True)
            threading.Thread(target=_read_progress, args=(child, n, reports), daemon=True).start()
            children.append((child, out))

        latest: dict[int, dict] = {}
        deadline = time.monotonic() + timeout
        try:
            while any(child.poll() is None for child, _ in children):
                if time.monotonic() > deadline:
                    raise TimeoutError(f"load generator {module} still running after {timeout} s")
                try:
                    n, report = reports.get(timeout=0.2)
                except queue.Empty:
                    continue
                latest[n] = report
                if progress is not None and len(latest) == len(children):
                    progress(_sum(latest.values()))
        finally:
            for child, _ in children:
                if child.poll() is None:
                    child.kill()
                child.wait()

        results = []
        for child, out in children:
            if child.returncode != 0:
                message = child.stderr.read().strip()
                raise RuntimeError(f"load generator failed (exit {child.returncode}): {message}")
            with open(out) as f:
                results.append(json.load(f))
        return results


def _read_progress(child: subprocess.Popen, n: int, reports: queue.Queue) -> None:
    for line in child.stdout:
        try:
            report = json.loads(line)["progress"]
        except (ValueError, KeyError, TypeError):
            continue
        reports.put((n, report))


def _sum(reports) -> dict:
    total: dict = {}
    for report in reports:
        for key, value in report.items():
            total[key] = max(total.get(key, 0), value) if key == "elapsed" else total.get(key, 0) + value
    return total
