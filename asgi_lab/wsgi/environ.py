"""Pure builders of the PEP 3333 `environ`: an h11.Request in, a dict out. No sockets here.

PEP 3333, "environ Variables". The dict a WSGI app receives is CGI's environment plus a few
`wsgi.*` keys. Two rules shape every value in it:

- Every CGI value is a *native string* (`str`). HTTP puts bytes on the wire, so PEP 3333
  ("Unicode Issues") decodes them as ISO-8859-1 (latin-1): each byte becomes the code point of
  the same number, and `value.encode("latin-1")` gives the original bytes back. An app that
  knows a path is UTF-8 does `environ["PATH_INFO"].encode("latin-1").decode("utf-8")`.
- `PATH_INFO` is percent-decoded (CGI does it), `QUERY_STRING` is not.

Most keys are the same for every request of a connection (the server's address, the client's,
the `wsgi.*` flags): `environ_base()` builds them once per connection, and `build_environ()`
copies that dict and adds what the request itself says. This is the WSGI twin of
`asgi/scope.py`; compare `build_environ` with `build_http_scope` side by side.
"""

from __future__ import annotations

import sys
from urllib.parse import unquote_to_bytes

import h11

from .streams import FileWrapper

WSGI_VERSION = (1, 0)
"""PEP 3333 is WSGI 1.0.1; `wsgi.version` is still the tuple (1, 0)."""


def environ_base(
    server: tuple[str, int | None],
    client: tuple[str, int | None] | None,
    root_path: str = "",
    url_scheme: str = "http",
    multithread: bool = True,
) -> dict:
    """The keys that do not depend on the request: computed once per connection.

    `server` is (host, port), or (path, None) for a Unix socket (`unix_socket.py`), which has
    no CGI form: SERVER_NAME "localhost" and the scheme's default port, REMOTE_ADDR "" (the
    peer has no network address; gunicorn does the same) and no REMOTE_PORT."""
    server_name, server_port = server
    if server_port is None:  # a Unix socket
        server_name, server_port = "localhost", 443 if url_scheme == "https" else 80
        if client is None:
            client = ("", None)
    environ = {
        "SCRIPT_NAME": root_path,            # where the app is mounted; "" at the root
        "SERVER_NAME": server_name,
        "SERVER_PORT": str(server_port),
        "wsgi.version": WSGI_VERSION,
        "wsgi.url_scheme": url_scheme,
        "wsgi.errors": sys.stderr,           # PEP 3333: a text stream for the app's errors
        "wsgi.multithread": multithread,     # another thread may call the app at the same time
        "wsgi.multiprocess": False,          # ...but no other process will
        "wsgi.run_once": False,              # the process serves many requests (not CGI)
        "wsgi.file_wrapper": FileWrapper,    # PEP 3333, "Optional Platform-Specific File Handling"
        # An extension (mod_wsgi, gunicorn): reading wsgi.input until it returns b"" is safe,
        # it ends where the body ends, even for a chunked body with no CONTENT_LENGTH.
        "wsgi.input_terminated": True,
    }
    if client is not None:                   # optional CGI variables, but every server sets them
        environ["REMOTE_ADDR"] = client[0]
        if client[1] is not None:
            environ["REMOTE_PORT"] = str(client[1])
    return environ


def build_environ(request: h11.Request, wsgi_input, base: dict) -> dict:
    """The `environ` for one request: `base` (see `environ_base`) plus the request's own keys."""
    environ = base.copy()
    path, _, query = split_target(request.target)
    environ["REQUEST_METHOD"] = request.method.decode("ascii")
    environ["PATH_INFO"] = path
    environ["QUERY_STRING"] = query
    environ["SERVER_PROTOCOL"] = "HTTP/1.0" if request.http_version == b"1.0" else "HTTP/1.1"
    environ["wsgi.input"] = wsgi_input

    # In order, duplicates kept; the names as the client wrote them (h11's `raw_items()`, a
    # list: twice as fast as iterating over `request.headers`, which lower-cases them for us)
    for name, value in request.headers.raw_items():
        key = _environ_key(name)
        if key is None:
            continue
        value = value.decode("latin-1")
        if key in environ and key.startswith("HTTP_"):
            # PEP 3333 (via CGI): one key per header name, so repeated headers are joined the
            # way RFC 9110 §5.3 allows, with a comma. Cookie is the exception: its pairs are
            # joined with "; " (RFC 9113 §8.2.3; a comma would change the cookie's value).
            environ[key] += ("; " if key == "HTTP_COOKIE" else ",") + value
        else:  # the first of its name; CONTENT_TYPE and CONTENT_LENGTH never come twice (a
            # second Content-Type is refused by `http11.refuse_request`, h11 folds equal
            # Content-Lengths into one and refuses unequal ones), so both servers agree
            environ[key] = value
    return environ


def split_target(target: bytes) -> tuple[str, str, str]:
    """`/caf%C3%A9?x=%41` -> PATH_INFO "/cafÃ©" (decoded, latin-1), "?", QUERY_STRING "x=%41".
    (An absolute-form target has already become origin-form: `http11.origin_form`.)"""
    raw_path, question_mark, query = target.partition(b"?")
    if b"%" in raw_path:
        raw_path = unquote_to_bytes(raw_path)
    return raw_path.decode("latin-1"), question_mark.decode("ascii"), query.decode("latin-1")


# Header name, as written on the wire -> environ key, computed once per distinct spelling.
# Bounded, so a client sending thousands of made-up header names cannot grow it without limit.
_KEYS: dict[bytes, str | None] = {}
_MAX_CACHED_KEYS = 1024


def _environ_key(name: bytes) -> str | None:
    """`User-Agent` -> "HTTP_USER_AGENT"; `Content-Type` -> "CONTENT_TYPE" (no HTTP_ prefix).
    Names are case-insensitive (RFC 9110 §5.1): `user-agent` gets the same key.

    A name with an underscore gets None (the header is dropped): `X_Forwarded_For` and
    `X-Forwarded-For` would both become HTTP_X_FORWARDED_FOR, letting a client forge a header a
    proxy sets. nginx, Apache and gunicorn drop such headers too.
    """
    try:
        return _KEYS[name]
    except KeyError:
        pass
    if b"_" in name:
        key = None
    else:
        key = name.decode("ascii").upper().replace("-", "_")
        if key not in ("CONTENT_TYPE", "CONTENT_LENGTH"):
            key = "HTTP_" + key
    if len(_KEYS) < _MAX_CACHED_KEYS:
        _KEYS[name] = key
    return key


def environ_for_trace(environ: dict) -> dict:
    """The environ's string and number entries (a trace records data, not stream objects)."""
    return {key: value for key, value in environ.items() if isinstance(value, (str, int))}
