"""Experiment: does *your* ASGI app block the event loop? Notebook 05's pitfall, on your code.

    python -m asgi_lab experiment blocking myproject.main:app --path /slow
    python -m asgi_lab experiment blocking myproject.main:app --path /slow --path /items --clients 4 --duration 5

or from Python:

    from asgi_lab.experiments import blocking_app
    result = blocking_app.run(app, ["/slow"], clients=4, duration=3)
    print(blocking_app.format_table(result))
    blocking_app.lag_chart(result)

What a run does:

1. It serves the app on our ASGI server, in the background on a free port of 127.0.0.1, with
   the server's event loop in **asyncio's debug mode** (`loop.set_debug(True)`) and
   `loop.slow_callback_duration` set to the threshold (100 ms by default, asyncio's own
   default): asyncio then logs every callback or task step that ran longer, as
   `Executing <Task ... coro=<...>> took 0.250 seconds` (CPython docs, "Developing with
   asyncio": "Debug Mode"). Those log records are collected as data, not printed.
2. It runs the **loop-lag probe** of `blocking_loop` (a coroutine that sleeps 5 ms again and
   again and notes how late it wakes: late by 250 ms means the loop ran nothing else for
   250 ms), and a **watchdog thread** beside it. When the probe is overdue by half the
   threshold, the watchdog reads the loop thread's current stack with
   `sys._current_frames()`: the line the loop is stuck on, seen from outside while it is stuck.
3. A thin ASGI wrapper around your app notes each request (method, path, the task that serves
   it, start and end), so a stall and a slow callback lead back to the request that caused it.
4. `clients` threads send `GET` for each `--path` in turn, each on its own keep-alive
   connection, for `duration` seconds: light, concurrent load. Before that, unmeasured, each
   sends one request per path (a warm-up: thread pools start their threads on first use).

The result (plain JSON, `save_result`/`load_result`) holds every probe sample, every stall
above the threshold with the request and the stack, every slow callback asyncio reported and
every request; `format_table` prints the verdict and `lag_chart` draws the loop lag over the
run, stalls marked. `--replot FILE` draws a saved run again.

Not every stall is the app's doing, and the result says which are not (`in_app: false`, with
a `cause`): a garbage collection on the loop's thread stops the loop wherever it strikes
(timed with `gc.callbacks`, and named when it covers half the stall or more); a stall whose
stack holds none of your code (the loop was in `select()`, ready to run) means the loop's
thread did not get the CPU or the GIL: a busy machine or a computing thread. A thread that
waits for the GIL in the middle of your code cannot be told apart from one your code blocks,
by sampling alone: on a machine that is busy with other work, run again.
"""

from __future__ import annotations

import asyncio
import gc
import http.client
import logging
import os
import re
import sys
import sysconfig
import threading
import time
import traceback

from ..background import serve_in_background
from .blocking_loop import PROBE_INTERVAL, LoopLagProbe
from .measure import save_result

THRESHOLD = 0.1
"""Seconds: a stall this long or longer is reported (asyncio's default slow_callback_duration)."""
SLOW_CALLBACK = re.compile(r"name='([^']*)'")
_LIBRARY_DIRS = tuple(os.path.realpath(p) + os.sep for p in {
    sysconfig.get_paths()["stdlib"], sysconfig.get_paths()["platstdlib"],
    sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]})
_SERVER_DIRS = tuple(os.path.join(os.path.dirname(os.path.dirname(os.path.realpath(__file__))), d)
                     for d in ("asgi", "experiments", "background.py", "wsgi", "onion.py",
                               "trace.py"))


# -- the request log: which task serves which request ------------------------------------------

class RequestLog:
    """An ASGI wrapper that notes every HTTP request: method, path, status, the task serving it,
    and when it started and ended (seconds on `clock`). It changes no message."""

    def __init__(self, app, clock) -> None:
        self.app = app
        self.clock = clock
        self.requests: list[dict] = []
        self.by_task: dict = {}  # asyncio.Task -> the request it serves

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        task = asyncio.current_task()
        request = {"id": len(self.requests) + 1, "method": scope["method"], "path": scope["path"],
                   "task": task.get_name() if task else None, "start": self.clock(),
                   "end": None, "status": None}
        self.requests.append(request)
        self.by_task[task] = request

        async def send_noting_status(message):
            if message["type"] == "http.response.start":
                request["status"] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_noting_status)
        finally:
            request["end"] = self.clock()
            self.by_task.pop(task, None)

    def in_flight(self, at: float) -> list[dict]:
        return [r for r in self.requests if r["start"] <= at and (r["end"] is None or r["end"] >= at)]


