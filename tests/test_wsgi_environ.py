"""The pure parts of the WSGI server: the PEP 3333 environ, wsgi.input and wsgi.file_wrapper.

No sockets: an h11.Request in, a dict out; a list of chunks in, reads out.
"""

from __future__ import annotations

import io

import h11
import pytest

from asgi_lab.http11 import origin_form
from asgi_lab.wsgi.environ import build_environ, environ_base, split_target
from asgi_lab.wsgi.streams import FileWrapper, RequestBody

CGI_KEYS = ("REQUEST_METHOD", "SCRIPT_NAME", "PATH_INFO", "QUERY_STRING", "SERVER_NAME", "SERVER_PORT",
            "SERVER_PROTOCOL")


def environ_for(target=b"/", headers=(), method=b"GET", http_version=b"1.1", root_path=""):
    request = h11.Request(method=method, target=target, http_version=http_version,
                          headers=[(b"host", b"example.org")] + list(headers))
    base = environ_base(("127.0.0.1", 8000), ("10.0.0.1", 50123), root_path)
    return build_environ(request, io.BytesIO(b""), base)


def test_every_required_key_with_its_type():
    environ = environ_for(b"/a/b?x=1&y=%41", [(b"content-type", b"text/plain"), (b"content-length", b"5")],
                          method=b"POST")
    assert {key: environ[key] for key in CGI_KEYS} == {
        "REQUEST_METHOD": "POST", "SCRIPT_NAME": "", "PATH_INFO": "/a/b", "QUERY_STRING": "x=1&y=%41",
        "SERVER_NAME": "127.0.0.1", "SERVER_PORT": "8000", "SERVER_PROTOCOL": "HTTP/1.1"}
    assert environ["CONTENT_TYPE"] == "text/plain" and environ["CONTENT_LENGTH"] == "5"
    assert "HTTP_CONTENT_TYPE" not in environ and "HTTP_CONTENT_LENGTH" not in environ
    assert environ["HTTP_HOST"] == "example.org"
    assert environ["REMOTE_ADDR"] == "10.0.0.1" and environ["REMOTE_PORT"] == "50123"
    assert environ["wsgi.version"] == (1, 0)
    assert environ["wsgi.url_scheme"] == "http"
    assert environ["wsgi.multithread"] is True
    assert environ["wsgi.multiprocess"] is False
    assert environ["wsgi.run_once"] is False
    assert hasattr(environ["wsgi.input"], "read")
    assert hasattr(environ["wsgi.errors"], "write") and hasattr(environ["wsgi.errors"], "flush")
    assert environ["wsgi.file_wrapper"] is FileWrapper
    # PEP 3333: every CGI variable is a native string
    for key, value in environ.items():
        if not key.startswith("wsgi."):
            assert type(value) is str, key


def test_path_info_is_percent_decoded_and_latin1_round_trips():
    environ = environ_for(b"/caf%C3%A9/%E2%82%AC%20x?q=caf%C3%A9")
    assert environ["PATH_INFO"] == "/caf\xc3\xa9/\xe2\x82\xac x"
    assert environ["PATH_INFO"].encode("latin-1").decode("utf-8") == "/café/€ x"
    assert environ["QUERY_STRING"] == "q=caf%C3%A9"  # not decoded (PEP 3333 / CGI)
    assert environ_for(b"/%FF%00")["PATH_INFO"].encode("latin-1") == b"/\xff\x00"  # not UTF-8 at all


def test_script_name_is_the_root_path():
    environ = environ_for(b"/users/7", root_path="/api")
    assert environ["SCRIPT_NAME"] == "/api"
    assert environ["PATH_INFO"] == "/users/7"


def test_http_version_and_empty_query():
    environ = environ_for(b"/", http_version=b"1.0")
    assert environ["SERVER_PROTOCOL"] == "HTTP/1.0"
    assert environ["QUERY_STRING"] == ""
    assert "CONTENT_TYPE" not in environ and "CONTENT_LENGTH" not in environ


def test_repeated_headers_are_joined_with_commas_and_cookies_with_semicolons():
    environ = environ_for(headers=[(b"accept", b"text/html"), (b"x-tag", b"a"), (b"accept", b"*/*"),
                                   (b"x-tag", b"b"), (b"cookie", b"a=1"), (b"cookie", b"b=2")])
    assert environ["HTTP_ACCEPT"] == "text/html,*/*"
    assert environ["HTTP_X_TAG"] == "a,b"
    assert environ["HTTP_COOKIE"] == "a=1; b=2"


