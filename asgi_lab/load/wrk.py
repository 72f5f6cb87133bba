"""Hello-world load from `wrk` (Debian package `wrk`), a C load generator that will not be the
bottleneck of a Python server: run it, read its report.

    from asgi_lab.load.wrk import have_wrk, run_wrk
    if have_wrk():
        result = run_wrk("http://127.0.0.1:8000/", seconds=3, connections=50, close=False)

`close=True` sends `Connection: close` with every request (a new connection per request).
wrk then counts each close by the server as a socket *read* error: that is the server doing
what it was asked, so those are not counted as errors here.
"""

from __future__ import annotations

import re
import shutil
import subprocess


def have_wrk() -> bool:
    return shutil.which("wrk") is not None


def run_wrk(url: str, seconds: float, connections: int, close: bool = False,
            threads: int = 1) -> dict:
    """Load `url` for `seconds`; {"requests", "seconds", "requests_per_s", "p50_ms", "p99_ms",
    "errors"} from wrk's report."""
    argv = ["wrk", "-t", str(threads), "-c", str(connections), "-d", f"{max(1, round(seconds))}s",
            "--latency", url]
    if close:
        argv[1:1] = ["-H", "Connection: close"]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 30).stdout
    rate = re.search(r"Requests/sec:\s+([\d.]+)", out)
    total = re.search(r"(\d+) requests in ([\d.]+)(us|ms|s|m)\b", out)
    if rate is None or total is None:
        raise RuntimeError(f"wrk failed against {url}:\n{out}")
    errors = 0
    socket_errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    if socket_errors:
        connect, read, write, timeout = (int(n) for n in socket_errors.groups())
        errors = connect + write + timeout + (0 if close else read)
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if non2xx:
        errors += int(non2xx.group(1))
    return {"requests": int(total.group(1)), "seconds": _seconds(total.group(2), total.group(3)),
            "requests_per_s": float(rate.group(1)), "p50_ms": _percentile_ms(out, "50"),
            "p99_ms": _percentile_ms(out, "99"), "errors": errors}


def _seconds(value: str, unit: str) -> float:
    return float(value) * {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0}[unit]


def _percentile_ms(out: str, label: str) -> float:
    match = re.search(rf"\s{label}%\s+([\d.]+)(us|ms|s)\b", out)
    return _seconds(match.group(1), match.group(2)) * 1000 if match else float("nan")
