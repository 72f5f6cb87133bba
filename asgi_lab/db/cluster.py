"""A throwaway PostgreSQL cluster in a temporary directory, for the tests and for trying the
PostgreSQL variant without a database server.

    with TemporaryCluster() as url:      # "postgresql://postgres@/postgres?host=/tmp/..."
        os.environ["ASGI_LAB_DB"] = url

It runs the server's own tools: `initdb` makes a cluster in the directory, `pg_ctl start`
starts a server listening only on a Unix socket in that same directory (no TCP port at all),
and on exit `pg_ctl stop` stops it and the directory is removed. Speed over safety, as fits
data that is thrown away: no fsync, trust authentication (only the socket's owner can reach
it). `initdb` refuses to run as root; as root, the tools run as the `postgres` user that
Debian's package creates.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
from pathlib import Path


class ClusterUnavailable(RuntimeError):
    """PostgreSQL's server tools are not installed (or cannot run here)."""


def find_bindir() -> Path:
    """The directory holding `initdb` and `pg_ctl`: on PATH, else Debian's
    /usr/lib/postgresql/<version>/bin (the newest)."""
    on_path = shutil.which("initdb")
    if on_path and shutil.which("pg_ctl"):
        return Path(on_path).parent
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"),
                   key=lambda path: int(Path(path).parts[-3]) if Path(path).parts[-3].isdigit() else 0)
    if not found:
        raise ClusterUnavailable("PostgreSQL's server tools (initdb, pg_ctl) are not installed; "
                                 "on Debian or Ubuntu: apt-get install postgresql")
    return Path(found[-1]).parent


class TemporaryCluster:
    """`initdb` + `pg_ctl start` in a new temporary directory; `stop()` removes it all."""

    def __init__(self) -> None:
        self.bindir = find_bindir()
        self.root: Path | None = None
        self.url: str | None = None
        self._as: list[str] = []

    def _run(self, *args: str, timeout: float = 60) -> None:
        result = subprocess.run([*self._as, *args], capture_output=True, text=True,
                                timeout=timeout)
        if result.returncode:
            raise ClusterUnavailable(f"{Path(args[0]).name} failed ({result.returncode}): "
                                     f"{(result.stderr or result.stdout).strip()[-800:]}")

    def start(self) -> str:
        """Make and start the cluster; returns its URL."""
        self.root = Path(tempfile.mkdtemp(prefix="asgi_lab-pg-"))
        if hasattr(os, "geteuid") and os.geteuid() == 0:  # initdb refuses root
            import pwd

            try:
                user = pwd.getpwnam("postgres")
            except KeyError:
                raise ClusterUnavailable("running as root and there is no 'postgres' user to "
                                         "run initdb as") from None
            os.chown(self.root, user.pw_uid, user.pw_gid)
            self._as = ["runuser", "-u", "postgres", "--"]
        data = self.root / "data"
        self._run(str(self.bindir / "initdb"), "-D", str(data), "-U", "postgres", "-A", "trust",
                  "-E", "UTF8", "--locale=C", "--no-sync")
        self._run(str(self.bindir / "pg_ctl"), "-D", str(data), "-l", str(self.root / "log"),
                  "-w", "-t", "30", "-o",
                  f"-k {self.root} -c listen_addresses='' -F -c max_connections=50", "start")
        self.url = f"postgresql://postgres@/postgres?host={self.root}"
        return self.url

    def stop(self) -> None:
        """Stop the server (closing its connections) and remove the directory."""
        if self.root is None:
            return
        try:
            if (self.root / "data" / "postmaster.pid").exists():
                self._run(str(self.bindir / "pg_ctl"), "-D", str(self.root / "data"),
                          "-m", "immediate", "-w", "stop")
        finally:
            shutil.rmtree(self.root, ignore_errors=True)
            self.root = self.url = None

    def __enter__(self) -> str:
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc_info) -> None:
        self.stop()
