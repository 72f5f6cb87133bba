"""`--uds PATH` on both servers (`asgi_lab/unix_socket.py`): httpx over a Unix socket, raw
sockets, what the scope and environ say, a stale socket file removed at start, a live one
never stolen, ours removed at exit, proxy headers from a Unix-socket peer, and TLS on top."""

from __future__ import annotations

import errno
import os
import re
import signal
import socket
import ssl
import subprocess
import sys
import textwrap
import time

import httpx
import pytest

from asgi_lab import serve_in_background
from asgi_lab.proxy_headers import ProxyHeadersMiddleware, WSGIProxyHeadersMiddleware
from asgi_lab.unix_socket import bind_unix_socket
from processes import ENV, Output

KINDS = ["asgi", "wsgi"]


async def asgi_app(scope, receive, send):
    if scope["type"] != "http":
        return
    await send({"type": "http.response.start", "status": 200, "headers": []})
    text = repr((scope["scheme"], scope["client"], scope["server"]))
    await send({"type": "http.response.body", "body": text.encode()})


def wsgi_app(environ, start_response):
    start_response("200 OK", [])
    keys = ("wsgi.url_scheme", "REMOTE_ADDR", "REMOTE_PORT", "SERVER_NAME", "SERVER_PORT")
    return [repr(tuple(environ.get(key) for key in keys)).encode()]


APPS = {"asgi": asgi_app, "wsgi": wsgi_app}


@pytest.fixture
def path(tmp_path):
    return str(tmp_path / "app.sock")


def expected(kind: str, path: str, scheme: str = "http") -> str:
    if kind == "asgi":  # ASGI www spec: server (path, None); a Unix-socket peer has no address
        return repr((scheme, None, (path, None)))
    return repr((scheme, "", None, "localhost", "443" if scheme == "https" else "80"))


