"""Pure builders of ASGI connection scopes: an h11.Request in, a dict out. No sockets here.

ASGI HTTP & WebSocket spec (asgiref `specs/www.rst`), "HTTP Connection Scope" and
"WebSocket Connection Scope". Keeping these pure makes them testable with nothing but h11.
"""

from __future__ import annotations

from urllib.parse import unquote

import h11

ASGI_VERSION = {"version": "3.0", "spec_version": "2.4"}
"""We implement ASGI 3 (single-callable apps) and www spec 2.4, which says a send() after the
client left *should* raise an OSError subclass (older servers return silently); ours raises
`ClientDisconnected`, see `core.py`."""

METHODS = {name.encode(): name for name in ("GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS")}
"""The usual methods, decoded once: every scope shares these strings instead of its own copy."""


def split_target(target: bytes, root_path: str) -> tuple[str, bytes, bytes]:
    """`/a%20b?x=1` -> path "/a b" (percent-decoded, UTF-8), raw_path b"/a%20b", query b"x=1".

    The spec: `path` is decoded and includes `root_path`; `raw_path` is the bytes as sent;
    `query_string` is the part after "?", still percent-encoded.
    """
    raw_path, _, query_string = target.partition(b"?")
    path = unquote(raw_path.decode("ascii", "surrogateescape"))
    return root_path + path, raw_path, query_string


def build_http_scope(
    request: h11.Request,
    http_version: str,
    client: tuple[str, int] | None,
    server: tuple[str, int] | None,
    root_path: str = "",
    scheme: str = "http",
    state: dict | None = None,
) -> dict:
    """The `http` scope for one request (www spec: HTTP Connection Scope)."""
    path, raw_path, query_string = split_target(request.target, root_path)
    scope = {
        "type": "http",
        "asgi": ASGI_VERSION,
        "http_version": http_version,
        "method": METHODS.get(request.method) or request.method.decode("ascii"),
        "scheme": scheme,
        "path": path,
        "raw_path": raw_path,
        "query_string": query_string,
        "root_path": root_path,
        # Lower-cased names, in order, duplicates kept, exactly what the spec asks: h11 has
        # lower-cased them already, so we share its bytes rather than copy them per request.
        "headers": list(request.headers),
        "client": client,
        "server": server,
    }
    if state is not None:
        # Lifespan spec: each connection gets a shallow copy of the state the app set at startup.
        scope["state"] = state.copy()
    return scope


def build_websocket_scope(
    request: h11.Request,
    client: tuple[str, int] | None,
    server: tuple[str, int] | None,
    root_path: str = "",
    scheme: str = "ws",
    state: dict | None = None,
) -> dict:
    """The `websocket` scope (www spec: WebSocket Connection Scope), with the
    `websocket.http.response` extension advertised so an app may deny with a full response."""
    path, raw_path, query_string = split_target(request.target, root_path)
    headers = list(request.headers)  # (lower-cased name, value) pairs, in order
    subprotocols = [
        token.strip().decode("ascii", "replace")
        for name, value in headers if name == b"sec-websocket-protocol"
        for token in value.split(b",") if token.strip()
    ]
    scope = {
        "type": "websocket",
        "asgi": ASGI_VERSION,
        "http_version": request.http_version.decode("ascii"),
        "scheme": scheme,
        "path": path,
        "raw_path": raw_path,
        "query_string": query_string,
        "root_path": root_path,
        "headers": headers,
        "client": client,
        "server": server,
        "subprotocols": subprotocols,
        "extensions": {"websocket.http.response": {}},
    }
    if state is not None:
        scope["state"] = state.copy()
    return scope
