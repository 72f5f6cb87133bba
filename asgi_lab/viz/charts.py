"""Charts of the threads-vs-coroutines experiments (`asgi_lab/experiments/`).

Every function takes a result as returned by `sse_concurrency.run()`, `run_sweep()` or
`long_polling.run()` (or read back with `measure.load_result(path)`), so a saved run can be
drawn again without running anything, and returns a matplotlib `Figure`.

- `threads_chart(sweep)`: OS threads against clients (log-log): threads grow, coroutines do not;
- `memory_per_client_chart(sweep, clients)`: what one waiting client costs each server (RSS);
- `never_served_chart(sweep)`: clients that never got a single event, against clients;
- `stall_chart(result)`: gevent's price: one blocking call in C delays every other client;
- `address_space_chart(*measurements)`: a process's virtual size and RSS, part by part;
- `sweep_chart(sweep)`: peak memory, threads and CPU against the number of clients;
- `lag_chart(result)`: how late events arrived, as a cumulative distribution per server;
- `ttfe_chart(result)`: time to first event, client by client: the starved pool, drawn;
- `resources_chart(result)`: RSS, threads and CPU of each server process during the run;
- `longpoll_chart(result)`: messages delivered and threads held, per server;
- `save_charts(result, folder)`: whichever of these fit the result, as PNG files.

Each line or bar carries the server's name as its label (the tests read them back). One
message per figure, said by its title; units on every axis; thread counts on a log axis,
memory from zero; `source=` adds a caption line naming where the numbers came from (see
`measure.source_line`). The colour of a server is the same in every figure of the course:
`COLORS` below is the one place it is decided (other modules import it).
"""

from __future__ import annotations

import os
import textwrap

import matplotlib.pyplot as plt
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, NullLocator

COLORS = {"asgi": "#1f77b4", "uvicorn": "#17becf", "hypercorn": "#2ca02c",   # coroutines: blue, green
          "gevent": "#e377c2",                                                 # greenlets: pink
          "wsgi-threads": "#d62728", "wsgi-pool": "#ff7f0e", "gunicorn": "#9467bd",  # threads: warm
          "waitress": "#8c564b"}
CPU_WINDOW = 5
MARKERS = {"asgi": "o", "uvicorn": "s", "hypercorn": "P", "gevent": "X", "wsgi-threads": "^",
           "wsgi-pool": "v", "gunicorn": "D", "waitress": "<"}
CAPTION = dict(fontsize=7.5, color="#666666", ha="left", x=0.01)


def _color(name: str) -> str:
    return COLORS.get(name, "#7f7f7f")


def _figure(width: float, height: float, columns: int = 1) -> tuple[Figure, list]:
    fig = plt.figure(figsize=(width, height), layout="constrained")
    axes = [fig.add_subplot(1, columns, i + 1) for i in range(columns)]
    plt.close(fig)  # returned, not left open in pyplot (Jupyter shows it once, as the result)
    for ax in axes:
        ax.grid(color="#dddddd", lw=0.6)
        ax.set_axisbelow(True)
        for side in ("top", "right"):
            ax.spines[side].set_visible(False)
    return fig, axes


def _log_counts(ax) -> None:
    """A log scale for counts that start at 1 (threads), labelled 1, 10, 100 rather than 10^k."""
    ax.set_yscale("log")
    ax.set_ylim(bottom=0.8)
    ax.yaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))


def color(name: str) -> str:
    """The colour of a server (or any name in COLORS) in every figure of the course."""
    return _color(name)


def _caption(fig: Figure, source: str | None) -> None:
    """A last line (or two) under the figure naming where its numbers came from."""
    if source:
        width = int(fig.get_figwidth() * 16)  # characters of 7.5 pt text across the figure
        fig.supxlabel(textwrap.fill(source, width), **CAPTION)


def _ordinal(n: int) -> str:
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def _title(ax, text: str) -> None:
    ax.set_title(text, loc="left", fontsize=11, fontweight="bold")


def _series(sweep: dict) -> dict[str, list[tuple[int, dict]]]:
    """{server: [(clients, summary), ...]} across a sweep, in the order servers first appear."""
    series: dict[str, list[tuple[int, dict]]] = {}
    for result in sweep["results"]:
        for run in result["runs"]:
            series.setdefault(run["server"]["name"], []).append((result["clients"], run["summary"]))
    return series


