"""What both servers share of HTTP/1.1: built once, on h11, used by ASGI and WSGI alike.

Neither server parses or frames HTTP by hand; h11 does that (RFC 9112). This module holds the
few things around h11 that both servers need in exactly the same form:

- `bind_socket(config)`: the listening socket (TCP, or a Unix socket: `unix_socket.py`);
- `new_h11_connection(config)`: the server side of an h11 connection with our header limit;
- `error_response(status, headers)`: the one place an error response (400, 413, 431, 500, ...)
  is built, with no traceback or internal detail in it (the log gets those);
- `refuse_request(request, ...)` and `origin_form(request)`: the checks and the one rewrite
  every request head goes through before an app sees it;
- `check_status(status_code, reason)`: what an app may put on the status line, checked where h11
  does not check it (h11 writes the reason phrase as given: see the function);
- `SERVER_HEADER`: the `server` header every response carries (the `date` header, and the
  cache of checked response heads, belong to a server: `core.ResponseHeads`).

The rules applied to a whole connection (deadlines, keep-alive, 100 Continue, the trace)
live in `core.py`, the sans-IO connection core both servers are shells around.
"""

from __future__ import annotations

import re
import socket
from http import HTTPStatus
from urllib.parse import urlsplit

import h11

from .config import Config
from .trace import describe_event

SERVER_HEADER = (b"server", b"asgi_lab")


def bind_socket(config: Config) -> socket.socket:
    """The listening TCP socket both servers accept on: (host, port), port 0 picks a free
    one, non-blocking (asyncio needs it so; the WSGI acceptor polls it with a selector). With
    `config.uds`, a Unix socket at that path instead (`unix_socket.py`)."""
    if config.uds:
        from .unix_socket import bind_unix_socket

        return bind_unix_socket(config.uds)
    family = socket.AF_INET6 if ":" in config.host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((config.host, config.port))
    sock.listen(2048)
    sock.setblocking(False)
    return sock


def new_h11_connection(config: Config) -> h11.Connection:
    """A server-side h11 state machine; a request head over the limit raises 431."""
    return h11.Connection(h11.SERVER, max_incomplete_event_size=config.max_header_bytes)


_REASONS = {status.value: status.phrase.encode("ascii") for status in HTTPStatus}


_REASON_PHRASE = re.compile(rb"[\x20-\x7e\x80-\xff]*")
"""RFC 9112 §4, `reason-phrase = 1*( HTAB / SP / VCHAR / obs-text )`, without HTAB: PEP 3333
says the status "must not contain control characters", and a tab is one."""


def check_status(status_code: int, reason: bytes = b"") -> None:
    """Refuse a final status line an app should never be able to send.

    h11 checks header names and values, but writes the reason phrase exactly as given: a
    reason holding "\r\n" would end the status line early and let the app, or a user whose
    input the app echoes, write headers of its own, even a whole second response (response
    splitting). So the reason may hold only the bytes RFC 9112 §4 allows. The code must be an
    int from 200 to 599: RFC 9110 §15 calls anything outside 100-599 invalid, and a 1xx is not
    a final response (h11 sends 100 Continue itself, as `InformationalResponse`).
    Raises ValueError, which both servers turn into a logged 500. (Each server first checks the
    type its own spec gives the status: a str for PEP 3333, an int for ASGI.)
    """
    if not 200 <= status_code <= 599:
        raise ValueError(f"the status code must be from 200 to 599 (RFC 9110 §15), not {status_code}")
    if not _REASON_PHRASE.fullmatch(reason):
        raise ValueError(f"the reason phrase may not hold control characters such as CR or LF "
                         f"(RFC 9112 §4, PEP 3333): {reason!r}")


def reason_phrase(status: int) -> bytes:
    """b"OK" for 200 (RFC 9110 §15); b"" for a status code without a registered phrase."""
    return _REASONS.get(status, b"")


def error_response(status: int, headers: list[tuple[bytes, bytes]],
                   message: str | None = None) -> tuple[h11.Response, bytes]:
    """The response a server sends when it, not the app, answers: a short plain-text body,
    after `headers` (the server's `server` and `date`, see `core.ResponseHeads`).

    The body names the status only (e.g. "400 Bad Request"): details stay in the server log.
    """
    phrase = reason_phrase(status).decode("ascii")
    body = f"{status} {message or phrase}\n".encode("utf-8")
    headers = headers + [
        (b"content-type", b"text/plain; charset=utf-8"),
        (b"content-length", str(len(body)).encode("ascii")),
        (b"connection", b"close"),
    ]
    return h11.Response(status_code=status, headers=headers, reason=phrase), body


