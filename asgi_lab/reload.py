"""`--reload`: restart the server whenever a `.py` file changes, for students editing an app.

    python -m asgi_lab asgi myapp:app --reload                   # watches the current directory
    python -m asgi_lab asgi myapp:app --reload --reload-dir src  # or these directories

Two processes. The **supervisor** (this module, the process you started) never imports the
app: a Python process cannot forget a module it imported, so the only clean way to run new
code is a new process. It binds the listening socket once, then starts the **server process**
(`python -m asgi_lab asgi ... --fd N`), which inherits that socket and serves on it. When
`watchfiles` reports a changed `.py` file, the supervisor stops the server process the
graceful way (SIGTERM) and starts a new one on the same socket.

Why bind in the supervisor? The port stays the same across restarts (even `--port 0`), and a
client that connects while the new process is starting waits in the socket's accept queue
instead of being refused.

A module with a syntax error makes the server process print the error and exit (exit code 4,
see `loader.py`); the supervisor says it is waiting for the next change, and restarts when the
file is saved again. SIGINT/SIGTERM to the supervisor stops the server process gracefully,
then the supervisor. The server process runs in a process group of its own, so a Ctrl-C in the
terminal reaches the supervisor only, which passes it on once; and it watches its supervisor,
so a supervisor killed without a chance to clean up (SIGKILL) does not leave it serving.

File watching is `watchfiles` (inotify on Linux, FSEvents on macOS), filtered to Python
source files with its `PythonFilter`.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Sequence

logger = logging.getLogger("asgi_lab.error")

SUPERVISOR_ENV = "ASGI_LAB_RELOAD_SUPERVISOR"
"""Set in the server process's environment to the supervisor's pid: see `watch_supervisor`."""

RELOAD_OPTIONS = ("--reload",)
RELOAD_OPTIONS_WITH_VALUE = ("--reload-dir",)


def server_argv(argv: Sequence[str], fd: int) -> list[str]:
    """The command line of the server process: ours without the reload options, plus
    `--fd N` (the inherited listening socket)."""
    out: list[str] = []
    skip = False
    for arg in argv:
        if skip:
            skip = False
            continue
        if arg in RELOAD_OPTIONS:
            continue
        if arg in RELOAD_OPTIONS_WITH_VALUE:
            skip = True
            continue
        if any(arg.startswith(f"{option}=") for option in RELOAD_OPTIONS_WITH_VALUE):
            continue
        out.append(arg)
    return out + ["--fd", str(fd)]


class Supervisor:
    """Start the server process, restart it on changes, stop it on a signal."""

    def __init__(self, argv: Sequence[str], sock: socket.socket, directories: Sequence[str],
                 grace: float) -> None:
        self.sock = sock
        self.command = [sys.executable, "-m", "asgi_lab", *server_argv(argv, sock.fileno())]
        self.directories = [os.path.abspath(d) for d in directories]
        self.grace = grace
        self.process: subprocess.Popen | None = None
        self.should_exit = threading.Event()
        self.signals: list[int] = []

    def start_server(self) -> None:
        env = {**os.environ, SUPERVISOR_ENV: str(os.getpid())}
        self.process = subprocess.Popen(self.command, pass_fds=[self.sock.fileno()],
                                        process_group=0, env=env)

    def stop_server(self) -> None:
        """SIGTERM, then wait for the graceful shutdown; SIGKILL if it outlives it."""
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(self.grace + 5.0)
        except subprocess.TimeoutExpired:
            logger.warning("Server process [%d] did not stop in time; killing it", process.pid)
            process.kill()
            process.wait()

    def on_signal(self, signum, frame) -> None:
        self.signals.append(signum)
        self.should_exit.set()
        if len(self.signals) > 1 and self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)  # a second one: the server hurries

    def run(self) -> int:
        import watchfiles

        previous = {sig: signal.signal(sig, self.on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
        logger.info("Started reloader process [%d] using watchfiles; watching %s",
                    os.getpid(), ", ".join(self.directories))
        self.start_server()
        reported_exit = False
        try:
            for changes in watchfiles.watch(*self.directories, watch_filter=watchfiles.PythonFilter(),
                                            stop_event=self.should_exit, yield_on_timeout=True,
                                            rust_timeout=500, raise_interrupt=False):
                process = self.process
                if changes:
                    names = sorted({os.path.relpath(path, self.directories[0]) for _, path in changes})
                    logger.info("Changed: %s. Restarting the server", ", ".join(names))
                    self.stop_server()
                    self.start_server()
                    reported_exit = False
                elif process is not None and process.poll() is not None and not reported_exit:
                    logger.info("Server process exited with code %d; waiting for a file to "
                                "change to start it again", process.returncode)
                    reported_exit = True
        finally:
            if self.signals:
                logger.info("Shutting down (%s)", signal.Signals(self.signals[0]).name)
            self.stop_server()
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            self.sock.close()
        return 0


def watch_supervisor(interval: float = 0.5) -> None:
    """In the server process: if the supervisor named in the environment goes away (our parent
    changes), shut down gracefully by sending ourselves SIGTERM. A daemon thread; no-op when
    not started by a supervisor."""
    supervisor = os.environ.get(SUPERVISOR_ENV)
    if not supervisor or not supervisor.isdigit():
        return

    def watch() -> None:
        while os.getppid() == int(supervisor):
            time.sleep(interval)
        logger.warning("The --reload supervisor [%s] is gone; shutting down", supervisor)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name="reload-supervisor-watch", daemon=True).start()


def run_with_reload(argv: Sequence[str], sock: socket.socket, directories: Sequence[str],
                    grace: float) -> int:
    """The `--reload` entry of the command line. Returns the exit code."""
    try:
        import watchfiles  # noqa: F401
    except ImportError:
        logger.error("--reload needs the watchfiles package: pip install watchfiles")
        return 1
    return Supervisor(argv, sock, directories or ["."], grace).run()
