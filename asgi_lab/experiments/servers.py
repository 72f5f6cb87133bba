"""The servers under comparison, each started in a process of its own, all on the same app.

| name           | what it is                                                  | waits in        |
|----------------|-------------------------------------------------------------|-----------------|
| `asgi`         | our ASGI server (`asgi_lab/asgi/`)                           | a coroutine     |
| `wsgi-threads` | our WSGI server, one thread per connection (`--threads 0`)  | a thread        |
| `wsgi-pool`    | our WSGI server, a small pool (`--threads 32`)               | a pool thread   |
| `uvicorn`      | uvicorn with its pure-Python h11 protocol (`--http h11`)    | a coroutine     |
| `gunicorn`     | gunicorn, 1 worker, gthread with the same small pool        | a pool thread   |
| `hypercorn`    | hypercorn, 1 worker, asyncio (h11 for HTTP/1.1)              | a coroutine     |
| `gevent`       | the WSGI app on gevent's `pywsgi`, after `monkey.patch_all()` | a greenlet      |

`gevent` is the chapter's "monkey-patching" escape: the same blocking WSGI code, but
`time.sleep` and the socket calls are replaced by ones that switch to another greenlet, so a
waiting client costs a greenlet (a small C stack slice, on the heap) instead of an OS thread.
`asgi_lab/experiments/gevent_server.py` starts it; `asgi_lab/experiments/stall.py` measures
its price (a blocking call in C stalls every client).

The app is `asgi_lab.apps.sse` (`app` for ASGI servers, `wsgi_app` for WSGI servers).
A separate process per server keeps each one's memory, threads and CPU time its own, and
away from the load generator's.
"""

from __future__ import annotations

import http.client
import importlib.util
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass

ASGI_APP = "asgi_lab.apps.sse:app"
WSGI_APP = "asgi_lab.apps.sse:wsgi_app"
POOL_THREADS = 32


@dataclass(frozen=True)
class ServerSpec:
    name: str
    label: str
    interface: str          # "asgi" or "wsgi"
    waits_in: str           # "coroutine", "greenlet" or "thread"
    requires: str = ""      # a module that must be importable (production servers)

    @property
    def available(self) -> bool:
        return not self.requires or importlib.util.find_spec(self.requires) is not None

    def command(self, port: int, pool_threads: int) -> list[str]:
        """The command line that serves the SSE app on 127.0.0.1:port (0: ours pick one)."""
        python = sys.executable
        ours = ["--port", str(port), "--log-level", "warning", "--no-access-log",
                "--timeout-graceful-shutdown", "1"]
        if self.name == "asgi":
            return [python, "-m", "asgi_lab", "asgi", ASGI_APP, *ours]
        if self.name == "wsgi-threads":
            return [python, "-m", "asgi_lab", "wsgi", WSGI_APP, *ours, "--threads", "0"]
        if self.name == "wsgi-pool":
            return [python, "-m", "asgi_lab", "wsgi", WSGI_APP, *ours, "--threads", str(pool_threads)]
        if self.name == "uvicorn":
            return [python, "-m", "uvicorn", ASGI_APP, "--host", "127.0.0.1", "--port", str(port),
                    "--http", "h11", "--lifespan", "off", "--log-level", "warning",
                    "--no-access-log", "--backlog", "2048", "--timeout-graceful-shutdown", "1"]
        if self.name == "hypercorn":
            return [python, "-m", "hypercorn", ASGI_APP, "--bind", f"127.0.0.1:{port}",
                    "--workers", "1", "--backlog", "2048", "--log-level", "warning",
                    "--graceful-timeout", "1"]
        if self.name == "gevent":
            return [python, "-m", "asgi_lab.experiments.gevent_server", WSGI_APP, "--port", str(port)]
        if self.name == "gunicorn":
            return [python, "-m", "gunicorn", WSGI_APP, "--bind", f"127.0.0.1:{port}",
                    "--workers", "1", "--worker-class", "gthread", "--threads", str(pool_threads),
                    "--worker-connections", "100000", "--backlog", "2048", "--timeout", "300",
                    "--graceful-timeout", "1", "--log-level", "warning"]
        raise ValueError(f"unknown server {self.name!r}")