def test_header_names_in_any_case_give_the_same_keys():
    """RFC 9110 §5.1: field names are case-insensitive (the environ is built from h11's
    `raw_items()`, the names as the client wrote them)."""
    environ = environ_for(headers=[(b"Content-Type", b"text/plain"), (b"CONTENT-LENGTH", b"5"),
                                   (b"X-Tag", b"a"), (b"x-tag", b"b"), (b"Cookie", b"a=1"), (b"COOKIE", b"b=2"),
                                   (b"X_Forwarded_For", b"6.6.6.6")])
    assert environ["CONTENT_TYPE"] == "text/plain" and environ["CONTENT_LENGTH"] == "5"
    assert "HTTP_CONTENT_TYPE" not in environ and "HTTP_CONTENT_LENGTH" not in environ
    assert environ["HTTP_X_TAG"] == "a,b"
    assert environ["HTTP_COOKIE"] == "a=1; b=2"
    assert "HTTP_X_FORWARDED_FOR" not in environ


def test_header_values_are_latin1_and_names_with_underscores_are_dropped():
    environ = environ_for(headers=[(b"x-name", "café".encode("utf-8")), (b"x_forwarded_for", b"6.6.6.6")])
    assert environ["HTTP_X_NAME"].encode("latin-1").decode("utf-8") == "café"
    assert "HTTP_X_FORWARDED_FOR" not in environ


def test_absolute_form_target_gives_the_path_and_the_targets_host():
    """RFC 9112 §3.2.2, through the rewrite both servers make (`http11.origin_form`)."""
    for target, path, query in ((b"http://example.org/a%20b?x=1", "/a b", "x=1"), (b"http://example.org", "/", "")):
        request = origin_form(h11.Request(method="GET", target=target, headers=[("Host", "other")]))
        environ = build_environ(request, None, environ_base(("127.0.0.1", 80), None))
        assert (environ["PATH_INFO"], environ["QUERY_STRING"], environ["HTTP_HOST"]) == (path, query, "example.org")


def test_each_request_gets_its_own_environ():
    base = environ_base(("127.0.0.1", 80), None)
    request = h11.Request(method="GET", target="/", headers=[("host", "x"), ("x-a", "1")])
    first = build_environ(request, None, base)
    first["HTTP_X_A"] = "changed"
    assert build_environ(request, None, base)["HTTP_X_A"] == "1"
    assert "HTTP_X_A" not in base and "REMOTE_ADDR" not in base


# -- wsgi.input ---------------------------------------------------------------------------------

def body(*chunks: bytes) -> RequestBody:
    pieces = list(chunks)
    return RequestBody(lambda: pieces.pop(0) if pieces else b"")


def test_read_everything_and_then_nothing():
    stream = body(b"hel", b"lo ", b"world")
    assert stream.read() == b"hello world"
    assert stream.read() == b"" and stream.read(10) == b"" and stream.readline() == b""


def test_read_sizes_across_chunk_boundaries():
    stream = body(b"ab", b"cdef", b"g")
    assert stream.read(3) == b"abc"
    assert stream.read(0) == b""
    assert stream.read(2) == b"de"
    assert stream.read(None) == b"fg"


def test_readline_with_and_without_a_limit():
    stream = body(b"one\ntw", b"o\nthree is long\n", b"last")
    assert stream.readline() == b"one\n"
    assert stream.readline() == b"two\n"
    assert stream.readline(5) == b"three"
    assert stream.readline() == b" is long\n"
    assert stream.readline() == b"last"
    assert stream.readline() == b""


def test_iteration_and_readlines():
    assert list(body(b"a\nb", b"\nc")) == [b"a\n", b"b\n", b"c"]
    assert body(b"a\nb\n", b"c\n").readlines() == [b"a\n", b"b\n", b"c\n"]
    assert body(b"a\nb\n", b"c\n").readlines(2) == [b"a\n"]


def test_nothing_is_read_until_asked():
    calls = []

    def read_chunk():
        calls.append(1)
        return b""

    stream = RequestBody(read_chunk)
    assert calls == []
    assert stream.read(5) == b""
    assert stream.read(5) == b"" and calls == [1]  # the end is remembered


# -- wsgi.file_wrapper -----------------------------------------------------------------------------

def test_file_wrapper_iterates_blocks_and_closes_the_file():
    f = io.BytesIO(b"x" * 10)
    wrapper = FileWrapper(f, 4)
    assert list(wrapper) == [b"xxxx", b"xxxx", b"xx"]
    wrapper.close()
    assert f.closed


@pytest.mark.parametrize("filelike", [object(), io.BytesIO(b"")])
def test_file_wrapper_close_is_safe_without_a_close_method(filelike):
    FileWrapper(filelike).close()


def test_file_wrapper_offers_a_region_only_for_a_regular_binary_file(tmp_path):
    path = tmp_path / "f.txt"
    path.write_bytes(b"0123456789")
    with open(path, "rb") as f:
        f.seek(3)
        region = FileWrapper(f).region()
        assert (region.file, region.offset, region.count, len(region)) == (f, 3, 7, 7)
    with open(path, encoding="utf-8") as text:
        assert FileWrapper(text).region() is None  # bodies are bytes: iterate (and fail) instead
    assert FileWrapper(io.BytesIO(b"x")).region() is None
    assert FileWrapper(object()).region() is None
