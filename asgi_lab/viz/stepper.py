"""Step through a trace, one event at a time.

    Stepper(tracer, conn=1)          # the last line of a notebook cell

Buttons (play, previous, next) and a slider choose an event; three panes show it:

- the event itself, as the dict the tracer recorded (layer, kind, data, thread, task);
- the bytes on the wire at that moment: the last bytes the client sent and the last bytes the
  server wrote on this connection, up to this event, with each CR LF shown as `\\r\\n`;
- where we are on the sequence diagram (the current row highlighted).

**Where there is no widget front end** (nbval runs the notebook headless; a static HTML
export, GitHub's viewer), a widget would show as a useless `VBox(...)` line. So a `Stepper`
displays a *bundle* of three representations and lets the front end pick:

- `application/vnd.jupyter.widget-view+json`: the live widget (JupyterLab, Notebook 7, VS Code);
- `text/html`: a static rendering, the full diagram and a table of every event (nbconvert
  falls back to it when the notebook has no saved widget state; so does GitHub);
- `text/plain`: the event listing (terminals, `nbval`'s output comparison).

Nothing is detected at run time: every front end gets all three and shows the best it can.
`Stepper(..., static=True)` leaves the widget out (plain IPython, a script), and so does a
Python without ipywidgets. The controls work without a front end too: `stepper.next()`,
`stepper.previous()`, `stepper.go(5)` or setting `stepper.slider.value` move it (the tests
do exactly that).
"""

from __future__ import annotations

import base64
import html
import io
import pprint
import re
from dataclasses import asdict

from matplotlib.figure import Figure

from ..trace import TraceEvent, merge_chunks
from .labels import details, label, listing
from .sequence import ROW_HEIGHT, events_of, sequence_diagram

try:
    import ipywidgets as widgets
except ImportError:  # the core install has no widgets: static rendering only
    widgets = None

#: How many rows of the diagram the stepper shows around the current event.
WINDOW = 12
LINE_END = re.compile(r"\r\n|\r|\n")


def visible_bytes(text: str | None) -> str:
    """Bytes (as a trace stores them) for an HTML pane, line ends shown the way Python writes
    them: `GET / HTTP/1.1\\r\\n`, greyed, then a real line break."""

    def show(match: re.Match) -> str:
        end = match.group()
        shown = f"<span style='color:#999'>{end.encode('unicode_escape').decode()}</span>"
        return shown + "\n" if end.endswith("\n") else shown

    return LINE_END.sub(show, html.escape(text or ""))


def diagram_png(events: list[TraceEvent], dpi: int = 80, **options) -> bytes:
    """A sequence diagram as PNG bytes. Drawn on a bare `Figure`, not through pyplot: widget
    callbacks may run on another thread (ipykernel's subshells), and pyplot's global list of
    figures is not thread-safe."""
    fig = Figure(figsize=(9.5, 0.9 + ROW_HEIGHT * (len(events) + 1)), layout="constrained")
    sequence_diagram(events, merge=False, ax=fig.add_subplot(), **options)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi)
    return buffer.getvalue()


