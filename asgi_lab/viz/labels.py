"""Reading a trace: which way an event travels, what to call it, a readable listing.

Presentation, kept apart from the recording (`asgi_lab.trace`): the diagrams of `asgi_lab.viz`
and the notebooks use these.

- `route(event)`: which way the message travels between the three parties of a request,
  `("client", "server")`, `("server", "app")`, ..., or None for something that happens
  inside the server (h11 parsed a `Request`, a timeout fired);
- `label(event)`: a short caption ("http.response.start 200", "Request GET /hello");
- `listing(events)`: a readable table, one event a line, with no times or ports unless
  asked: the same requests give the same listing on every run.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from ..trace import TraceEvent, merge_chunks

# -- reading a trace: where an event goes, what to call it -----------------------------------

#: The parties of a request, left to right on a sequence diagram.
LANES = ("client", "server", "app")

_CLIENT_TO_SERVER = ("client", "server")
_SERVER_TO_CLIENT = ("server", "client")
_SERVER_TO_APP = ("server", "app")
_APP_TO_SERVER = ("app", "server")

#: (layer, kind) -> (from lane, to lane). Anything not listed stays inside the server.
ROUTES: dict[tuple[str, str], tuple[str, str]] = {
    ("socket", "connection_made"): _CLIENT_TO_SERVER,  # the client connects
    ("socket", "bytes_in"): _CLIENT_TO_SERVER,
    ("socket", "bytes_out"): _SERVER_TO_CLIENT,
    ("asgi", "receive"): _SERVER_TO_APP,       # what `await receive()` returned to the app
    ("asgi", "send"): _APP_TO_SERVER,          # what the app passed to `await send(...)`
    ("wsgi", "app_call"): _SERVER_TO_APP,      # app(environ, start_response)
    ("wsgi", "start_response"): _APP_TO_SERVER,
    ("wsgi", "write"): _APP_TO_SERVER,         # the legacy write() callable
    ("wsgi", "app_return"): _APP_TO_SERVER,    # the call returned its iterable
    ("wsgi", "body_chunk"): _APP_TO_SERVER,    # the server took one item from the iterable
    ("wsgi", "close"): _SERVER_TO_APP,         # iterable.close(), PEP 3333
    ("h2", "frame_in"): _CLIENT_TO_SERVER,     # an HTTP/2 frame the client sent (RFC 9113 §4)
    ("h2", "frame_out"): _SERVER_TO_CLIENT,    # an HTTP/2 frame the server sent
}


def route(event: TraceEvent) -> tuple[str, str] | None:
    """(from lane, to lane) for a message between client, server and app; None for an event
    inside the server (h11 or wsproto parsed something, the WSGI environ was built, a timer fired)."""
    if event.layer == "onion":  # a message between two middleware layers (asgi_lab/onion.py)
        return (event.data.get("from", "app"), event.data.get("to", "app"))
    return ROUTES.get((event.layer, event.kind))


def _size(value) -> int | None:
    """The size of a payload preview: its length, or the length a truncated one announces."""
    if not isinstance(value, str):
        return None
    if value.endswith(" bytes)") and "... (" in value:
        return int(value.rsplit("... (", 1)[1].split()[0])
    return len(value)


def _first_line(text: str, limit: int = 32) -> str:
    """An HTTP message's start line ("GET / HTTP/1.1"); for other bytes (a body chunk, a
    WebSocket frame) their beginning, with escapes: '5\\r\\n2...\\n\\r\\n'."""
    line = text.split("\r\n", 1)[0].split("\n", 1)[0]
    if "HTTP/" not in line:
        line = repr(text)[1:-1]
    return line if len(line) <= limit else line[: limit - 1] + "…"


def label(event: TraceEvent) -> str:
    """A short caption for an event, e.g. for a diagram's arrow: the message type and the one
    or two fields a reader looks for first. An event of one HTTP/2 stream starts with its
    stream id: "s1 · http.response.start 200", "DATA s3 END_STREAM (10 B)"."""
    text = _label(event)
    stream_id = event.data.get("stream_id")
    if stream_id is not None and event.layer != "h2":
        text = f"s{stream_id} · {text}"
    return text


def _h2_label(kind: str, data: dict[str, Any]) -> str:
    """An HTTP/2 frame ("HEADERS s1 END_HEADERS END_STREAM (30 B)") or h2 event."""
    stream = f"s{data.get('stream_id', 0)}"
    if kind in ("frame_in", "frame_out"):
        flags = " ".join(data.get("flags") or ())
        return " ".join(part for part in (data.get("frame"), stream, flags) if part) + \
            f" ({data.get('size')} B)"
    if kind == "RequestReceived":
        return f"{kind} {stream} {data.get('method')} {data.get('path')}"
    return f"{kind} {stream}" if data.get("stream_id") else kind


def _label(event: TraceEvent) -> str:
    data, layer, kind = event.data, event.layer, event.kind
    if layer == "h2":
        return _h2_label(kind, data)
    if layer == "onion":
        return _onion_label(kind, data)
    if layer == "socket":
        if kind in ("bytes_in", "bytes_out"):
            size = data.get("size", _size(data.get("bytes")))
            line = _first_line(data.get("bytes") or "")
            return f"{line}  ({size} B)" if line else f"{size} bytes"
        return {"connection_made": "connect", "connection_lost": "connection closed"}.get(kind, kind)
    if layer == "asgi" and "type" in data:  # an ASGI message
        return _message_label(data)
    if layer == "h11" or layer == "wsproto":
        if kind == "Request":  # h11's has a method; wsproto's (a WebSocket handshake) has not
            return " ".join(str(part) for part in (kind, data.get("method"), data.get("target")) if part)
        if kind in ("Response", "InformationalResponse"):
            return f"{kind} {data.get('status_code', '')}"
        if kind in ("Data", "TextMessage", "BytesMessage", "Message"):
            return f"{kind} ({_size(data.get('data')) or 0} B)"
        if kind == "CloseConnection":
            return f"{kind} {data.get('code', '')}"
        return kind
    if layer == "wsgi":
        if kind == "environ":
            return f"environ {data.get('REQUEST_METHOD', '')} {data.get('PATH_INFO', '')}".rstrip()
        if kind == "start_response":
            return f"start_response({data.get('status', '')!r})"
        if kind in ("write", "body_chunk"):
            size = data.get("size", _size(data.get("data", data.get("bytes"))))
            return f"{kind}({size} B)" if size is not None else kind
        if kind == "app_call":
            return "app(environ, start_response)"
        if kind == "close":
            return "close()"
        if kind == "app_return":
            returned = data.get("iterable") or data.get("type")
            return f"returned {returned}" if returned else "returned"
    return kind


def _onion_label(kind: str, data: dict[str, Any]) -> str:
    """A message crossing a middleware boundary: its ASGI label (or the WSGI call), then
    what the outer layer changed, marked with a star: "* +content-encoding: gzip"."""
    message = data.get("message") or {}
    if kind in ("receive", "send") and "type" in message:
        text = _message_label(message)
    elif kind == "call":
        text = f"call {message.get('method', '')} {message.get('path', '')}".rstrip()
    elif kind == "start_response":
        text = f"start_response({message.get('status', '')!r})"
    elif kind == "body_chunk":
        text = f"body_chunk({_size(message.get('body'))} B)"
    elif kind == "close":
        text = "close()"
    else:
        text = kind
    changed = data.get("changes") or ()
    if changed:
        shown = "; ".join(changed[:3]) + ("; ..." if len(changed) > 3 else "")
        text += f"  * {shown}"
    return text


def _message_label(message: dict[str, Any]) -> str:
    """ASGI message -> "http.response.start 200", "http.request (12 B, more_body)", ..."""
    kind = message["type"]
    details = []
    if "status" in message:
        details.append(str(message["status"]))
    for key in ("body", "bytes", "text"):
        if message.get(key) is not None and (key == "body" or message.get(key)):
            details.append(f"({_size(message[key])} B)" if key != "text" else f"({len(message[key])} chars)")
            break
    if message.get("more_body"):
        details.append("more_body")
    if "code" in message:
        details.append(str(message["code"]))
    return " ".join([kind, *details])


def details(event: TraceEvent) -> str:
    """The fields of an event that stay the same from run to run: no ports, no dates."""
    data, layer, kind = event.data, event.layer, event.kind
    if layer == "socket":
        if kind in ("bytes_in", "bytes_out"):
            return f"{data.get('size')} bytes: {_first_line(data.get('bytes') or '', 40)}"
        if kind == "connection_lost":
            return f"error={data.get('error')}"
        return ""
    if layer == "asgi" and "type" in data:  # an ASGI message, without headers (values vary)
        shown = {k: v for k, v in data.items() if k not in ("headers", "type")}
        return data["type"] + (" " + " ".join(f"{k}={v!r}" for k, v in shown.items()) if shown else "")
    if layer == "h2":
        if kind in ("frame_in", "frame_out"):
            return _h2_label(kind, data)
        return _h2_label(kind, data)[len(kind) + 1:]  # the stream (and request), not the kind again
    if layer == "h11":
        if kind == "Request":
            return f"{data.get('method')} {data.get('target')} HTTP/{data.get('http_version')}"
        if kind in ("Response", "InformationalResponse"):
            return f"{data.get('status_code')}"
        if kind == "Data":
            return f"{_size(data.get('data'))} bytes"
        return ""
    return label(event) if label(event) != kind else ""


def listing(events: Iterable[TraceEvent], *, start: float | None = None, times: bool = False,
            threads: bool = False, merge: bool = True, brief: bool = False) -> str:
    """A table of events, one a line: number, connection, layer, kind, details.

    Deterministic by default (no times, ports, dates or thread names), so a notebook can
    compare it from run to run. `times=True` adds milliseconds since `start` (or since the
    first event); `threads=True` adds the thread and asyncio task; `merge=False` keeps the
    network's chunk boundaries (see `merge_chunks`); `brief=True` leaves out the details
    but an ASGI message's type (when sizes or errors depend on timing).
    """
    events = list(events)
    if merge:
        events = merge_chunks(events)
    if start is None:
        start = events[0].t if events else 0.0
    lines = []
    for number, event in enumerate(events, 1):
        parts = [f"{number:>3}"]
        if times:
            parts.append(f"{(event.t - start) * 1000:9.3f} ms")
        parts.append(f"conn {event.conn:<2} {event.layer:<7} {event.kind:<16}")
        text = event.data.get("type", "") if brief and event.layer == "asgi" else \
            "" if brief else details(event)
        if threads:
            text = f"{text}  [{event.thread}{' / ' + event.task if event.task else ''}]"
        parts.append(text)
        lines.append(" ".join(parts).rstrip())
    return "\n".join(lines)
