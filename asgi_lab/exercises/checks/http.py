"""Exercise 3 and a spot-the-bug: an ASGI app reading a streamed request body, and a
streaming response that must leave its framing to the server (ASGI www spec, "HTTP")."""

from __future__ import annotations

import json
import re

from ...background import server_errors
from .. import client
from ..feedback import fail, passed, register
from .common import describe_log, explain_http, http_exchange, require_callable, serve


# == 3. An ASGI app that reads a streamed request body =============================================

STREAMED_BODY = "Streamed request body"
register(
    STREAMED_BODY, "check_streamed_body",
    concept="an ASGI app does not get the body as one value: it arrives as a series of "
            "http.request messages, as fast as the client sends it, and only the message whose "
            "more_body is false is the last one.",
    api="each `await receive()` returns {'type': 'http.request', 'body': b'...', 'more_body': "
        "True or False}; both keys may be missing (use .get with a default); call it in a loop.",
    code="while True: message = await receive(); chunk = message.get('body', b''); "
         "size += len(chunk); newlines += chunk.count(b'\\n'); "
         "if not message.get('more_body'): break")
_UPLOAD = [b"first line\n", b"second ", b"line\n", b"third line, no newline"]


def _expected_counts(chunks) -> dict:
    data = b"".join(chunks)
    return {"bytes": len(data), "newlines": data.count(b"\n")}


def _read_counts(exercise: str, body: bytes, where: str) -> dict:
    try:
        counts = json.loads(body)
        return {"bytes": int(counts["bytes"]), "newlines": int(counts["newlines"])}
    except (ValueError, KeyError, TypeError):
        fail(exercise, f"{where}, your app answered {body[:100]!r}; expected JSON like "
                       '{"bytes": 12, "newlines": 2}.',
             'body = json.dumps({"bytes": n, "newlines": k}).encode()')


def check_streamed_body(app) -> None:
    """Exercise 3: for a POST, read the whole body, however many http.request messages it
    comes in, and answer JSON {"bytes": <length>, "newlines": <count of b"\\n">}."""
    require_callable(STREAMED_BODY, app)
    hint = ("loop: message = await receive(); count message.get('body', b''); stop when "
            "message.get('more_body') is false")
    for chunks in (_UPLOAD, [b""]):
        result, unawaited = http_exchange(app, method="POST", path="/upload", body_chunks=chunks,
                                  headers=[(b"content-type", b"text/plain")])
        explain_http(STREAMED_BODY, result, unawaited, hint)
        where = f"for a body of {sum(map(len, chunks))} bytes in {len(chunks)} message(s)"
        counts, expected = _read_counts(STREAMED_BODY, result.body, where), _expected_counts(chunks)
        if counts != expected:
            if len(chunks) > 1 and counts == _expected_counts(chunks[:1]):
                fail(STREAMED_BODY, f"your app counted only the first http.request message "
                                    f"({counts['bytes']} bytes); the body came in {len(chunks)} "
                                    f"messages, {expected['bytes']} bytes in all.", hint)
            fail(STREAMED_BODY, f"{where} your app answered {counts}; expected {expected}.", hint)
        if result.status != 200:
            fail(STREAMED_BODY, f"your app answered status {result.status}; expected 200.")
    with server_errors() as errors, serve(app, "streamed-body") as server:
        try:
            response = client.request(server.address, "POST", "/upload", body_chunks=_UPLOAD,
                                      chunk_delay=0.01, timeout=5.0)
        except OSError as exc:
            fail(STREAMED_BODY, f"over a real socket the request failed ({exc}). {describe_log(errors)}")
    if response.status != 200:
        fail(STREAMED_BODY, f"over a real socket, with the body arriving chunk by chunk, our server "
                            f"answered {response.status}. {describe_log(errors)}", hint)
    counts = _read_counts(STREAMED_BODY, response.body, "over a real socket")
    if counts != _expected_counts(_UPLOAD):
        fail(STREAMED_BODY, f"over a real socket, with the body arriving chunk by chunk, your app "
                            f"answered {counts}; expected {_expected_counts(_UPLOAD)}.", hint)
    passed(STREAMED_BODY, f"read {len(_UPLOAD)} messages in process, and a chunked upload over "
                          "loopback.")