# -- the probe, its watchdog, and asyncio's own report -----------------------------------------

class StallWatch(LoopLagProbe):
    """The loop-lag probe, plus a watchdog thread that samples the loop thread's stack while
    the probe is overdue, plus the slow callbacks that asyncio's debug mode logs.

    Every wake-up of the probe becomes a sample `(t, lag)`; a lag of `threshold` or more
    becomes a stall, with the stack the watchdog saw during it."""

    def __init__(self, server, requests: RequestLog, threshold: float = THRESHOLD,
                 interval: float = PROBE_INTERVAL) -> None:
        super().__init__(server.loop, interval)
        self.loop_thread = server._thread
        self.requests = requests
        self.threshold = threshold
        self.t0 = time.monotonic()       # the loop's clock is time.monotonic() (asyncio docs)
        self.wall0 = time.time()
        self.samples: list[tuple[float, float]] = []
        self.stalls: list[dict] = []
        self.slow_callbacks: list[dict] = []
        self._last_wake = time.monotonic()
        self._pending: list[dict] = []
        self._lock = threading.Lock()
        self._watchdog = threading.Thread(target=self._watch_from_outside, daemon=True,
                                          name="stall-watchdog")
        self._handler = _Collector(self)
        self._saved_debug = None
        self.collections: list[tuple[float, float, int]] = []  # (start, ms, generation) on the loop
        self._gc_started = 0.0

    def now(self) -> float:
        return time.monotonic() - self.t0

    # the probe, on the loop
    async def _watch(self) -> None:
        while not self._stop.is_set():
            asked = time.monotonic()
            await asyncio.sleep(self.interval)
            woke = time.monotonic()
            lag = max(woke - asked - self.interval, 0.0)
            self._last_wake = woke
            self.lags.append(lag)
            self.samples.append((round(woke - self.t0, 4), round(lag * 1000, 2)))
            with self._lock:
                pending, self._pending = self._pending, []
            if lag >= self.threshold:
                self._stall(asked + self.interval - self.t0, lag, pending)

    def _stall(self, start: float, lag: float, seen: list[dict]) -> None:
        """One stall, with what the watchdog saw during it: one sample per `threshold / 2`.
        A long stall may cover several blocking steps back to back (the loop runs every
        ready callback before it looks at its timers again), so each distinct request and
        blocking line is kept, the first stack of each."""
        seen = [s for s in seen if start - 0.01 <= s["t"] <= start + lag + 0.01]
        stall = {"start": round(start, 4), "end": round(start + lag, 4),
                 "duration_ms": round(lag * 1000, 1), "request": None, "candidates": [],
                 "stack": [], "blocking_line": None, "in_app": False, "samples": len(seen),
                 "also": [], "gc_ms": 0.0, "cause": ""}
        # Garbage collection on the loop's thread stops the loop too, wherever it happens to
        # strike: time it (gc.callbacks) rather than blame the line it interrupted.
        stall["gc_ms"] = round(sum(max(0.0, min(start + lag, t + ms / 1000) - max(start, t)) * 1000
                                   for t, ms, _ in self.collections), 1)
        distinct = {}
        for sample in seen:
            distinct.setdefault((sample["request"], sample["blocking_line"]), sample)
        mine = [s for s in distinct.values() if s["blocking_line"] is not None]
        first = (mine or list(distinct.values()) or [None])[0]
        if first is not None:
            stall.update(stack=first["stack"], blocking_line=first["blocking_line"],
                         in_app=bool(mine), request=first["request"],
                         candidates=first["candidates"])
            stall["also"] = [{"request": s["request"] or " or ".join(s["candidates"]),
                              "blocking_line": s["blocking_line"]}
                             for s in mine if s is not first]
        if stall["gc_ms"] >= stall["duration_ms"] / 2:
            generation = max((g for t, ms, g in self.collections if start <= t <= start + lag),
                             default=2)
            stall["in_app"] = False
            stall["cause"] = f"garbage collection (generation {generation}), {stall['gc_ms']:.0f} ms"
        elif stall["in_app"]:
            stall["cause"] = "your code"
        else:
            stall["cause"] = ("none of your code on the stack: the loop's thread waited for the "
                              "CPU or the GIL (a busy machine, or another thread computing)")
        self.stalls.append(stall)

    def _gc_callback(self, phase: str, info: dict) -> None:
        if threading.get_ident() != self.loop_thread.ident:
            return
        if phase == "start":
            self._gc_started = time.monotonic()
        elif self._gc_started:
            self.collections.append((self._gc_started - self.t0,
                                     (time.monotonic() - self._gc_started) * 1000,
                                     info["generation"]))

    # the watchdog, on its own thread
    def _watch_from_outside(self) -> None:
        ident = self.loop_thread.ident
        last_sample = 0.0
        while not self._stop.is_set():
            time.sleep(self.interval)
            now = time.monotonic()
            overdue = now - self._last_wake - self.interval
            if overdue < self.threshold / 2 or now - last_sample < self.threshold / 2:
                continue
            frame = sys._current_frames().get(ident)
            if frame is None:
                continue
            # Who is running, first: reading the source lines below may let the loop run on.
            at = self.now()
            try:  # which task the loop is running now (None between two callbacks)
                task = asyncio.current_task(self.loop)
            except RuntimeError:
                task = None
            request, candidates = self._who(task, at)
            stack = [{"file": f.filename, "line": f.lineno, "function": f.name, "code": f.line}
                     for f in traceback.extract_stack(frame)]
            del frame
            with self._lock:
                self._pending.append({"t": at, "stack": stack, "request": request,
                                      "candidates": candidates,
                                      "blocking_line": blocking_line(stack)})
            last_sample = now

    def _who(self, task, at: float) -> tuple[str | None, list[str]]:
        """The request the running task serves; else the routes in flight (a framework may run
        your handler in a task of its own, which the wrapper does not see)."""
        known = self.requests.by_task.get(task) if task is not None else None
        if known is not None:
            return f"{known['method']} {known['path']}", []
        routes = sorted({f"{r['method']} {r['path']}" for r in self.requests.in_flight(at)})
        return (routes[0] if len(routes) == 1 else None), routes

    def start(self) -> "StallWatch":
        self.t0, self.wall0 = time.monotonic(), time.time()  # t = 0: the measured run begins
        self._last_wake = self.t0
        logger = logging.getLogger("asyncio")
        self._saved_logger = (logger.propagate, logger.level)
        logger.addHandler(self._handler)
        logger.propagate = False  # collected as data: no "Executing ... took" lines on stderr
        logger.setLevel(logging.WARNING)
        self._saved_debug = (self.loop.get_debug(), self.loop.slow_callback_duration)
        done = threading.Event()

        def debug_on():
            self.loop.set_debug(True)
            self.loop.slow_callback_duration = self.threshold
            done.set()

        self.loop.call_soon_threadsafe(debug_on)
        done.wait(5)
        gc.callbacks.append(self._gc_callback)
        super().start()
        self._watchdog.start()
        return self

    def stop(self) -> float:
        lag = super().stop()
        self._watchdog.join(5)
        if self._gc_callback in gc.callbacks:
            gc.callbacks.remove(self._gc_callback)
        debug, duration = self._saved_debug

        def debug_back():
            self.loop.slow_callback_duration = duration
            self.loop.set_debug(debug)

        try:
            self.loop.call_soon_threadsafe(debug_back)
        except RuntimeError:  # the loop is closed already
            pass
        logger = logging.getLogger("asyncio")
        logger.removeHandler(self._handler)
        logger.propagate, level = self._saved_logger
        logger.setLevel(level)
        return lag


