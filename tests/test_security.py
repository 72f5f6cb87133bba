"""HTTP security probes: each sends the exact bytes of an attack to both servers over loopback.

Issue "HTTP security", section 1: response splitting through the status line. h11 checks header
names and values but writes a response's reason phrase exactly as given, so a server that hands
an app's status to h11 unchecked lets "200 OK\\r\\nSet-Cookie: evil=1" put a header of the app's
(or of a user whose input the app echoes) on the wire. Both servers must refuse such a status
with a logged 500 and close the connection (as gunicorn and waitress do).
"""

from __future__ import annotations

import logging
import re
import socket
import time
from ast import literal_eval
from urllib.parse import unquote

import h11
import pytest

from asgi_lab import serve_in_background

from rawhttp import exchange, read_body, status_of


def echoing_wsgi_app(environ, start_response):
    """Puts the request path in the reason phrase: user input on the status line.
    PATH_INFO is already percent-decoded (PEP 3333), so %0D%0A arrives as CR LF."""
    start_response("200 " + environ["PATH_INFO"][1:], [("Content-Type", "text/plain")])
    return [b"body\n"]


async def echoing_asgi_app(scope, receive, send):
    """The ASGI app has no reason phrase to echo into; it takes its status from the path."""
    if scope["type"] != "http":
        return
    status = unquote(scope["path"][1:])
    await send({"type": "http.response.start", "status": literal_eval(status),  # 200, "200", 200.0...
                "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": b"body\n"})


