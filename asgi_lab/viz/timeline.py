"""Many connections over time: who was busy with which connection, and when.

    fig = timeline(tracer, by="thread")

A Gantt chart. Each row is a thread (`by="thread"`), an asyncio task (`by="task"`) or a
connection (`by="conn"`); each bar is one connection's stretch of work on that row, from the
first to the last event that thread or task recorded for it, with a tick for every event.

A bar shows what was recorded, not more: an asyncio task that sleeps before its first
`send()` gets a bar that starts at that `send()`, since nothing marks the moment the task was
created. Rows by thread are the clearer picture for "who is busy".

The picture the lab is about: a threaded WSGI server gives each connection a thread and
holds it for the whole request, so bars on one thread row follow each other; the ASGI
server does everything on one thread, and many connections' bars overlap on that one row
(stacked, so they stay visible), each request in its own asyncio task.
"""

from __future__ import annotations

from dataclasses import dataclass

import matplotlib.pyplot as plt
from matplotlib.figure import Figure

from ..trace import TraceEvent
from .sequence import events_of

#: Where events that no asyncio task recorded go when rows are tasks: the event loop ran
#: them as callbacks (`data_received`, `connection_lost`...), or a worker thread did (WSGI).
NO_TASK = "no task, thread"
PALETTE = plt.get_cmap("tab10").colors


@dataclass
class Span:
    """One connection's work on one row: from `start` to `end` (seconds, monotonic)."""

    row: str
    conn: int
    start: float
    end: float
    times: list[float]
    level: int = 0  # which of the row's stacked sub-rows it is drawn on (overlaps stack up)


def row_key(event: TraceEvent, by: str) -> str:
    if by == "thread":
        return event.thread or "?"
    if by == "task":
        return event.task or f"{NO_TASK} {event.thread}"
    if by == "conn":
        return "lifespan" if event.conn == 0 else f"conn {event.conn}"
    raise ValueError(f"by must be 'thread', 'task' or 'conn', not {by!r}")


def spans(events: list[TraceEvent], by: str = "thread") -> list[Span]:
    """The bars of the chart: one per (row, connection), in order of first appearance,
    each with the sub-row it goes on so that bars that overlap in time do not hide each other."""
    found: dict[tuple[str, int], Span] = {}
    for event in events:
        key = (row_key(event, by), event.conn)
        span = found.get(key)
        if span is None:
            found[key] = Span(key[0], event.conn, event.t, event.t, [event.t])
        else:
            span.end = max(span.end, event.t)
            span.times.append(event.t)
    # Stack overlapping bars: each goes on the lowest sub-row free at its start.
    ends: dict[str, list[float]] = {}
    for span in sorted(found.values(), key=lambda s: s.start):
        levels = ends.setdefault(span.row, [])
        for level, end in enumerate(levels):
            if end < span.start:
                span.level, levels[level] = level, span.end
                break
        else:
            span.level = len(levels)
            levels.append(span.end)
    return list(found.values())


def _short(name: str, limit: int = 34) -> str:
    return name if len(name) <= limit else name[: limit - 1] + "…"


def timeline(trace, *, by: str = "thread", title: str | None = None,
             include_lifespan: bool = False, ax=None) -> Figure:
    """Draw a Gantt chart of `trace` (a Tracer or a list of TraceEvents); see the module doc.

    `by` is "thread", "task" or "conn". Server-wide events (connection 0: lifespan) are left
    out unless `include_lifespan`. Returns the figure; each bar is a `Rectangle` with
    `gid="conn:N"` (the tests count them).
    """
    events = [e for e in events_of(trace) if include_lifespan or e.conn != 0]
    bars = spans(events, by)
    rows = list(dict.fromkeys(s.row for s in bars))
    depth = {row: 1 + max(s.level for s in bars if s.row == row) for row in rows}
    # Each row gets a band of height 1, split between its stacked sub-rows.
    base = {}
    y = 0.0
    for row in rows:
        base[row] = y
        y += 1 + 0.25 * (depth[row] - 1)
    total_height = y

    if ax is None:
        fig = plt.figure(figsize=(10.5, 1.4 + 0.55 * max(total_height, 1)), layout="constrained")
        ax = fig.add_subplot()
        plt.close(fig)
    fig = ax.figure
    t0 = min((e.t for e in events), default=0.0)
    t_end = max((e.t for e in events), default=t0)
    min_width = max(t_end - t0, 1e-6) * 0.004 * 1000  # a bar is never thinner than a hairline

    for span in bars:
        band = 1 + 0.25 * (depth[span.row] - 1)
        height = 0.8 * band / depth[span.row]
        y = base[span.row] + 0.1 * band + span.level * band / depth[span.row]
        x = (span.start - t0) * 1000
        width = max((span.end - span.start) * 1000, min_width)
        color = PALETTE[(span.conn - 1) % len(PALETTE)] if span.conn else "#999999"
        ax.broken_barh([(x, width)], (y, height), facecolors=color, alpha=0.85,
                       edgecolor="white", lw=0.5, gid=f"conn:{span.conn}")
        ax.vlines([(t - t0) * 1000 for t in span.times], y, y + height, colors="black",
                  lw=0.6, alpha=0.55)
        if depth[span.row] <= 4 and width > 0.05 * max(t_end - t0, 1e-6) * 1000:  # room for it
            ax.text(x + width / 2, y + height / 2, f"#{span.conn}" if span.conn else "lifespan",
                    ha="center", va="center", fontsize=8, color="white", fontweight="bold",
                    clip_on=True)

    ax.set_yticks([base[row] + (1 + 0.25 * (depth[row] - 1)) / 2 for row in rows])
    ax.set_yticklabels([_short(row) for row in rows], fontsize=9)
    ax.set_ylim(total_height + 0.1, -0.1)
    ax.set_xlabel("time since the first event (ms)", fontsize=9)
    ax.grid(axis="x", color="#dddddd", lw=0.6)
    ax.set_axisbelow(True)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    noun = {"thread": "thread", "task": "asyncio task", "conn": "connection"}[by]
    ax.set_title(title or f"Who works on which connection: one row per {noun}",
                 loc="left", fontsize=11, fontweight="bold")
    return fig


def compare_timelines(traces, *, by="thread") -> Figure:
    """Several timelines stacked in one figure, on one time scale: `{"WSGI": t1, "ASGI": t2}`.

    `by` is one row kind for all ("thread") or a list, one per trace (["thread", "task"]).
    Each trace's time 0 is its own first event, so the two runs can be compared.
    """
    kinds = [by] * len(traces) if isinstance(by, str) else list(by)
    heights = []
    for trace, kind in zip(traces.values(), kinds):
        bars = spans([e for e in events_of(trace) if e.conn != 0], kind)
        rows = {s.row for s in bars}
        heights.append(sum(1 + 0.25 * max(s.level for s in bars if s.row == row) for row in rows) or 1)
    fig = plt.figure(figsize=(10.5, 1.0 + 0.55 * sum(heights) + 0.9 * len(traces)),
                     layout="constrained")
    axes = fig.subplots(len(traces), 1, sharex=True, squeeze=False,
                        gridspec_kw={"height_ratios": [h + 0.6 for h in heights]})[:, 0]
    plt.close(fig)
    for ax, (name, trace), kind in zip(axes, traces.items(), kinds):
        timeline(trace, by=kind, title=name, ax=ax)
    for ax in axes[:-1]:
        ax.set_xlabel("")
    return fig
