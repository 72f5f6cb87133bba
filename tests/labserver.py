"""A real JupyterLab for the browser tests: `start_jupyterlab(folder, ...)`.

JupyterLab on a free port of 127.0.0.1, serving `folder` (put copies of notebooks there: the
autosave must not touch the repository), with a token we choose and every Jupyter directory
inside `folder`, so that nothing of the user's own set-up leaks in. `base_url` serves it under
a path, as JupyterHub does (`/user/student/`). Stopped, with the kernels it started, when the
`with` block ends.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

TOKEN = "asgi-lab-test-token"


@dataclass
class JupyterLab:
    url: str                       # http://127.0.0.1:PORT/ plus the base URL: /user/student/
    token: str
    log: list[str] = field(default_factory=list)

    def lab(self, notebook: str) -> str:
        """The URL that opens `notebook` in JupyterLab, logged in."""
        return f"{self.url}lab/tree/{notebook}?token={self.token}"


@contextlib.contextmanager
def start_jupyterlab(folder: Path, notebooks=(), base_url: str = "/", env: dict | None = None,
                     startup_timeout: float = 60.0):
    folder = Path(folder)
    for notebook in notebooks:
        shutil.copy(notebook, folder / Path(notebook).name)
    # Render every cell, even off screen (JupyterLab 4 may otherwise skip hidden ones).
    settings = folder / "settings" / "@jupyterlab" / "notebook-extension"
    settings.mkdir(parents=True, exist_ok=True)
    (settings / "tracker.jupyterlab-settings").write_text('{"windowingMode": "none"}')
    environ = dict(os.environ, JUPYTER_RUNTIME_DIR=str(folder / "runtime"),
                   JUPYTER_CONFIG_DIR=str(folder / "config"), JUPYTER_DATA_DIR=str(folder / "data"),
                   JUPYTERLAB_SETTINGS_DIR=str(folder / "settings"),
                   JUPYTERLAB_WORKSPACES_DIR=str(folder / "workspaces"), **(env or {}))
    command = [str(Path(sys.executable).parent / "jupyter"), "lab", "--no-browser",
               "--ServerApp.ip=127.0.0.1", "--ServerApp.port=0", f"--IdentityProvider.token={TOKEN}",
               f"--ServerApp.root_dir={folder}", f"--ServerApp.base_url={base_url}",
               "--LabApp.expose_app_in_browser=True", "--LabApp.news_url=",
               "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate"]
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        command.append("--allow-root")  # CI containers run as root; Jupyter refuses without this
    process = subprocess.Popen(command, env=environ, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                               text=True, start_new_session=True)
    found = threading.Event()
    address: list[str] = []
    log: list[str] = []
    prefix = "/" + base_url.strip("/") + "/" if base_url.strip("/") else "/"

    def read_log():
        for line in process.stderr:
            log.append(line)
            match = re.search(r"http://127\.0\.0\.1:(\d+)/", line)
            if match and not found.is_set():
                address.append(f"http://127.0.0.1:{match.group(1)}{prefix}")
                found.set()

    threading.Thread(target=read_log, daemon=True).start()
    try:
        deadline = time.monotonic() + startup_timeout
        while not found.wait(0.2):
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("JupyterLab did not start:\n" + "".join(log[-30:]))
        yield JupyterLab(address[0], TOKEN, log)
    finally:
        try:
            os.killpg(process.pid, signal.SIGTERM)  # the server and the kernels it started
            process.wait(15)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(5)