def probe(server, target: str) -> bytes:
    return exchange(server.address, f"GET {target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())


SPLITTING = "/OK%0D%0ASet-Cookie:%20evil=1"
FORGED_SECOND_RESPONSE = ("/OK%0D%0AContent-Length:%200%0D%0A%0D%0A"
                          "HTTP/1.1%20302%20Found%0D%0ALocation:%20http://evil.example/%0D%0A")


@pytest.mark.parametrize("target", [
    SPLITTING,
    FORGED_SECOND_RESPONSE,
    "/OK%0ASet-Cookie:%20evil=1",      # a bare LF
    "/OK%0DSet-Cookie:%20evil=1",      # a bare CR
    "/OK%00evil",                      # NUL
    "/O%09K",                          # a tab: RFC 9112 allows it, PEP 3333 forbids control characters
    "/OK%7Fevil",                      # DEL
])
def test_wsgi_refuses_a_reason_phrase_with_control_characters(target, caplog):
    with serve_in_background(echoing_wsgi_app, kind="wsgi", name="test-splitting") as server:
        with caplog.at_level(logging.ERROR, logger="asgi_lab.error"):
            raw = probe(server, target)
        assert status_of(raw) == 500
        assert b"evil" not in raw and b"302" not in raw
        assert raw.count(b"HTTP/1.1 ") == 1          # one response, and the connection closed
        assert "reason phrase" in caplog.text        # logged, with the reason why
        assert status_of(probe(server, "/OK")) == 200  # and the server goes on serving


@pytest.mark.parametrize("status", [
    "\u0662\u0660\u0660 OK",  # Arabic-Indic digits: str.isdigit() says yes, int() says 200
    "20 OK", "2000 OK", "OK 200", "099 Low", "101 Switching Protocols", "199 Info", "600 High", "999 X",
])
def test_wsgi_refuses_a_status_code_that_is_not_three_ascii_digits_from_200_to_599(status, caplog):
    assert "Exception in WSGI application" in logged_500(status, [("Content-Type", "text/plain")], caplog)


def logged_500(status: str, headers: list, caplog) -> str:
    """Serve a WSGI app that answers `status` with `headers`: assert that the client got a 500,
    and return what the server logged."""
    def app(environ, start_response):
        start_response(status, headers)
        return [b"body\n"]

    with serve_in_background(app, kind="wsgi", name="test-status") as server:
        with caplog.at_level(logging.ERROR, logger="asgi_lab.error"):
            assert status_of(probe(server, "/")) == 500
    return caplog.text


@pytest.mark.parametrize("status, line", [
    ("200 OK", b"HTTP/1.1 200 OK\r\n"),
    ("599 Custom", b"HTTP/1.1 599 Custom\r\n"),
    ("404 Not Found", b"HTTP/1.1 404 Not Found\r\n"),
    ("200 \xc7a va", b"HTTP/1.1 200 \xc7a va\r\n"),  # latin-1: RFC 9112's obs-text
])
def test_wsgi_sends_a_valid_status_line_as_given(status, line):
    def app(environ, start_response):
        start_response(status, [("Content-Type", "text/plain")])
        return [b"body\n"]

    with serve_in_background(app, kind="wsgi", name="test-status") as server:
        assert probe(server, "/").startswith(line)


@pytest.mark.parametrize("literal", ["'200'", "200.0", "True", "99", "101", "600", "1000"])
def test_asgi_refuses_a_status_that_is_not_an_int_from_200_to_599(literal, caplog):
    with serve_in_background(echoing_asgi_app, name="test-status", lifespan="off") as server:
        with caplog.at_level(logging.ERROR, logger="asgi_lab.error"):
            raw = probe(server, "/" + literal)
        assert status_of(raw) == 500
        assert "Exception in ASGI application" in caplog.text
        assert probe(server, "/200").startswith(b"HTTP/1.1 200 OK\r\n")  # still serving


def test_asgi_refuses_a_float_status_even_when_the_int_head_is_cached(caplog):
    """The response-head cache is keyed by status: 200.0 == 200, so the type is checked first."""
    with serve_in_background(echoing_asgi_app, name="test-status", lifespan="off") as server:
        assert status_of(probe(server, "/200")) == 200
        with caplog.at_level(logging.ERROR, logger="asgi_lab.error"):
            assert status_of(probe(server, "/200.0")) == 500


# -- Section 2: one body, two lengths (request smuggling) ------------------------------------------

def body_app(kind: str):
    """Answers with what it was told and what it read, so a test sees every request served."""
    if kind == "wsgi":
        def app(environ, start_response):
            body = environ["wsgi.input"].read()
            start_response("200 OK", [("Content-Type", "text/plain")])
            return [f"{environ['PATH_INFO']} {len(body)}\n".encode()]
        return app

    async def asgi_app(scope, receive, send):
        if scope["type"] != "http":
            return
        body = await read_body(receive)
        if body is None:
            return
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": f"{scope['path']} {len(body)}\n".encode()})
    return asgi_app


SMUGGLED = b"0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n"


@pytest.mark.parametrize("kind", ["asgi", "wsgi"])
@pytest.mark.parametrize("te_line", [
    b"Transfer-Encoding: chunked",
    b"Transfer-Encoding:  chunked",
    b"Transfer-Encoding: chunked\t",
    b"Transfer-Encoding: Chunked",
    b"Transfer-Encoding:\r\n chunked",  # obs-fold
])
def test_content_length_with_transfer_encoding_is_400_and_close(kind, te_line):
    """RFC 9112 §6.1 and §6.3: reject it, and close: nothing after it is ever served."""
    request = (b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n" % len(SMUGGLED)
               + te_line + b"\r\n\r\n" + SMUGGLED)
    with serve_in_background(body_app(kind), kind=kind, name="test-smuggling", lifespan="off") as server:
        raw = exchange(server.address, request)
        assert status_of(raw) == 400
        assert raw.count(b"HTTP/1.1 ") == 1 and b"/smuggled" not in raw  # closed after the 400
        assert status_of(probe(server, "/fine")) == 200


@pytest.mark.parametrize("kind", ["asgi", "wsgi"])
def test_transfer_encoding_on_http_1_0_is_400(kind):
    """RFC 9112 §6.1: an HTTP/1.0 message with Transfer-Encoding has faulty framing."""
    request = b"POST /a HTTP/1.0\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"
    with serve_in_background(body_app(kind), kind=kind, name="test-smuggling", lifespan="off") as server:
        raw = exchange(server.address, request)
        assert status_of(raw) == 400 and raw.count(b" 200 ") == 0


@pytest.mark.parametrize("kind", ["asgi", "wsgi"])
@pytest.mark.parametrize("te_lines", [
    b"Transfer-Encoding: chunked, gzip",
    b"Transfer-Encoding: chunked, identity",
    b"Transfer-Encoding: chunked\r\nTransfer-Encoding: gzip",   # two lines make one list
    b"Transfer-Encoding: identity",
    b"Transfer-Encoding: gzip",
    b"Transfer-Encoding: chunked, chunked",
    b"Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked",
    b"Transfer-Encoding: gzip, chunked, chunked",
])
def test_chunked_not_last_or_not_once_is_400_and_close(kind, te_lines):
    """RFC 9112 §6.3: if chunked is not the final coding, the body's length "cannot be
    determined reliably; the server MUST respond with the 400 (Bad Request) status code and
    then close the connection" (a lone `gzip` has no final chunked either); and §6.1: "A sender
    MUST NOT apply the chunked transfer coding more than once"."""
    request = b"POST /a HTTP/1.1\r\nHost: x\r\n" + te_lines + b"\r\n\r\n" + SMUGGLED
    with serve_in_background(body_app(kind), kind=kind, name="test-smuggling", lifespan="off") as server:
        raw = exchange(server.address, request)
        assert status_of(raw) == 400
        assert raw.count(b"HTTP/1.1 ") == 1 and b"/smuggled" not in raw


@pytest.mark.parametrize("kind", ["asgi", "wsgi"])
@pytest.mark.parametrize("te_lines", [
    b"Transfer-Encoding: gzip, chunked",
    b"Transfer-Encoding: identity, chunked",
    b"Transfer-Encoding: gzip\r\nTransfer-Encoding: chunked",
    b"Transfer-Encoding: GZIP ,Chunked",                         # names are case-insensitive
    b"Transfer-Encoding: gzip,\r\n chunked",                      # obs-fold (h11 unfolds it)
    b"Transfer-Encoding: br;q=1, chunked",                        # a coding with a parameter
])
def test_an_unknown_transfer_coding_before_chunked_is_501_and_close(kind, te_lines):
    """RFC 9112 §6.1: "A server that receives a request message with a transfer coding it
    does not understand SHOULD respond with 501 (Not Implemented)." With chunked last the
    body's end is known, but not what the app would get: h11 (and so both servers) decodes
    chunked alone, and `identity` has not been a transfer coding since RFC 7230. Closed
    after the answer, like every refusal: no request after it is read."""
    request = b"POST /a HTTP/1.1\r\nHost: x\r\n" + te_lines + b"\r\n\r\n5\r\nhello\r\n" + SMUGGLED
    with serve_in_background(body_app(kind), kind=kind, name="test-smuggling", lifespan="off") as server:
        raw = exchange(server.address, request)
        assert status_of(raw) == 501 and b"connection: close" in raw.lower()
        assert raw.count(b"HTTP/1.1 ") == 1 and b"/smuggled" not in raw
        assert status_of(probe(server, "/fine")) == 200


@pytest.mark.parametrize("kind", ["asgi", "wsgi"])
@pytest.mark.parametrize("request_bytes", [
    b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: gzip, chunked\r\n\r\nhello",
    b"POST /a HTTP/1.0\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
], ids=["with-content-length", "http-1.0"])
def test_an_unknown_coding_with_faulty_framing_is_still_400(kind, request_bytes):
    """Transfer-Encoding with Content-Length, or on HTTP/1.0, is a framing fault (RFC 9112
    §6.1): 400, as for a lone chunked (the tests above), whatever the codings."""
    with serve_in_background(body_app(kind), kind=kind, name="test-smuggling", lifespan="off") as server:
        assert status_of(exchange(server.address, request_bytes)) == 400


@pytest.mark.parametrize("kind", ["asgi", "wsgi"])
def test_a_pipelined_request_with_an_unknown_coding_is_501_after_the_first_is_served(kind):
    """The status comes from the head's bytes (h11 refuses the head without handing it over):
    also for a head that arrived behind another request, in h11's buffer already."""
    request = (b"GET /first HTTP/1.1\r\nHost: x\r\n\r\n"
               b"POST /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n")
    with serve_in_background(body_app(kind), kind=kind, name="test-smuggling", lifespan="off") as server:
        raw = exchange(server.address, request)
    assert raw.startswith(b"HTTP/1.1 200 ") and b"/first 0\n" in raw
    assert raw.count(b"HTTP/1.1 ") == 2 and b"HTTP/1.1 501 " in raw


@pytest.mark.parametrize("kind", ["asgi", "wsgi"])
def test_a_plain_chunked_body_is_still_served(kind):
    request = b"POST /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n5\r\nhello\r\n0\r\n\r\n"
    with serve_in_background(body_app(kind), kind=kind, name="test-smuggling", lifespan="off") as server:
        raw = exchange(server.address, request)
        assert status_of(raw) == 200 and b"/a 5\n" in raw


# -- Section 4 and the request corpus: the request line ---------------------------------------------

def where_app(kind: str):
    """Answers with the path, query and host the app was given, and the version it was told."""
    if kind == "wsgi":
        def app(environ, start_response):
            start_response("200 OK", [("Content-Type", "text/plain")])
            return [" ".join([environ["PATH_INFO"], environ["QUERY_STRING"], environ.get("HTTP_HOST", "-"),
                              environ["SERVER_PROTOCOL"]]).encode()]
        return app

    async def asgi_app(scope, receive, send):
        if scope["type"] != "http":
            return
        host = dict(scope["headers"]).get(b"host", b"-").decode()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": " ".join(
            [scope["path"], scope["query_string"].decode(), host, "HTTP/" + scope["http_version"]]).encode()})
    return asgi_app


