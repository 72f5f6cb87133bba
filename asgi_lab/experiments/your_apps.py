"""Your own apps side by side: each served by a command line of yours, all under the same load.

    from asgi_lab.experiments import your_apps
    result = your_apps.run_sse({
        "flask on gunicorn": "gunicorn -k gthread --threads 32 -b {host}:{port} myflask:app",
        "fastapi on uvicorn": "uvicorn myfastapi:app --host {host} --port {port}",
    }, path="/events?interval=0.5", clients=40, duration=2,
       waits_in={"flask on gunicorn": "thread", "fastapi on uvicorn": "coroutine"})
    print(your_apps.format_table(result))
    your_apps.chart(result)

Each command is a template: `{host}` and `{port}` are filled in (127.0.0.1 and a free port),
and a first word `python`, `gunicorn`, `uvicorn`, ... is taken from this Python's environment
when it is installed there. Each server then goes through the same steps as the built-in ones
of `python -m asgi_lab experiment sse` (`measure.measure_each`): started in its own process,
polled on `GET /ready` until it answers 200 (your app needs that route here), sampled (RSS,
threads, CPU) while `asgi_lab.load.sse` streams to `clients` clients from another process,
then stopped. The result has the format of `sse_concurrency.run`, so its table, JSON and
re-plotting work the same.

This is the Python side of `python -m asgi_lab experiment sse --server NAME="TEMPLATE"`;
`waits_in` ("thread", "coroutine", "greenlet") only colours the chart (warm colours for
threads, blue for coroutines, as in every figure of the course).
"""

from __future__ import annotations

import os
import shlex
import shutil
import sys
from dataclasses import dataclass

from ..load.sse import run_sse_load
from . import servers as _servers
from .blocking_app import provenance
from .measure import measure_each, save_result
from .servers import ServerSpec
from .sse_concurrency import fates, format_table, summarize  # noqa: F401  (format_table: the same table)

HOST = "127.0.0.1"


@dataclass(frozen=True)
class CommandSpec(ServerSpec):
    """A server of yours: a command-line template with `{host}` and `{port}`."""

    template: str = ""

    def command(self, port: int, pool_threads: int = 0, *_) -> list[str]:
        words = shlex.split(self.template.format(host=HOST, port=port))
        if not words:
            raise ValueError(f"{self.name}: empty command")
        words[0] = resolve_program(words[0])
        return words


def resolve_program(word: str) -> str:
    """`python` is this Python; a tool installed beside it (gunicorn, uvicorn) is that one."""
    if word in ("python", "python3"):
        return sys.executable
    beside = os.path.join(os.path.dirname(sys.executable), word)
    if os.sep not in word and os.access(beside, os.X_OK):
        return beside
    return shutil.which(word) or word


def specs_from(servers: dict[str, str], waits_in: dict[str, str] | None = None) -> list:
    """One spec per server. Where the launcher (`servers.py`) reads templates itself
    (`servers.from_template`, behind `experiment sse --server`), its specs; else ours."""
    waits_in = waits_in or {}
    if hasattr(_servers, "from_template"):
        return [_servers.from_template(
            name, template, waits_in=waits_in.get(name, "?"),
            interface="wsgi" if waits_in.get(name) == "thread" else "asgi")
            for name, template in servers.items()]
    return [CommandSpec(name=name, label=name, interface="?", waits_in=waits_in.get(name, "?"),
                        template=template) for name, template in servers.items()]


def run_sse(servers: dict[str, str], path: str = "/events", *, clients: int = 20,
            duration: float = 2.0, interval: float = 1.0, waits_in: dict[str, str] | None = None,
            progress=True, out=None, command: str | None = None) -> dict:
    """Stream `path` from each server in turn to `clients` SSE clients for `duration` seconds
    after they connected (over one `interval`); returns (and saves to `out`) the result."""
    specs = specs_from(servers, waits_in)
    spread = interval

    def start_load(url, report):
        return run_sse_load(url + path, clients, duration, interval=interval, spread=spread,
                            progress=report)

    runs = measure_each(specs, start_load, summarize, clients=clients, pool_threads=0,
                        expected_time=spread + duration, counted="events", progress=progress)
    for run, template in zip(runs, servers.values()):
        run["server"]["command"] = template
    result = {"experiment": "sse", "clients": clients, "duration": duration, "interval": interval,
              "spread": spread, "pool_threads": None, "load_processes": 1, "path": path,
              "servers": dict(servers), "runs": runs}
    provenance(result, command)
    if out:
        save_result(result, out)
    return result