SERVERS: dict[str, ServerSpec] = {spec.name: spec for spec in [
    ServerSpec("asgi", "asgi_lab ASGI (coroutines)", "asgi", "coroutine"),
    ServerSpec("wsgi-threads", "asgi_lab WSGI, a thread per client", "wsgi", "thread"),
    ServerSpec("wsgi-pool", "asgi_lab WSGI, pool of {threads}", "wsgi", "thread"),
    ServerSpec("uvicorn", "uvicorn --http h11", "asgi", "coroutine", requires="uvicorn"),
    ServerSpec("gunicorn", "gunicorn gthread, pool of {threads}", "wsgi", "thread", requires="gunicorn"),
    ServerSpec("hypercorn", "hypercorn (asyncio)", "asgi", "coroutine", requires="hypercorn"),
    ServerSpec("gevent", "gevent pywsgi, monkey-patched WSGI", "wsgi", "greenlet", requires="gevent"),
]}
OURS = ("asgi", "wsgi-threads", "wsgi-pool", "gevent")
"""The servers that print the address they listen on (so they can bind port 0)."""


def resolve_servers(names) -> list[ServerSpec]:
    """Server specs from names ("asgi,uvicorn" or a list); unknown names are an error,
    production servers that are not installed are left out with a note on stderr."""
    if isinstance(names, str):
        names = [name.strip() for name in names.split(",") if name.strip()]
    specs = []
    for name in names:
        if name not in SERVERS:
            raise ValueError(f"unknown server {name!r}; choose from {', '.join(SERVERS)}")
        spec = SERVERS[name]
        if spec.available:
            specs.append(spec)
        else:
            print(f"note: {name} is not installed, skipping it (pip install {spec.requires})",
                  file=sys.stderr)
    return specs


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


SERVING_LINE = re.compile(r"serving \w+ app on http://127\.0\.0\.1:(\d+)")


class ServerProcess:
    """One server under test, in its own process: `start()`, `.url`, `.pid`, `stop()`."""

    def __init__(self, spec: ServerSpec, pool_threads: int = POOL_THREADS) -> None:
        self.spec = spec
        self.pool_threads = pool_threads
        self.process: subprocess.Popen | None = None
        self.port = 0
        self.stderr_lines: list[str] = []

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 20.0) -> "ServerProcess":
        ours = self.spec.name in OURS
        self.port = 0 if ours else free_port()
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        self.process = subprocess.Popen(self.spec.command(self.port, self.pool_threads),
                                        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                        text=True, env=env)
        threading.Thread(target=self._collect_stderr, daemon=True).start()
        deadline = time.monotonic() + timeout
        if ours:  # our servers print the address they listen on
            line = self.process.stdout.readline()
            match = SERVING_LINE.search(line)
            if not match:
                self.stop()
                raise RuntimeError(f"{self.spec.name} did not start: {line!r} "
                                   f"{''.join(self.stderr_lines)[-2000:]}")
            self.port = int(match.group(1))
        threading.Thread(target=self.process.stdout.read, daemon=True).start()  # keep draining
        self.wait_ready(deadline)
        return self

    def _collect_stderr(self) -> None:
        for line in self.process.stderr:
            if len(self.stderr_lines) < 200:
                self.stderr_lines.append(line)

    def wait_ready(self, deadline: float) -> None:
        """Poll GET /ready until the server answers 200."""
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.spec.name} exited with {self.process.returncode}: "
                                   f"{''.join(self.stderr_lines)[-2000:]}")
            try:
                connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=2)
                connection.request("GET", "/ready")
                if connection.getresponse().status == 200:
                    connection.close()
                    return
            except OSError:
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise TimeoutError(f"{self.spec.name} not ready on port {self.port}")
            time.sleep(0.05)

    def stop(self, grace: float = 3.0) -> None:
        """SIGTERM (graceful shutdown), then SIGKILL if it is still there after `grace`."""
        process = self.process
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(grace)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def __enter__(self) -> "ServerProcess":
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()
