"""Grade a class: every student's exercises, each file in its own process, into a CSV and a table.

    python -m asgi_lab.exercises grade submissions/ --csv grades.csv

**The folder.** One folder per student, holding the exercise notebooks as the course hands them
out, or `.py` files named the same way (`01_wsgi_app.py` works too):

    submissions/alice/01-wsgi-app.ipynb
    submissions/alice/03-streamed-body.py
    submissions/bob/notebooks/exercises/01-wsgi-app.ipynb   any depth; solutions/ and
                                                            .ipynb_checkpoints/ are skipped
    submissions/carol_01-wsgi-app.ipynb                     flat: the student is the prefix

A copy (`01-wsgi-app-Copy1.ipynb`) counts when the exact name is absent; of several, the newest.

**One file, one process.** For each (student, exercise) a fresh Python process:

1. runs the notebook's code cells in order, as Jupyter would (a cell that raises does not stop
   the next), without the statements that call a check: the grader runs the checks itself, and
   never the text of a student's check cell;
2. runs the exercise's checks (`TASKS`, the same checks on the same names as the course's
   notebook) and writes each verdict, as it comes, to a file the grader reads.

The process has a time limit (per check), a memory limit, its output drained and truncated, and
no network beyond loopback (`confine`). Whatever a submission does (hang, crash, print for ever,
never define its function) it gets a verdict in plain words, and the others go on.

**Verdicts.** `passed`; `failed`, the check found a mistake, and the reason is the check's own
words (what is wrong, never the fix: the hints stay out of the CSV unless `--hints`); `error`,
the code could not be checked (a syntax error, an exception in a cell, the function is missing);
`timeout`; `crashed`, the process died; `missing`, no file for an exercise another student handed
in. The exit code is 0 unless the grader itself failed.
"""

from __future__ import annotations

import argparse
import ast
import asyncio
import csv
import inspect
import io
import ipaddress
import json
import linecache
import os
import re
import shutil
import signal
import sys
import tempfile
import time
import types
from dataclasses import dataclass, field
from pathlib import Path

TASKS = {
    # exercise (its notebook's name) -> the checks its notebook runs, on which name.
    # tests/test_grade.py checks this against the check cells of notebooks/exercises/.
    "01-wsgi-app": [("check_wsgi_app", "app")],
    "02-wsgi-middleware": [("check_wsgi_middleware", "request_id_middleware")],
    "03-streamed-body": [("check_streamed_body", "app")],
    "04-sse-disconnect": [("check_sse", "app")],
    "05-websocket-chat": [("check_chat", "chat")],
    "06-lifespan-state": [("check_lifespan_state", "app")],
    "07-blocking-handler": [("check_unblocked", "app")],
    "08-spot-the-bug": [("check_chat", "tutorial_chat"),
                        ("check_lifespan_middleware", "DatabaseMiddleware"),
                        ("check_streaming", "stream"), ("check_lifespan_state", "app")],
    "09-asgi-middleware": [("check_asgi_middleware", "ServedBy")],
    "10-asyncio-server": [("check_asyncio_server", "handle")],
    "11-wsgi-async-bridge": [("check_async_bridge", "app")],
}
SKIPPED_FOLDERS = {"solutions", ".ipynb_checkpoints", "__pycache__"}
MANY_LINES = 1000
"""A submission that prints more lines than this gets a note saying how many."""


# == finding the submissions =======================================================================

@dataclass(frozen=True)
class Submission:
    student: str
    exercise: str
    path: Path
    note: str = ""


def exercise_of(path: Path) -> tuple[str, str] | None:
    """(exercise, what comes before its name) for `carol_01-wsgi-app.ipynb` or
    `01_wsgi_app.py`; None for a file that is no exercise."""
    if path.suffix not in (".ipynb", ".py"):
        return None
    stem = re.sub(r"[_ ]", "-", path.stem.lower())
    for exercise in TASKS:
        at = stem.find(exercise)
        if at >= 0 and (at == 0 or stem[at - 1] == "-"):
            return exercise, path.stem[:at].strip("-_ .")
    return None