def _clients_axis(ax, counts) -> None:
    ax.set_xscale("log")
    ax.set_xticks(counts, [f"{n:,}" for n in counts])
    ax.xaxis.set_minor_locator(NullLocator())
    ax.set_xlabel("concurrent SSE clients (log scale)")


def _runs(result: dict) -> list[dict]:
    if "runs" not in result:
        raise ValueError("expected one experiment's result (with 'runs'); for a sweep use sweep_chart")
    return result["runs"]


def sweep_chart(sweep: dict) -> Figure:
    """Peak RSS, threads and CPU seconds of each server against the number of clients."""
    results = sweep["results"]
    fig, (memory, threads, cpu) = _figure(13, 4, columns=3)
    names = list(dict.fromkeys(run["server"]["name"] for r in results for run in r["runs"]))
    for name in names:
        points = [(r["clients"], run["summary"]) for r in results for run in r["runs"]
                  if run["server"]["name"] == name]
        xs = [n for n, _ in points]
        style = dict(color=_color(name), marker=MARKERS.get(name, "o"), label=name)
        memory.plot(xs, [s["peak_rss_mb"] for _, s in points], **style)
        threads.plot(xs, [s["peak_threads"] for _, s in points], **style)
        cpu.plot(xs, [s["cpu_s"] for _, s in points], **style)
    counts = sorted({r["clients"] for r in results})
    for ax, title, unit in ((memory, "Peak memory (RSS)", "MB"), (threads, "OS threads", "threads"),
                            (cpu, "CPU time during the run", "CPU seconds")):
        ax.set_xlabel("concurrent clients")
        ax.set_ylabel(unit)
        ax.set_title(title, loc="left", fontsize=11, fontweight="bold")
        ax.set_xscale("log")
        ax.set_xticks(counts, [str(n) for n in counts])
        ax.xaxis.set_minor_locator(NullLocator())
    memory.set_ylim(bottom=0)
    cpu.set_ylim(bottom=0)
    _log_counts(threads)
    memory.legend(fontsize=8)
    kind = "SSE" if sweep.get("experiment", "").startswith("sse") else "long-polling"
    fig.suptitle(f"What {kind} clients cost each server", fontsize=12)
    return fig


# -- the reference sweep, one message per figure ----------------------------------------------


def threads_chart(sweep: dict, source: str | None = None) -> Figure:
    """OS threads of each server process against clients, both on log axes."""
    fig, (ax,) = _figure(7.5, 4.4)
    series = _series(sweep)
    labelled: dict[tuple[int, int], int] = {}  # (clients, threads) -> labels already there
    for name, points in series.items():
        ax.plot([n for n, _ in points], [s["peak_threads"] for _, s in points], color=_color(name),
                marker=MARKERS.get(name, "o"), label=name)
        n, last = points[-1]
        count = last["peak_threads"]
        near = sum(v for (x, y), v in labelled.items() if x == n and 0.8 < y / count < 1.25)
        labelled[(n, count)] = labelled.get((n, count), 0) + 1
        ax.annotate(f"{count:,}", (n, count), textcoords="offset points", xytext=(6 + 18 * near, 0),
                    va="center", fontsize=8, color=_color(name))
    _clients_axis(ax, sorted({r["clients"] for r in sweep["results"]}))
    ax.set_yscale("log")
    ax.set_ylim(bottom=0.8)
    ax.yaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:,.0f}"))
    ax.set_ylabel("OS threads in the server process (peak, log scale)")
    waits = {run["server"].get("waits_in") for r in sweep["results"] for run in r["runs"]}
    others = " and ".join(word for kind, word in (("coroutine", "coroutines"), ("greenlet", "greenlets"))
                          if kind in waits)
    _title(ax, f"Threads grow with clients; {others} do not" if others else "Threads grow with clients")
    ax.legend(fontsize=8, loc="upper left", ncols=2)
    _caption(fig, source)
    return fig