class Stepper:
    """Step through `trace` (a Tracer or a list of TraceEvents); see the module docstring."""

    def __init__(self, trace, *, conn: int | None = None, merge: bool = True,
                 static: bool = False, title: str | None = None, interval_ms: int = 900) -> None:
        events = events_of(trace, conn)
        self.events: list[TraceEvent] = merge_chunks(events) if merge else events
        if not self.events:
            raise ValueError("nothing to step through: the trace has no events"
                             + (f" for connection {conn}" if conn is not None else ""))
        self.title = title
        self.start = self.events[0].t
        self.index = 0
        self.static = static or widgets is None
        self._pngs: dict[int, bytes] = {}
        self.widget = None if self.static else self._build_widget(interval_ms)
        if self.widget is not None:
            self._show(0)

    # -- moving ----------------------------------------------------------------------------

    def go(self, index: int) -> None:
        """Show event number `index` (0-based), clamped to the trace."""
        index = max(0, min(index, len(self.events) - 1))
        if self.widget is not None and self.slider.value != index:
            self.slider.value = index  # the slider's observer calls _show
        else:
            self._show(index)

    def next(self) -> None:
        self.go(self.index + 1)

    def previous(self) -> None:
        self.go(self.index - 1)

    @property
    def event(self) -> TraceEvent:
        return self.events[self.index]

    # -- what each pane shows ------------------------------------------------------------------

    def event_dict(self, index: int | None = None) -> dict:
        """The current event as a plain dict, its time in ms from the first event."""
        event = self.events[self.index if index is None else index]
        shown = asdict(event)
        shown["t"] = f"+{(event.t - self.start) * 1000:.3f} ms"
        return shown

    def wire(self, index: int | None = None) -> dict[str, TraceEvent | None]:
        """The last bytes in and the last bytes out on this event's connection, up to it."""
        index = self.index if index is None else index
        conn = self.events[index].conn
        found: dict[str, TraceEvent | None] = {"bytes_in": None, "bytes_out": None}
        for event in self.events[: index + 1]:
            if event.conn == conn and event.layer == "socket" and event.kind in found:
                found[event.kind] = event
        return found

    def diagram_png(self, index: int | None = None) -> bytes:
        """The part of the sequence diagram around event `index`, its row highlighted."""
        index = self.index if index is None else index
        if index not in self._pngs:
            low = max(0, min(index - WINDOW // 2, len(self.events) - WINDOW))
            window = self.events[low: low + WINDOW]
            self._pngs[index] = diagram_png(window, highlight=index - low, first_number=low + 1,
                                            start=self.start)
        return self._pngs[index]

    # -- the widget ------------------------------------------------------------------------------

    def _build_widget(self, interval_ms: int):
        last = len(self.events) - 1
        self.play = widgets.Play(value=0, min=0, max=last, step=1, interval=interval_ms,
                                 description="play", layout=widgets.Layout(width="auto"))
        self.previous_button = widgets.Button(description="◀ previous", layout=widgets.Layout(width="110px"))
        self.next_button = widgets.Button(description="next ▶", layout=widgets.Layout(width="110px"))
        self.slider = widgets.IntSlider(value=0, min=0, max=last, step=1, readout=False,
                                        continuous_update=True,
                                        layout=widgets.Layout(width="340px"))
        self.position = widgets.HTML()
        widgets.jslink((self.play, "value"), (self.slider, "value"))  # play runs in the browser
        self.previous_button.on_click(lambda _: self.previous())
        self.next_button.on_click(lambda _: self.next())
        self.slider.observe(lambda change: self._show(change["new"]), names="value")

        self.event_pane = widgets.HTML(layout=widgets.Layout(width="46%"))
        self.wire_pane = widgets.HTML(layout=widgets.Layout(width="54%"))
        self.diagram = widgets.Image(format="png", layout=widgets.Layout(width="760px"))
        controls = widgets.HBox([self.play, self.previous_button, self.next_button,
                                 self.slider, self.position])
        parts = [controls, widgets.HBox([self.event_pane, self.wire_pane]), self.diagram]
        if self.title:
            parts.insert(0, widgets.HTML(f"<b>{html.escape(self.title)}</b>"))
        return widgets.VBox(parts)

    def _show(self, index: int) -> None:
        self.index = index
        if self.widget is None:
            return
        event = self.events[index]
        self.position.value = (f"<b>{index + 1}</b> / {len(self.events)}: "
                               f"<code>{html.escape(event.layer)} {html.escape(event.kind)}</code>")
        self.event_pane.value = ("<div><b>the event</b></div><pre style='font-size:11px;"
                                 "white-space:pre-wrap;margin:0'>"
                                 f"{html.escape(pprint.pformat(self.event_dict(index), width=64, sort_dicts=False))}</pre>")
        self.wire_pane.value = self._wire_html(index)
        self.diagram.value = self.diagram_png(index)

    def _wire_html(self, index: int) -> str:
        event = self.events[index]
        parts = ["<div><b>on the wire</b> (connection %d, up to this event)</div>" % event.conn]
        for kind, heading in (("bytes_in", "client → server"), ("bytes_out", "server → client")):
            found = self.wire(index)[kind]
            now = found is event
            style = "background:#ffe58a;" if now else ""
            if found is None:
                body = "<i>nothing yet</i>"
            else:
                body = visible_bytes(found.data.get("bytes"))
            size = f", {found.data.get('size')} bytes" if found is not None else ""
            parts.append(f"<div style='margin-top:4px'>{heading}{size}{' <b>(this event)</b>' if now else ''}</div>"
                         f"<pre style='font-size:11px;white-space:pre-wrap;margin:0;{style}'>{body}</pre>")
        return "".join(parts)

    # -- the static rendering ------------------------------------------------------------------

    def static_text(self) -> str:
        title = f"{self.title}\n" if self.title else ""
        return (f"{title}Stepper over {len(self.events)} events (open in Jupyter to step through "
                f"them):\n{listing(self.events, merge=False)}")

    def static_html(self) -> str:
        image = base64.b64encode(diagram_png(self.events, dpi=90, start=self.start)).decode("ascii")
        rows = []
        for number, event in enumerate(self.events, 1):
            rows.append(
                f"<tr><td>{number}</td><td>{(event.t - self.start) * 1000:.2f} ms</td>"
                f"<td>{event.conn}</td><td>{html.escape(event.layer)}</td>"
                f"<td>{html.escape(event.kind)}</td><td><code>{html.escape(details(event) or label(event))}"
                f"</code></td></tr>")
        title = f"<h4>{html.escape(self.title)}</h4>" if self.title else ""
        style = ("<style>.asgi-lab-stepper td, .asgi-lab-stepper th {text-align: left; "
                 "padding: 1px 8px}</style>")
        return (f"<div class='asgi-lab-stepper'>{style}{title}<p><i>Static view of the stepper "
                f"({len(self.events)} events): run the notebook in Jupyter to step through them.</i></p>"
                f"<img src='data:image/png;base64,{image}' style='max-width:100%'/>"
                "<table><tr><th>#</th><th>time</th><th>conn</th><th>layer</th><th>kind</th>"
                f"<th>details</th></tr>{''.join(rows)}</table></div>")

    def _repr_mimebundle_(self, include=None, exclude=None):
        bundle = {"text/plain": self.static_text(), "text/html": self.static_html()}
        if self.widget is not None:
            bundle.update({k: v for k, v in self.widget._repr_mimebundle_().items()
                           if k != "text/plain"})
        return bundle

    def __repr__(self) -> str:
        return f"<Stepper at event {self.index + 1} of {len(self.events)}>"
