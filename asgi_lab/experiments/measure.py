"""What both experiments do for each server: start it, watch it under load, stop it.

    run = measure_server(SERVERS["asgi"], lambda url: run_sse_load(url + "/events", ...), ...)

1. start the server in its own process and wait until it answers;
2. sample its RSS, VMS, threads and CPU every 100 ms (`procstats.ProcessSampler`) for a
   moment of idleness (the *idle* memory: interpreter, modules, the listening socket);
3. run the load generator (another process) against it;
4. stop the server, and summarise what the process spent *because of the clients*: peak
   RSS minus idle RSS, divided by the number of clients, is the memory one client costs.

Also here: the progress display (a widget bar in Jupyter, a line on a terminal) and the
caption line naming where a result came from; results are saved by `results.write_result`
(also as `save_result` here) and re-plotted from the file without re-running anything.
"""

from __future__ import annotations

import html
import sys
import time

from ..load import SERVER_ADVICE, percentile, raise_open_files_limit
from .procstats import ProcessSampler
from .results import machine_of, read_result, stamp, write_result
from .servers import ServerProcess, ServerSpec

IDLE_SECONDS = 0.5


def measure_server(spec: ServerSpec, run_load, clients: int, pool_threads: int,
                   app: str | None = None) -> dict:
    """Run `run_load(url)` against a fresh `spec` server (serving `app`, by default the SSE
    app for its interface); returns the raw measurements.

    The result: `server` (name, label, ...), `samples` (t, rss, vms, threads, cpu rows),
    `marks` (when the load started and ended, on the samples' clock), `process` (the summary
    of the samples) and `load` (whatever the load generator returned).
    """
    # The server (our child) inherits our open-files limit: make room for every client.
    raise_open_files_limit(clients, SERVER_ADVICE)
    server = ServerProcess(spec, pool_threads, app=app).start()
    sampler = server.sampler().start()
    try:
        time.sleep(IDLE_SECONDS)
        sampler.mark("load")
        load_result = run_load(server.url)
        sampler.sample()
        sampler.mark("end")
        if "ended" in load_result:  # when the clients started leaving, by the generator's clock
            sampler.mark("leave", load_result["ended"])
    finally:
        server.stop(grace=0.5)  # its shutdown is not what we measure
        sampler.stop()
    return {
        "server": {"name": spec.name, "label": server.label,
                   "interface": spec.interface, "waits_in": spec.waits_in},
        "samples": [list(sample) for sample in sampler.samples],
        "marks": sampler.marks,
        "process": process_summary(sampler, clients),
        "load": load_result,
    }


def measure_each(specs: list[ServerSpec], start_load, summarize, *, clients: int,
                 pool_threads: int, expected_time: float, counted: str, progress=True,
                 app: str | None = None) -> list[dict]:
    """Both experiments' main loop: each server in turn, in its own process, under the same
    load, with a progress line. `start_load(url, report)` runs the load generator and calls
    `report(totals)` as it goes; `counted` names what it counts ("events", "messages")."""
    bar = make_progress(progress)
    runs = []
    for index, spec in enumerate(specs):
        stage = PartProgress(bar, index, len(specs))

        def report(totals, name=spec.name, stage=stage):
            stage.update(totals["elapsed"] / expected_time,
                         f"{name}: {totals['open']}/{clients} open, {totals[counted]} {counted}, "
                         f"{totals['errors']} errors, {totals['elapsed']:.0f}/{expected_time:.0f} s")

        stage.update(0.0, f"{spec.name}: starting")
        measured = measure_server(spec, lambda url, report=report: start_load(url, report),
                                  clients, pool_threads, app)
        measured["summary"] = summarize(measured)
        runs.append(measured)
    bar.close()
    return runs


def experiment_result(kind: str, runs: list[dict], out=None, **parameters) -> dict:
    """An experiment's result: its kind, parameters and runs, stamped with the command and
    the machine (`results.py`), and saved to `out` when given."""
    result = {"experiment": kind, **parameters, "runs": runs}
    stamp(result, environment=True)
    if out:
        write_result(result, out)
    return result