def memory_per_client_chart(sweep: dict, clients: int = 1000, source: str | None = None) -> Figure:
    """What one waiting client costs each server at `clients` clients: (peak RSS - idle RSS) / N.

    A pool serves only as many clients as it has threads; its bar says so, since its small
    cost per client is the cost of *not* serving the others.
    """
    result = next((r for r in sweep["results"] if r["clients"] == clients), None)
    if result is None:
        raise ValueError(f"no run with {clients} clients in this sweep")
    runs = sorted(result["runs"], key=lambda run: run["summary"]["per_client_kb"])
    names = [run["server"]["name"] for run in runs]
    values = [max(run["summary"]["per_client_kb"], 0.0) for run in runs]
    fig, (ax,) = _figure(7.5, 0.5 * len(runs) + 1.6)
    bars = ax.barh(names, values, color=[_color(n) for n in names], label=names)
    labels = []
    for run, value in zip(runs, values):
        s = run["summary"]
        note = "" if s["served"] == s["clients"] else f"   (served {s['served']:,} of {s['clients']:,})"
        labels.append(f"{value:.1f} KB{note}")
    ax.bar_label(bars, labels, padding=3, fontsize=8)
    ax.set_xlim(0, max(values + [1.0]) * 1.45)
    ax.invert_yaxis()
    ax.set_xlabel("memory per connected client (KB of RSS: peak minus idle, divided by clients)")
    threads = [v for run, v in zip(runs, values) if run["server"]["waits_in"] == "thread"
               and run["summary"]["served"] == run["summary"]["clients"]]
    coroutines = [v for run, v in zip(runs, values) if run["server"]["waits_in"] == "coroutine"]
    if threads and coroutines:
        low, high = min(coroutines), max(coroutines)
        span = f"{low:.0f} KB" if round(low) == round(high) else f"{low:.0f}-{high:.0f} KB"
        title = (f"{clients:,} clients: a waiting thread costs {max(threads):.0f} KB of RSS, "
                 f"a waiting coroutine {span}")
    else:
        title = f"{clients:,} clients: the memory one waiting client costs"
    _title(ax, title)
    _caption(fig, source)
    return fig


def never_served_chart(sweep: dict, source: str | None = None) -> Figure:
    """Clients that did not get a single event during the run, against clients."""
    fig, (ax,) = _figure(7.5, 4.4)
    series = _series(sweep)
    zero = [name for name, points in series.items() if not any(s["never"] for _, s in points)]
    drawn: dict[tuple, str] = {}  # counts -> the server whose line shows them
    for name, points in series.items():
        counts = tuple((n, s["never"]) for n, s in points)
        label, style = name, "-"
        if name in zero:
            label = f"{name}: none, at every size"
        elif counts in drawn:  # two pools of one size starve the same clients: dashed, so the
            label, style = f"{name}: the same counts as {drawn[counts]}", "--"  # line below shows
        else:
            drawn[counts] = name
        ax.plot([n for n, _ in points], [s["never"] for _, s in points], color=_color(name),
                marker=MARKERS.get(name, "o"), label=label, alpha=0.8 if name in zero else 1.0,
                ls=style)
    _clients_axis(ax, sorted({r["clients"] for r in sweep["results"]}))
    ax.set_ylim(bottom=0)
    ax.yaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:,.0f}"))
    ax.set_ylabel("clients that never received an event")
    pool = sweep["results"][0].get("pool_threads")
    title = (f"A pool of {pool} threads leaves every client after the {_ordinal(pool)} unserved"
             if pool and len(zero) < len(series) else "Clients never served")
    _title(ax, title)
    ax.legend(fontsize=8, loc="upper left")
    _caption(fig, source)
    return fig


def stall_chart(result: dict, source: str | None = None) -> Figure:
    """How late each other client's worst event was while one request blocked in C."""
    fig, (ax,) = _figure(7.5, 4)
    block = result["block_ms"]
    for number, run in enumerate(result["runs"]):
        name = run["server"]["name"]
        worst = sorted(run["worst_late_ms"])
        ax.plot(range(1, len(worst) + 1), [max(w, 0.1) for w in worst], color=_color(name),
                label=f"{name} ({run['server']['waits_in']}s): {run['stalled_clients']} stalled",
                drawstyle="steps-post", lw=2, ls=("-", "--", ":")[number % 3])  # equal lines stay visible
    ax.axhline(block, color="#999999", lw=0.8, ls="--")
    ax.text(1, block, f" the blocking call: {block:g} ms", va="bottom", fontsize=8, color="#555555")
    ax.set_yscale("log")
    ax.set_xlabel("other clients, sorted by their worst delay")
    ax.set_ylabel("worst event delay of the client (ms, log scale)")
    _title(ax, f"One {block:g} ms call in C stalls every client of gevent and asyncio; threads run on")
    ax.legend(fontsize=8, loc="center left")
    _caption(fig, source)
    return fig


