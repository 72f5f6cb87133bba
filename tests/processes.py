"""Servers in a process of their own, for the tests of the command line, reload, Unix sockets
and gunicorn: start one, read what it prints without ever blocking, wait for a line.

    proc, url, lines = start_cli("asgi", "app:app", "--port", "0", cwd=tmp_path)
    output = Output(subprocess.Popen([...], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    output.wait_for(r"Started server process \\[(\\d+)\\]").group(1)
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENV = {**os.environ, "PYTHONPATH": ROOT}
"""The environment of a child Python: this checkout's `asgi_lab` first."""


class Output:
    """The lines a process prints (stdout, with stderr sent there), read on a thread, so that a
    test never blocks on a pipe; `wait_for` polls them, within a deadline."""

    def __init__(self, proc: subprocess.Popen) -> None:
        self.proc = proc
        self.lines: list[str] = []
        self.thread = threading.Thread(target=self._read, daemon=True)  # ends at the process's EOF
        self.thread.start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.lines.append(line)

    def wait_for(self, pattern: str, start: int = 0, count: int = 1, timeout: float = 20.0) -> re.Match:
        """The `count`-th line from `lines[start]` on that matches `pattern` (its match)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            matches = [match for line in self.lines[start:] if (match := re.search(pattern, line))]
            if len(matches) >= count:
                return matches[count - 1]
            time.sleep(0.05)
        raise AssertionError(f"fewer than {count} lines matching {pattern!r} in:\n{self.text}")

    @property
    def text(self) -> str:
        return "".join(self.lines)


def start_cli(*args: str, cwd, env: dict | None = None) -> tuple[subprocess.Popen, str, list[str]]:
    """`python -m asgi_lab ARGS` (with `--port 0`): the process, the URL its startup line
    names, and the lines it printed up to that one. Killed if that line does not come."""
    proc = subprocess.Popen([sys.executable, "-m", "asgi_lab", *args], cwd=cwd, env=env or ENV,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 20
    lines: list[str] = []
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(line)
        match = re.search(r"http://127\.0\.0\.1:(\d+)", line)
        if match and "serving" in line:
            return proc, match.group(0), lines
    proc.kill()
    raise AssertionError("server did not print its address:\n" + "".join(lines))