class _Collector(logging.Handler):
    """Keeps asyncio's "Executing <handle> took N seconds" records of the watched loop."""

    def __init__(self, watch: StallWatch) -> None:
        super().__init__(logging.WARNING)
        self.watch = watch

    def emit(self, record: logging.LogRecord) -> None:
        if record.thread != self.watch.loop_thread.ident or not str(record.msg).startswith("Executing"):
            return
        handle, seconds = record.args
        match = SLOW_CALLBACK.search(str(handle))
        task = match.group(1) if match else None
        request = next((f"{r['method']} {r['path']}" for r in self.watch.requests.requests
                        if r["task"] == task), None) if task else None
        self.watch.slow_callbacks.append({
            "t": round(record.created - self.watch.wall0, 4), "seconds": round(seconds, 4),
            "handle": str(handle)[:500], "task": task, "request": request})


def is_your_code(filename: str) -> bool:
    """Not the standard library, not an installed package, not our server: the app's code."""
    path = os.path.realpath(filename)
    if filename.startswith("<") or path.startswith(_LIBRARY_DIRS):
        return False
    return not any(path == d or path.startswith(d + os.sep) for d in _SERVER_DIRS)


def blocking_line(stack: list[dict]) -> str | None:
    """The innermost frame of your code: `file:line in function: code`, or None when the
    stack holds none of it (the loop was waiting in select(), or in a library of its own)."""
    for frame in reversed(stack):
        if is_your_code(frame["file"]):
            return (f"{_short(frame['file'])}:{frame['line']} in {frame['function']}: "
                    f"{frame['code'] or ''}".rstrip(": "))
    return None


