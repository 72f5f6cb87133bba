"""The notebook's live pieces: a chat box, a frame inspector, a close button (ipywidgets).

    ChatBox(client)                         # type, press Enter, watch the room answer
    FrameInspector([ada, bob], tracer)      # per connection: frames on the wire + wsproto events
    CloseButton(bob, inspector)             # close with a chosen code, watch both sides
    answer(markdown)                        # a predict-then-run answer, collapsed

Each widget also has a plain-text rendering (`frames_text`, `events_text`, `transcript`) that
the notebook prints, so that a run with no widget front end (nbval in CI) still shows, and
checks, what happened; and each leaves a static HTML picture of itself in the notebook file
for readers without a kernel. A widget whose connection has ended says how it ended and
disables its controls: a closed connection cannot be closed, pinged or written to again.

Threads: the widgets are updated from the client loop's thread (see `chat_client.py`), where
the messages arrive. Setting a widget's trait from another thread is fine in ipykernel (the
update is queued on the kernel's IOPub thread); button callbacks may run on a subshell thread
and only ever call the thread-safe `ChatClient` methods. Updates are throttled: a burst of
messages redraws a widget at most every `REDRAW_EVERY` seconds.
"""

from __future__ import annotations

import html
import threading

import ipywidgets as widgets

from ..trace import Tracer
from .chat_client import ChatClient
from .client import ClientEvent
from .frames import WireFrame
from .public_url import public_address

REDRAW_EVERY = 0.2  # seconds
MAX_ROWS = 100      # the inspector shows the most recent rows of each kind only

#: Close codes to try (RFC 6455 §7.4.1; 4000-4999 are for applications).
CLOSE_CODES = [("1000 Normal Closure", 1000), ("1001 Going Away", 1001),
               ("1003 Unsupported Data", 1003), ("1008 Policy Violation", 1008),
               ("4000 (application defined)", 4000)]

_TABLE_STYLE = ("<style>.asgi-lab-frames td,.asgi-lab-frames th{padding:1px 8px;text-align:left;"
                "font-family:monospace;font-size:12px;white-space:nowrap}.asgi-lab-frames tr.sent{color:#1c4fb5}"
                ".asgi-lab-frames tr.server{color:#8a4b00}</style>")


# -- plain text: what a run without a front end prints ------------------------------------

def frame_row(frame: WireFrame, t0: float) -> tuple[str, ...]:
    arrow = "client → server" if frame.direction == "sent" else "server → client"
    return (f"{frame.t - t0:7.3f}s", arrow, "1" if frame.fin else "0", frame.opcode,
            "yes" if frame.masked else "no", str(frame.length), frame.describe())


FRAME_COLUMNS = ("time", "direction", "FIN", "opcode", "MASK", "length", "payload")


def frames_text(frames: list[WireFrame], t0: float | None = None, times: bool = True) -> str:
    """A fixed-width table of frames (the masking keys are left out: they are random)."""
    if not frames:
        return "(no frames)"
    t0 = frames[0].t if t0 is None else t0
    rows = [frame_row(f, t0) for f in frames]
    columns = FRAME_COLUMNS
    if not times:
        rows, columns = [r[1:] for r in rows], columns[1:]
    widths = [max(len(c), *(len(r[i]) for r in rows)) for i, c in enumerate(columns)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths)).rstrip()]
    lines += ["  ".join(v.ljust(w) for v, w in zip(r, widths)).rstrip() for r in rows]
    return "\n".join(lines)


def _short(fields: dict, limit: int = 70) -> str:
    text = ", ".join(f"{k}={v!r}" for k, v in fields.items()
                     if v not in (None, [], "", b"") and k not in ("extra_headers", "headers"))
    return text if len(text) <= limit else text[:limit] + "..."


def events_text(events: list[ClientEvent]) -> str:
    """The wsproto events a client sent and received, one per line."""
    return "\n".join(f"{'sent    ' if e.direction == 'sent' else 'received'}  {e.name}({_short(e.fields)})"
                     for e in events)