def answer(kind: str, request: bytes, **config) -> bytes:
    with serve_in_background(where_app(kind), kind=kind, name="test-target", lifespan="off", **config) as server:
        return exchange(server.address, request)


def body_of(raw: bytes) -> bytes:
    """The body of the one response in `raw`, unframed by an h11 client."""
    client = h11.Connection(h11.CLIENT)
    client.send(h11.Request(method="GET", target="/", headers=[("Host", "x")]))
    client.receive_data(raw)
    client.receive_data(b"")
    body = b""
    while type(event := client.next_event()) is not h11.EndOfMessage:
        body += event.data if type(event) is h11.Data else b""
    return body


@pytest.mark.parametrize("kind", ["asgi", "wsgi"])
def test_absolute_form_uses_the_targets_path_and_host_in_both_servers(kind):
    """RFC 9112 §3.2.2: the server MUST ignore Host and use the target's authority."""
    raw = answer(kind, b"GET http://other.example/p%20q?x=1 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert status_of(raw) == 200 and body_of(raw) == b"/p q x=1 other.example HTTP/1.1"


@pytest.mark.parametrize("kind", ["asgi", "wsgi"])
@pytest.mark.parametrize("request_line, status", [
    (b"GET /forums/1/topics/2375?page=1#posts-17408 HTTP/1.1", 400),  # a fragment
    (b"GET foo HTTP/1.1", 400),                                        # no form at all
    (b"GET * HTTP/1.1", 400),                                          # `*` is for OPTIONS only
    (b"GET ftp://x/p HTTP/1.1", 400),                                  # absolute-form of another scheme
    (b"GET http:///p HTTP/1.1", 400),                                  # absolute-form with no authority
    (b"GET example.com:80 HTTP/1.1", 400),                             # authority-form is CONNECT's
    (b"GET /foo HTTP/2.0", 505),
    (b"GET /foo HTTP/0.9", 505),
    (b"GET /" + b"a" * 9000 + b" HTTP/1.1", 414),
])
def test_request_lines_refused(kind, request_line, status):
    raw = answer(kind, request_line + b"\r\nHost: x\r\n\r\n")
    assert status_of(raw) == status and raw.count(b"HTTP/1.1 ") == 1


@pytest.mark.parametrize("kind", ["asgi", "wsgi"])
def test_a_longer_target_limit_is_configurable(kind):
    raw = answer(kind, b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
                 max_target_bytes=16 * 1024)
    assert status_of(raw) == 200


@pytest.mark.parametrize("kind", ["asgi", "wsgi"])
@pytest.mark.parametrize("version, told", [(b"1.0", b"HTTP/1.0"), (b"1.1", b"HTTP/1.1")])
def test_the_app_is_told_the_version_the_client_spoke(kind, version, told):
    raw = answer(kind, b"GET /v HTTP/" + version + b"\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert body_of(raw) == b"/v  x " + told


@pytest.mark.parametrize("kind", ["asgi", "wsgi"])
def test_options_star_is_served(kind):
    assert status_of(answer(kind, b"OPTIONS * HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")) == 200


# -- Section 4: hop-by-hop headers from a WSGI app ---------------------------------------------------

@pytest.mark.parametrize("header", [("Connection", "close"), ("Transfer-Encoding", "chunked"),
                                    ("Keep-Alive", "timeout=5"), ("Upgrade", "websocket"), ("TE", "trailers")])
def test_a_wsgi_app_setting_a_hop_by_hop_header_gets_a_logged_500(header, caplog):
    """PEP 3333, "Other HTTP Features": apps are forbidden hop-by-hop headers."""
    assert "hop-by-hop" in logged_500("200 OK", [("Content-Type", "text/plain"), header], caplog)


# -- Section 3: slow clients must not starve the WSGI pool -----------------------------------------

def test_slow_request_bodies_do_not_hold_the_wsgi_workers():
    """Twenty clients send a 100-byte body a byte at a time, on a 4-thread pool: each rests in
    the acceptor's selector until its body is here, so a normal GET is answered at once."""
    with serve_in_background(body_app("wsgi"), kind="wsgi", name="test-slow-bodies", threads=4,
                             access_log=False) as server:
        slow = [socket.create_connection(server.address, timeout=5) for _ in range(20)]
        try:
            for sock in slow:
                sock.sendall(b"POST /slow HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nx")
            time.sleep(0.3)  # every slow request has its head and one byte of body in
            started = time.monotonic()
            raw = exchange(server.address, b"GET /fine HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            assert status_of(raw) == 200 and time.monotonic() - started < 2.0
            for sock in slow:  # and the slow ones are still served when their body is complete
                sock.sendall(b"x" * 99)
            for sock in slow:
                assert b"/slow 100\n" in read_response_bytes(sock)
        finally:
            for sock in slow:
                sock.close()


def test_a_body_that_goes_silent_before_the_app_starts_gets_408():
    with serve_in_background(body_app("wsgi"), kind="wsgi", name="test-slow-bodies", threads=2,
                             timeout_request_header=0.4) as server:
        raw = exchange(server.address, b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nabc")
        assert status_of(raw) == 408


def read_response_bytes(sock: socket.socket) -> bytes:
    """Bytes until one chunked response has ended (the body apps here are chunked)."""
    data = b""
    while not data.endswith(b"0\r\n\r\n"):
        chunk = sock.recv(65536)
        assert chunk, data
        data += chunk
    return data


def big_app(environ, start_response):
    size = int(environ["QUERY_STRING"] or 0)
    start_response("200 OK", [("Content-Type", "application/octet-stream"), ("Content-Length", str(size))])
    return [b"x" * size]


def test_a_client_that_never_reads_frees_its_worker_after_the_write_timeout():
    """One worker, and a client that asks for 16 MiB and reads none of it: after
    `wsgi_timeout_write` without progress the worker gives up, and the next client is served."""
    with serve_in_background(big_app, kind="wsgi", name="test-slow-reader", threads=1,
                             wsgi_timeout_write=0.5, access_log=False) as server:
        with socket.create_connection(server.address, timeout=5) as stuck:
            stuck.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            stuck.sendall(b"GET /?16777216 HTTP/1.1\r\nHost: x\r\n\r\n")
            time.sleep(0.2)  # the only worker is now blocked writing to `stuck`
            started = time.monotonic()
            raw = exchange(server.address, b"GET /?5 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            assert status_of(raw) == 200 and raw.endswith(b"xxxxx")
            assert time.monotonic() - started < 4.0


def test_a_slow_but_steady_reader_gets_the_whole_response():
    """The write timeout counts time without progress, not the length of the transfer."""
    size = 2 * 1024 * 1024
    with serve_in_background(big_app, kind="wsgi", name="test-slow-reader", threads=1,
                             wsgi_timeout_write=0.5, access_log=False) as server:
        with socket.create_connection(server.address, timeout=5) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
            sock.sendall(b"GET /?%d HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n" % size)
            received = b""
            started = time.monotonic()
            while chunk := sock.recv(65536):
                received += chunk
                time.sleep(0.02)  # about 3 MB/s at most: longer in all than the timeout
            assert received.endswith(b"x" * 1000) and len(received) > size
            assert time.monotonic() - started > 0.5


def test_asgi_ignores_an_apps_transfer_encoding():
    """ASGI www spec, Response Start: "the server must ignore it": h11 frames the body."""
    async def app(scope, receive, send):
        if scope["type"] != "http":
            return
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"transfer-encoding", b"chunked"), (b"content-length", b"5")]})
        await send({"type": "http.response.body", "body": b"hello"})

    with serve_in_background(app, name="test-te", lifespan="off") as server:
        raw = probe(server, "/")
    assert status_of(raw) == 200 and b"transfer-encoding" not in raw.lower() and raw.endswith(b"\r\n\r\nhello")


# -- Issue 21: where RFC 9112 is strict, and both servers agree ------------------------------------

def headers_app(kind: str):
    """Answers with the body's length and the request's headers, as the app was given them."""
    if kind == "wsgi":
        def app(environ, start_response):
            body = environ["wsgi.input"].read()
            start_response("200 OK", [("Content-Type", "text/plain")])
            said = {key: value for key, value in environ.items()
                    if key.startswith("HTTP_") or key in ("CONTENT_TYPE", "CONTENT_LENGTH")}
            return [repr((len(body), sorted(said.items()))).encode()]
        return app

    async def asgi_app(scope, receive, send):
        if scope["type"] != "http":
            return
        body = await read_body(receive)
        if body is None:
            return
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": repr((len(body), scope["headers"])).encode()})
    return asgi_app


def half_closed_exchange(address, data: bytes) -> bytes:
    """Send `data`, then close our side (EOF for the server), and read the whole answer."""
    with socket.create_connection(address, timeout=5) as sock:
        sock.sendall(data)
        sock.shutdown(socket.SHUT_WR)
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
        return received


@pytest.mark.parametrize("kind", ["asgi", "wsgi"])
@pytest.mark.parametrize("request_bytes", [
    b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 17914\r\n\r\n" + b"x" * 8599,
    b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 200000\r\n\r\n" + b"x" * 100000,  # past the early body
    b"POST /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n",  # no final CRLF
], ids=["short", "long", "chunked"])
def test_a_body_cut_short_by_the_clients_eof_is_400_in_both_servers(kind, request_bytes):
    """RFC 9112 §8: a server that receives an incomplete request "MAY send an error response
    prior to closing the connection". A half-closed client still reads, so both servers say 400
    (the WSGI server used to close without a word once the app was reading the body)."""
    with serve_in_background(body_app(kind), kind=kind, name="test-cut-short", lifespan="off") as server:
        raw = half_closed_exchange(server.address, request_bytes)
    assert status_of(raw) == 400 and raw.count(b"HTTP/1.1 ") == 1


@pytest.mark.parametrize("kind", ["asgi", "wsgi"])
def test_two_content_type_headers_are_400_in_both_servers(kind):
    """RFC 9110 §5.3: a sender MUST NOT send a field twice unless its definition allows a list;
    Content-Type is one media-type (§8.3). Joined, "application/json, text/html" is not a
    media type; kept apart, one layer may read the first and another the last. So: 400."""
    request = (b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
               b"Content-Type: text/html\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}")
    with serve_in_background(headers_app(kind), kind=kind, name="test-dup", lifespan="off") as server:
        assert status_of(exchange(server.address, request)) == 400
        one = request.replace(b"Content-Type: text/html\r\n", b"")
        assert status_of(exchange(server.address, one)) == 200


@pytest.mark.parametrize("kind", ["asgi", "wsgi"])
@pytest.mark.parametrize("lengths", [b"Content-Length: 5\r\nContent-Length: 5\r\n", b"Content-Length: 5, 5\r\n"])
def test_equal_content_lengths_are_one_content_length_in_both_servers(kind, lengths):
    """RFC 9112 §6.3 (5): a Content-Length that is a list of equal valid values is processed
    as that single value (h11 does this); the app sees one content-length, 5, in both servers."""
    request = b"POST /a HTTP/1.1\r\nHost: x\r\n" + lengths + b"Connection: close\r\n\r\nhello"
    with serve_in_background(headers_app(kind), kind=kind, name="test-dup", lifespan="off") as server:
        raw = exchange(server.address, request)
    assert status_of(raw) == 200
    said = literal_eval(body_of(raw).decode())
    if kind == "wsgi":
        assert said == (5, [("CONTENT_LENGTH", "5"), ("HTTP_CONNECTION", "close"), ("HTTP_HOST", "x")])
    else:
        assert said == (5, [(b"host", b"x"), (b"content-length", b"5"), (b"connection", b"close")])


@pytest.mark.parametrize("kind", ["asgi", "wsgi"])
def test_different_content_lengths_are_400(kind):
    request = b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!"
    with serve_in_background(headers_app(kind), kind=kind, name="test-dup", lifespan="off") as server:
        assert status_of(exchange(server.address, request)) == 400


@pytest.mark.parametrize("kind", ["asgi", "wsgi"])
@pytest.mark.parametrize("control", [b"\x07", b"\x7f", b"\x1b", b"\x01", b"\x1f"])
def test_a_control_character_in_a_header_value_is_400_in_both_servers(kind, control):
    """RFC 9110 §5.5: field values with CTLs other than HTAB are invalid. h11 refuses NUL, CR
    and LF; `http11.refuse_request` refuses the rest (gunicorn and waitress do too)."""
    request = b"GET /a HTTP/1.1\r\nHost: x\r\nX-Value: plain" + control + b"injected\r\nConnection: close\r\n\r\n"
    with serve_in_background(headers_app(kind), kind=kind, name="test-ctl", lifespan="off") as server:
        assert status_of(exchange(server.address, request)) == 400
        tab = request.replace(control, b"\t")  # HTAB is allowed inside a value
        assert status_of(exchange(server.address, tab)) == 200


CHUNKED_HEAD = b"POST /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"


@pytest.mark.parametrize("kind", ["asgi", "wsgi"])
@pytest.mark.parametrize("body", [
    b"5\r\nhello\r\n0 \r\n\r\n",                 # whitespace after the size, no extension
    b"5\r\nhello\r\n0\t\r\n\r\n",
    b"5 \r\nhello\r\n0\r\n\r\n",
    b" 5\r\nhello\r\n0\r\n\r\n",                 # whitespace before the size
    b"5;a=b\rc\r\nhello\r\n0\r\n\r\n",           # a bare CR in an extension (RFC 9112 §2.2)
    b"5\r\nhello\r\n0;a=b\rc\r\n\r\n",
    b"5;a=b\x07\r\nhello\r\n0\r\n\r\n",          # another control character
    b"5;\r\nhello\r\n0\r\n\r\n",                 # `;` without a name
    b"5;a=\r\nhello\r\n0\r\n\r\n",               # `=` without a value
    b"5;a=\"b\r\nhello\r\n0\r\n\r\n",            # an unclosed quoted-string
    b"5;a b\r\nhello\r\n0\r\n\r\n",              # whitespace inside an extension
], ids=["space-after-0", "tab-after-0", "space-after-5", "space-before-5", "bare-cr", "bare-cr-last",
        "bel", "no-name", "no-value", "open-quote", "two-words"])
def test_a_chunk_line_outside_the_rfc_9112_grammar_is_400_and_close(kind, body):
    """RFC 9112 §7.1: `chunk-size [ chunk-ext ] CRLF`, where whitespace may only surround the
    `;` and `=` of an extension, and §2.2: a bare CR is invalid. A chunk line frames the body,
    so a proxy that reads it otherwise sees another request after it: both servers answer
    400 and close (as gunicorn and waitress do), and the request after it is never served.
    h11 alone accepts the first four and the bare CR: `http11.strict_chunk_lines`."""
    request = CHUNKED_HEAD + body + b"GET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n"
    with serve_in_background(body_app(kind), kind=kind, name="test-chunk-lines", lifespan="off") as server:
        raw = exchange(server.address, request)
        assert status_of(raw) == 400
        assert raw.count(b"HTTP/1.1 ") == 1 and b"/smuggled" not in raw
        assert status_of(probe(server, "/fine")) == 200


@pytest.mark.parametrize("kind", ["asgi", "wsgi"])
@pytest.mark.parametrize("body", [
    b"5;a=b\r\nhello\r\n0\r\n\r\n",
    b"5 ; a = b\r\nhello\r\n0;z\r\n\r\n",          # BWS around ";" and "="
    b"5;a;b=c;d=\"x y\"\r\nhello\r\n0\r\n\r\n",    # several, and a quoted-string
    b"5;q=\"a\\\"b;c\"\r\nhello\r\n0\r\n\r\n",     # a quoted-pair, and ";" inside quotes
    b"0005\r\nhello\r\n000\r\n\r\n",              # leading zeros
    b"A\r\nhello worl\r\n0\r\n\r\n",               # upper-case hex
], ids=["ext", "bws", "several", "quoted-pair", "zeros", "hex"])
def test_chunk_lines_in_the_rfc_9112_grammar_are_served(kind, body):
    """The other side of the test above: every form §7.1.1 allows is still read (h11 drops
    the extensions, and so does every server we know: no app is told of them)."""
    request = CHUNKED_HEAD.replace(b"\r\n\r\n", b"\r\nConnection: close\r\n\r\n") + body
    with serve_in_background(body_app(kind), kind=kind, name="test-chunk-lines", lifespan="off") as server:
        raw = exchange(server.address, request)
    assert status_of(raw) == 200
    assert body_of(raw) == b"/a 10\n" if body.startswith(b"A") else body_of(raw) == b"/a 5\n"


def test_strict_chunk_lines_replaces_only_the_pattern_it_knows(monkeypatch):
    """h11's pattern is private: `strict_chunk_lines` replaces it only if it is h11 0.16's,
    and raises for any other (a new h11), rather than leave the servers lenient unnoticed."""
    import h11._readers
    from asgi_lab import http11

    assert h11._readers.chunk_header_re is http11.CHUNK_LINE  # installed at import
    http11.strict_chunk_lines()  # a second call changes nothing
    assert h11._readers.chunk_header_re is http11.CHUNK_LINE
    monkeypatch.setattr(h11._readers, "chunk_header_re", re.compile(http11.H11_CHUNK_LINE))
    http11.strict_chunk_lines()
    assert h11._readers.chunk_header_re is http11.CHUNK_LINE
    monkeypatch.setattr(h11._readers, "chunk_header_re", re.compile(rb"(?P<chunk_size>[0-9a-f]+)\r\n"))
    with pytest.raises(RuntimeError, match="chunk lines"):
        http11.strict_chunk_lines()


@pytest.mark.parametrize("kind", ["asgi", "wsgi"])
def test_whitespace_before_the_colon_is_400(kind):
    """RFC 9112 §5.1: a server MUST reject a request with whitespace between a field name and
    the colon with 400 (h11 does); gunicorn's strip_header_spaces would accept it."""
    request = b"GET /a HTTP/1.1\r\nHost: x\r\nContent-Length : 3\r\n\r\nxyz"
    with serve_in_background(body_app(kind), kind=kind, name="test-colon", lifespan="off") as server:
        assert status_of(exchange(server.address, request)) == 400
