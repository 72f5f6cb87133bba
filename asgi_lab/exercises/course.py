"""The course path: the notebooks in order, what each teaches, and about how long it takes.

`notebooks/00-start-here.ipynb` shows these tables. They list only notebooks that exist in
the checkout, and estimate study time from the notebooks themselves (see `study_minutes`), so
they stay true when a notebook grows or a new one lands.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

WORDS_PER_MINUTE = 200
"""Reading speed for technical prose (a common estimate; slower than for fiction)."""
MINUTES_PER_CODE_CELL = 1.0
"""Reading a code cell, running it and looking at its output."""


@dataclass(frozen=True)
class Step:
    path: str
    """Relative to `notebooks/`."""
    title: str
    teaches: str
    after: str | tuple[str, ...] = ""
    """For an exercise: the notebook(s) to read first, relative to `notebooks/` (a course
    notebook, or another exercise)."""

    @property
    def read_first(self) -> tuple[str, ...]:
        return (self.after,) if isinstance(self.after, str) and self.after else tuple(self.after)


COURSE = [
    Step("00a-from-the-ground-up.ipynb", "From the ground up: a thread, an event loop",
         "A blocking server, a thread per connection and an event loop of generators, built "
         "from `socket` and `selectors`, serve the same request: who waits, measured; "
         "`await` as the loop's `yield`."),
    Step("01-the-wsgi-call.ipynb", "The WSGI call",
         "A request is one function call: `environ`, `start_response`, the body iterable, "
         "`close()`, traced event by event on our WSGI server."),
    Step("02-asgi-events.ipynb", "The ASGI event stream",
         "The same requests as messages: `receive()` / `send()`, a streamed response, a client "
         "that leaves half-way, lifespan; WSGI and ASGI traces side by side."),
    Step("03-threads-vs-coroutines.ipynb", "Threads vs coroutines, measured",
         "The seed chapter's claim, \"1000 SSE connections = 1000 blocked threads\", measured: "
         "OS threads, memory per client and clients never served, live and from a committed "
         "100-10,000-client reference run; where a thread's address space goes; gevent and its "
         "price; two of your own apps side by side on a real database, and whether yours blocks "
         "its loop."),
    Step("04-live-websockets.ipynb", "Live WebSockets",
         "Two-way traffic on one connection, which WSGI cannot express: a chat whose server "
         "pushes every line to every member; frames on the wire, ping/pong, the closing "
         "handshake, a member too slow to keep up."),
    Step("05-async-pitfalls.ipynb", "Async pitfalls",
         "The price of one event loop: a blocking call stalls every client, measured in "
         "interleaved rounds, with the fixes; a CPU-bound handler counted in cores (and what "
         "free-threaded CPython changes); a forgotten `await`; an exception lost in a task; "
         "asyncio's debug mode."),
    Step("06-websockets-on-wsgi.ipynb", "WebSockets on WSGI: the hacks, counted",
         "What WSGI lacks is two-way traffic on one connection, not the 101: the same chat app on "
         "wsgiref, werkzeug, waitress and gunicorn; a raw-socket escape hatch (two threads per "
         "member, one server only) and a separate WebSocket server (two processes, one more hop)."),
    Step("07-async-and-http2.ipynb", "What WSGI can do, and what it cannot express",
         "Hello world on both servers, measured: tens of percent either way, not what ASGI is "
         "for. An `async def` app on WSGI "
         "(a 500), the bridges (`asyncio.run`, `async_to_sync`, one loop thread) traced: one "
         "request per worker thread, no streaming, no disconnect. Two HTTP/2 streams with h2: "
         "interleaved frames, a scope per stream."),
]

EXERCISES = [
    # "Read first" is the notebook that teaches what the exercise practises (checked against
    # the notebooks' sections; tests/test_exercises.py checks that each one exists).
    Step("exercises/01-wsgi-app.ipynb", "A WSGI app", "environ, start_response, bytes",
         "01-the-wsgi-call.ipynb"),
    Step("exercises/02-wsgi-middleware.ipynb", "WSGI middleware",
         "wrapping start_response, streaming, close(), exc_info", "01-the-wsgi-call.ipynb"),
    Step("exercises/03-streamed-body.ipynb", "A streamed request body",
         "receive() until more_body is false", "02-asgi-events.ipynb"),
    # http.disconnect is taught in 02 ("A client that leaves"); 03 measures many such streams.
    Step("exercises/04-sse-disconnect.ipynb", "SSE that stops when the client leaves",
         "http.disconnect, two tasks racing", "02-asgi-events.ipynb"),
    Step("exercises/05-websocket-chat.ipynb", "A WebSocket chat",
         "accept first, broadcast, leave in a finally", "04-live-websockets.ipynb"),
    # scope["state"] and lifespan are taught in 02 ("Lifespan: startup and shutdown").
    Step("exercises/06-lifespan-state.ipynb", "Lifespan state",
         "startup, shutdown, the per-request copy of scope['state']", "02-asgi-events.ipynb"),
    Step("exercises/07-blocking-handler.ipynb", "Unblock the event loop",
         "asyncio.to_thread for a blocking call", "05-async-pitfalls.ipynb"),
    # Its four bugs need 04 (accept order), 02 (lifespan, streaming) and ASGI middleware,
    # which no course notebook teaches: stretch exercise 9 does.
    Step("exercises/08-spot-the-bug.ipynb", "Spot the bug (four tutorial mistakes)",
         "accept order, lifespan middleware, framing, lifespan state",
         ("04-live-websockets.ipynb", "exercises/09-asgi-middleware.ipynb")),
    Step("exercises/09-asgi-middleware.ipynb", "Stretch: ASGI middleware",
         "an app that wraps an app: wrapping send, copies not mutations, other scopes untouched",
         "02-asgi-events.ipynb"),
    Step("exercises/10-asyncio-server.ipynb", "Stretch: an HTTP server on asyncio.start_server",
         "a coroutine per connection, h11 events, keep-alive, bad input",
         ("00a-from-the-ground-up.ipynb", "02-asgi-events.ipynb", "05-async-pitfalls.ipynb")),
    Step("exercises/11-wsgi-async-bridge.ipynb", "Stretch: a WSGI-to-asyncio bridge",
         "one loop thread, run_coroutine_threadsafe, errors as a logged 500",
         ("01-the-wsgi-call.ipynb", "05-async-pitfalls.ipynb")),
]


def study_minutes(notebook: Path) -> int:
    """An estimate: the prose read at WORDS_PER_MINUTE, plus MINUTES_PER_CODE_CELL per code
    cell, rounded up to 5 minutes. An exercise's own work comes on top."""
    cells = json.loads(notebook.read_text(encoding="utf-8"))["cells"]
    words = sum(len("".join(cell["source"]).split()) for cell in cells if cell["cell_type"] == "markdown")
    code_cells = sum(1 for cell in cells if cell["cell_type"] == "code")
    minutes = words / WORDS_PER_MINUTE + code_cells * MINUTES_PER_CODE_CELL
    return max(5, int(-(-minutes // 5) * 5))


def run_seconds(notebook: Path) -> float | None:
    """How long the committed notebook took to run, top to bottom: from the first code cell's
    start to the last one's end, as Jupyter recorded them in the cells' `execution` metadata
    when it was last executed (`make notebooks`). None if it was stored without them."""
    cells = json.loads(notebook.read_text(encoding="utf-8"))["cells"]
    times = [cell.get("metadata", {}).get("execution", {}) for cell in cells if cell["cell_type"] == "code"]
    starts = [t["iopub.execute_input"] for t in times if "iopub.execute_input" in t]
    ends = [t["shell.execute_reply"] for t in times if "shell.execute_reply" in t]
    if not starts or not ends:
        return None
    first, last = (datetime.fromisoformat(stamp.replace("Z", "+00:00")) for stamp in (min(starts), max(ends)))
    return (last - first).total_seconds()


def available(steps: list[Step], root: Path) -> list[Step]:
    """The steps whose notebook exists under `root` (the `notebooks/` folder)."""
    return [step for step in steps if (root / step.path).exists()]


def course_markdown(root: Path | str = ".", link_prefix: str = "") -> str:
    """The course path as a Markdown table; `root` is the `notebooks/` folder, and links are
    relative to it, or start with `link_prefix` (the README's table: "notebooks/")."""
    root = Path(root)
    rows = ["| # | Notebook | What it teaches | Study time | Runs in |", "|---|---|---|---|---|"]
    for step in available(COURSE, root):
        seconds = run_seconds(root / step.path)
        runs_in = f"{seconds:.0f} s" if seconds is not None else "not recorded"
        rows.append(f"| {step.path.split('-')[0]} | [{step.title}]({link_prefix}{step.path}) | {step.teaches} | "
                    f"~{study_minutes(root / step.path)} min | {runs_in} |")
    return "\n".join(rows)


def exercises_markdown(root: Path | str = ".") -> str:
    """The exercises as a Markdown table: what each practises, what to read first."""
    root = Path(root)
    titles = {step.path: step.title for step in COURSE + EXERCISES}
    rows = ["| Exercise | Practises | Read first | Solution |", "|---|---|---|---|"]
    for step in available(EXERCISES, root):
        solution = step.path.replace("exercises/", "exercises/solutions/")
        before = ", ".join(_link(path, titles) for path in step.read_first if (root / path).exists())
        rows.append(f"| [{step.title}]({step.path}) | {step.teaches} | {before} | "
                    f"[solution]({solution}) |")
    return "\n".join(rows)


def _link(path: str, titles: dict[str, str]) -> str:
    """`[01 The WSGI call](01-the-wsgi-call.ipynb)`; an exercise by its title alone."""
    name = Path(path).name
    title = titles.get(path, name.removesuffix(".ipynb"))
    label = title if path.startswith("exercises/") else f"{name.split('-')[0]} {title}"
    return f"[{label}]({path})"


README_START = "<!-- course table: written by `make notebooks`, from asgi_lab/exercises/course.py -->"
README_END = "<!-- end of course table -->"


def readme_with_course(readme: str, root: Path | str) -> str:
    """`readme` with the course table between its two markers rewritten from the notebooks
    under `root`: the README's study and run times are computed, never typed."""
    before, start, rest = readme.partition(README_START)
    _, end, after = rest.partition(README_END)
    if not start or not end:
        raise ValueError(f"the README has no course table markers ({README_START!r} ... {README_END!r})")
    return f"{before}{start}\n{course_markdown(root, link_prefix='notebooks/')}\n{end}{after}"
