"""The tracer: a recording of everything a server did, as plain data.

Both servers accept `tracer=Tracer()`. It is off by default (`tracer=None`), and every call
site in the servers is guarded by `if self.tracer is not None:`, so a server without a tracer
does no extra work at all: no string formatting, no dict building, no function call.

When it is on, each layer reports what it saw with one call of one signature::

    tracer.emit(conn, layer, kind, data)

- `conn`  : the connection's number (0 for server-wide events such as lifespan)
- `layer` : "socket", "h11", "wsproto", "h2", "asgi", "wsgi" or "server" (and "onion": a
  message between two middleware layers of a framework app, see `asgi_lab/onion.py`)
- `kind`  : what happened: "bytes_in", "Request", "receive", "send", "start_response", ...
- `data`  : the message itself: an ASGI message dict, an h11 event's fields, a bytes preview
  (HTTP/2 events, see `asgi_lab/http2.py`, also carry the `stream_id` they belong to)

The result is a list of `TraceEvent`s with monotonic timestamps and the thread / asyncio task
that did the work. It can be filtered, saved as JSON and loaded back.

Reading a trace (which way an event goes, its caption, a readable listing) is presentation:
see `asgi_lab.viz.labels`. This module only records, and merges the network's chunks
(`merge_chunks`).
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import threading
import time
from dataclasses import asdict, dataclass, field
from collections.abc import Sequence
from typing import Any, Iterable

#: How many bytes of a payload a trace keeps; the rest is summarised by its length.
PREVIEW_BYTES = 256


@dataclass(frozen=True, slots=True)
class TraceEvent:
    """One thing that happened, at one layer, on one connection."""

    t: float
    """time.monotonic() when it happened, in seconds."""
    conn: int
    layer: str
    kind: str
    data: dict[str, Any] = field(default_factory=dict)
    thread: str = ""
    task: str | None = None


def preview(payload: bytes | bytearray | memoryview | str | None, limit: int = PREVIEW_BYTES):
    """A JSON-friendly view of a payload: text as-is, bytes latin-1 decoded, both truncated."""
    if payload is None:
        return None
    if isinstance(payload, str):
        return payload if len(payload) <= limit else payload[:limit] + f"... ({len(payload)} chars)"
    size = len(payload) if not isinstance(payload, memoryview) else payload.nbytes
    if size <= limit:
        return str(payload, "latin-1")  # decodes bytes, bytearray and memoryview without a copy
    return str(payload[:limit], "latin-1") + f"... ({size} bytes)"


def jsonable(value: Any) -> Any:
    """ASGI messages hold bytes and tuples; turn them into JSON-friendly values for a trace."""
    if isinstance(value, (bytes, bytearray, memoryview)):
        return preview(value)
    if value is None or isinstance(value, (str, int, float, bool)):
        return value  # before Sequence: a str is a Sequence of one-character strs
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, Sequence):  # h11's Headers: a Sequence of (name, value) pairs
        return [jsonable(v) for v in value]
    return repr(value)


_field_names: dict[type, tuple[str, ...]] = {}


def describe_event(event) -> dict[str, Any]:
    """The fields of an h11 or wsproto event (both are dataclasses) as a plain dict."""
    names = _field_names.get(type(event))
    if names is None:  # first event of this class: look its fields up once
        if not dataclasses.is_dataclass(event):
            return {}
        names = _field_names[type(event)] = tuple(f.name for f in dataclasses.fields(event))
    return {name: getattr(event, name) for name in names}


class Tracer:
    """Collects `TraceEvent`s from one or more servers. Thread-safe: list.append is atomic."""

    def __init__(self, events: Iterable[TraceEvent] = ()) -> None:
        self.events: list[TraceEvent] = list(events)
        self._start = self.events[0].t if self.events else time.monotonic()

    @property
    def start(self) -> float:
        """The time 0 of this trace (when it was created, or its first event once loaded)."""
        return self._start

    def emit(self, conn: int, layer: str, kind: str, data: dict[str, Any] | None = None) -> None:
        """Record one event. Called by the servers only when a tracer is set."""
        try:
            task = asyncio.current_task()
        except RuntimeError:  # no running event loop in this thread (the WSGI server)
            task = None
        self.events.append(
            TraceEvent(
                t=time.monotonic(),
                conn=conn,
                layer=layer,
                kind=kind,
                data=jsonable(data) if data else {},
                thread=threading.current_thread().name,
                task=task.get_name() if task is not None else None,
            )
        )

    # -- reading a trace ---------------------------------------------------------------

    def clear(self) -> None:
        self.events.clear()

    def filter(self, *, conn: int | None = None, layer: str | Iterable[str] | None = None,
               kind: str | Iterable[str] | None = None,
               message_type: str | None = None) -> list[TraceEvent]:
        """The events matching every given criterion (a layer or kind may be a list);
        `message_type` matches an ASGI message's "type" (e.g. "http.disconnect")."""
        layers = {layer} if isinstance(layer, str) else set(layer) if layer else None
        kinds = {kind} if isinstance(kind, str) else set(kind) if kind else None
        return [
            e for e in self.events
            if (conn is None or e.conn == conn)
            and (layers is None or e.layer in layers)
            and (kinds is None or e.kind in kinds)
            and (message_type is None or e.data.get("type") == message_type)
        ]

    def wait_for(self, *, conn: int | None = None, layer: str | None = None,
                 kind: str | None = None, message_type: str | None = None,
                 timeout: float = 5.0) -> TraceEvent:
        """Wait until an event matching the criteria has been recorded, and return it.

        The servers run on other threads: after the client saw its response, the server may
        still be closing the connection. `tracer.wait_for(conn=1, kind="connection_lost")`
        waits for it, so a listing printed next is complete. Raises TimeoutError.
        """
        deadline = time.monotonic() + timeout
        while True:
            found = self.filter(conn=conn, layer=layer, kind=kind, message_type=message_type)
            if found:
                return found[0]
            if time.monotonic() > deadline:
                raise TimeoutError(f"no event with conn={conn} layer={layer} kind={kind} "
                                   f"message_type={message_type} within {timeout} s "
                                   f"({len(self.events)} events recorded)")
            time.sleep(0.005)

    def listing(self, **options) -> str:
        """The events as a readable table: see `asgi_lab.viz.labels.listing()`."""
        from .viz.labels import listing  # presentation lives in viz/ (no matplotlib needed)

        return listing(self.events, start=self._start, **options)

    def connections(self) -> list[int]:
        """Connection numbers in the order they first appear (0, server-wide, excluded)."""
        return list(dict.fromkeys(e.conn for e in self.events if e.conn))

    def __len__(self) -> int:
        return len(self.events)

    def __iter__(self):
        return iter(self.events)

    # -- saving and loading --------------------------------------------------------------

    def to_json(self) -> str:
        return json.dumps([asdict(e) for e in self.events], indent=1)

    def save(self, path) -> None:
        with open(path, "w", encoding="utf-8") as f:
            f.write(self.to_json())

    @classmethod
    def from_json(cls, text: str) -> "Tracer":
        tracer = cls()
        tracer.events = [TraceEvent(**item) for item in json.loads(text)]
        if tracer.events:
            tracer._start = tracer.events[0].t
        return tracer

    @classmethod
    def load(cls, path) -> "Tracer":
        with open(path, encoding="utf-8") as f:
            return cls.from_json(f.read())


