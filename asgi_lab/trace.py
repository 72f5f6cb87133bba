"""The tracer: a recording of everything a server did, as plain data.

Both servers accept `tracer=Tracer()`. It is off by default (`tracer=None`), and every call
site in the servers is guarded by `if self.tracer is not None:`, so a server without a tracer
does no extra work at all: no string formatting, no dict building, no function call.

When it is on, each layer reports what it saw with one call of one signature::

    tracer.emit(conn, layer, kind, data)

- `conn`  : the connection's number (0 for server-wide events such as lifespan)
- `layer` : "socket", "h11", "wsproto", "asgi", "wsgi" or "server"
- `kind`  : what happened: "bytes_in", "Request", "receive", "send", "start_response", ...
- `data`  : the message itself: an ASGI message dict, an h11 event's fields, a bytes preview

The result is a list of `TraceEvent`s with monotonic timestamps and the thread / asyncio task
that did the work. It can be filtered, saved as JSON and loaded back.
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
    raw = bytes(payload)
    text = raw[:limit].decode("latin-1")
    return text if len(raw) <= limit else text + f"... ({len(raw)} bytes)"


def jsonable(value: Any) -> Any:
    """ASGI messages hold bytes and tuples; turn them into JSON-friendly values for a trace."""
    if isinstance(value, (bytes, bytearray, memoryview)):
        return preview(value)
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, Sequence)):  # h11's Headers is a Sequence of pairs
        return [jsonable(v) for v in value]
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return repr(value)


def describe_event(event) -> dict[str, Any]:
    """The fields of an h11 or wsproto event (both are dataclasses) as a plain dict."""
    if not dataclasses.is_dataclass(event):
        return {}
    return {f.name: getattr(event, f.name) for f in dataclasses.fields(event)}


class Tracer:
    """Collects `TraceEvent`s from one or more servers. Thread-safe: list.append is atomic."""

    def __init__(self) -> None:
        self.events: list[TraceEvent] = []
        self._start = time.monotonic()

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
               kind: str | Iterable[str] | None = None) -> list[TraceEvent]:
        """The events matching every given criterion (a layer or kind may be a list)."""
        layers = {layer} if isinstance(layer, str) else set(layer) if layer else None
        kinds = {kind} if isinstance(kind, str) else set(kind) if kind else None
        return [
            e for e in self.events
            if (conn is None or e.conn == conn)
            and (layers is None or e.layer in layers)
            and (kinds is None or e.kind in kinds)
        ]

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