def _short(path: str) -> str:
    """A file as its import path shows it (`starlette/routing.py`, `myapp/routes.py`): relative
    to the longest `sys.path` entry, or folder holding an imported top-level package (an
    editable install finds its package without a `sys.path` entry), that holds it, else as it is."""
    real = os.path.realpath(path)
    packages = {os.path.dirname(os.path.realpath(folder))
                for name, module in list(sys.modules.items()) if "." not in name
                for folder in list(getattr(module, "__path__", None) or [])[:1]}
    roots = sorted({os.path.realpath(entry or os.getcwd()) for entry in sys.path} | packages,
                   key=len, reverse=True)
    for root in roots:
        if real.startswith(root + os.sep):
            return real[len(root) + 1:]
    return path


# -- the load -----------------------------------------------------------------------------------

def _client(address, paths: list[str], deadline: float, watch: StallWatch, out: list,
            offset: int) -> None:
    """GET each path in turn on one keep-alive connection until `deadline`."""
    connection = http.client.HTTPConnection(*address, timeout=30)
    i = offset
    try:
        while time.monotonic() < deadline:
            path = paths[i % len(paths)]
            i += 1
            started = watch.now()
            try:
                connection.request("GET", path)
                response = connection.getresponse()
                response.read()
                status = response.status
            except (OSError, http.client.HTTPException) as exc:
                status = f"{type(exc).__name__}"
                connection.close()
                connection = http.client.HTTPConnection(*address, timeout=30)
            out.append({"path": path, "start": round(started, 4),
                        "ms": round((watch.now() - started) * 1000, 2), "status": status})
    finally:
        connection.close()


def _warm_up(address, paths: list[str], clients: int) -> None:
    """Every client at once: one request per path, on a connection of its own."""
    threads = [threading.Thread(target=_client_once, args=(address, paths), daemon=True)
               for _ in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)


def _client_once(address, paths: list[str]) -> None:
    connection = http.client.HTTPConnection(*address, timeout=30)
    try:
        for path in paths:
            connection.request("GET", path)
            connection.getresponse().read()
    except (OSError, http.client.HTTPException):
        pass  # the measured run will meet it again, and count it
    finally:
        connection.close()