def process_summary(sampler: ProcessSampler, clients: int) -> dict:
    """Idle and peak memory, per-client memory, threads, CPU seconds under load.

    Peak memory is taken while the clients are connected (up to the "leave" mark, when the
    generator closed them all at once): what holding N clients costs, not what N
    simultaneous disconnects allocate for a moment. CPU and threads cover the whole run.
    """
    idle = sampler.between(None, "load")
    loaded = sampler.between("load", "end")
    if not idle or not loaded:
        raise RuntimeError("the server process vanished while it was measured")
    held = sampler.between("load", "leave") if "leave" in sampler.marks else loaded
    idle_rss = min(s.rss for s in idle[-3:])
    peak_rss = max(s.rss for s in held or loaded)
    return {
        "idle_rss_mb": round(idle_rss / 2**20, 2),
        "peak_rss_mb": round(peak_rss / 2**20, 2),
        "per_client_kb": round((peak_rss - idle_rss) / 1024 / max(clients, 1), 2),
        "peak_vms_mb": round(max(s.vms for s in loaded) / 2**20, 1),
        "idle_threads": idle[-1].threads,
        "peak_threads": max(s.threads for s in loaded),
        "cpu_s": round(loaded[-1].cpu - idle[-1].cpu, 3),
        "seconds": round(loaded[-1].t - idle[-1].t, 3),
    }


def stats_ms(values) -> dict:
    """p50 / p99 / max of a list of milliseconds (None entries ignored)."""
    data = [v for v in values if v is not None]
    return {"p50": percentile(data, 50), "p99": percentile(data, 99),
            "max": max(data) if data else None, "n": len(data)}


def source_line(result: dict, path: str | None = None) -> str:
    """One caption line naming where a result came from: file, commit, date, machine."""
    env = machine_of(result)
    parts = [f"source: {path}" if path else "source: this run"]
    if env.get("commit"):
        sha, _, dirty = env["commit"].partition("+")
        parts.append(f"commit {sha[:10]}" + (f"+{dirty}" if dirty else ""))
    if env.get("date"):
        parts.append(env["date"][:10])
    machine = ", ".join(str(x) for x in (env.get("cpu_model"), env.get("cores") and f"{env['cores']} cores")
                        if x)
    if machine:
        parts.append(machine)
    if env.get("python"):
        parts.append(f"Python {env['python']}")
    if env.get("note"):
        parts.append(env["note"])
    return " · ".join(parts)


# -- progress ---------------------------------------------------------------------------------


class TextProgress:
    """One line on the terminal, rewritten in place (on stderr, so stdout stays the table)."""

    def __init__(self, stream=None) -> None:
        self.stream = stream or sys.stderr

    def update(self, fraction: float, text: str) -> None:
        filled = int(30 * min(max(fraction, 0.0), 1.0))
        self.stream.write(f"\r[{'#' * filled}{'.' * (30 - filled)}] {text[:90]:<90}")
        self.stream.flush()

    def close(self) -> None:
        self.stream.write("\n")
        self.stream.flush()


class WidgetProgress:
    """A progress bar and a label in a Jupyter notebook (ipywidgets). When the job is done the
    bar gives way to one line of text, so a notebook stored with its outputs shows what ran,
    not a widget a reader without a kernel cannot see."""

    def __init__(self) -> None:
        import ipywidgets
        from IPython.display import display

        self.bar = ipywidgets.FloatProgress(min=0.0, max=1.0)
        self.label = ipywidgets.Label()
        self.handle = display(ipywidgets.HBox([self.bar, self.label]), display_id=True)

    def update(self, fraction: float, text: str) -> None:
        self.bar.value = min(max(fraction, 0.0), 1.0)
        self.label.value = text

    def close(self) -> None:
        from IPython.display import HTML

        done = self.label.value
        self.bar.close()
        self.label.close()
        if self.handle is not None:
            self.handle.update(HTML(f"<p>&#x2714; done: {html.escape(done)}</p>"))


class PartProgress:
    """Stage `index` of `count` of a longer job (a sweep): maps 0..1 onto its slice of `bar`."""

    def __init__(self, bar, index: int, count: int) -> None:
        self.bar, self.index, self.count = bar, index, count

    def update(self, fraction: float, text: str) -> None:
        self.bar.update((self.index + min(max(fraction, 0.0), 1.0)) / self.count, text)

    def close(self) -> None:
        pass


class NoProgress:
    def update(self, fraction: float, text: str) -> None:
        pass

    def close(self) -> None:
        pass


def make_progress(progress) -> object:
    """`progress` may be an object with update/close, True (pick one for where we run), or
    False/None (silent)."""
    if progress is None or progress is False:
        return NoProgress()
    if progress is not True:
        return progress
    if in_notebook():
        try:
            return WidgetProgress()
        except ImportError:
            pass
    return TextProgress()


def in_notebook() -> bool:
    shell = sys.modules.get("IPython")
    if shell is None:
        return False
    ipython = shell.get_ipython()
    return ipython is not None and hasattr(ipython, "kernel")


# -- JSON: see results.py ------------------------------------------------------------------------

save_result = write_result
load_result = read_result
