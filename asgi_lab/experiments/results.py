"""Result files: what every benchmark and experiment writes, and where its numbers came from.

A figure means little without the machine and the code it was measured on, so every result
file is one JSON object with these keys at the top (the docs' renderer reads them):

    {
      "benchmark": "wsgi_hello",        # or "experiment": "sse" / "sse-sweep" / "load-http" ...
      "command": "python benchmarks/wsgi_hello.py --rounds 3 ...",   # exactly as typed
      "machine": {
        "commit": "40 hex digits", "+dirty" appended when tracked files were changed, or null,
        "date": "2026-12-02T17:07:14+00:00",     # UTC, when the run ended
        "cpu_model": "AMD EPYC 7B13",            # first "model name" of /proc/cpuinfo
        "cores": 2,                              # os.cpu_count()
        "python": "3.11.7",
        "load_average": [1.5, 4.8, 5.2],         # 1/5/15 min at the end: a busy machine shows
        "platform": "Linux-6.1...-x86_64-with-glibc2.36"
      },
      "note": "shared machine ...",             # optional, a remark by whoever ran it
      ...                                        # the parameters of the run, and the raw
      "rounds" / "runs": [...]                   # per-round (per-server) numbers, unaggregated
    }

Experiment results (`python -m asgi_lab experiment ...`, `experiments/*.py`) also keep the
older `environment` dict they always had (`cpus` for `cores`, `time` for `date`, with
`command` and `note` inside), which notebook 03 and committed reference files use; new
readers should use `machine` and `command`. `machine_of(result)` reads both.

    result = {"benchmark": "wsgi_hello", ..., "rounds": rounds}
    write_result(result, "benchmarks/results/wsgi-hello.json")   # adds command and machine
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import shlex
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def machine(root: str = ROOT) -> dict:
    """The `machine` dict of a result file (see the module docstring): call it at the end
    of a run, so that the load average covers the run."""
    try:
        load = [round(x, 2) for x in os.getloadavg()]
    except (OSError, AttributeError):
        load = None
    return {"commit": git_commit(root),
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "cpu_model": cpu_model(), "cores": os.cpu_count(), "python": platform.python_version(),
            "load_average": load, "platform": platform.platform()}


def command_line(argv: list[str] | None = None) -> str:
    """This process's command line as one would type it: `python benchmarks/x.py ...` or
    `python -m asgi_lab experiment ...`, prefixed with `cd DIR &&` when run from elsewhere
    than the repository root."""
    argv = list(argv if argv is not None else getattr(sys, "orig_argv", sys.argv))
    if argv and "python" in os.path.basename(argv[0]):
        argv[0] = "python"
    command = shlex.join(argv)
    here = os.path.abspath(os.getcwd())
    if here != ROOT and here.startswith(ROOT + os.sep):
        command = f"cd {os.path.relpath(here, ROOT)} && {command}"
    return command


def stamp(result: dict, command: str | None = None, note: str | None = None,
          environment: bool = False) -> dict:
    """`result` with `command` (default: this process's) and `machine` filled in; with
    `environment`, the older `environment` dict of the experiments too."""
    result["command"] = command or result.get("command") or command_line()
    result["machine"] = machine()
    if note:
        result["note"] = note
    if environment:
        m = result["machine"]
        result["environment"] = {
            "python": m["python"], "platform": m["platform"], "cpu_model": m["cpu_model"],
            "cpus": m["cores"], "commit": m["commit"], "time": m["date"],
            "load_average": m["load_average"], "command": result["command"],
            **({"note": result["note"]} if result.get("note") else {})}
    return result


def write_result(result: dict, path, command: str | None = None, note: str | None = None,
                 indent: int | None = None) -> str:
    """Write `result` as JSON to `path`, stamped first (command, machine) unless it already
    is (an experiment stamps its result when the run ends); returns the path."""
    if "machine" not in result or command or note:
        stamp(result, command, note, environment="environment" in result)
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        json.dump(result, f, indent=indent, separators=None if indent else (",", ":"))
        f.write("\n")
    return str(path)


def read_result(path) -> dict:
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def machine_of(result: dict) -> dict:
    """The machine of a result, new files and old ones (`environment`) alike, plus its
    `command` and `note`: {"commit", "date", "cpu_model", "cores", "python", "command", ...}."""
    if "machine" in result and isinstance(result["machine"], dict) and "cores" in result["machine"]:
        facts = dict(result["machine"])
    else:
        env = result.get("environment") or {}
        facts = {"commit": env.get("commit"), "date": env.get("time") or env.get("date"),
                 "cpu_model": env.get("cpu_model"), "cores": env.get("cpus"),
                 "python": env.get("python"), "load_average": env.get("load_average"),
                 "platform": env.get("platform")}
        result = {**env, **result}
    facts["command"] = result.get("command")
    facts["note"] = result.get("note")
    return facts


def cpu_model() -> str:
    """The processor's name, e.g. "AMD EPYC 7B13" (Linux; the platform's guess elsewhere)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def git_commit(root: str = ROOT) -> str | None:
    """`git rev-parse HEAD` of the checkout at `root`, `+dirty` when tracked files changed."""
    try:
        head = subprocess.run(["git", "-C", root, "rev-parse", "HEAD"], capture_output=True,
                              text=True, timeout=10)
        if head.returncode != 0:
            return None
        dirty = subprocess.run(["git", "-C", root, "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10)
        return head.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return None