WAITS_IN_COLORS = {"thread": "#ff7f0e", "coroutine": "#1f77b4", "greenlet": "#e377c2"}


def chart(result: dict, source: str | None = None):
    """Two panels: time to first event, client by client (a starved pool shows as a cliff),
    and the OS threads each server process ran. Returns the matplotlib Figure."""
    from matplotlib.ticker import FuncFormatter

    from ..viz import charts

    fig, (ttfe_ax, threads_ax) = charts._figure(11, 3.8, columns=2)
    never_y = (result["duration"] + result["interval"]) * 1000 * 1.5
    styles = ["-", "--", "-.", ":"]
    names, threads, colors = [], [], []
    for i, run in enumerate(result["runs"]):
        name = run["server"]["name"]
        color = WAITS_IN_COLORS.get(run["server"]["waits_in"], "#7f7f7f")
        ttfe = run["load"]["ttfe_ms"]
        served = sorted(t for t in ttfe if t is not None)
        never = len(ttfe) - len(served)
        ys = [max(t, 0.01) for t in served] + [never_y] * never
        ttfe_ax.plot(range(1, len(ttfe) + 1), ys, color=color, ls=styles[i % len(styles)],
                     drawstyle="steps-post",
                     label=f"{name}: {never} never served" if never else name)
        names.append(name)
        threads.append(run["summary"]["peak_threads"])
        colors.append(color)
    ttfe_ax.axhline(never_y, color="#999999", lw=0.8, ls=":")
    ttfe_ax.text(1, never_y, " no event during the run", va="bottom", fontsize=8, color="#555555")
    ttfe_ax.set_yscale("log")
    plain = FuncFormatter(lambda value, _: f"{value:g}")
    ttfe_ax.yaxis.set_major_formatter(plain)
    ttfe_ax.yaxis.set_minor_formatter(plain)
    ttfe_ax.set_xlabel("clients, sorted by their wait")
    ttfe_ax.set_ylabel("time to first event (ms, log scale)")
    ttfe_ax.legend(fontsize=8, loc="center left")
    bars = threads_ax.barh(names, threads, color=colors)
    threads_ax.bar_label(bars, fontsize=8, padding=2)
    threads_ax.invert_yaxis()
    threads_ax.set_xscale("log")
    threads_ax.set_xlim(left=0.8, right=max(threads, default=1) * 3)
    threads_ax.set_xlabel("OS threads in the server process, at most (log scale)")
    starved = max(((run["summary"]["never"], run["server"]["name"]) for run in result["runs"]),
                  default=(0, ""))
    n = result["clients"]
    charts._title(ttfe_ax, f"{n} clients: {starved[1]} never served {starved[0]}" if starved[0]
                  else f"{n} clients: every one got its first event")
    charts._title(threads_ax, "What the waiting clients held")
    charts._caption(fig, source)
    return fig


def describe(result: dict) -> str:
    """One Markdown line per server, from the numbers."""
    lines = []
    for run in result["runs"]:
        s, name = run["summary"], run["server"]["name"]
        lag = s["lag_ms"]
        lines.append(
            f"- `{name}`: {fates(s)}; on at most **{s['peak_threads']} OS threads**, "
            f"{s['per_client_kb']:.0f} KB of RSS per client; delivery lag p50 "
            f"{_ms(lag['p50'])}, p99 {_ms(lag['p99'])}.")
    return "\n".join(lines)


def _ms(value) -> str:
    return "-" if value is None else f"{value:.0f} ms"
