"""The one launcher: start a server in a process of its own, wait until it accepts, sample it,
stop it. Used by the experiments, the benchmarks and the tests alike.

    spec = SERVERS["uvicorn"]                                   # a named built-in, or
    spec = from_template("mine", "gunicorn -k gthread -b {host}:{port} myapp:app")
    with ServerProcess(spec, app="asgi_lab.apps.sse:app", ready_path="/ready") as server:
        server.url, server.pid, server.cpu_seconds(), server.sampler()   # procstats

Every server, ours or not, is a *command template*: `{python}`, `{host}`, `{port}`, `{app}`
and `{threads}` are filled in when it starts. The launcher picks a free port on 127.0.0.1,
starts the command with its output going to a log file (a pipe nobody reads fills up and
freezes a server that logs every connection), waits until the port accepts (and, with
`ready_path`, until a GET there gets an HTTP answer: gunicorn's master accepts before its
worker runs), and stops it with SIGTERM, then SIGKILL after a grace period.

The named built-ins, all serving the same app (the experiments' is `asgi_lab.apps.sse`:
`app` for ASGI servers, `wsgi_app` for WSGI servers):

| name           | what it is                                                  | waits in        |
|----------------|-------------------------------------------------------------|-----------------|
| `asgi`         | our ASGI server (`asgi_lab/asgi/`)                           | a coroutine     |
| `wsgi-threads` | our WSGI server, one thread per connection (`--threads 0`)  | a thread        |
| `wsgi-pool`    | our WSGI server, a small pool (`--threads 32`)               | a pool thread   |
| `uvicorn`      | uvicorn with its pure-Python h11 protocol (`--http h11`)    | a coroutine     |
| `gunicorn`     | gunicorn, 1 worker, gthread with the same small pool        | a pool thread   |
| `hypercorn`    | hypercorn, 1 worker, asyncio (h11 for HTTP/1.1)              | a coroutine     |
| `gevent`       | the WSGI app on gevent's `pywsgi`, after `monkey.patch_all()` | a greenlet      |
| `waitress`     | waitress, a pool of the same size                           | a pool thread   |

`gevent` is the chapter's "monkey-patching" escape: the same blocking WSGI code, but
`time.sleep` and the socket calls are replaced by ones that switch to another greenlet, so a
waiting client costs a greenlet (a small C stack slice, on the heap) instead of an OS thread.
`asgi_lab/experiments/gevent_server.py` starts it; `asgi_lab/experiments/stall.py` measures
its price (a blocking call in C stalls every client).

`from_checkout(spec, DIR)` runs one of ours from another checkout of the package (an A/B of
a change: `--baseline DIR` in the benchmarks). A separate process per server keeps each
one's memory, threads and CPU time its own, and away from the load generator's.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass

HOST = "127.0.0.1"
ASGI_APP = "asgi_lab.apps.sse:app"
WSGI_APP = "asgi_lab.apps.sse:wsgi_app"
SSE_APPS = {"asgi": ASGI_APP, "wsgi": WSGI_APP}
POOL_THREADS = 32
OURS_OPTIONS = "--host {host} --port {port} --log-level warning --no-access-log"


@dataclass(frozen=True)
class ServerSpec:
    """A server to start: its command template and what the tables say about it."""

    name: str
    template: tuple[str, ...]   # argv, with {python} {host} {port} {app} {threads}
    label: str = ""
    interface: str = "asgi"     # "asgi" or "wsgi": which app it serves
    waits_in: str = "coroutine" # "coroutine", "greenlet" or "thread" (a thread per waiting client)
    requires: str = ""          # a module that must be importable (production servers)

    @property
    def available(self) -> bool:
        return not self.requires or importlib.util.find_spec(self.requires) is not None

    def command(self, port: int, threads: int = POOL_THREADS, app: str | None = None) -> list[str]:
        """The argv that serves `app` (default: the SSE app for its interface) on HOST:port."""
        values = {"python": sys.executable, "host": HOST, "port": port, "threads": threads,
                  "app": app or SSE_APPS[self.interface]}
        argv = [part.format(**values) for part in self.template]
        return [executable(argv[0]), *argv[1:]]

    def variant(self, name: str, *options: str, **changes) -> "ServerSpec":
        """The same server under another name, with more options at the end of its command."""
        return dataclasses.replace(self, name=name, template=self.template + options, **changes)


def executable(name: str) -> str:
    """A bare program name (`gunicorn`) found next to this Python first (its virtual
    environment's scripts), then on PATH; anything else as it is."""
    if os.sep in name:
        return name
    return (shutil.which(name, path=os.path.dirname(sys.executable)) or shutil.which(name)
            or name)


def ours(kind: str, *options: str, name: str | None = None, **fields) -> ServerSpec:
    """One of our servers (`kind` "asgi" or "wsgi") with `options` after the common ones."""
    template = ("{python}", "-m", "asgi_lab", kind, "{app}", *OURS_OPTIONS.split(), *options)
    return ServerSpec(name or kind, template, interface=kind, **fields)


def from_template(name: str, template: str, *, interface: str = "asgi",
                  waits_in: str = "unknown", label: str = "") -> ServerSpec:
    """A user's server from a shell-like command template, e.g.
    `gunicorn -k gthread --threads 32 -b {host}:{port} myapp:app` (it must listen on {port})."""
    argv = tuple(shlex.split(template))
    if not any("{port}" in part for part in argv):
        raise ValueError(f"server {name!r}: its command must contain {{port}} (and bind "
                         f"{{host}}), got {template!r}")
    return ServerSpec(name, argv, label or template, interface, waits_in)


def parse_server_option(text: str) -> ServerSpec:
    """`NAME=COMMAND TEMPLATE` (the `--server` option of `experiment`) as a spec."""
    name, sep, template = text.partition("=")
    if not sep or not name.strip() or not template.strip():
        raise ValueError(f"--server wants NAME=\"command with {{host}} and {{port}}\", got {text!r}")
    return from_template(name.strip(), template.strip())


def from_checkout(spec: ServerSpec, directory: str, name: str = "baseline") -> ServerSpec:
    """One of our servers, importing the `asgi_lab` package from another checkout `directory`.

    `python -m asgi_lab` would import the package of the current directory (or the editable
    install) first; this puts `directory` at the front of `sys.path`, then runs the module.
    """
    root = os.path.abspath(directory)
    if not os.path.isfile(os.path.join(root, "asgi_lab", "__main__.py")):
        raise ValueError(f"{root} holds no asgi_lab package")
    head = ("{python}", "-m", "asgi_lab")
    if spec.template[:3] != head:
        raise ValueError(f"{spec.name} is not one of our servers: cannot run it from {root}")
    run = (f"import runpy, sys; sys.path.insert(0, {root!r}); "
           "runpy.run_module('asgi_lab', run_name='__main__', alter_sys=True)")
    return dataclasses.replace(spec, name=name, template=("{python}", "-c", run, *spec.template[3:]),
                               label=f"{spec.label or spec.name} from {root}")


def with_baseline(specs: list[ServerSpec], baseline: str | None) -> list[ServerSpec]:
    """`specs`, and with a baseline checkout our first server again, run from it as
    "baseline", right after the first (the `--baseline DIR` of the benchmarks: an A/B of a
    change, interleaved with the others in the same run)."""
    if not baseline:
        return list(specs)
    return [specs[0], from_checkout(specs[0], baseline), *specs[1:]]


BASELINE_HELP = ("also run our server from the asgi_lab package under DIR (another checkout, "
                 "e.g. `git worktree add /tmp/base HEAD~1`) as 'baseline', interleaved")


SERVERS: dict[str, ServerSpec] = {spec.name: spec for spec in [
    ours("asgi", "--timeout-graceful-shutdown", "1", label="asgi_lab ASGI (coroutines)"),
    ours("wsgi", "--timeout-graceful-shutdown", "1", "--threads", "0", name="wsgi-threads",
         label="asgi_lab WSGI, a thread per client", waits_in="thread"),
    ours("wsgi", "--timeout-graceful-shutdown", "1", "--threads", "{threads}", name="wsgi-pool",
         label="asgi_lab WSGI, pool of {threads}", waits_in="thread"),
    ServerSpec("uvicorn", ("{python}", "-m", "uvicorn", "{app}", "--host", "{host}", "--port", "{port}",
                           "--http", "h11", "--lifespan", "off", "--log-level", "warning",
                           "--no-access-log", "--backlog", "2048", "--timeout-graceful-shutdown", "1"),
               "uvicorn --http h11", "asgi", "coroutine", requires="uvicorn"),
    ServerSpec("gunicorn", ("{python}", "-m", "gunicorn", "{app}", "--bind", "{host}:{port}",
                            "--workers", "1", "--worker-class", "gthread", "--threads", "{threads}",
                            "--worker-connections", "100000", "--backlog", "2048", "--timeout", "300",
                            "--graceful-timeout", "1", "--log-level", "warning"),
               "gunicorn gthread, pool of {threads}", "wsgi", "thread", requires="gunicorn"),
    ServerSpec("hypercorn", ("{python}", "-m", "hypercorn", "{app}", "--bind", "{host}:{port}",
                             "--workers", "1", "--backlog", "2048", "--log-level", "warning",
                             "--graceful-timeout", "1"),
               "hypercorn (asyncio)", "asgi", "coroutine", requires="hypercorn"),
    ServerSpec("gevent", ("{python}", "-m", "asgi_lab.experiments.gevent_server", "{app}",
                          "--port", "{port}"),
               "gevent pywsgi, monkey-patched WSGI", "wsgi", "greenlet", requires="gevent"),
    ServerSpec("waitress", ("{python}", "-m", "waitress", "--threads={threads}",
                            "--listen={host}:{port}", "{app}"),
               "waitress, pool of {threads}", "wsgi", "thread", requires="waitress"),
]}
EXPERIMENT_SERVERS = ("asgi", "wsgi-threads", "wsgi-pool", "uvicorn", "gunicorn", "hypercorn", "gevent")
WEBSOCKET_SERVERS = ("asgi", "uvicorn", "hypercorn")
"""The built-ins that speak WebSocket (ASGI servers: PEP 3333 has no way to hold one)."""


def resolve_servers(names, extra: list[ServerSpec] = ()) -> list[ServerSpec]:
    """Server specs from names ("asgi,uvicorn" or a list), then the `extra` ones (user
    templates); unknown names are an error, production servers that are not installed are
    left out with a note on stderr."""
    if isinstance(names, str):
        names = [name.strip() for name in names.split(",") if name.strip()]
    specs = []
    for name in names:
        if isinstance(name, ServerSpec):
            specs.append(name)
            continue
        if name not in SERVERS:
            raise ValueError(f"unknown server {name!r}; choose from {', '.join(SERVERS)}")
        spec = SERVERS[name]
        if spec.available:
            specs.append(spec)
        else:
            print(f"note: {name} is not installed, skipping it (pip install {spec.requires})",
                  file=sys.stderr)
    taken = {spec.name for spec in specs}
    for spec in extra:
        if spec.name in taken:
            raise ValueError(f"two servers are named {spec.name!r}")
        taken.add(spec.name)
        specs.append(spec)
    return specs


def free_port() -> int:
    """A port on 127.0.0.1 that nothing listens on right now (for a server we start)."""
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process and its children (gunicorn and hypercorn serve
    from a child). On Linux from /proc/PID/task/TID/schedstat, in nanoseconds: psutil's
    figures come in 10 ms clock ticks, too coarse for a short measurement."""
    import psutil

    total = 0.0
    try:
        root = psutil.Process(pid)
        members = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return total
    for member in members:
        try:
            tasks = os.listdir(f"/proc/{member.pid}/task")
            total += sum(_schedstat_ns(member.pid, tid) for tid in tasks) / 1e9
        except OSError:  # not Linux, or the process just ended
            try:
                times = member.cpu_times()
                total += times.user + times.system
            except psutil.NoSuchProcess:
                pass
    return total


def _schedstat_ns(pid: int, tid: str) -> int:
    try:
        with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
            return int(f.read().split()[0])
    except FileNotFoundError:  # a thread that just ended
        return 0


class ServerProcess:
    """One server under test, in its own process: `start()`, `.url`, `.pid`, `stop()`."""

    def __init__(self, spec: ServerSpec, threads: int = POOL_THREADS, *, app: str | None = None,
                 ready_path: str | None = "/ready", env: dict | None = None,
                 cwd: str | None = None, pin: str | None = None) -> None:
        self.spec, self.name = spec, spec.name
        self.threads, self.app, self.ready_path = threads, app, ready_path
        self.env, self.cwd, self.pin = env, cwd, pin
        self.process: subprocess.Popen | None = None
        self.port = 0
        self.log = None
        self._ps = None

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def address(self) -> tuple[str, int]:
        return HOST, self.port

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    @property
    def label(self) -> str:
        return (self.spec.label or self.spec.name).replace("{threads}", str(self.threads))

    def start(self, timeout: float = 20.0) -> "ServerProcess":
        self.port = free_port()
        argv = self.spec.command(self.port, self.threads, self.app)
        if self.pin:  # taskset: the server (and its children) on these CPUs only
            argv = ["taskset", "--cpu-list", self.pin, *argv]
        self.log = tempfile.NamedTemporaryFile("w+b", prefix=f"server-{self.name}-", suffix=".log")
        env = {**os.environ, "PYTHONUNBUFFERED": "1", **(self.env or {})}
        try:
            self.process = subprocess.Popen(argv, stdout=self.log, stderr=subprocess.STDOUT,
                                            stdin=subprocess.DEVNULL, env=env, cwd=self.cwd)
        except FileNotFoundError as exc:
            raise RuntimeError(f"{self.name}: cannot run {argv[0]!r}: {exc}") from None
        self.wait_ready(time.monotonic() + timeout)
        return self

    def output(self) -> str:
        """Everything the server printed so far (stdout and stderr)."""
        if self.log is None:
            return ""
        with open(self.log.name, "rb") as f:
            return f.read().decode(errors="replace")

    def wait_ready(self, deadline: float) -> None:
        """Until the port accepts and, with `ready_path`, a GET there gets an HTTP answer."""
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.process.returncode}:\n"
                                   f"{self.output()[-2000:]}")
            if self.answers():
                return
            if time.monotonic() > deadline:
                self.stop()
                raise TimeoutError(f"{self.name} not ready on port {self.port}:\n{self.output()[-2000:]}")
            time.sleep(0.05)

    def answers(self) -> bool:
        try:
            with socket.create_connection(self.address, timeout=2) as sock:
                if self.ready_path is None:
                    return True
                sock.sendall(f"GET {self.ready_path} HTTP/1.1\r\nHost: {HOST}\r\n"
                             "Connection: close\r\n\r\n".encode())
                return sock.recv(16).startswith(b"HTTP/1.")
        except OSError:
            return False

    @property
    def ps(self):
        """The server's `psutil.Process` (open files, threads, connections, memory)."""
        import psutil

        if self._ps is None or self._ps.pid != self.pid:
            self._ps = psutil.Process(self.pid)
        return self._ps

    def cpu_seconds(self) -> float:
        return cpu_seconds(self.pid)

    def sampler(self, interval: float | None = None):
        """A `procstats.ProcessSampler` on this server (RSS, VMS, threads, CPU), not started."""
        from .procstats import INTERVAL, ProcessSampler

        return ProcessSampler(self.pid, interval or INTERVAL)

    def stop(self, grace: float = 3.0, sig: int = signal.SIGTERM) -> int | None:
        """`sig` (graceful shutdown), then SIGKILL if it is still there after `grace`; the
        exit code."""
        process = self.process
        if process is not None and process.poll() is None:
            process.send_signal(sig)
            try:
                process.wait(grace)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        return process.returncode if process is not None else None

    def __enter__(self) -> "ServerProcess":
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()