def find_submissions(folder: Path) -> list[Submission]:
    """Every (student, exercise) file under `folder`, sorted by student then exercise."""
    found: dict[tuple[str, str], list[Path]] = {}
    for entry in sorted(folder.iterdir()):
        if entry.name.startswith(".") or entry.name in SKIPPED_FOLDERS:
            continue
        if entry.is_dir():
            files = [p for p in sorted(entry.rglob("*")) if p.is_file() and not any(
                part.startswith(".") or part in SKIPPED_FOLDERS for part in p.relative_to(entry).parts[:-1])]
            for path in files:
                if (match := exercise_of(path)) is not None:
                    found.setdefault((entry.name, match[0]), []).append(path)
        elif (match := exercise_of(entry)) is not None:
            found.setdefault((match[1] or folder.resolve().name, match[0]), []).append(entry)
    submissions = []
    for (student, exercise), paths in sorted(found.items()):
        exact = [p for p in paths if re.sub(r"[_ ]", "-", p.stem.lower()).endswith(exercise)]
        chosen = max(exact or paths, key=lambda p: p.stat().st_mtime)
        others = [p.name for p in paths if p != chosen]
        submissions.append(Submission(student, exercise, chosen,
                                      f"graded {chosen.name}, not {', '.join(others)}" if others else ""))
    return submissions


# == a submission as a module (in the child process) ================================================

class Output(io.TextIOBase):
    """A stand-in for sys.stdout that keeps only the last `limit` characters and counts the
    lines: a submission may print for ever."""

    def __init__(self, limit: int = 4000) -> None:
        self.limit, self.pieces, self.size, self.lines = limit, [], 0, 0

    def writable(self) -> bool:
        return True

    def write(self, text) -> int:
        text = str(text)
        self.lines += text.count("\n")
        self.pieces.append(text[-self.limit:])
        self.size += len(self.pieces[-1])
        if self.size > 4 * self.limit:  # trim now and then, not at every write
            self.pieces = [self.text]
            self.size = len(self.pieces[0])
        return len(text)

    @property
    def text(self) -> str:
        return "".join(self.pieces)[-self.limit:]


def code_cells(path: Path) -> list[str]:
    """The code cells of a notebook (nbformat 4), or a `.py` file as one cell."""
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".py":
        return [text]
    cells = json.loads(text)["cells"]
    return [c["source"] if isinstance(c["source"], str) else "".join(c["source"])
            for c in cells if c.get("cell_type") == "code"]


