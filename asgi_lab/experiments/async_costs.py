"""The costs of async, shown on our ASGI server and collected as data (nothing reaches stderr).

Two things that a WSGI app does not have to think about:

1. **An exception inside a task.** `asyncio.create_task(coro)` runs `coro` beside the handler.
   If nobody awaits the task, its exception has nowhere to go: asyncio reports it only when
   the task object is destroyed, as "Task exception was never retrieved", through the
   `asyncio` logger. The traceback shows the task's own frames; it does not show who created
   the task, nor which request. `task_exception(app)` runs one request and returns what the
   client got and what was logged (`asgi_lab.apps.pitfalls` has the mistake and two fixes).

2. **A slow callback.** One step of a coroutine that does not give the loop back stalls
   every client (notebook 05 measures it). asyncio's debug mode times every callback and logs
   "Executing <Task ...> took 0.151 seconds" for those over `loop.slow_callback_duration`
   (100 ms by default). `slow_callbacks(app)` turns debug mode on for our server's loop,
   sends one request and returns those log records.

See the asyncio docs, "Developing with asyncio" (debug mode) and `asyncio.create_task`
("Save a reference to the result of this function, to avoid a task disappearing
mid-execution").
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import re
import time
import traceback
from dataclasses import dataclass, field

from ..background import serve_in_background
from ..exercises.client import request

WATCHED = ("asyncio", "asgi_lab.error", "asgi_lab.apps.pitfalls")
"""The loggers a demo listens to: asyncio's own, our server's, and the pitfall apps'."""


@contextlib.contextmanager
def collect_log(*names: str, level: int = logging.WARNING):
    """Collect the records logged on the loggers `names` at `level` or above, as a list of
    `logging.LogRecord` filled while the block runs, and keep them out of stderr meanwhile."""
    records: list[logging.LogRecord] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    handler = Collect(level)
    loggers = [logging.getLogger(name) for name in names or WATCHED]
    saved = [(logger, logger.propagate) for logger in loggers]
    for logger in loggers:
        logger.addHandler(handler)
        logger.propagate = False
    try:
        yield records
    finally:
        for logger, propagate in saved:
            logger.removeHandler(handler)
            logger.propagate = propagate


@contextlib.contextmanager
def debug_mode(loop: asyncio.AbstractEventLoop, slow_callback_duration: float = 0.1):
    """asyncio's debug mode on `loop` (another thread's loop) for the block, then back off.

    Debug mode logs every callback or task step that runs longer than
    `slow_callback_duration` seconds, records where each task was created, and more (see
    the asyncio docs, "Debug Mode"). It costs time on every callback: a development tool."""

    async def switch(enabled: bool, duration: float) -> tuple[bool, float]:
        before = loop.get_debug(), loop.slow_callback_duration
        loop.set_debug(enabled)  # on the loop's own thread, as asyncio expects
        loop.slow_callback_duration = duration
        return before

    before = asyncio.run_coroutine_threadsafe(switch(True, slow_callback_duration),
                                              loop).result(5.0)
    try:
        yield loop
    finally:
        if not loop.is_closed():
            asyncio.run_coroutine_threadsafe(switch(*before), loop).result(5.0)


# -- log records as data ------------------------------------------------------------------------

_PATH = re.compile(r"/[^\s:'\"<>(),]+\.py")


def short_paths(text: str) -> str:
    """Absolute file paths cut to what a reader needs: `asgi_lab/...` or `asyncio/...`,
    otherwise the file name (and no home or work directory leaks into a notebook)."""

    def cut(match: re.Match) -> str:
        path = match.group(0)
        for root in ("asgi_lab/", "asyncio/"):
            if "/" + root in path:
                return root + path.rsplit("/" + root, 1)[1]
        return path.rsplit("/", 1)[1]

    return _PATH.sub(cut, text)


@dataclass
class Logged:
    """One log record, as the notebook shows it."""

    logger: str
    level: str
    message: str
    """`record.getMessage()`, file paths shortened; several lines for asyncio's reports."""
    exception: str = ""
    """The exception logged with it (`repr`), or ""."""
    frames: list[str] = field(default_factory=list)
    """Its traceback, one "function: source line" per frame, outermost first."""

    @classmethod
    def of(cls, record: logging.LogRecord) -> "Logged":
        exc = record.exc_info[1] if record.exc_info else None
        return cls(record.name, record.levelname, short_paths(record.getMessage()),
                   repr(exc) if exc is not None else "", frames(exc))

    @property
    def headline(self) -> str:
        return self.message.splitlines()[0] if self.message else ""

    @property
    def created_at(self) -> list[str]:
        """Where the task was created, "function: source line", outermost first: what
        asyncio's debug mode adds to its report ("Object created at"); [] without it."""
        if "Object created at" not in self.message:
            return []
        report = self.message.split("Object created at", 1)[1].splitlines()
        found = []
        for index, line in enumerate(report):
            frame = re.match(r'\s*File "[^"]+", line \d+, in (\S+)', line)
            if frame and index + 1 < len(report):
                found.append(f"{frame.group(1)}: {report[index + 1].strip()}")
        return found

    def text(self) -> str:
        """Everything a reader of the log would see: message, exception and traceback."""
        return "\n".join([self.message, self.exception, *self.frames])