def address_space_chart(*measurements: dict, source: str | None = None) -> Figure:
    """Virtual size and RSS of thread processes, part by part (`procstats.thread_address_space`)."""
    from ..experiments.procstats import PARTS

    fig, (space, resident) = _figure(12, 1.0 * len(measurements) + 2.0, columns=2)
    part_colors = dict(zip(PARTS, ("#e6550d", "#fdae6b", "#9e9ac8", "#969696", "#d9d9d9")))
    labels = [f"{m['threads']} threads" + (f"\nMALLOC_ARENA_MAX={m['arena_max']}"
                                           if m["arena_max"] is not None else "\nglibc default")
              for m in measurements]
    for ax, key, scale in ((space, "size", 2**30), (resident, "rss", 2**20)):
        left = [0.0] * len(measurements)
        for part in PARTS:
            widths = [m["parts"][part][key] / scale for m in measurements]
            ax.barh(labels, widths, left=left, color=part_colors[part], label=part)
            left = [a + b for a, b in zip(left, widths)]
        for y, total in enumerate(left):
            ax.text(total, y, f" {total:,.2f}" if scale == 2**30 else f" {total:,.1f}",
                    va="center", fontsize=8)
        ax.set_xlim(0, max(left) * 1.2)
        ax.invert_yaxis()
    space.set_xlabel("address space (GB, VMS)")
    resident.set_xlabel("resident memory (MB, RSS)")
    resident.set_yticklabels([])
    _title(space, "Address space: stacks and malloc arenas reserved")
    _title(resident, "RSS: the few pages really used")
    space.legend(fontsize=8, loc="lower right")
    fig.suptitle("Idle threads reserve gigabytes of address space but use megabytes of memory",
                 fontsize=12)
    _caption(fig, source)
    return fig


def lag_chart(result: dict) -> Figure:
    """Cumulative distribution of delivery lag (receive time - the server's send stamp)."""
    fig, (ax,) = _figure(7.5, 4)
    if result.get("slim"):
        raise ValueError("a slim result keeps no per-event lags: use its summaries' lag_ms")
    for run in _runs(result):
        name = run["server"]["name"]
        lags = sorted(max(lag, 0.001) for lag in run["load"]["lags_ms"])
        if not lags:
            continue
        ys = [(i + 1) / len(lags) * 100 for i in range(len(lags))]
        ax.plot(lags, ys, color=_color(name), label=f"{name} ({len(lags)} events)", drawstyle="steps-post")
    ax.set_xscale("log")
    ax.set_xlabel("delivery lag (ms, log scale)")
    ax.set_ylabel("% of events delivered within")
    ax.set_ylim(0, 101)
    ax.axhline(99, color="#999999", lw=0.8, ls="--")
    ax.set_title(f"Delivery lag, {result['clients']} clients", loc="left", fontsize=11, fontweight="bold")
    ax.legend(fontsize=8, loc="lower right")
    return fig


def ttfe_chart(result: dict, source: str | None = None) -> Figure:
    """Time to first event for every client, sorted: a pool starves everyone past its size."""
    fig, (ax,) = _figure(7.5, 4)
    duration_ms = (result["duration"] + result.get("interval", 1.0)) * 1000
    never_y = duration_ms * 1.5
    starved = []
    for run in _runs(result):
        name = run["server"]["name"]
        ttfe = run["load"]["ttfe_ms"]
        served = sorted(t for t in ttfe if t is not None)
        never = len(ttfe) - len(served)
        if never:
            starved.append((never, name))
        xs = list(range(1, len(ttfe) + 1))
        ys = [max(t, 0.01) for t in served] + [never_y] * never
        label = f"{name}: {never} never served" if never else name
        ax.plot(xs, ys, color=_color(name), label=label, drawstyle="steps-post")
    ax.axhline(never_y, color="#999999", lw=0.8, ls=":")
    ax.text(1, never_y, " no event during the run", va="bottom", fontsize=8, color="#555555")
    ax.set_yscale("log")
    ax.set_xlabel("clients, sorted by their wait")
    ax.set_ylabel("time to first event (ms, log scale)")
    n = result["clients"]
    if starved:
        never, name = max(starved)
        title = f"{n:,} clients: {never:,} never got an event from {name}"
    else:
        title = f"{n:,} clients: every one got its first event"
    _title(ax, title)
    ax.legend(fontsize=8, loc="best")
    _caption(fig, source)
    return fig