def prepare(source: str, filename: str) -> tuple[ast.Module | None, dict[str, str]]:
    """A cell, ready to run: every top-level statement that calls `check_*`, `hint` or
    `reset_hints` is taken out; in a cell that is not plain Python, IPython's `%magic` and
    `!shell` lines become `pass` (a `%%` cell is skipped). Also returns, from those calls,
    {check: the name it was given} (read, never run). Raises SyntaxError."""
    if source.lstrip().startswith("%%"):
        return None, {}
    try:
        ast.parse(source)
    except SyntaxError:
        source = re.sub(r"(?m)^(\s*)[%!]\w.*$", r"\1pass  # IPython magic, skipped", source)
    linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)
    tree = ast.parse(source, filename)
    calls: dict[str, str] = {}
    kept = []
    for statement in tree.body:
        called = [node for node in ast.walk(statement) if isinstance(node, ast.Call)
                  and isinstance(node.func, ast.Name) and (node.func.id.startswith("check_")
                                                           or node.func.id in ("hint", "reset_hints"))]
        if called and not isinstance(statement, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            for call in called:
                if call.args and isinstance(call.args[0], ast.Name):
                    calls[call.func.id] = call.args[0].id
            continue
        kept.append(statement)
    tree.body = kept
    return tree, calls


def where(error: BaseException, filename: str) -> str:
    """" (line 4: x = y)" for the deepest frame of the cell, if the error passed through it."""
    frame = error.__traceback__
    line = None
    while frame is not None:
        if frame.tb_frame.f_code.co_filename == filename:
            line = frame.tb_lineno
        frame = frame.tb_next
    if line is None:
        return ""
    text = linecache.getline(filename, line).strip()
    return f" (line {line}" + (f": {text})" if text else ")")


def describe(error: BaseException) -> str:
    text = repr(error.args[0]) if isinstance(error, KeyError) and error.args else str(error)
    return type(error).__name__ + (f": {text}" if text else "")


def run_cells(path: Path, cells: list[str], namespace: dict, progress) -> tuple[list[str], dict[str, str]]:
    """Run the submission's cells in `namespace`, each on its own, like Jupyter. Returns what
    went wrong, in plain words, and the names its check calls were given."""
    problems: list[str] = []
    calls: dict[str, str] = {}
    for n, source in enumerate(cells, 1):
        label = f"code cell {n}" if path.suffix == ".ipynb" else path.name
        progress({"event": "cell", "cell": label})
        filename = f"<{label}>" if path.suffix == ".ipynb" else str(path)
        try:
            tree, found = prepare(source, filename)
        except SyntaxError as error:
            line = f", line {error.lineno}" if error.lineno else ""
            text = f" ({error.text.strip()})" if error.text and error.text.strip() else ""
            problems.append(f"syntax error in {label}{line}: {error.msg}{text}")
            continue
        calls.update(found)
        if tree is None:
            continue
        try:
            code = compile(tree, filename, "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
            result = eval(code, namespace)
            if inspect.iscoroutine(result):  # a cell with a top-level await, as IPython allows
                asyncio.run(result)
        except BaseException as error:  # SystemExit and KeyboardInterrupt too: the next cell runs
            problems.append(f"{label} raised {describe(error)}{where(error, filename)}")
    return problems, calls


def run_check(check_name: str, target) -> dict:
    """Call one check; its verdict as a dict."""
    from . import checks
    from .harness import describe_exception

    output = Output()
    stdout, stderr = sys.stdout, sys.stderr
    sys.stdout = sys.stderr = output
    try:
        getattr(checks, check_name)(target)
        verdict = {"verdict": "passed", "reason": ""}
    except checks.ExerciseFailed as failed:
        verdict = {"verdict": "failed", "reason": failed.problem[:1].upper() + failed.problem[1:],
                   "hints": failed.all_hints}
    except BaseException as error:
        verdict = {"verdict": "error", "reason": f"The check could not run your code: it raised "
                                                 f"{describe_exception(error)}."}
    finally:
        sys.stdout, sys.stderr = stdout, stderr
    verdict["lines"] = output.lines
    for line in reversed(output.text.splitlines()):
        if line.startswith("✓") and verdict["verdict"] == "passed":
            verdict["reason"] = line.partition("passed. ")[2]
            verdict["lines"] -= 1  # ours, not the submission's
            break
    return verdict


# == no network beyond loopback (in the child process) =============================================

def is_loopback(host) -> bool:
    if not isinstance(host, str):
        return False
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host.split("%")[0]).is_loopback
    except ValueError:
        return False


def _numeric(host: str) -> bool:
    try:
        ipaddress.ip_address(host.split("%")[0])
        return True
    except ValueError:
        return False


def loopback_only(event: str, args: tuple) -> None:
    """An audit hook (PEP 578): refuse, before any packet leaves, a socket that would connect,
    bind or send beyond loopback, and a name lookup (DNS). Unix sockets pass."""
    if event in ("socket.connect", "socket.bind", "socket.sendto", "socket.sendmsg"):
        address = args[1]
        if isinstance(address, tuple) and address and isinstance(address[0], str) \
                and not is_loopback(address[0]):
            raise PermissionError(f"the grader allows loopback only: {event.split('.')[1]} "
                                  f"to {address[:2]!r} refused")
    elif event in ("socket.getaddrinfo", "socket.gethostbyname", "socket.gethostbyname_ex",
                   "socket.gethostbyaddr"):
        host = args[0]
        if isinstance(host, bytes):
            host = host.decode("ascii", "replace")
        if host is not None and not is_loopback(host) and not (event == "socket.getaddrinfo"
                                                               and _numeric(host)):
            raise PermissionError(f"the grader allows loopback only: looking up {host!r} refused")


def own_network_namespace() -> bool:
    """Move this process into a new network namespace (Linux, via an unprivileged user
    namespace) in which only the loopback interface exists, and bring it up. Call it while
    the process has one thread. False where the system does not allow it."""
    import ctypes
    import fcntl
    import socket
    import struct

    clone_newuser, clone_newnet = 0x10000000, 0x40000000
    uid, gid = os.getuid(), os.getgid()
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.unshare(clone_newuser | clone_newnet) != 0:
            return False
        for name, text in (("setgroups", "deny"), ("uid_map", f"{uid} {uid} 1"),
                           ("gid_map", f"{gid} {gid} 1")):
            Path(f"/proc/self/{name}").write_text(text)
        siocgifflags, siocsifflags, iff_up = 0x8913, 0x8914, 0x1
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            flags = struct.unpack("16sh", fcntl.ioctl(probe, siocgifflags, struct.pack("16sh", b"lo", 0)))[1]
            fcntl.ioctl(probe, siocsifflags, struct.pack("16sh", b"lo", flags | iff_up))
        return True
    except (OSError, AttributeError):
        return False


NAMESPACE_PROBE = """
import socket, sys
from asgi_lab.exercises.grade import own_network_namespace
if not own_network_namespace():
    sys.exit(1)
with socket.create_server(("127.0.0.1", 0)) as server:
    socket.create_connection(server.getsockname(), timeout=2).close()
"""


def network_namespace_works() -> bool:
    """Try `own_network_namespace` once, in a throwaway process, loopback included: where a
    system lets a process make the namespace but not bring loopback up, a submission's process
    must not try (it could not undo it)."""
    import subprocess

    try:
        return subprocess.run([sys.executable, "-P", "-c", NAMESPACE_PROBE], env=child_environment(),
                              capture_output=True, timeout=20).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def confine(memory_mb: int, network_namespace: bool) -> str:
    """Limits for the process that runs a submission; returns how the network is fenced."""
    fence = "loopback-only audit hook"
    if network_namespace and sys.platform == "linux" and own_network_namespace():
        fence = "own network namespace (loopback only) + audit hook"
    try:
        import resource
        limit = memory_mb * 2**20
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        resource.setrlimit(resource.RLIMIT_FSIZE, (256 * 2**20, 256 * 2**20))
    except (ImportError, ValueError, OSError):
        pass
    sys.addaudithook(loopback_only)
    return fence


# == the child: one file, one process ==============================================================

def child(order: dict) -> None:
    """Grade one file; every step and verdict goes to `order["report"]`, one JSON per line."""
    report = open(order["report"], "w", encoding="utf-8", buffering=1)

    def progress(event: dict) -> None:
        report.write(json.dumps(event) + "\n")

    try:
        from . import checks  # noqa: F401  (imported now, before the submission can shadow a module)
        progress({"event": "start", "fence": confine(order["memory_mb"], order["network_namespace"])})
        path = Path(order["path"])
        sys.path.insert(0, str(path.parent))
        module = types.ModuleType("submission")
        module.__file__ = str(path)
        module.display = lambda *objects, **options: None  # IPython's, for a cell that calls it
        sys.modules["submission"] = module
        try:
            cells = code_cells(path)
        except (OSError, ValueError, KeyError, TypeError) as error:  # not JSON, not nbformat 4
            problems, calls = [f"the file could not be read as a notebook ({describe(error)})"], {}
        else:  # what the cells print goes to our stdout: the grader drains it, counts its lines
            problems, calls = run_cells(path, cells, module.__dict__, progress)
        progress({"event": "loaded", "problems": problems})
        for check_name, name in TASKS[order["exercise"]]:
            progress({"event": "check", "check": check_name})
            used = name if name in module.__dict__ else calls.get(check_name, name)
            if used not in module.__dict__:
                reason = (f"{'; '.join(problems)}, so `{name}` (what {check_name} checks) was never "
                          "defined." if problems else
                          f"the code never defines `{name}`, the name {check_name} checks (renamed?).")
                verdict = {"verdict": "error", "reason": reason[:1].upper() + reason[1:], "notes": []}
            else:
                verdict = run_check(check_name, module.__dict__[used])
                verdict["notes"] = ([f"graded `{used}`, the name its check cell passes"] if used != name else []) + problems
            progress({"event": "verdict", "check": check_name, **verdict})
        progress({"event": "done"})
    except BaseException as error:  # the grader's own failure, not the student's
        import traceback
        progress({"event": "grader-error", "error": "".join(traceback.format_exception(error))})
    finally:
        report.close()
        for stream in (sys.__stdout__, sys.__stderr__):
            try:
                stream.flush()
            except (OSError, ValueError):
                pass
        os._exit(0)  # without waiting for threads a submission may have left running


# == the parent: many files, a few at a time =======================================================

@dataclass
class Settings:
    timeout: float = 30.0
    """Seconds per check (a file with 4 checks gets 4 times this), its cells included."""
    jobs: int = 2
    memory_mb: int = 2048
    network_namespace: bool = True


@dataclass
class Row:
    student: str
    exercise: str
    check: str
    verdict: str
    reason: str
    seconds: float
    hints: str = ""
    notes: str = ""
    """What the reason adds to the check's own words (the table shows only this for a pass)."""


@dataclass
class Graded:
    rows: list[Row] = field(default_factory=list)
    fences: set[str] = field(default_factory=set)
    grader_errors: list[str] = field(default_factory=list)


class Tail:
    """The last `limit` bytes a process wrote to its stdout and stderr, and how many lines:
    drained as they come, so the process never blocks on a full pipe, and the rest thrown away."""

    def __init__(self, limit: int = 4000) -> None:
        self.limit, self.data, self.lines = limit, b"", 0

    async def drain(self, stream: asyncio.StreamReader) -> None:
        while chunk := await stream.read(65536):
            self.lines += chunk.count(b"\n")
            self.data = (self.data + chunk[-self.limit:])[-self.limit:]

    def last_line(self) -> str:
        lines = self.data.decode("utf-8", "replace").strip().splitlines()
        return lines[-1].strip()[:200] if lines else ""


def child_environment() -> dict:
    package_root = str(Path(__file__).resolve().parents[2])
    return {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [package_root, os.environ.get("PYTHONPATH")])),
            "PYTHONDONTWRITEBYTECODE": "1", "MPLBACKEND": "Agg", "PYTHONIOENCODING": "utf-8"}