def send_error(conn: h11.Connection, status: int, headers: list[tuple[bytes, bytes]],
               tracer=None, conn_id: int = 0) -> bytes:
    """Bytes for a complete error response on `conn` (each h11 event traced, if `tracer`),
    or b"" when h11 cannot send one now (for example, the response had already started):
    then the caller just closes."""
    if conn.our_state not in (h11.IDLE, h11.SEND_RESPONSE):
        return b""
    response, body = error_response(status, headers)
    events = (response, h11.Data(data=body), h11.EndOfMessage())
    try:
        pieces = [conn.send(event) for event in events]
    except h11.LocalProtocolError:
        return b""
    if tracer is not None:
        for event in events:
            tracer.emit(conn_id, "h11", type(event).__name__, describe_event(event))
    return b"".join(pieces)


def status_for(exc: h11.RemoteProtocolError) -> int:
    """The status for a request h11 could not parse: 400, or 431 for an oversized head.

    h11 hints 501 for any Transfer-Encoding but one lone `chunked` (two TE headers,
    `chunked, identity`, `gzip`). RFC 9112 §6.3 says a server MUST answer 400 and close when
    chunked is not the final coding, since the body's length "cannot be determined reliably";
    h11 does not say which case it met, so every one of them gets that 400.
    """
    hint = exc.error_status_hint or 400
    return 400 if hint == 501 else hint


def refuse_request(request: h11.Request, head_bytes: int, config: Config) -> tuple[int, str] | None:
    """The checks both servers make on a request head before any app sees it.

    Returns (status, reason) for a request to refuse (the caller answers and closes), or None:
    - 431 for a head over `max_header_bytes` (h11 enforces the limit on a head that arrives in
      pieces; one that arrived whole in a single read is measured here, and only when at least
      that many bytes came, so ordinary requests cost nothing);
    - 505 for a major version other than 1 (RFC 9110 §15.6.6): h11 parses "HTTP/2.0", but
      HTTP/2 is not a text protocol, and nothing else exists to be served;
    - 501 for CONNECT (a proxy tunnel, RFC 9110 §9.3.6, is not what an app server offers);
    - 414 for a request-target over `max_target_bytes` (RFC 9110 §15.5.15);
    - 400 for a request-target in none of the forms RFC 9112 §3.2 allows a server: origin-form
      (`/path?query`), absolute-form (`http://host/path`, see `origin_form`), or `*` for
      OPTIONS (authority-form is CONNECT's, refused above); and for one with a fragment:
      origin-form is `absolute-path [ "?" query ]` (§3.2.1), and RFC 3986 §3.4 ends a query
      at `#` (gunicorn and waitress strip the fragment; we refuse it, as the grammar does);
    - 400 for a body whose length two parties could read differently: Transfer-Encoding with
      Content-Length (RFC 9112 §6.1: "A server MAY reject a request that contains both ...
      Regardless, the server MUST close the connection after responding"; a proxy in front may
      have used the other length, which is how a second request is smuggled in), or
      Transfer-Encoding on HTTP/1.0 (§6.1: the server "MUST treat the message as if the
      framing is faulty"). h11 would read such a body as chunked, and the app would be told
      the Content-Length;
    - 400 for a control character other than HTAB in a header value (BEL, ESC, DEL...): RFC
      9110 §5.5 calls such values invalid; h11 refuses NUL, CR and LF only, and a header an app
      logs or passes on is where such bytes do harm (gunicorn and waitress refuse them too);
    - 400 for two Content-Type headers: RFC 9110 §5.3 lets a field appear twice only if its
      value is a list, and Content-Type is one media type (§8.3). Joined, two types make no
      valid value; kept apart, the ASGI app sees both while a WSGI app gets one key, and any
      two layers may each pick a different one. (Two equal Content-Lengths, as two lines or as
      `5, 5`, h11 already folds into one, as RFC 9112 §6.3 allows; unequal ones it refuses);
    - 413 for a declared body over `max_body_bytes`.
    """
    limit = config.max_header_bytes
    if head_bytes > limit and head_size(request) > limit:
        return 431, "request head over the limit"
    if request.http_version[:2] != b"1.":
        return 505, "an HTTP version other than 1.x"
    if request.method == b"CONNECT":
        return 501, "CONNECT is not supported"
    target = request.target
    if len(target) > config.max_target_bytes:
        return 414, "request target over the limit"
    if target[:1] != b"/" and not (target == b"*" and request.method == b"OPTIONS"
                                   or _ABSOLUTE_FORM.match(target)):
        return 400, "a request target in no form RFC 9112 §3.2 allows"
    if FRAGMENT in target:
        return 400, "a fragment (#) in the request target"
    length = None
    chunked = content_type = False
    values = []
    for name, value in request.headers:
        values.append(value)
        if name == b"content-length":
            length = int(value)  # h11 has already checked it is one valid number
        elif name == b"transfer-encoding":
            chunked = True  # h11 has already refused every value but "chunked"
        elif name == b"content-type":
            if content_type:
                return 400, "two Content-Type headers"
            content_type = True
    values = b" ".join(values)  # checked in one pass: a tenth of the cost of one per header
    if values.translate(None, CONTROLS) != values:  # deleting them changed it: it held one
        return 400, "a control character in a header value"
    if chunked and length is not None:
        return 400, "both Transfer-Encoding and Content-Length"
    if chunked and request.http_version == b"1.0":
        return 400, "Transfer-Encoding in an HTTP/1.0 request"
    if length is not None and config.max_body_bytes is not None and length > config.max_body_bytes:
        return 413, "request body over the limit"
    return None