def server_events(tracer: Tracer | None, client: ChatClient,
                  layers=("wsproto", "asgi")) -> list:
    """The server's trace events for `client`'s connection, found by its port."""
    if tracer is None or client.local_port is None:
        return []
    for event in tracer.filter(layer="socket", kind="connection_made"):
        peer = event.data.get("client")
        if peer and peer[1] == client.local_port:
            return tracer.filter(conn=event.conn, layer=layers)
    return []


def transcript(client: ChatClient) -> str:
    return "\n".join(client.chat_lines)


# -- widgets -----------------------------------------------------------------------------

class _Throttled:
    """Call `redraw()` at most every REDRAW_EVERY seconds, on a timer thread."""

    def __init__(self, redraw) -> None:
        self.redraw = redraw
        self._timer: threading.Timer | None = None
        self._lock = threading.Lock()

    def __call__(self, *_ignored) -> None:
        with self._lock:
            if self._timer is None:
                self._timer = threading.Timer(REDRAW_EVERY, self._fire)
                self._timer.daemon = True
                self._timer.start()

    def _fire(self) -> None:
        with self._lock:
            self._timer = None
        self.redraw()


class _Static:
    """A widget that also leaves a static rendering in the notebook file: `text/html` beside
    the widget view, drawn when the cell ran, for readers without a kernel (GitHub, a docs
    site, a notebook opened before running it)."""

    def static_html(self) -> str:
        raise NotImplementedError

    def _repr_mimebundle_(self, **kwargs):
        bundle = super()._repr_mimebundle_(**kwargs)
        if bundle is not None:
            bundle["text/html"] = self.static_html()
            bundle["text/plain"] = f"<{type(self).__name__}: a live widget, run the notebook to use it>"
        return bundle


def _closed_note(client: ChatClient) -> str:
    return f"{client.name} is {client.describe_state()}"


class ChatBox(_Static, widgets.VBox):
    """A chat member in the notebook: the log of the room, a text box and a Send button.
    Once its connection has ended, the box says how and stops taking input."""

    def __init__(self, client: ChatClient, height: str = "220px") -> None:
        self.client = client
        self.header = widgets.HTML()
        self.log_view = widgets.HTML(layout=widgets.Layout(height=height, overflow="auto",
                                                      border="1px solid #ccc", padding="4px"))
        self.entry = widgets.Text(placeholder="say something, press Enter",
                                 continuous_update=False, layout=widgets.Layout(width="70%"))
        self.send_button = widgets.Button(description="Send", button_style="primary")
        self.send_button.on_click(self._on_send)
        self.entry.observe(self._on_send, names="value")  # Enter (or leaving the box) sends
        super().__init__([self.header, self.log_view, widgets.HBox([self.entry, self.send_button])])
        self.add_class("asgi-lab-chat")
        self._redraw_soon = _Throttled(self.redraw)
        client.listeners.append(self._on_item)
        self.redraw()

    def _on_item(self, _client, item) -> None:
        if item is None:                # the connection ended: say so at once
            self.redraw()
        elif isinstance(item, dict):    # a chat message
            self._redraw_soon()

    def _on_send(self, _change=None) -> None:
        text = self.entry.value.strip()
        if text and not self.client.closed:
            self.client.send(text)  # thread-safe: hops to the client loop
            self.entry.value = ""

    def _header(self) -> str:
        state = "connected" if not self.client.closed else self.client.describe_state()
        return f"<b>{html.escape(self.client.name)}</b> &middot; {html.escape(state)}"

    def _log(self) -> str:
        lines = [f"<div>{html.escape(line)}</div>" for line in self.client.chat_lines[-MAX_ROWS:]]
        return "".join(lines) or "<i>nothing yet</i>"

    def redraw(self) -> None:
        closed = self.client.closed
        self.header.value = self._header()
        self.log_view.value = self._log()
        self.entry.disabled = self.send_button.disabled = closed
        if closed:
            self.entry.placeholder = "closed: this member can no longer send"

    def static_html(self) -> str:
        return (f"<div class='asgi-lab-chat-static'>{self._header()} <i>(the chat box when this "
                f"cell ran)</i><div style='border:1px solid #ccc;padding:4px;max-height:220px;"
                f"overflow:auto'>{self._log()}</div></div>")