def stop_group(process: asyncio.subprocess.Process) -> None:
    """Kill the process and every process it started (they share its session)."""
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError, AttributeError):
        if process.returncode is None:
            process.kill()


async def grade_file(submission: Submission, settings: Settings, graded: Graded) -> list[Row]:
    tasks = TASKS[submission.exercise]
    limit = settings.timeout * len(tasks)
    with tempfile.TemporaryDirectory(prefix="asgi-lab-grade-") as scratch:
        order = {"path": str(submission.path.resolve()), "exercise": submission.exercise,
                 "report": str(Path(scratch, "report.jsonl")), "memory_mb": settings.memory_mb,
                 "network_namespace": settings.network_namespace}
        started = time.monotonic()
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-P", "-m", __name__, "--child", json.dumps(order),
            stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT, cwd=submission.path.parent,
            env=child_environment(), start_new_session=True)
        tail = Tail()
        draining = asyncio.ensure_future(tail.drain(process.stdout))
        timed_out = False
        try:
            await asyncio.wait_for(process.wait(), limit)
        except asyncio.TimeoutError:
            timed_out = True
        stop_group(process)  # also the processes it left behind
        await process.wait()
        try:
            await asyncio.wait_for(draining, 1.0)
        except asyncio.TimeoutError:
            pass
        seconds = round(time.monotonic() - started, 2)
        report = Path(order["report"])
        events = [json.loads(line) for line in report.read_text(encoding="utf-8").splitlines()
                  if line.endswith("}")] if report.exists() else []
    return verdicts(submission, events, timed_out, process.returncode, tail, seconds, limit, graded)


