"""Who waited, and who was being served, when: one row per client, one panel per server.

    timeline([blocking_run, threads_run, loop_run], "The same 4 requests, three servers")

Each client's row is a pale bar from the moment it connected and sent its request to the
moment it had the answer, with a solid bar on top from the moment the server accepted the
connection: pale alone means "sent, and nobody is working on it yet". Solid bars that
overlap are clients served at the same time. Colours follow the rest of the course
(`asgi_lab.viz.charts.COLORS`): red for threads, blue for an event loop.
"""

from __future__ import annotations

import matplotlib.pyplot as plt
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from ..viz.charts import COLORS
from .clients import Run

COLOR_BY_LABEL = {
    "blocking: one at a time": "#7f7f7f",
    "a thread per connection": COLORS["wsgi-threads"],
    "an event loop of generators": COLORS["asgi"],
    "the same loop, async def tasks": COLORS["asgi"],
}


def timeline(runs: list[Run], title: str, names: list[str] | None = None) -> Figure:
    """One panel per run, sharing the time axis (milliseconds after the first connection).
    Each panel is named after its server, or by `names` if given."""
    rows = max(len(run.visits) for run in runs)
    fig, axes = plt.subplots(len(runs), 1, sharex=True, squeeze=False, layout="constrained",
                             figsize=(8, 0.9 + len(runs) * (0.55 + 0.22 * rows)))
    plt.close(fig)  # returned, not left open in pyplot (Jupyter shows it once, as the result)
    for ax, run, name in zip(axes[:, 0], runs, names or [run.label for run in runs]):
        color = COLOR_BY_LABEL.get(run.label, "#7f7f7f")
        for visit in run.visits:
            ms = [t * 1000 for t in (visit.sent, visit.answered)]
            ax.barh(visit.client, ms[1] - ms[0], left=ms[0], height=0.6, color=color, alpha=0.25)
            if visit.accepted is not None:
                start = visit.accepted * 1000
                ax.barh(visit.client, ms[1] - start, left=start, height=0.6, color=color)
            ax.plot(ms[1], visit.client, marker="|", markersize=12, color=color)  # the answer
        threads = len(run.server_threads)
        ax.set_title(f"{name}: {threads} server thread{'s' if threads != 1 else ''}",
                     loc="left", fontsize=10)
        ax.set_ylabel("client")
        ax.set_yticks(range(1, rows + 1) if rows <= 10 else [1, rows])
        ax.set_ylim(rows + 0.6, 0.4)  # client 1 at the top
        ax.set_xlim(left=0)
        ax.grid(axis="x", color="#dddddd", lw=0.6)
        ax.set_axisbelow(True)
        for side in ("top", "right"):
            ax.spines[side].set_visible(False)
    axes[-1, 0].set_xlabel("milliseconds after the first client connected")
    fig.legend(handles=[Patch(color="#7f7f7f", alpha=0.25, label="request sent, not accepted yet"),
                        Patch(color="#7f7f7f", label="accepted by the server, until answered")],
               loc="outside lower center", ncols=2, fontsize=8, frameon=False)
    fig.suptitle(title)
    return fig
