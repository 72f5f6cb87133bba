"""Two small tables for reading what an app is given (notebook 02).

- `scope_and_environ(scope, environ)`: one request as the ASGI `scope` and as the PEP 3333
  `environ`, key against key, paired the way the ASGI www spec's "WSGI Compatibility"
  section maps them ("REQUEST_METHOD is the method key", ...).
- `message_cheat_sheet(trace)`: every ASGI message type a trace recorded, which way it went
  (`receive`: server to app; `send`: app to server), and the keys it carried.

Both return rows (plain tuples, easy to test) and have a `..._text` twin that lines them up
for `print`. Pure functions: no server, no socket.
"""

from __future__ import annotations

from collections.abc import Iterable

from ..trace import TraceEvent

#: ASGI www spec, "WSGI Compatibility": the environ keys that carry what each scope key does.
#: Headers are paired one by one (see `_environ_key`), so they are not in this list.
SCOPE_TO_ENVIRON = (
    ("type", ()),
    ("asgi", ("wsgi.version",)),
    ("http_version", ("SERVER_PROTOCOL",)),
    ("method", ("REQUEST_METHOD",)),
    ("scheme", ("wsgi.url_scheme",)),
    ("root_path", ("SCRIPT_NAME",)),
    ("path", ("PATH_INFO",)),
    ("raw_path", ()),
    ("query_string", ("QUERY_STRING",)),
    ("client", ("REMOTE_ADDR", "REMOTE_PORT")),
    ("server", ("SERVER_NAME", "SERVER_PORT")),
)

#: Why a scope key has no environ key.
SCOPE_ONLY = {
    "type": "(none: WSGI speaks only HTTP)",
    "raw_path": "(none: only the decoded PATH_INFO)",
}

#: What only the environ has, and where ASGI puts the same thing instead.
ENVIRON_ONLY = (
    ("wsgi.input", "(receive(): http.request messages)"),
    ("wsgi.errors", "(none: the app logs as it likes)"),
    ("wsgi.multithread", "(none)"),
    ("wsgi.multiprocess", "(none)"),
    ("wsgi.run_once", "(none)"),
)


def _environ_key(header_name: bytes) -> str:
    """PEP 3333 (from CGI): `content-type` -> CONTENT_TYPE, `x-thing` -> HTTP_X_THING."""
    name = header_name.decode("latin-1").upper().replace("-", "_")
    return name if name in ("CONTENT_TYPE", "CONTENT_LENGTH") else "HTTP_" + name


def _shown(value) -> str:
    if isinstance(value, list):  # the spec's "list of [host, port]"; a tuple here and there
        value = tuple(value)
    return repr(value)


def scope_and_environ(scope: dict, environ: dict) -> list[tuple[str, str, str, str]]:
    """Rows of (scope key, its value, environ key, its value) for the same request; a header
    is one row per header line. Where one side has no such key, its key is "" and its value
    says why (or where the other interface carries it)."""
    rows = []
    for key, environ_keys in SCOPE_TO_ENVIRON:
        if key not in scope:
            continue
        if not environ_keys:
            rows.append((key, _shown(scope[key]), "", SCOPE_ONLY.get(key, "")))
        for number, environ_key in enumerate(environ_keys):
            rows.append((key if number == 0 else "", _shown(scope[key]) if number == 0 else "",
                         environ_key, _shown(environ.get(environ_key))))
    for number, (name, value) in enumerate(scope.get("headers", ())):
        environ_key = _environ_key(name)
        rows.append((f"headers[{number}]", _shown((name, value)),
                     environ_key, _shown(environ.get(environ_key))))
    for environ_key, instead in ENVIRON_ONLY:
        if environ_key in environ:
            value = environ[environ_key]
            shown = _shown(value) if isinstance(value, (str, int, bool, tuple)) else type(value).__name__
            rows.append(("", instead, environ_key, shown))
    return rows


def message_cheat_sheet(trace: Iterable[TraceEvent]) -> list[tuple[str, str, str]]:
    """Rows of (message type, direction, keys) for each ASGI message type in `trace` (a
    Tracer or a list of events), in the order they first appeared. The keys are every key
    seen with that type except `type` itself, in the order first seen."""
    seen: dict[str, tuple[str, list[str]]] = {}
    for event in trace:
        if event.layer != "asgi" or event.kind not in ("receive", "send"):
            continue
        message_type = event.data.get("type", "?")
        direction = "receive: server -> app" if event.kind == "receive" else "send: app -> server"
        _, keys = seen.setdefault(message_type, (direction, []))
        keys += [key for key in event.data if key != "type" and key not in keys]
    return [(message_type, direction, ", ".join(keys) or "-")
            for message_type, (direction, keys) in seen.items()]


def columns(rows: Iterable[tuple], headings: tuple[str, ...]) -> str:
    """Rows lined up in columns under `headings`, for `print`."""
    rows = [tuple(str(cell) for cell in row) for row in rows]
    widths = [max(len(row[i]) for row in [headings, *rows]) for i in range(len(headings))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip()
             for row in [headings, tuple("-" * width for width in widths), *rows]]
    return "\n".join(lines)


def scope_and_environ_text(scope: dict, environ: dict) -> str:
    return columns(scope_and_environ(scope, environ),
                   ("scope (ASGI)", "value", "environ (PEP 3333)", "value"))


def message_cheat_sheet_text(trace: Iterable[TraceEvent]) -> str:
    return columns(message_cheat_sheet(trace), ("message type", "direction", "keys"))