def frames(exc: BaseException | None) -> list[str]:
    """The traceback of `exc` as "function: source line", outermost frame first; for an
    exception group (what an `asyncio.TaskGroup` raises), its own frames, then those of
    each exception inside it."""
    if exc is None:
        return []
    lines = [f"{frame.name}: {frame.line}" for frame in traceback.extract_tb(exc.__traceback__)]
    for inner in getattr(exc, "exceptions", ()):
        lines += [f"  {line}" for line in frames(inner)]
    return lines


# -- 1. an exception inside a task ----------------------------------------------------------------

@dataclass
class TaskFailure:
    """What one request to a task-starting app produced, on both sides."""

    status: int
    body: str
    logged: list[Logged]
    after: float | None
    """Seconds from the response to the first log record (None: nothing was logged)."""
    shows_handler: bool
    """Whether the handler that started the task appears anywhere in what was logged."""
    shows_request: bool
    """Whether the request (its path or query) appears anywhere in what was logged."""


def task_exception(app, target: str = "/signup?user=ada", debug: bool = False,
                   timeout: float = 5.0) -> TaskFailure:
    """Run `app` on our ASGI server, send `GET target` once, and collect the log records
    that carry an exception: what the app's background task left behind (waiting at most
    `timeout` seconds for the first). `debug=True` turns asyncio's debug mode on first,
    which adds where each task was created."""
    with collect_log(*WATCHED) as records:

        def failures() -> list[logging.LogRecord]:  # not, say, a slow-callback warning
            return [record for record in records if record.exc_info]

        with serve_in_background(app, name="async-costs:task", lifespan="off",
                                 access_log=False) as server:
            with debug_mode(server.loop) if debug else contextlib.nullcontext():
                response = request(server.address, target=target)
                answered = time.monotonic()
                deadline = answered + timeout
                while not failures() and time.monotonic() < deadline:
                    time.sleep(0.01)
                    if time.monotonic() - answered > 0.5:
                        gc.collect()  # a task caught in a reference cycle dies only here
                after = time.monotonic() - answered if failures() else None
                time.sleep(0.05)  # a second record (the server's own) may follow
    logged = [Logged.of(record) for record in failures()]
    seen = "\n".join(entry.text() for entry in logged)
    path, _, query = target.partition("?")
    return TaskFailure(
        status=response.status, body=response.body.decode("latin-1"), logged=logged,
        after=after, shows_handler=app.__name__ in seen,
        shows_request=path in seen or bool(query and query in seen))


def describe(failure: TaskFailure, full: bool = False) -> str:
    """What the client got, what was logged, and its traceback, as text for a notebook. The
    task's number and timings are left out (they change from run to run) unless `full`."""
    lines = [f"the client got: {failure.status} {failure.body!r}"]
    if not failure.logged:
        lines.append("nothing was logged")
    for entry in failure.logged:
        lines.append(f"logged on {entry.logger!r} ({entry.level}): {entry.headline}")
        if full:
            lines += [f"    {line}" for line in entry.message.splitlines()[1:]]
        if entry.exception:
            lines.append(f"  exception: {entry.exception}")
            lines += [f"    {line}" for line in entry.frames]
    return "\n".join(lines)


def explain_forgotten_task(seen: TaskFailure, app_name: str = "fire_and_forget") -> str:
    """The answer to "a task you forgot fails: what do the client and the log tell you?",
    from what `task_exception` saw."""
    if not seen.logged:
        return (f"The client got {seen.status} and **nothing was logged** within the wait: the "
                f"task's exception is reported only when the task object is destroyed.")
    entry = seen.logged[0]
    when = (f"{seen.after * 1000:.0f} ms after the response" if seen.after is not None
            else "after the response")
    top = entry.frames[0].split(":")[0] if entry.frames else "?"
    hidden = [what for what, shown in ((f"the handler that created the task (`{app_name}`)",
                                        seen.shows_handler),
                                       ("the request that caused it", seen.shows_request))
              if not shown]
    return (
        f"The client got **{seen.status} {seen.body.strip()!r}**: as far as it knows, all went "
        f"well. The failure surfaced {when}, in asyncio's own log (`{entry.logger}`, "
        f"{entry.level}): *{entry.headline}*. asyncio says so when the task object is "
        f"destroyed: "
        + ("here nothing else held it, so right after it failed. " if seen.after is not None
           and seen.after < 0.5 else "here only once the garbage collector found it. ")
        + f"Its traceback starts at `{top}`, the task's own coroutine: a task runs on its "
        f"own, its stack starts at its coroutine, not at the code that created it. "
        + (f"It does not show {' nor '.join(hidden)}." if hidden else
           "It shows both the handler and the request."))


