"""--proxy-headers: the client address and scheme from Forwarded (RFC 7239) and
X-Forwarded-For/-Proto, believed only from a trusted peer. The parser alone, then both
servers through the command line, with raw sockets from 127.0.0.1."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from asgi_lab.proxy_headers import (ProxyHeadersMiddleware, TrustedProxies,
                                    WSGIProxyHeadersMiddleware, parse_forwarded, parse_node, resolve)
from rawhttp import exchange

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENV = {**os.environ, "PYTHONPATH": ROOT}


# -- the rule ------------------------------------------------------------------------------------

def test_parse_forwarded_rfc7239_examples():
    # RFC 7239 §4 and §7.1 examples: case-insensitive names, quoted IPv6 with a port, lists.
    assert parse_forwarded('for="_gazonk"') == [{"for": "_gazonk"}]
    assert parse_forwarded('For="[2001:db8:cafe::17]:4711"') == [{"for": "[2001:db8:cafe::17]:4711"}]
    assert parse_forwarded("for=192.0.2.60;proto=http;by=203.0.113.43") == [
        {"for": "192.0.2.60", "proto": "http", "by": "203.0.113.43"}]
    assert parse_forwarded("for=192.0.2.43, for=198.51.100.17") == [
        {"for": "192.0.2.43"}, {"for": "198.51.100.17"}]
    assert parse_forwarded('for="a\\"b";proto=https') == [{"for": 'a"b', "proto": "https"}]


def test_parse_node():
    assert parse_node("192.0.2.43:47011") == ("192.0.2.43", 47011)
    assert parse_node("[2001:db8:cafe::17]:4711") == ("2001:db8:cafe::17", 4711)
    assert parse_node("[2001:db8:cafe::17]") == ("2001:db8:cafe::17", 0)
    assert parse_node("unknown") == ("unknown", 0)
    assert parse_node("_hidden:_port") == ("_hidden", 0)


def test_resolve_trusts_only_listed_peers_and_walks_from_the_right():
    local = TrustedProxies("127.0.0.1, 10.0.0.0/8")
    headers = {"x-forwarded-for": "203.0.113.9, 198.51.100.1, 10.1.1.1", "x-forwarded-proto": "https"}
    # 10.1.1.1 is a trusted proxy, 198.51.100.1 is not: that is the client (the left-most
    # entry could be anything the client wrote itself).
    assert resolve(headers, "127.0.0.1", local) == (("198.51.100.1", 0), "https")
    assert resolve(headers, "192.0.2.1", local) == (None, None)  # an untrusted peer
    assert resolve(headers, None, local) == (None, None)          # no peer address at all
    # "*": every hop is a trusted proxy, so the left-most entry is the client.
    assert resolve(headers, "192.0.2.1", TrustedProxies("*")) == (("203.0.113.9", 0), "https")
    everyone_trusted = {"x-forwarded-for": "10.0.0.5, 10.0.0.6"}
    assert resolve(everyone_trusted, "127.0.0.1", local) == (("10.0.0.5", 0), None)


def test_forwarded_wins_over_x_forwarded_and_gives_the_proto_of_its_element():
    headers = {"forwarded": 'for=203.0.113.9;proto=https, for="[::1]:99";proto=http',
               "x-forwarded-for": "198.51.100.7", "x-forwarded-proto": "http"}
    assert resolve(headers, "127.0.0.1", TrustedProxies("127.0.0.1,::1")) == (("203.0.113.9", 0), "https")
    assert resolve({"forwarded": "proto=https"}, "127.0.0.1", TrustedProxies()) == (None, None)
    assert resolve({"x-forwarded-proto": "gopher"}, "127.0.0.1", TrustedProxies()) == (None, None)


def test_asgi_middleware_maps_https_to_wss_for_a_websocket():
    seen = {}

    async def app(scope, receive, send):
        seen.update(scope)

    scope = {"type": "websocket", "scheme": "ws", "client": ("127.0.0.1", 5000),
             "headers": [(b"x-forwarded-proto", b"https"), (b"x-forwarded-for", b"203.0.113.9")]}
    asyncio.run(ProxyHeadersMiddleware(app)(scope, None, None))
    assert seen["scheme"] == "wss" and seen["client"] == ("203.0.113.9", 0)
    assert scope["client"] == ("127.0.0.1", 5000)  # the server's own scope is not changed


def test_wsgi_middleware_rewrites_the_environ():
    environ = {"REMOTE_ADDR": "127.0.0.1", "wsgi.url_scheme": "http",
               "HTTP_FORWARDED": 'for="[2001:db8::1]:4711";proto=https'}
    WSGIProxyHeadersMiddleware(lambda e, s: [], "127.0.0.1")(environ, None)
    assert (environ["REMOTE_ADDR"], environ["REMOTE_PORT"], environ["wsgi.url_scheme"]) == \
        ("2001:db8::1", "4711", "https")


# -- both servers, through the command line --------------------------------------------------------

APPS = textwrap.dedent("""
    import json

    async def asgi_app(scope, receive, send):
        if scope["type"] != "http":
            return
        body = json.dumps({"client": scope["client"][0], "scheme": scope["scheme"]}).encode()
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})

    def wsgi_app(environ, start_response):
        body = json.dumps({"client": environ["REMOTE_ADDR"],
                           "scheme": environ["wsgi.url_scheme"]}).encode()
        start_response("200 OK", [("content-length", str(len(body)))])
        return [body]