CONTROLS = bytes([*range(0x00, 0x09), *range(0x0a, 0x20), 0x7f])
"""The control characters but HTAB (RFC 9110 §5.5 allows `field-vchar`, SP, HTAB and obs-text
in a field value). h11 refuses NUL, CR and LF, but lets BEL, ESC, DEL... through. Checked with
`bytes.translate`, which deletes them, over all the values joined: one call per request instead
of one per header (callgrind: a third fewer instructions than a regular expression's search)."""

FRAGMENT = ord("#")
"""As an int, `FRAGMENT in target` is one memchr: a tenth of the cost of `b"#" in target`."""

_ABSOLUTE_FORM = re.compile(rb"(?i)https?://[^/?#]+")
"""RFC 9112 §3.2.2: `http://authority...` (for http and https, the authority is required)."""


def origin_form(request: h11.Request) -> h11.Request:
    """The request with an absolute-form target (`GET http://example.com/p?q HTTP/1.1`, what a
    client sends to a proxy) rewritten to origin-form (`/p?q`). RFC 9112 §3.2.2: a server
    "MUST ignore the received Host header field (if any) and instead use the host information
    of the request-target", so the target's authority becomes the `host` header. Both servers
    call this after `refuse_request`: their apps then see the same path and host. Any other
    request is returned as it is (one byte compared)."""
    target = request.target
    if target[:1] == b"/" or target == b"*":
        return request
    url = urlsplit(target)
    path = (url.path or b"/") + (b"?" + url.query if url.query else b"")
    headers = [(name, value) for name, value in request.headers if name != b"host"]
    return h11.Request(method=request.method, target=path, headers=[(b"host", url.netloc), *headers],
                       http_version=request.http_version)


def head_size(request: h11.Request) -> int:
    """About how many bytes the request line and headers took on the wire."""
    return len(request.method) + len(request.target) + 12 + sum(
        len(name) + len(value) + 4 for name, value in request.headers.raw_items())


def event_name(event) -> str:
    """"Request", "Data", ... and also "NEED_DATA" / "PAUSED" (h11's sentinels are classes)."""
    return event.__name__ if isinstance(event, type) else type(event).__name__


def is_websocket_upgrade(request: h11.Request) -> bool:
    """RFC 6455 §4.2.1: a GET with `Upgrade: websocket` and `Connection: upgrade`."""
    upgrade = connection = False
    for name, value in request.headers:
        if name == b"upgrade" and value.lower() == b"websocket":
            upgrade = True
        elif name == b"connection" and b"upgrade" in value.lower():
            connection = True
    return upgrade and connection and request.method == b"GET"