# == 8. A streaming response: framing is the server's job ==========================================

STREAMING = "Streaming response"
TRANSFER_ENCODING_RULE = (
    "the ASGI HTTP spec (asgiref specs/www.rst, version 2.5, \"Response Start\") says: \"You may "
    "send a Transfer-Encoding header in this message, but the server must ignore it. Servers "
    "handle Transfer-Encoding themselves, and may opt to use Transfer-Encoding: chunked if the "
    "application presents a response that has no Content-Length set.\"")
register(
    STREAMING, "check_streaming",
    concept="framing (chunked, Content-Length, HTTP/2 DATA frames) is the server's job, because "
            "only the server knows which protocol its client speaks; " + TRANSFER_ENCODING_RULE,
    api="send each chunk's plain bytes as one http.response.body message with more_body=True, "
        "and end with more_body=False; leave Transfer-Encoding out.",
    code="for i in range(10): await send({'type': 'http.response.body', 'body': "
         "f'chunk {i}\\n'.encode(), 'more_body': True}), then await send({'type': "
         "'http.response.body', 'body': b''}), with no framing header in http.response.start")

STREAM_CHUNKS = [f"chunk {i}\n".encode() for i in range(10)]


def check_streaming(app) -> None:
    """Spot the bug: `GET /` streams b"chunk 0\\n" ... b"chunk 9\\n", one http.response.body
    message each, as plain bytes: the server frames them (ASGI www spec 2.5, "Response Start":
    the server must ignore an app's Transfer-Encoding header and does the framing itself)."""
    require_callable(STREAMING, app)
    expected = b"".join(STREAM_CHUNKS)
    result, unawaited = http_exchange(app)
    explain_http(STREAMING, result, unawaited, "send http.response.start, then one "
                                                "http.response.body per chunk with more_body=True")
    if result.body != expected and _HAND_FRAMED.match(result.body):
        fail(STREAMING, f"your body begins {result.body[:24]!r}: each chunk is wrapped in a size "
                        "line and a \\r\\n, written by your app. A server that follows the spec "
                        "frames the body itself, so the client gets every chunk framed twice: the "
                        "size lines and \\r\\n become part of the text it reads (on a server that "
                        "does not follow the spec, your framing may have seemed to work).",
             "send the plain bytes: await send({'type': 'http.response.body', 'body': "
             "f'chunk {i}\\n'.encode(), 'more_body': True}); no size lines, no '0\\r\\n\\r\\n' "
             "at the end, no Transfer-Encoding header",
             api="the body of an http.response.body message is the content itself; the server "
                 "(h11, for us) adds the chunk sizes on the wire.")
    if result.body != expected:
        fail(STREAMING, f"the body is {result.body[:80]!r}...; expected b'chunk 0\\nchunk 1\\n..."
                        "chunk 9\\n'.")
    if result.body_messages < len(STREAM_CHUNKS):
        fail(STREAMING, f"your app sent the body in {result.body_messages} message(s); a stream "
                        f"sends each chunk as it is ready ({len(STREAM_CHUNKS)} messages).",
             "one await send({'type': 'http.response.body', 'body': chunk, 'more_body': True}) "
             "per chunk, then a last one with more_body=False")
    with server_errors() as errors, serve(app, "streaming") as server:
        response = client.request(server.address)
    if response.status != 200 or response.body != expected:
        fail(STREAMING, f"over a real socket our server answered {response.status} with "
                        f"{response.body[:80]!r}. {describe_log(errors)}")
    framing = response.header(b"transfer-encoding")
    note = ""
    if result.header(b"transfer-encoding") is not None:
        note = (" Note: your Transfer-Encoding header changed nothing, because "
                + TRANSFER_ENCODING_RULE + " Leave it out.")
    passed(STREAMING, f"{len(STREAM_CHUNKS)} messages; on the wire our server framed them as "
                      f"transfer-encoding: {framing.decode() if framing else 'none (content-length)'}."
                      + note)


_HAND_FRAMED = re.compile(rb"\A[0-9a-fA-F]+\r\n")
"""A body that starts with a chunk-size line: "8\\r\\n" (RFC 9112 section 7.1, chunk-size CRLF)."""