# -- merging network chunks ---------------------------------------------------------------------

#: Event kinds whose chunk boundaries depend on the network, not on the program: a listing
#: merges consecutive ones (same connection) so that the same request lists the same way.
CHUNKED = {("socket", "bytes_in"), ("socket", "bytes_out"), ("h11", "Data")}


def merge_chunks(events: Iterable[TraceEvent]) -> list[TraceEvent]:
    """Merge runs of consecutive `bytes_in` / `bytes_out` / h11 `Data` events of one connection
    into one event each (sizes added up, payload previews joined).

    TCP is a byte stream: a body the client sent in one `sendall` may arrive in one
    `data_received` or in three. Merging makes a listing independent of that.
    """
    merged: list[TraceEvent] = []
    for event in events:
        previous = merged[-1] if merged else None
        if (previous is not None and (event.layer, event.kind) in CHUNKED
                and (previous.layer, previous.kind, previous.conn) == (event.layer, event.kind, event.conn)):
            merged[-1] = dataclasses.replace(previous, data=_join(previous.data, event.data))
        else:
            merged.append(event)
    return merged


def _join(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    joined = dict(a)
    for key in ("bytes", "data"):
        if isinstance(a.get(key), str) and isinstance(b.get(key), str):
            joined[key] = preview(a[key] + b[key])
    if "size" in a or "size" in b:
        joined["size"] = a.get("size", 0) + b.get("size", 0)
    joined["chunks"] = a.get("chunks", 1) + b.get("chunks", 1)
    return joined