def resources_chart(result: dict) -> Figure:
    """Each server process during its run: RSS, threads, and CPU (% of one core)."""
    fig, (memory, threads, cpu) = _figure(13, 4, columns=3)
    for run in _runs(result):
        name = run["server"]["name"]
        end = run["marks"].get("end", float("inf"))
        samples = [s for s in run["samples"] if s[0] <= end]  # not the shutdown
        t0 = run["marks"].get("load", 0.0)
        ts = [s[0] - t0 for s in samples]
        memory.plot(ts, [s[1] / 2**20 for s in samples], color=_color(name), label=name)
        threads.plot(ts, [s[3] for s in samples], color=_color(name), label=name)
        # CPU time moves in 10 ms clock ticks: average over half a second (5 samples).
        usage = [max(0.0, (b[4] - a[4]) / max(b[0] - a[0], 1e-3) * 100)
                 for a, b in zip(samples, samples[CPU_WINDOW:])]
        cpu.plot(ts[CPU_WINDOW:], usage, color=_color(name), label=name, lw=1.0)
    for ax, title, unit in ((memory, "Memory (RSS)", "MB"), (threads, "OS threads", "threads"),
                            (cpu, "CPU", "% of one core")):
        ax.axvline(0, color="#999999", lw=0.8, ls="--")
        ax.set_xlabel("seconds since the clients started")
        ax.set_ylabel(unit)
        ax.set_title(title, loc="left", fontsize=11, fontweight="bold")
    _log_counts(threads)
    memory.set_ylim(bottom=0)
    memory.legend(fontsize=8)
    fig.suptitle(f"{result['clients']} clients: each server process during its run", fontsize=12)
    return fig


def longpoll_chart(result: dict) -> Figure:
    """Long polling: % of messages delivered, and the threads each server held."""
    fig, (delivered, threads) = _figure(11, 4, columns=2)
    runs = _runs(result)
    names = [run["server"]["name"] for run in runs]
    shares = []
    for run in runs:
        s = run["summary"]
        shares.append(100 * s["messages"] / s["expected_messages"] if s["expected_messages"] else 0)
    bars = delivered.bar(names, shares, color=[_color(n) for n in names], label=names)
    delivered.bar_label(bars, fmt="%.0f%%", fontsize=8)
    bars = threads.bar(names, [run["summary"]["peak_threads"] for run in runs],
                       color=[_color(n) for n in names], label=names)
    threads.bar_label(bars, fontsize=8)
    delivered.set_ylabel("% of due messages delivered")
    delivered.set_ylim(0, 115)
    threads.set_ylabel("OS threads (peak)")
    _log_counts(threads)
    delivered.set_title("Messages delivered", loc="left", fontsize=11, fontweight="bold")
    threads.set_title("Threads tied up waiting", loc="left", fontsize=11, fontweight="bold")
    for ax in (delivered, threads):
        ax.tick_params(axis="x", labelrotation=20, labelsize=8)
    fig.suptitle(f"Long polling: {result['clients']} clients, a message every "
                 f"{result['period']:g} s", fontsize=12)
    return fig


def save_charts(result: dict, folder: str, source: str | None = None) -> list[str]:
    """Draw the charts that fit `result` and save them as PNG files in `folder`."""
    kind = result["experiment"]
    if kind.endswith("-sweep"):
        figures = {"sweep": sweep_chart(result)}
        if kind == "sse-sweep":
            figures["threads"] = threads_chart(result, source)
            figures["never-served"] = never_served_chart(result, source)
            counts = [r["clients"] for r in result["results"]]
            middle = 1000 if 1000 in counts else counts[len(counts) // 2]
            figures[f"memory-per-client-{middle}"] = memory_per_client_chart(result, middle, source)
        last = result["results"][-1]
        figures.update({f"{name}-{last['clients']}": fig for name, fig in _single(last).items()})
    else:
        figures = _single(result)
    paths = []
    for name, fig in figures.items():
        path = os.path.join(folder, f"{kind}-{name}.png")
        fig.savefig(path, dpi=110)
        paths.append(path)
    return paths


def _single(result: dict) -> dict[str, Figure]:
    if result["experiment"] == "longpoll":
        return {"delivered": longpoll_chart(result), "resources": resources_chart(result)}
    figures = {} if result.get("slim") else {"lag": lag_chart(result)}
    return {**figures, "ttfe": ttfe_chart(result), "resources": resources_chart(result)}