class FrameInspector(_Static, widgets.VBox):
    """Per connection: the frames on the wire, the client's wsproto events and the server's.

    Frames come from the client's own recording of its socket (every byte, decoded with
    wsproto's frame parser); the server side comes from the server's `Tracer`, if given.
    The Ping button pings the selected connection and shows the round trip; it is disabled
    for a connection that has ended.
    """

    def __init__(self, clients: list[ChatClient], tracer: Tracer | None = None) -> None:
        self.clients: dict[str, ChatClient] = {}
        self.tracer = tracer
        self.picker = widgets.ToggleButtons(options=[])
        self.refresh_button = widgets.Button(description="Refresh", icon="refresh")
        self.ping_button = widgets.Button(description="Ping", tooltip="send a ping, watch the pong")
        self.ping_button.on_click(self._on_ping)
        self.status_view = widgets.HTML()
        scroll = dict(max_height="360px", overflow="auto")  # the newest rows are at the bottom
        self.frames_view = widgets.HTML(layout=widgets.Layout(**scroll))
        self.events_view = widgets.HTML(layout=widgets.Layout(**scroll))
        self.picker.observe(lambda _change: self.redraw(), names="value")
        self.refresh_button.on_click(lambda _button: self.redraw())
        tabs = widgets.Tab([self.frames_view, self.events_view])
        tabs.set_title(0, "frames on the wire")
        tabs.set_title(1, "events, both sides")
        super().__init__([widgets.HBox([self.picker, self.refresh_button, self.ping_button]),
                          self.status_view, tabs])
        self.add_class("asgi-lab-inspector")
        self._redraw_soon = _Throttled(self.redraw)
        self._pinged = ""
        for client in clients:
            self.add(client)

    def add(self, client: ChatClient) -> None:
        """Inspect one more connection."""
        self.clients[client.name] = client
        client.listeners.append(self._redraw_soon)
        value = self.picker.value
        self.picker.options = list(self.clients)
        self.picker.value = value if value in self.clients else client.name
        self.redraw()

    @property
    def selected(self) -> ChatClient | None:
        return self.clients.get(self.picker.value)

    def _on_ping(self, _button) -> None:
        client = self.selected
        if client is None or client.closed:
            self.redraw()
            return
        self._pinged = f"{client.name}: ping sent..."
        self.status_view.value = html.escape(self._pinged)
        client.ping_soon(b"ping!", done=lambda result: self._ponged(client, result))

    def _ponged(self, client: ChatClient, result) -> None:
        if isinstance(result, BaseException):
            self._pinged = f"{client.name}: no pong ({result or type(result).__name__})"
        else:
            self._pinged = f"{client.name}: pong after {result * 1000:.1f} ms"
        self.redraw()

    def _frames_table(self, client: ChatClient) -> str:
        frames = client.frames
        t0 = frames[0].t if frames else 0.0
        rows = []
        for frame in frames[-MAX_ROWS:]:
            cells = frame_row(frame, t0)
            key = f" {frame.mask_key.hex()}" if frame.mask_key else ""
            cells = cells[:4] + (cells[4] + key,) + cells[5:]
            rows.append(f"<tr class='{frame.direction}'>" +
                        "".join(f"<td>{html.escape(c)}</td>" for c in cells) + "</tr>")
        head = "".join(f"<th>{c}</th>" for c in FRAME_COLUMNS)
        return f"{_TABLE_STYLE}<table class='asgi-lab-frames'><tr>{head}</tr>{''.join(rows)}</table>"

    def redraw(self) -> None:
        client = self.selected
        if client is None:
            return
        self.ping_button.disabled = client.closed
        state = "open" if not client.closed else client.describe_state()
        status = [f"{client.name}: {state}"]
        if self._pinged.startswith(client.name + ":"):
            status.append(self._pinged.partition(": ")[2])
        self.status_view.value = f"<small>{' &middot; '.join(map(html.escape, status))}</small>"
        self.frames_view.value = self._frames_table(client)
        rows = [f"<tr class='{e.direction}'><td>client {e.direction}</td><td>{e.name}</td>"
                f"<td>{html.escape(_short(e.fields, 100))}</td></tr>" for e in client.events[-MAX_ROWS:]]
        rows += [f"<tr class='server'><td>server {e.layer}</td><td>{e.kind}</td>"
                 f"<td>{html.escape(_short(e.data, 100))}</td></tr>"
                 for e in server_events(self.tracer, client)[-MAX_ROWS:]]
        self.events_view.value = f"{_TABLE_STYLE}<table class='asgi-lab-frames'>{''.join(rows)}</table>"

    def static_html(self) -> str:
        client = self.selected
        if client is None:
            return "<i>(no connection to inspect)</i>"
        return (f"<div><b>{html.escape(client.name)}</b>: the frames on the wire when this cell "
                f"ran</div>{self._frames_table(client)}")