def verdicts(submission: Submission, events: list[dict], timed_out: bool, returncode: int,
             tail: Tail, seconds: float, limit: float, graded: Graded) -> list[Row]:
    """One row per check of the file, from what its process reported before it ended."""
    by_check = {e["check"]: e for e in events if e["event"] == "verdict"}
    stage = next((e for e in reversed(events) if e["event"] in ("cell", "check")), None)
    lines = tail.lines + sum(e.get("lines", 0) for e in by_check.values())
    for e in events:
        if e["event"] == "start":
            graded.fences.add(e["fence"])
        elif e["event"] == "grader-error":
            graded.grader_errors.append(f"{submission.path}: {e['error']}")
    rows, earlier = [], None
    for check_name, _ in TASKS[submission.exercise]:
        if check_name in by_check:
            e = by_check[check_name]
            verdict, reason, hints, notes = e["verdict"], e["reason"], e.get("hints", ""), list(e["notes"])
        else:
            hints, notes = "", []
            verdict = "timeout" if timed_out else "crashed"
            doing = ("running its cells" if stage is None or stage["event"] == "cell" else
                     f"running {stage['check']}")
            if earlier is not None:
                reason = f"Not run: {earlier} did not finish."
            elif timed_out and stage is not None and stage["event"] == "cell":
                reason = (f"Did not finish running {stage['cell']} within {limit:g} s (an endless "
                          "loop at the top level?).")
            elif timed_out and stage is not None:
                reason = (f"{stage['check']} did not finish within {limit:g} s: your code never "
                          "returned (an endless loop, or a wait that never ends?).")
            elif timed_out:
                reason = f"The grader's process did not start within {limit:g} s (is the machine overloaded?)."
            else:
                how = (f"was killed by {signal.Signals(-returncode).name} (out of memory, or a crash "
                       "in C code?)" if returncode and returncode < 0 else
                       f"exited with code {returncode} (os._exit() in the code?)")
                last = tail.last_line()
                reason = (f"The process {how} while {doing}, before any verdict"
                          + (f"; its last words: {last}" if last else "") + ".")
            if stage is not None and stage["event"] == "check":
                earlier = earlier or stage["check"]
        if lines > MANY_LINES:
            notes.append(f"it printed {lines:,} lines")
        if submission.note:
            notes.append(submission.note)
        note = f"Note: {'; '.join(notes)}." if notes else ""
        rows.append(Row(submission.student, submission.exercise, check_name, verdict,
                        f"{reason} {note}".strip(), seconds, hints, note))
    return rows