""")


def serve(tmp_path, command: str, *options: str):
    (tmp_path / "whoami.py").write_text(APPS)
    proc = subprocess.Popen([sys.executable, "-m", "asgi_lab", command, f"whoami:{command}_app",
                             "--port", "0", "--no-access-log", *options], cwd=tmp_path, env=ENV,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        match = re.search(r"serving \w+ app on http://127\.0\.0\.1:(\d+)", line)
        if match:
            return proc, ("127.0.0.1", int(match.group(1)))
        if not line:
            break
    proc.kill()
    raise AssertionError("the server did not start")


def ask(address, *headers: str) -> dict:
    request = "GET / HTTP/1.1\r\nHost: example.org\r\nConnection: close\r\n"
    raw = exchange(address, (request + "".join(f"{h}\r\n" for h in headers) + "\r\n").encode())
    return json.loads(raw.split(b"\r\n\r\n", 1)[1])


@pytest.mark.parametrize("command", ["asgi", "wsgi"])
def test_a_trusted_peer_sets_client_and_scheme(tmp_path, command):
    proc, address = serve(tmp_path, command, "--proxy-headers")  # trusts 127.0.0.1: us
    try:
        assert ask(address, "X-Forwarded-For: 203.0.113.9", "X-Forwarded-Proto: https") == \
            {"client": "203.0.113.9", "scheme": "https"}
        assert ask(address, "Forwarded: for=198.51.100.17;proto=https") == \
            {"client": "198.51.100.17", "scheme": "https"}
        assert ask(address) == {"client": "127.0.0.1", "scheme": "http"}
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=20)
    assert proc.returncode == 0


@pytest.mark.parametrize("command", ["asgi", "wsgi"])
def test_an_untrusted_peer_is_ignored(tmp_path, command):
    # From the server's side we are 127.0.0.1; trusting only 10.9.8.7 makes us an untrusted
    # peer, as a client on the internet sending forged headers would be.
    proc, address = serve(tmp_path, command, "--proxy-headers", "--forwarded-allow-ips", "10.9.8.7")
    try:
        assert ask(address, "X-Forwarded-For: 203.0.113.9", "X-Forwarded-Proto: https") == \
            {"client": "127.0.0.1", "scheme": "http"}
        assert ask(address, "Forwarded: for=198.51.100.17;proto=https") == \
            {"client": "127.0.0.1", "scheme": "http"}
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=20)


@pytest.mark.parametrize("command", ["asgi", "wsgi"])
def test_without_the_option_the_headers_are_just_headers(tmp_path, command):
    proc, address = serve(tmp_path, command)
    try:
        assert ask(address, "X-Forwarded-For: 203.0.113.9", "X-Forwarded-Proto: https") == \
            {"client": "127.0.0.1", "scheme": "http"}
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=20)


def test_a_bad_allow_list_is_one_error_line(tmp_path):
    (tmp_path / "whoami.py").write_text(APPS)
    result = subprocess.run([sys.executable, "-m", "asgi_lab", "asgi", "whoami:asgi_app",
                             "--proxy-headers", "--forwarded-allow-ips", "not-an-ip"],
                            cwd=tmp_path, env=ENV, capture_output=True, text=True, timeout=30)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "--forwarded-allow-ips" in result.stderr
