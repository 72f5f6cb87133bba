"""A trace as a sequence diagram: three lanes (client, server, app), one row per event.

    fig = sequence_diagram(tracer, conn=1)
    fig.savefig("get.png")

Time runs down the page. Each message between two parties is an arrow, labelled with its
type: the bytes the client sends, the ASGI messages the app gets from `receive()` and gives to
`send()`, the WSGI calls (`app(environ, start_response)`, `start_response`, each body chunk,
`close()`), the HTTP/2 frames of each stream (`asgi_lab/http2.py`, stream id on the arrow).
What happens inside the server (h11 parsed a `Request`, a timeout fired) is a note on the
server's lane. `labels.route(event)` decides which is which.

With the middleware onion on (`asgi_lab/onion.py`), the app's lane is followed by one lane
per middleware layer, outermost first ("app/1", "app/2", ...), each titled with its class:
a message is drawn crossing each layer, and a star marks what a layer changed.

Rows are evenly spaced, in the order the events happened, so a request that takes 0.2 ms
is as readable as one that takes 2 s; the left axis gives each event's real time.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import matplotlib.pyplot as plt
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from ..trace import TraceEvent, merge_chunks
from .labels import LANES, label, route

#: One colour per layer, so the eye can follow bytes, protocol events and app messages.
LAYER_COLORS = {
    "socket": "#3b6ea8",   # blue: bytes on the wire
    "h11": "#7b5ea7",      # purple: the HTTP/1.1 state machine
    "wsproto": "#2f8f5b",  # green: the WebSocket state machine
    "h2": "#16808a",       # teal: HTTP/2 frames and the h2 state machine
    "asgi": "#c0392b",     # red: ASGI messages
    "wsgi": "#d35400",     # orange: the WSGI call
    "server": "#7f8c8d",   # grey: the server's own doings (timeouts, shutdown)
    "onion": "#b7950b",    # ochre: a message between two middleware layers (asgi_lab/onion.py)
}
DEFAULT_COLOR = "#555555"
CHANGED_COLOR = "#a93226"  # a message a middleware layer changed (the onion's "*")
LAYER_NAMES = {
    "socket": "socket: bytes, connect, close",
    "h11": "h11: HTTP/1.1 events",
    "wsproto": "wsproto: WebSocket events",
    "h2": "h2: HTTP/2 frames and events",
    "asgi": "ASGI messages",
    "wsgi": "WSGI calls",
    "server": "server",
    "onion": "between middleware layers (* = changed)",
}

LANE_X = {lane: float(i) for i, lane in enumerate(LANES)}
ROW_HEIGHT = 0.36  # inches per event
LANE_TITLES = {"client": "client", "server": "server", "app": "app"}


def lanes_of(events: Iterable[TraceEvent]) -> tuple[list[str], dict[str, str]]:
    """The lanes a diagram needs: client, server, app, then any middleware layers the onion
    recorded ("app/1", "app/2", ...), and the titles the onion gave them."""
    lanes, titles = list(LANES), {}
    depths: set[int] = set()
    for event in events:
        if event.layer != "onion":
            continue
        for lane in (event.data.get("from"), event.data.get("to")):
            if isinstance(lane, str) and lane.startswith("app/"):
                depths.add(int(lane[4:]))
        titles.update(event.data.get("lanes") or {})
    lanes += [f"app/{depth}" for depth in sorted(depths)]
    return lanes, titles


def events_of(trace, conn: int | None = None) -> list[TraceEvent]:
    """The events of a Tracer or a list, optionally of one connection only."""
    events = list(getattr(trace, "events", trace))
    if conn is not None:
        events = [e for e in events if e.conn == conn]
    return events


def sequence_diagram(trace, *, conn: int | None = None, title: str | None = None,
                     merge: bool = True, highlight: int | None = None,
                     lane_titles: Mapping[str, str] | None = None, first_number: int = 1,
                     start: float | None = None, limit: int = 150, ax=None) -> Figure:
    """Draw `trace` (a Tracer or a list of TraceEvents) as a sequence diagram.

    - `conn`: only this connection's events (0 is the server-wide lifespan);
    - `merge`: join runs of byte chunks (see `trace.merge_chunks`), as the listing does;
    - `highlight`: the index of one event to mark (the stepper uses it);
    - `lane_titles`: e.g. `{"app": "WSGI app"}`;
    - `first_number`, `start`: number rows from `first_number` and measure times from `start`
      (when drawing a window of a longer trace);
    - `limit`: draw at most this many events (a long stream would make a figure metres tall);
      the diagram then says how many it left out;
    - `ax`: draw into this Axes instead of a new figure.

    Returns the figure. Its Axes has one arrow (an annotation) per message and one note per
    event inside the server, in event order.
    """
    events = events_of(trace, conn)
    if merge:
        events = merge_chunks(events)
    left_out = max(len(events) - limit, 0)
    events = events[:limit]
    titles = {**LANE_TITLES, **(lane_titles or {})}
    rows = max(len(events), 1)
    extra_lanes = len(lanes_of(events)[0]) - len(LANES)
    if ax is None:
        fig = plt.figure(figsize=(10.5 + 2.6 * extra_lanes, 1.0 + ROW_HEIGHT * (rows + 1)),
                         layout="constrained")
        ax = fig.add_subplot()
        plt.close(fig)  # Jupyter shows the figure we return, not a second copy
    fig = ax.figure
    draw_sequence(ax, events, titles=titles, highlight=highlight, first_number=first_number,
                  start=start)
    if title:
        ax.set_title(title, loc="left", fontsize=12, fontweight="bold", pad=26)
    if left_out:
        ax.text(1.0, 0.0, f"… and {left_out} more events, not shown", transform=ax.transAxes,
                ha="right", va="top", fontsize=9, color="#555555", gid="left-out")
    return fig


def draw_sequence(ax, events: list[TraceEvent], *, titles: Mapping[str, str],
                  highlight: int | None = None, first_number: int = 1,
                  start: float | None = None) -> None:
    """Draw the lanes, then one row per event (row 0 at the top)."""
    rows = max(len(events), 1)
    t0 = start if start is not None else (events[0].t if events else 0.0)
    several = len({e.conn for e in events}) > 1
    lanes, onion_titles = lanes_of(events)
    lane_x = {lane: float(i) for i, lane in enumerate(lanes)}
    # The onion's layer names, except where the caller gave a lane a title of its own.
    titles = {**titles, **{lane: name for lane, name in onion_titles.items()
                           if titles.get(lane, LANE_TITLES.get(lane)) == LANE_TITLES.get(lane)}}
    left, right = lane_x["client"], lane_x[lanes[-1]]

    ax.set_xlim(left - 0.45, right + 0.45)
    ax.set_ylim(rows - 0.4, -1.05)
    for lane in lanes:  # the lifelines, and each lane's name on top
        x = lane_x[lane]
        ax.plot([x, x], [-0.55, rows - 0.45], color="#b0b0b0", lw=1.2, ls=(0, (4, 3)), zorder=1)
        ax.text(x, -0.7, titles.get(lane, lane), ha="center", va="center", fontsize=11, fontweight="bold",
                zorder=4, gid=f"lane:{lane}",
                bbox=dict(boxstyle="round,pad=0.45", fc="#f4f4f4", ec="#909090", lw=1))

    if highlight is not None and 0 <= highlight < len(events):
        ax.axhspan(highlight - 0.5, highlight + 0.5, color="#ffe58a", alpha=0.7, zorder=0,
                   gid="highlight")

    for row, event in enumerate(events):
        color = LAYER_COLORS.get(event.layer, DEFAULT_COLOR)
        text = label(event)
        if several:
            text = f"[{event.conn}] {text}"
        path = route(event)
        if path is not None:
            x_from, x_to = lane_x.get(path[0], lane_x["app"]), lane_x.get(path[1], lane_x["app"])
            changed = event.layer == "onion" and bool(event.data.get("changes"))
            if changed:  # a middleware changed this message on its way: make it stand out
                color = CHANGED_COLOR
            ax.annotate("", xy=(x_to, row), xytext=(x_from, row), zorder=3, gid="arrow",
                        arrowprops=dict(arrowstyle="-|>,head_length=0.6,head_width=0.3",
                                        color=color, lw=2.6 if changed else 1.6, shrinkA=2, shrinkB=2))
            ax.text((x_from + x_to) / 2, row - 0.1, text, ha="center", va="bottom", fontsize=9,
                    color=color, zorder=4, gid="arrow-label",
                    fontweight="bold" if changed else "normal")
        else:
            x = lane_x["server"]
            ax.annotate(text, xy=(x, row), ha="center", va="center", fontsize=8.5, color=color,
                        zorder=4, gid="note",
                        bbox=dict(boxstyle="round,pad=0.3", fc="white", ec=color, lw=0.8))

    # Which colour is which layer: only the layers that appear.
    layers = list(dict.fromkeys(e.layer for e in events))
    handles = [Line2D([], [], color=LAYER_COLORS.get(layer, DEFAULT_COLOR), lw=2.5,
                      label=LAYER_NAMES.get(layer, layer)) for layer in layers]
    if handles:
        ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(0.0, 0.0), ncol=len(handles),
                  frameon=False, fontsize=8.5, handlelength=1.6, borderaxespad=0.2)

    # The time axis: every row's real time, in milliseconds from the first event.
    ax.set_yticks(range(len(events)))
    ax.set_yticklabels([f"{first_number + i}   {(e.t - t0) * 1000:.2f} ms"
                        for i, e in enumerate(events)], fontsize=8, color="#555555",
                       fontfamily="monospace")
    ax.set_ylabel("time since the first event", fontsize=9, color="#555555")
    ax.tick_params(axis="y", length=0)
    ax.set_xticks([])
    for side in ("top", "right", "bottom", "left"):
        ax.spines[side].set_visible(False)


def side_by_side(traces: Mapping[str, Iterable[TraceEvent]], *, conn: int | None = None,
                 merge: bool = True, lane_titles: Mapping[str, Mapping[str, str]] | None = None
                 ) -> Figure:
    """Several sequence diagrams in one figure, left to right: `{"WSGI": t1, "ASGI": t2}`.

    `lane_titles` maps a title to its lane names, e.g. `{"WSGI": {"app": "WSGI app"}}`.
    """
    lists = {}
    for name, trace in traces.items():
        events = events_of(trace, conn)
        lists[name] = merge_chunks(events) if merge else events
    rows = max((len(e) for e in lists.values()), default=1)
    fig = plt.figure(figsize=(8.2 * len(lists), 1.1 + ROW_HEIGHT * (rows + 1)), layout="constrained")
    axes = fig.subplots(1, len(lists), squeeze=False)[0]
    plt.close(fig)
    for ax, (name, events) in zip(axes, lists.items()):
        titles = {**LANE_TITLES, **((lane_titles or {}).get(name) or {})}
        draw_sequence(ax, events, titles=titles)
        ax.set_ylim(rows - 0.4, -1.05)  # the same scale for both: row n is row n on each side
        ax.set_title(name, loc="left", fontsize=12, fontweight="bold", pad=26)
    return fig