def run(app, paths=("/",), *, clients: int = 4, duration: float = 3.0,
        threshold: float = THRESHOLD, name: str | None = None, lifespan: str = "auto",
        warmup: bool = True, out=None, command: str | None = None) -> dict:
    """Serve `app` (ASGI) on our server, load `paths` with `clients` threads for `duration`
    seconds, watch the loop; returns (and saves to `out`) the result.

    `warmup`: first, unmeasured, every client sends one request per path at once. A thread
    pool starts its threads on first use (a thread start can hold the loop for a moment on a
    busy machine), a framework builds its caches: a one-time cost, not what "does my app
    block the loop" asks about. `warmup=False` measures from the very first request."""
    if isinstance(paths, str):
        paths = [paths]
    paths = [p if p.startswith("/") else "/" + p for p in paths]
    name = name or f"{getattr(app, '__module__', '?')}:{getattr(app, '__qualname__', type(app).__name__)}"
    clock = {"watch": None}
    log = RequestLog(app, lambda: clock["watch"].now() if clock["watch"] else 0.0)
    done: list[dict] = []
    with serve_in_background(log, name=f"blocking-app:{name}", lifespan=lifespan,
                             access_log=False) as server:
        watch = StallWatch(server, log, threshold)
        clock["watch"] = watch
        if warmup:  # not measured: the first requests start the default executor's threads,
            _warm_up(server.address, paths, clients)  # open connections, fill caches
        log.requests.clear()
        gc.collect()  # start-up garbage is collected now, not on the loop in the middle of the run
        with watch:
            time.sleep(0.1)  # a few quiet samples first: the loop's lag when nothing runs
            deadline = time.monotonic() + duration
            threads = [threading.Thread(target=_client, daemon=True, name=f"blocking-client-{i}",
                                        args=(server.address, paths, deadline, watch, done, i))
                       for i in range(clients)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(duration + 60)
            time.sleep(0.05)
    result = {"experiment": "blocking", "app": name, "paths": paths, "clients": clients,
              "duration": duration, "threshold_ms": round(threshold * 1000, 1), "warmup": warmup,
              "probe_interval_ms": PROBE_INTERVAL * 1000,
              "samples": watch.samples, "stalls": watch.stalls,
              "slow_callbacks": watch.slow_callbacks,
              "collections": [[round(t, 4), round(ms, 2), g] for t, ms, g in watch.collections],
              "requests": [{k: r[k] for k in ("id", "method", "path", "status", "task")}
                           | {"start": round(r["start"], 4),
                              "end": None if r["end"] is None else round(r["end"], 4)}
                           for r in log.requests],
              "client_requests": sorted(done, key=lambda r: r["start"])}
    provenance(result, command)
    result["summary"] = summarize(result)
    if out:
        save_result(result, out)
    return result


def provenance(result: dict, command: str | None = None) -> dict:
    """Stamp `result` with where it came from (commit, date, CPU model, cores, the command):
    through the experiments' one result writer (`results.stamp`, a `machine` entry) where it
    exists, else as `environment` (`measure.environment`)."""
    try:
        from .results import stamp
    except ImportError:
        from .measure import environment

        result["environment"] = environment(command)
        return result
    return stamp(result, command)


def machine(result: dict) -> dict:
    """The machine a result was measured on, either way it was stamped: `cores`,
    `load_average`, `cpu_model`, `commit`."""
    if isinstance(result.get("machine"), dict):
        return result["machine"]
    env = result.get("environment") or {}
    return {"cores": env.get("cpus"), "load_average": env.get("load_average"),
            "cpu_model": env.get("cpu_model"), "commit": env.get("commit")}


# -- what it says -------------------------------------------------------------------------------

def summarize(result: dict) -> dict:
    """The verdict and its numbers: longest stall, stalls in your code, per-path latency."""
    stalls = result["stalls"]
    in_app = [s for s in stalls if s["in_app"]]
    lags = [lag for _, lag in result["samples"]]
    by_path = {}
    for path in result["paths"]:
        times = sorted(r["ms"] for r in result["client_requests"] if r["path"] == path)
        errors = sum(1 for r in result["client_requests"]
                     if r["path"] == path and not (isinstance(r["status"], int) and r["status"] < 500))
        by_path[path] = {"requests": len(times), "errors": errors,
                         "p50_ms": _pct(times, 50), "max_ms": times[-1] if times else None}
    culprits: dict[str, dict] = {}
    for stall in in_app:
        first = (_request_of(stall), stall["blocking_line"])
        seen = [first] + [(a["request"] or UNKNOWN, a["blocking_line"]) for a in stall.get("also", [])]
        for key in dict.fromkeys(seen):
            entry = culprits.setdefault(" | ".join(key), {
                "request": key[0], "blocking_line": key[1], "stalls": 0, "longest_ms": 0.0})
            entry["stalls"] += 1
            entry["longest_ms"] = max(entry["longest_ms"], stall["duration_ms"])
    return {
        "blocks": bool(in_app),
        "stalls": len(stalls),
        "stalls_in_app": len(in_app),
        "longest_stall_ms": max((s["duration_ms"] for s in stalls), default=0.0),
        "stalled_ms_total": round(sum(s["duration_ms"] for s in stalls), 1),
        "max_lag_ms": max(lags, default=0.0),
        "p50_lag_ms": _pct(sorted(lags), 50),
        "slow_callbacks": len(result["slow_callbacks"]),
        "culprits": sorted(culprits.values(), key=lambda c: (-c["stalls"], -c["longest_ms"])),
        "paths": by_path,
    }


UNKNOWN = "a request not known"


def _request_of(stall: dict) -> str:
    """The request a stall is blamed on, or the routes that were in flight, or UNKNOWN."""
    return stall["request"] or " or ".join(stall["candidates"]) or UNKNOWN


def _pct(sorted_values, q):
    if not sorted_values:
        return None
    return sorted_values[min(len(sorted_values) - 1, int(q / 100 * len(sorted_values)))]


def format_table(result: dict) -> str:
    """The verdict, the culprits (request, blocking line) and the latency per path, as text."""
    s, threshold = result["summary"], result["threshold_ms"]
    head = (f"{result['app']}: {result['clients']} clients for {result['duration']:g} s on "
            f"{', '.join(result['paths'])}; stalls of {threshold:g} ms or more")
    lines = [head, "-" * len(head)]
    if s["blocks"]:
        lines.append(f"BLOCKS THE LOOP: {_n(s['stalls_in_app'], 'stall')} in your code, the longest "
                     f"{s['longest_stall_ms']:.0f} ms, {s['stalled_ms_total']:.0f} ms stalled in all")
    elif s["stalls"]:
        lines.append(f"no stall in your code ({s['stalls']} elsewhere, see below; longest lag "
                     f"{s['max_lag_ms']:.0f} ms)")
    else:
        lines.append(f"no stall of {threshold:g} ms or more: the loop stayed free "
                     f"(longest lag {s['max_lag_ms']:.0f} ms)")
    lines.append(f"asyncio debug mode: {_n(s['slow_callbacks'], 'slow callback')} (>= {threshold:g} ms)")
    for request in dict.fromkeys(c["request"] for c in s["culprits"]):
        mine = [c for c in s["culprits"] if c["request"] == request]
        lines.append(f"  {request}: the loop was stuck at")
        for culprit in mine:
            lines.append(f"    {culprit['blocking_line']}  ({_n(culprit['stalls'], 'stall')}, longest "
                         f"{culprit['longest_ms']:.0f} ms)")
    for stall in result["stalls"]:
        if not stall["in_app"]:
            lines.append(f"  not the app: {stall['duration_ms']:.0f} ms at t={stall['start']:.2f} s, "
                         f"{stall['cause']}")
    lines.append(f"{'path':<24} {'requests':>8} {'errors':>6} {'p50 ms':>8} {'max ms':>8}")
    for path, p in s["paths"].items():
        lines.append(f"{path:<24} {p['requests']:>8} {p['errors']:>6} {_num(p['p50_ms']):>8} "
                     f"{_num(p['max_ms']):>8}")
    return "\n".join(lines)


def _n(count: int, thing: str) -> str:
    return f"{count} {thing}" + ("" if count == 1 else "s")


def _num(value) -> str:
    return "-" if value is None else f"{value:.0f}"


def format_stack(stall: dict, limit: int = 8) -> str:
    """The last `limit` frames of a stall's stack, innermost last, like a traceback."""
    lines = [f"stall of {stall['duration_ms']:.0f} ms at t={stall['start']:.2f} s, "
             f"during {_request_of(stall)}:"]
    for frame in stall["stack"][-limit:]:
        mark = ">" if is_your_code(frame["file"]) else " "
        lines.append(f"{mark} {_short(frame['file'])}:{frame['line']} in {frame['function']}")
        if frame["code"]:
            lines.append(f"      {frame['code']}")
    return "\n".join(lines)


def lag_chart(result: dict, source: str | None = None, ax=None):
    """The loop's lag over the run (probe samples), the threshold, and each stall marked with
    the request and the line that caused it. Returns the matplotlib Figure."""
    from ..viz import charts

    if ax is None:
        fig, (ax,) = charts._figure(8, 3.6)
    else:
        fig = ax.figure
    times = [t for t, _ in result["samples"]]
    lags = [lag for _, lag in result["samples"]]
    # Each probe wake-up is one stem: how late it woke. A stall of 300 ms is one stem of 300 ms
    # at its end, and a shaded span over its length (red: your code was on the stack).
    ax.vlines(times, 0, lags, color=charts.color("asgi"), lw=0.9, label="loop lag at each probe wake-up")
    ax.axhline(result["threshold_ms"], color="#d62728", ls="--", lw=0.8,
               label=f"threshold {result['threshold_ms']:g} ms")
    for i, stall in enumerate(result["stalls"]):
        ax.axvspan(stall["start"], stall["end"], color="#d62728" if stall["in_app"] else "#999999",
                   alpha=0.18, lw=0)
    for culprit in result["summary"]["culprits"][:1]:  # the line most stalls were stuck at
        first = next((s for s in result["stalls"] if s["in_app"] and culprit["blocking_line"] in
                      [s["blocking_line"]] + [a["blocking_line"] for a in s.get("also", [])]),
                     None)
        if first is None:
            continue
        ax.annotate(f"{culprit['request']}\n{culprit['blocking_line'][:70]}",
                    (first["start"], first["duration_ms"]), fontsize=7.5, xytext=(4, -4),
                    textcoords="offset points", va="top",
                    bbox=dict(boxstyle="round", fc="white", ec="none", alpha=0.8))
    s = result["summary"]
    culprit = s["culprits"][0]["request"] if s["culprits"] else ", ".join(result["paths"])
    title = (f"{culprit} blocks the loop: {_n(s['stalls_in_app'], 'stall')}, up to "
             f"{s['longest_stall_ms']:.0f} ms" if s["blocks"] else
             f"The loop stayed free: longest lag {s['max_lag_ms']:.0f} ms, under "
             f"{result['threshold_ms']:g} ms")
    charts._title(ax, title)
    ax.set_xlabel(f"seconds into the run ({result['clients']} clients)")
    ax.set_ylabel("event-loop lag (ms)")
    ax.set_ylim(bottom=0, top=max(max(lags, default=0), result["threshold_ms"]) * 1.15)
    ax.legend(loc="upper right", fontsize=8)
    charts._caption(fig, source or f"{result['app']} · " + _source(result))
    return fig


def compare_chart(results: dict, source: str | None = None):
    """Several runs (name -> result) as notebook 05's loop-lag chart: the longest stall and
    the median latency per run, side by side."""
    from ..viz import charts

    fig, (ax,) = charts._figure(6.4, 3.4)
    names = list(results)
    longest = [results[n]["summary"]["max_lag_ms"] for n in names]
    bars = ax.bar(names, longest, color=["#d62728" if results[n]["summary"]["blocks"] else
                                         charts.color("asgi") for n in names])
    ax.bar_label(bars, fmt="%.0f ms", fontsize=8)
    threshold = max(r["threshold_ms"] for r in results.values())
    ax.axhline(threshold, color="#d62728", ls="--", lw=0.8, label=f"threshold {threshold:g} ms")
    charts._title(ax, "Longest event-loop stall under the same load")
    ax.set_ylabel("longest loop lag (ms)")
    ax.set_ylim(bottom=0)
    ax.legend(fontsize=8)
    charts._caption(fig, source or _source(next(iter(results.values()))))
    return fig


def _source(result: dict) -> str:
    from .measure import source_line

    return source_line(result)


def save_charts(result: dict, folder: str, source: str | None = None) -> list[str]:
    """`lag_chart` as `blocking-lag.png` in `folder`; returns the paths."""
    path = os.path.join(folder, "blocking-lag.png")
    lag_chart(result, source).savefig(path, dpi=110)
    return [path]


def main(argv=None) -> int:
    """`python -m asgi_lab.experiments.blocking_app MODULE:ATTR --path /slow` (also wired as
    `python -m asgi_lab experiment blocking`)."""
    import argparse

    from .cli import add_blocking_arguments

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_blocking_arguments(parser)
    return run_from_args(parser.parse_args(argv))


def run_from_args(args) -> int:
    from ..cli import import_app
    from .measure import load_result, source_line

    if args.replot:
        result = load_result(args.replot)
    else:
        if not args.app:
            raise SystemExit("error: name your app as MODULE:ATTR (or --replot FILE)")
        app = import_app(args.app)
        threshold = THRESHOLD if args.threshold_ms is None else args.threshold_ms / 1000
        result = run(app, args.path or ["/"], clients=args.clients, duration=args.duration,
                     threshold=threshold, name=args.app, lifespan=args.lifespan, warmup=args.warmup)
        save_result(result, args.out)
        print(f"saved {args.out}", file=sys.stderr)
    print(format_table(result))
    mine = sorted((s for s in result["stalls"] if s["in_app"]), key=lambda s: -s["duration_ms"])
    for stall in mine[:args.stacks]:
        print()
        print(format_stack(stall))
    if args.charts:
        os.makedirs(args.charts, exist_ok=True)
        source = f"{result['app']} · " + source_line(result, args.replot)
        for path in save_charts(result, args.charts, source):
            print(f"chart: {path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