@pytest.mark.parametrize("kind", KINDS)
def test_httpx_and_a_raw_socket_over_a_unix_socket(kind, path):
    with serve_in_background(APPS[kind], kind, uds=path) as server:
        assert os.path.exists(path)
        assert server.address == (path, None)
        assert server.url == "http+unix://" + path.replace("/", "%2F")
        with httpx.Client(transport=httpx.HTTPTransport(uds=path), timeout=5) as client:
            for _ in range(3):  # keep-alive on one connection
                assert client.get("http://localhost/").text == expected(kind, path)
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(5)
            sock.connect(path)
            sock.sendall(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n"
                         b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
            data = b""
            while chunk := sock.recv(65536):
                data += chunk
        assert data.count(b"HTTP/1.1 200 OK\r\n") == 2
        assert expected(kind, path).encode() in data
    assert not os.path.exists(path)  # removed at exit


@pytest.mark.parametrize("kind", KINDS)
def test_a_stale_socket_file_is_removed_at_start(kind, path):
    crashed = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    crashed.bind(path)  # a server that died without removing its file
    crashed.close()
    assert os.path.exists(path)
    with serve_in_background(APPS[kind], kind, uds=path):
        with httpx.Client(transport=httpx.HTTPTransport(uds=path), timeout=5) as client:
            assert client.get("http://localhost/").status_code == 200
    assert not os.path.exists(path)


def test_a_live_socket_or_a_regular_file_is_never_removed(path, tmp_path):
    with bind_unix_socket(path):  # a server listens there
        with pytest.raises(OSError) as raised:
            serve_in_background(wsgi_app, "wsgi", uds=path)
        assert raised.value.errno == errno.EADDRINUSE
        assert os.path.exists(path)
    os.remove(path)
    regular = tmp_path / "notes.txt"
    regular.write_text("mine")
    with pytest.raises(OSError) as raised:
        serve_in_background(asgi_app, "asgi", uds=str(regular))
    assert raised.value.errno == errno.EEXIST
    assert regular.read_text() == "mine"


@pytest.mark.parametrize("kind", KINDS)
def test_a_unix_socket_peer_is_a_trusted_proxy(kind, path):
    """Documented in proxy_headers.py: a peer on a Unix socket is always trusted (gunicorn's
    rule), even when --forwarded-allow-ips names other addresses only."""
    wrap = ProxyHeadersMiddleware if kind == "asgi" else WSGIProxyHeadersMiddleware
    app = wrap(APPS[kind], "10.0.0.1")
    headers = {"x-forwarded-for": "203.0.113.7", "x-forwarded-proto": "https"}
    with serve_in_background(app, kind, uds=path) as server:
        with httpx.Client(transport=httpx.HTTPTransport(uds=path), timeout=5) as client:
            text = client.get("http://localhost/", headers=headers).text
    if kind == "asgi":
        assert text == repr(("https", ("203.0.113.7", 0), (path, None)))
    else:
        assert text == repr(("https", "203.0.113.7", None, "localhost", "80"))
    # The same headers from a TCP peer that is not listed change nothing.
    with serve_in_background(app, kind) as server:
        text = httpx.get(server.url + "/", headers=headers, timeout=5).text
    assert "203.0.113.7" not in text and "https" not in text


@pytest.mark.parametrize("kind", KINDS)
def test_tls_over_a_unix_socket(kind, path, tmp_path):
    trustme = pytest.importorskip("trustme")
    ca = trustme.CA()
    cert = ca.issue_cert("localhost")
    certfile, keyfile = str(tmp_path / "cert.pem"), str(tmp_path / "key.pem")
    cert.cert_chain_pems[0].write_to_path(certfile)
    cert.private_key_pem.write_to_path(keyfile)
    context = ssl.create_default_context()
    ca.configure_trust(context)
    with serve_in_background(APPS[kind], kind, uds=path, ssl_certfile=certfile,
                             ssl_keyfile=keyfile) as server:
        assert server.url.startswith("https+unix://")
        transport = httpx.HTTPTransport(uds=path, verify=context)
        with httpx.Client(transport=transport, timeout=5) as client:
            assert client.get("https://localhost/").text == expected(kind, path, "https")


SERVED = textwrap.dedent("""
    async def asgi_app(scope, receive, send):
        if scope["type"] == "lifespan":
            await receive()
            await send({"type": "lifespan.startup.failed", "message": "no database"})
            return
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"asgi"})

    def wsgi_app(environ, start_response):
        start_response("200 OK", [])
        return [b"wsgi"]
""")


@pytest.mark.parametrize("kind", KINDS)
def test_the_command_line_serves_on_a_unix_socket_and_removes_it_at_exit(kind, tmp_path):
    (tmp_path / "apps.py").write_text(SERVED)
    path = str(tmp_path / "cli.sock")
    options = ["--lifespan", "off"] if kind == "asgi" else []
    proc = subprocess.Popen([sys.executable, "-m", "asgi_lab", kind, f"apps:{kind}_app", "--uds", path,
                             *options], cwd=tmp_path, env=ENV, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        lines = []
        for line in proc.stdout:
            lines.append(line)
            if re.search(r"serving \w+ app on unix socket " + re.escape(path), line):
                break
        else:
            raise AssertionError("no 'serving' line:\n" + "".join(lines))
        with httpx.Client(transport=httpx.HTTPTransport(uds=path), timeout=5) as client:
            assert client.get("http://localhost/").text == kind
    finally:
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=20)
    assert proc.returncode == 0, "".join(lines) + out
    assert not os.path.exists(path)


def test_the_socket_file_is_removed_when_the_lifespan_startup_fails(tmp_path):
    (tmp_path / "apps.py").write_text(SERVED)
    path = str(tmp_path / "cli.sock")
    done = subprocess.run([sys.executable, "-m", "asgi_lab", "asgi", "apps:asgi_app", "--uds", path],
                          cwd=tmp_path, env=ENV, capture_output=True, text=True, timeout=30)
    assert done.returncode == 3, done.stderr  # loader.EXIT_LIFESPAN_FAILED
    assert not os.path.exists(path)


def get_over(path: str, expected: str, timeout: float = 20.0) -> None:
    """GET / over the Unix socket until it answers `expected` (a restart in between)."""
    deadline = time.monotonic() + timeout
    text = None
    while time.monotonic() < deadline:
        try:
            with httpx.Client(transport=httpx.HTTPTransport(uds=path), timeout=5) as client:
                text = client.get("http://localhost/").text
        except httpx.TransportError:
            pass
        if text == expected:
            return
        time.sleep(0.05)
    raise AssertionError(f"never {expected!r} (last: {text!r})")


def test_reload_keeps_the_supervisors_socket_file_across_restarts(tmp_path):
    """--reload: the supervisor binds the Unix socket and removes it at the end; the server
    processes it starts (with --fd) serve on it and must not remove it when they restart."""
    module = tmp_path / "live.py"
    module.write_text(SERVED.replace('b"asgi"', 'b"v1"'))
    path = str(tmp_path / "reload.sock")
    proc = subprocess.Popen([sys.executable, "-m", "asgi_lab", "asgi", "live:asgi_app", "--uds", path,
                             "--lifespan", "off", "--reload"], cwd=tmp_path, env=ENV,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    output = Output(proc)
    try:
        output.wait_for("serving ASGI app on unix socket")
        get_over(path, "v1")
        module.write_text(SERVED.replace('b"asgi"', 'b"v2"'))
        output.wait_for("serving ASGI app on unix socket", count=2)
        get_over(path, "v2")  # the new process serves on the same, still existing, file
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
    assert proc.returncode == 0, "".join(output.lines)
    assert not os.path.exists(path)


@pytest.mark.parametrize("worker, target", [("ASGIWorker", "apps:asgi_app"),
                                            ("WSGIWorker", "apps:wsgi_app")])
def test_gunicorn_binds_a_unix_socket_for_our_workers(worker, target, tmp_path):
    pytest.importorskip("gunicorn")
    from gunicorn.config import Config as GunicornConfig

    no_control = ["--no-control-socket"] if "control_socket_disable" in GunicornConfig().settings else []
    (tmp_path / "apps.py").write_text(SERVED.replace('"lifespan.startup.failed", "message": "no database"',
                                                     '"lifespan.startup.complete"'))
    path = str(tmp_path / "gunicorn.sock")
    proc = subprocess.Popen([sys.executable, "-m", "gunicorn", "-k", f"asgi_lab.workers.{worker}",
                             "-w", "1", "-b", f"unix:{path}", *no_control, target], cwd=tmp_path,
                            env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    output = Output(proc)
    try:
        output.wait_for("worker serving")
        get_over(path, "asgi" if worker == "ASGIWorker" else "wsgi")
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
    assert not os.path.exists(path), "".join(output.lines)  # gunicorn removes its own