class CloseButton(_Static, widgets.HBox):
    """Close one client with a chosen code and reason; the inspector shows both sides.

    The button works once: as soon as the connection has ended, whoever closed it (this
    button, a cell, the server), it is disabled and says how the connection ended."""

    def __init__(self, client: ChatClient, inspector: FrameInspector | None = None) -> None:
        self.client = client
        self.inspector = inspector
        self.code_picker = widgets.Dropdown(options=CLOSE_CODES, value=4000, description="code")
        self.reason_box = widgets.Text(value="bye", description="reason")
        self.close_button = widgets.Button(description=f"Close {client.name}", button_style="danger")
        self.status_view = widgets.HTML()
        self.close_button.on_click(self._on_close)
        super().__init__([self.code_picker, self.reason_box, self.close_button, self.status_view])
        self.add_class("asgi-lab-close")
        client.listeners.append(self._on_item)
        self.update()

    def _on_item(self, _client, item) -> None:
        if item is None:  # the connection ended, whoever ended it
            self.update()

    def _on_close(self, _button) -> None:
        if self.client.closed:  # closed meanwhile by someone else: nothing to send
            self.update()
            return
        # Do not block the callback's thread: the handshake runs on the client loop.
        self.close_button.disabled = True
        self.status_view.value = "closing..."
        self.client.close_soon(self.code_picker.value, self.reason_box.value, done=self._on_closed)

    def _on_closed(self, _result) -> None:
        self.update()
        if self.inspector is not None:
            self.inspector._redraw_soon()

    def update(self) -> None:
        closed = self.client.closed
        for control in (self.code_picker, self.reason_box, self.close_button):
            control.disabled = closed
        self.status_view.value = html.escape(_closed_note(self.client)) if closed else "open"

    def static_html(self) -> str:
        state = _closed_note(self.client) if self.client.closed else f"{self.client.name} is open"
        return (f"<div><button disabled>Close {html.escape(self.client.name)}</button> "
                f"{html.escape(state)} <i>(when this cell ran)</i></div>")


def chat_link(server, room: str = "lobby", height: int = 320, template: str | None = None):
    """A link to the chat page (open it in several tabs) and the page itself in an IFrame.

    Both carry the address the reader's browser can reach (`public_url.py`): the server's
    own on a laptop, the Jupyter server's proxy route on JupyterHub, Binder or a Codespace.
    `template` overrides the choice (see `public_address`)."""
    from IPython.display import HTML, IFrame, display

    where = public_address(template)
    url = where.url(server, f"?room={room}")
    note = ""
    if where.proxied:
        note = (f" <small>(through the Jupyter server's proxy, <code>{html.escape(where.template)}</code>:"
                f" {html.escape(where.reason)}{proxy_missing()})</small>")
    display(HTML(f'<p>Open <a href="{html.escape(url)}&amp;name=tab" target="_blank">'
                 f"{html.escape(url)}</a> in a few browser tabs, or use the one below: every tab is "
                 f"another member of the room.{note}</p>"))
    return IFrame(f"{url}&name=iframe", width="100%", height=height)


def proxy_missing() -> str:
    """A warning if jupyter-server-proxy is not installed here (then the proxied links 404)."""
    import importlib.util

    if importlib.util.find_spec("jupyter_server_proxy") is not None:
        return ""
    return "; <b>jupyter-server-proxy is not installed</b>: <code>pip install jupyter-server-proxy</code>, then restart the Jupyter server"


def answer(markdown: str):
    """The answer to a predict-then-run question: `markdown` (built from what the cell just
    measured) inside a collapsed "What happened, and why"."""
    from IPython.display import Markdown

    return Markdown(f"<details><summary>What happened, and why</summary>\n\n{markdown.strip()}\n\n</details>")