async def grade_all(submissions: list[Submission], settings: Settings, progress=None) -> Graded:
    """Grade every file, `settings.jobs` at a time; rows in the order of `submissions`."""
    graded = Graded()
    slots = asyncio.Semaphore(settings.jobs)

    async def one(submission: Submission) -> list[Row]:
        async with slots:
            rows = await grade_file(submission, settings, graded)
        if progress is not None:
            progress(rows)
        return rows

    for rows in await asyncio.gather(*(one(s) for s in submissions)):
        graded.rows += rows
    return graded


def missing_rows(submissions: list[Submission], exercises: list[str]) -> list[Row]:
    """A `missing` row for each student and exercise with no file."""
    handed_in = {(s.student, s.exercise) for s in submissions}
    students = sorted({s.student for s in submissions})
    return [Row(student, exercise, check, "missing", "No file for this exercise.", 0.0)
            for student in students for exercise in exercises if (student, exercise) not in handed_in
            for check, _ in TASKS[exercise]]


# == the report ====================================================================================

COLUMNS = ["student", "exercise", "check", "verdict", "reason", "seconds"]


def write_csv(rows: list[Row], path: Path, hints: bool = False) -> None:
    with open(path, "w", newline="", encoding="utf-8") as file:
        writer = csv.writer(file)
        writer.writerow(COLUMNS + (["hints"] if hints else []))
        for row in rows:
            writer.writerow([row.student, row.exercise, row.check, row.verdict, row.reason,
                             f"{row.seconds:.2f}"] + ([row.hints.replace("\n", " | ")] if hints else []))