def explain_fixes(group: TaskFailure, kept: TaskFailure) -> str:
    """What the two fixes changed, from what `task_exception` saw for each."""
    group_entry = group.logged[0] if group.logged else None
    kept_entry = kept.logged[0] if kept.logged else None
    parts = []
    if group_entry is not None:
        parts.append(
            f"With `asyncio.TaskGroup` the handler waited for the e-mail, so its failure was "
            f"raised in the handler: the client got **{group.status}**, and the server logged "
            f"*{group_entry.headline}* with a traceback that "
            + ("runs through the handler." if group.shows_handler
               else "still misses the handler."))
    if kept_entry is not None:
        parts.append(
            f"Keeping the task and reading its result in a done callback, the client got "
            f"**{kept.status}** at once and the app logged *{kept_entry.headline}*: "
            + ("the log names the request, because the task was named after it."
               if kept.shows_request else "but the log does not name the request."))
    return " ".join(parts) or "Nothing was logged for either fix."


# -- 2. asyncio's debug mode catching a slow callback --------------------------------------------

@dataclass
class SlowCallback:
    """One "Executing ... took ... seconds" record of asyncio's debug mode, as data."""

    logger: str
    level: str
    callback: str
    """What ran too long: the task's repr (its coroutine, where it was defined and created)."""
    coroutine: str
    """The coroutine's name, taken from `callback`; "" for a plain callback."""
    seconds: float


def slow_callbacks(app, work_ms: float = 150, slow_callback_duration: float = 0.1,
                   target: str | None = None) -> tuple[int, list[SlowCallback]]:
    """Run `app` on our ASGI server with asyncio's debug mode on, send one request for
    `work_ms` of work, and return the status and the slow-callback records it caused."""
    with collect_log("asyncio") as records:
        with serve_in_background(app, name="async-costs:slow", lifespan="off",
                                 access_log=False) as server:
            with debug_mode(server.loop, slow_callback_duration):
                response = request(server.address, target=target or f"/?ms={work_ms:g}")
    slow = []
    for record in records:
        if record.msg == "Executing %s took %.3f seconds":  # base_events.BaseEventLoop._run_once
            handle, seconds = record.args
            callback = short_paths(str(handle))
            name = re.search(r"coro=<(\w+)\(\)", callback)
            slow.append(SlowCallback(record.name, record.levelname, callback,
                                     name.group(1) if name else "", round(seconds, 3)))
    return response.status, slow


def explain_slow_callbacks(blocked: tuple[int, list[SlowCallback]],
                           fine: tuple[int, list[SlowCallback]],
                           blocked_name: str = "time.sleep", fine_name: str = "asyncio.sleep",
                           slow_callback_duration: float = 0.1) -> str:
    """What debug mode reported for a blocking app and for its fix (`slow_callbacks` results)."""
    _, slow = blocked
    _, quiet = fine
    if not slow:
        return (f"Debug mode logged **nothing** for the `{blocked_name}` app this time: no step "
                f"ran longer than {slow_callback_duration * 1000:.0f} ms. Run the cell again.")
    record = slow[0]
    return (
        f"Debug mode logged **{len(slow)} WARNING** on the `{record.logger}` logger for the "
        f"`{blocked_name}` app: one step of the task running `{record.coroutine}` held the loop "
        f"for **{record.seconds * 1000:.0f} ms**, over the {slow_callback_duration * 1000:.0f} ms "
        f"threshold. The record names the coroutine, where it was defined and where the task "
        f"was created (our server's `http.py`), not the line that blocked: a profiler finds "
        f"that. "
        + (f"The `{fine_name}` app caused no record: each of its steps is short, and the wait "
           f"happens between them, in the loop's timer." if not quiet else
           f"The `{fine_name}` app caused {len(quiet)} too: a busy machine can delay any step "
           f"past the threshold, so read these warnings as hints, not proofs."))