def summary(rows: list[Row], width: int | None = None) -> str:
    """A plain-text table (student, exercise, verdict, reason cut to fit), then the passes
    per exercise."""
    width = width or shutil.get_terminal_size((140, 24)).columns
    several = {e for e, tasks in TASKS.items() if len(tasks) > 1}
    table = [(r.student, r.exercise + (f" {r.check.removeprefix('check_')}" if r.exercise in several else ""),
              r.verdict, r.notes if r.verdict == "passed" else r.reason) for r in rows]
    heads = ("student", "exercise", "verdict", "reason")
    widths = [max(len(h), *(len(t[i]) for t in table)) for i, h in enumerate(heads[:3])]
    room = max(30, width - sum(widths) - 6)

    def line(cells) -> str:
        reason = cells[3] if len(cells[3]) <= room else cells[3][:room - 1] + "…"
        return "  ".join(c.ljust(w) for c, w in zip(cells[:3], widths)) + "  " + reason

    out = [line(heads), line(["-" * w for w in widths] + ["-" * min(room, 40)])]
    out += [line(t) for t in table]
    out.append("")
    by_exercise: dict[str, list[Row]] = {}
    for r in rows:
        by_exercise.setdefault(r.exercise + (f" {r.check.removeprefix('check_')}" if r.exercise in several else ""), []).append(r)
    out.append("Passed: " + ", ".join(f"{name} {sum(r.verdict == 'passed' for r in rs)}/{len(rs)}"
                                      for name, rs in by_exercise.items()))
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m asgi_lab.exercises grade",
                                     description="Grade a folder of student notebooks (or .py files): "
                                                 "one folder per student, files named as the course hands them out.")
    parser.add_argument("folder", type=Path, help="e.g. submissions/, holding alice/01-wsgi-app.ipynb, "
                                                  "bob/03-streamed-body.py, ... (more layouts: see grade.py)")
    parser.add_argument("--csv", type=Path, default=Path("grades.csv"), help="where to write the CSV (default: grades.csv)")
    parser.add_argument("--timeout", type=float, default=Settings.timeout, help="seconds per check, cells included (default: 30)")
    parser.add_argument("--jobs", type=int, default=min(2, os.cpu_count() or 1), help="files graded at once (default: 2)")
    parser.add_argument("--memory", type=int, default=Settings.memory_mb, help="memory limit per process, MB (default: 2048)")
    parser.add_argument("--exercises", help="grade only these, e.g. 01,03 (default: every exercise someone handed in)")
    parser.add_argument("--hints", action="store_true", help="add the three hint steps of each failure to the CSV")
    parser.add_argument("--no-namespace", action="store_true", help="fence the network with the audit hook only")
    parser.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    args = parser.parse_args(argv)
    if not args.folder.is_dir():
        parser.error(f"{args.folder} is not a folder")
    submissions = find_submissions(args.folder)
    if args.exercises:
        wanted = [e for e in TASKS if any(e.startswith(w.strip()) for w in args.exercises.split(","))]
        submissions = [s for s in submissions if s.exercise in wanted]
    if not submissions:
        print(f"error: no exercise files under {args.folder} (expected <student>/01-wsgi-app.ipynb "
              f"and the like; exercises: {', '.join(TASKS)})", file=sys.stderr)
        return 2
    settings = Settings(args.timeout, max(1, args.jobs), args.memory,
                        not args.no_namespace and sys.platform == "linux" and network_namespace_works())
    exercises = sorted({s.exercise for s in submissions})
    total, done = len(submissions), [0]

    def progress(rows: list[Row]) -> None:
        done[0] += 1
        if not args.quiet:
            verdict = ", ".join(r.verdict for r in rows)
            print(f"[{done[0]}/{total}] {rows[0].student} {rows[0].exercise}: {verdict} ({rows[0].seconds:.1f} s)",
                  file=sys.stderr)

    started = time.monotonic()
    graded = asyncio.run(grade_all(submissions, settings, progress))
    rows = sorted(graded.rows + missing_rows(submissions, exercises),
                  key=lambda r: (r.student, r.exercise, [c for c, _ in TASKS[r.exercise]].index(r.check)))
    write_csv(rows, args.csv, args.hints)
    students = len({r.student for r in rows})
    print(f"Graded {students} student{'s' * (students != 1)}, {len(submissions)} files, in {time.monotonic() - started:.1f} s "
          f"({settings.jobs} at a time, {settings.timeout:g} s per check; network: "
          f"{' / '.join(sorted(graded.fences)) or 'unknown'}).\n")
    print(summary(rows))
    print(f"\nCSV: {args.csv}")
    if graded.grader_errors:
        print("\nThe grader itself failed on:\n" + "\n".join(graded.grader_errors), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    if sys.argv[1:2] == ["--child"]:
        child(json.loads(sys.argv[2]))
    sys.exit(main())
