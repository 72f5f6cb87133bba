"""TLS on both servers (`asgi_lab/tls.py`, `asgi_lab/wsgi/tls.py`), with a certificate made by
`trustme` and real clients: httpx (HTTPS, keep-alive, streaming, an upload), websockets (WSS),
a raw plain-HTTP client on the TLS port, a client that never finishes its handshake, the
command line, and gunicorn's `--certfile/--keyfile` passed to our worker classes."""

from __future__ import annotations

import asyncio
import logging
import os
import re
import signal
import socket
import ssl
import subprocess
import sys
import textwrap
import threading
import time

import httpx
import pytest

from asgi_lab import loader, serve_in_background
from rawhttp import read_until_closed

trustme = pytest.importorskip("trustme")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENV = {**os.environ, "PYTHONPATH": ROOT}
KINDS = ["asgi", "wsgi"]


# -- a certificate authority of our own, and a certificate for 127.0.0.1 -------------------------

@pytest.fixture(scope="module")
def ca():
    return trustme.CA()


@pytest.fixture(scope="module")
def cert_files(ca, tmp_path_factory):
    """(certfile, keyfile) for 127.0.0.1 and localhost, signed by `ca`."""
    folder = tmp_path_factory.mktemp("tls")
    cert = ca.issue_cert("127.0.0.1", "localhost")
    certfile, keyfile = folder / "cert.pem", folder / "key.pem"
    cert.cert_chain_pems[0].write_to_path(str(certfile))
    for pem in cert.cert_chain_pems[1:]:
        pem.write_to_path(str(certfile), append=True)
    cert.private_key_pem.write_to_path(str(keyfile))
    return str(certfile), str(keyfile)


@pytest.fixture(scope="module")
def client_context(ca):
    """What a client that trusts our CA uses (and nothing else: no system CAs needed)."""
    context = ssl.create_default_context()
    ca.configure_trust(context)
    return context


# -- the apps ---------------------------------------------------------------------------------

async def asgi_app(scope, receive, send):
    """/stream: three chunks (/slow: 6 chunks 0.1 s apart); /upload: the body's length; else
    the scheme and client."""
    if scope["type"] == "websocket":
        await receive()  # websocket.connect
        await send({"type": "websocket.accept"})
        await send({"type": "websocket.send", "text": f"scheme={scope['scheme']}"})
        while True:
            message = await receive()
            if message["type"] == "websocket.disconnect":
                return
            await send({"type": "websocket.send", "text": "echo:" + message["text"]})
    if scope["type"] != "http":
        return
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    await send({"type": "http.response.start", "status": 200, "headers": []})
    if scope["path"] == "/slow":
        for i in range(6):
            await send({"type": "http.response.body", "body": b"chunk%d;" % i, "more_body": True})
            await asyncio.sleep(0.1)
        await send({"type": "http.response.body", "body": b""})
        return
    if scope["path"] == "/stream":
        for i in range(3):
            await send({"type": "http.response.body", "body": b"chunk%d;" % i, "more_body": True})
        await send({"type": "http.response.body", "body": b""})
        return
    text = f"{scope['scheme']} {scope['client'][1]} {len(body)}"
    await send({"type": "http.response.body", "body": text.encode()})


def wsgi_app(environ, start_response):
    body = environ["wsgi.input"].read()
    start_response("200 OK", [("content-type", "text/plain")])
    if environ["PATH_INFO"] == "/stream":
        return (b"chunk%d;" % i for i in range(3))
    if environ["PATH_INFO"] == "/slow":
        return (time.sleep(0.1 * (i > 0)) or b"chunk%d;" % i for i in range(6))
    return [f"{environ['wsgi.url_scheme']} {environ['REMOTE_PORT']} {len(body)}".encode()]


APPS = {"asgi": asgi_app, "wsgi": wsgi_app}


def serve(kind, cert_files, **settings):
    certfile, keyfile = cert_files
    settings.setdefault("threads", 2)
    if kind == "asgi":
        settings.pop("threads")
    return serve_in_background(APPS[kind], kind, ssl_certfile=certfile, ssl_keyfile=keyfile,
                               **settings)


# -- HTTPS with a real client -------------------------------------------------------------------

@pytest.mark.parametrize("kind, threads", [("asgi", 0), ("wsgi", 2), ("wsgi", 0)])
def test_https_keep_alive_streaming_and_upload(kind, threads, cert_files, client_context):
    with serve(kind, cert_files, threads=threads) as server:
        assert server.url.startswith("https://127.0.0.1:")
        with httpx.Client(verify=client_context, timeout=10) as client:
            answers = [client.get(server.url + "/").text.split() for _ in range(3)]
            assert [scheme for scheme, _, _ in answers] == ["https"] * 3  # scope / wsgi.url_scheme
            assert len({port for _, port, _ in answers}) == 1  # one keep-alive connection
            with client.stream("GET", server.url + "/stream") as response:
                assert response.http_version == "HTTP/1.1"
                assert response.headers["transfer-encoding"] == "chunked"
                assert b"".join(response.iter_raw()) == b"chunk0;chunk1;chunk2;"
            upload = os.urandom(1024 * 1024)  # many TLS records, read in pieces by the server
            scheme, _, size = client.post(server.url + "/upload", content=upload).text.split()
            assert (scheme, size) == ("https", str(len(upload)))


@pytest.mark.parametrize("kind", KINDS)
def test_tls_1_2_at_least_and_alpn_http_1_1(kind, ca, cert_files):
    with serve(kind, cert_files) as server:
        context = ssl.create_default_context()
        ca.configure_trust(context)
        context.set_alpn_protocols(["h2", "http/1.1"])
        with socket.create_connection(server.address, timeout=5) as raw:
            with context.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
                assert tls.selected_alpn_protocol() == "http/1.1"  # never h2: we speak HTTP/1.1
                assert tls.version() in ("TLSv1.2", "TLSv1.3")
                tls.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                data = b""
                while chunk := tls.recv(65536):
                    data += chunk
        assert data.startswith(b"HTTP/1.1 200 ")
        assert server.server.ssl_context.minimum_version == ssl.TLSVersion.TLSv1_2  # RFC 8996
        context = ssl.create_default_context()
        ca.configure_trust(context)
        context.maximum_version = ssl.TLSVersion.TLSv1_2  # a client that knows no TLS 1.3
        with socket.create_connection(server.address, timeout=5) as raw:
            with context.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
                assert tls.version() == "TLSv1.2"


@pytest.mark.parametrize("kind", KINDS)
def test_shutdown_finishes_a_download_and_does_not_wait_for_idle_tls_clients(kind, cert_files,
                                                                           client_context):
    server = serve(kind, cert_files, timeout_graceful_shutdown=5)
    idle = httpx.Client(verify=client_context, timeout=10)
    assert idle.get(server.url + "/").status_code == 200  # stays in its pool, never reads again
    body: list[bytes] = []
    with httpx.Client(verify=client_context, timeout=10) as client:
        with client.stream("GET", server.url + "/slow") as response:
            chunks = response.iter_raw()
            body.append(next(chunks))
            stopping = threading.Thread(target=server.stop)
            started = time.monotonic()
            stopping.start()
            body.extend(chunks)
    stopping.join(10)
    elapsed = time.monotonic() - started
    idle.close()
    assert b"".join(body) == b"".join(b"chunk%d;" % i for i in range(6))  # complete
    assert elapsed < 2.5, elapsed  # the idle TLS connection did not hold the shutdown up


def test_wss_echo_on_the_asgi_server(cert_files, client_context):
    from websockets.sync.client import connect

    with serve("asgi", cert_files) as server:
        assert server.ws_url.startswith("wss://")
        with connect(server.ws_url + "/ws", ssl=client_context, open_timeout=5) as websocket:
            assert websocket.recv(timeout=5) == "scheme=wss"
            for text in ("one", "two"):
                websocket.send(text)
                assert websocket.recv(timeout=5) == "echo:" + text


# -- clients that do not speak TLS, or never finish ---------------------------------------------

@pytest.mark.parametrize("kind", KINDS)
def test_plain_http_on_the_tls_port_is_one_line_and_the_server_goes_on(kind, cert_files,
                                                                      client_context, caplog):
    caplog.set_level(logging.DEBUG, logger="asgi_lab")
    with serve(kind, cert_files) as server:
        for _ in range(2):
            with socket.create_connection(server.address, timeout=5) as sock:
                sock.sendall(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
                assert not read_until_closed(sock).startswith(b"HTTP/1.1 200")  # closed, no answer
        lines = [r for r in caplog.records if "TLS handshake failed" in r.getMessage()]
        assert len(lines) == 2, [r.getMessage() for r in caplog.records]
        assert all(r.levelno == logging.INFO and "plain HTTP" in r.getMessage() and
                   "\n" not in r.getMessage() and r.exc_info is None for r in lines)
        response = httpx.get(server.url + "/", verify=client_context, timeout=5)
        assert response.text.startswith("https ")


@pytest.mark.parametrize("kind", KINDS)
def test_a_client_that_does_not_trust_our_certificate_is_one_line(kind, cert_files, client_context):
    lines: list[str] = []
    logged = threading.Event()

    class Watch(logging.Handler):  # the client gives up first; the server logs when it reads the alert
        def emit(self, record: logging.LogRecord) -> None:
            if "TLS handshake failed" in record.getMessage():
                lines.append(record.getMessage())
                logged.set()

    logger = logging.getLogger("asgi_lab.error")
    handler, level = Watch(), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    try:
        with serve(kind, cert_files) as server:
            with pytest.raises(httpx.ConnectError):
                httpx.get(server.url + "/", verify=ssl.create_default_context(), timeout=5)  # not our CA
            assert logged.wait(5)
            assert httpx.get(server.url + "/", verify=client_context, timeout=5).status_code == 200
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
    assert len(lines) == 1 and "does not trust our certificate" in lines[0], lines


@pytest.mark.parametrize("kind", KINDS)
def test_a_client_that_never_finishes_its_handshake_is_closed_by_the_head_timeout(
        kind, cert_files, client_context):
    # Idle connections would wait 30 s: the 0.5 s that closes this one is the head's deadline.
    # One WSGI worker: the stuck handshake must not hold it (a second client is served).
    with serve(kind, cert_files, threads=1, timeout_request_header=0.5,
               timeout_keep_alive=30) as server:
        with socket.create_connection(server.address, timeout=10) as stuck:
            stuck.sendall(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03")  # a ClientHello's start
            started = time.monotonic()
            response = httpx.get(server.url + "/", verify=client_context, timeout=5)
            assert response.status_code == 200
            assert read_until_closed(stuck) == b""
            elapsed = time.monotonic() - started
        assert 0.3 < elapsed < 5, elapsed
        assert httpx.get(server.url + "/", verify=client_context, timeout=5).status_code == 200


# -- the Python API and the command line --------------------------------------------------------

def test_an_encrypted_key_with_its_password(ca, tmp_path, client_context):
    from cryptography.hazmat.primitives import serialization

    cert = ca.issue_cert("127.0.0.1")
    certfile, keyfile = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert.cert_chain_pems[0].write_to_path(str(certfile))
    key = serialization.load_pem_private_key(cert.private_key_pem.bytes(), password=None)
    keyfile.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                          serialization.PrivateFormat.PKCS8,
                                          serialization.BestAvailableEncryption(b"s3cret")))
    with serve_in_background(wsgi_app, "wsgi", ssl_certfile=str(certfile), ssl_keyfile=str(keyfile),
                             ssl_keyfile_password="s3cret") as server:
        assert httpx.get(server.url + "/", verify=client_context, timeout=5).text.startswith("https ")
    with pytest.raises(ssl.SSLError):
        serve_in_background(wsgi_app, "wsgi", ssl_certfile=str(certfile), ssl_keyfile=str(keyfile),
                            ssl_keyfile_password="wrong")


CLI_APP = textwrap.dedent("""
    async def asgi_app(scope, receive, send):
        if scope["type"] != "http":
            return
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": scope["scheme"].encode()})

    def wsgi_app(environ, start_response):
        start_response("200 OK", [])
        return [environ["wsgi.url_scheme"].encode()]
""")


@pytest.mark.parametrize("kind", KINDS)
def test_the_command_line_serves_https(kind, cert_files, client_context, tmp_path):
    (tmp_path / "apps.py").write_text(CLI_APP)
    certfile, keyfile = cert_files
    proc = subprocess.Popen([sys.executable, "-m", "asgi_lab", kind, f"apps:{kind}_app", "--port", "0",
                             "--ssl-certfile", certfile, "--ssl-keyfile", keyfile],
                            cwd=tmp_path, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    try:
        lines = []
        for line in proc.stdout:
            lines.append(line)
            if match := re.search(r"serving \w+ app on (https://127\.0\.0\.1:\d+)", line):
                break
        else:
            raise AssertionError("no 'serving' line:\n" + "".join(lines))
        response = httpx.get(match.group(1) + "/", verify=client_context, timeout=5)
        assert response.text == "https"
    finally:
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=20)
    assert proc.returncode == 0, "".join(lines) + out


def test_the_command_line_refuses_a_bad_certificate_in_one_line(tmp_path, cert_files):
    (tmp_path / "apps.py").write_text(CLI_APP)
    (tmp_path / "not-a-cert.pem").write_text("hello\n")
    for files in (["--ssl-certfile", "missing.pem"], ["--ssl-certfile", "not-a-cert.pem"],
                  ["--ssl-keyfile", cert_files[1]]):
        done = subprocess.run([sys.executable, "-m", "asgi_lab", "asgi", "apps:asgi_app", "--port", "0",
                               *files], cwd=tmp_path, env=ENV, capture_output=True, text=True,
                              timeout=30)
        assert done.returncode == loader.EXIT_TLS, done.stderr
        errors = [line for line in done.stderr.splitlines() if line.startswith("ERROR")]
        assert len(errors) == 1 and "Traceback" not in done.stderr, done.stderr


# -- gunicorn's --certfile / --keyfile, served by our worker classes ------------------------------

@pytest.mark.parametrize("worker, target", [("ASGIWorker", "apps:asgi_app"),
                                            ("WSGIWorker", "apps:wsgi_app")])
def test_gunicorn_certfile_and_keyfile_reach_our_workers(worker, target, cert_files, client_context,
                                                         tmp_path):
    pytest.importorskip("gunicorn")
    from gunicorn.config import Config as GunicornConfig

    no_control = ["--no-control-socket"] if "control_socket_disable" in GunicornConfig().settings else []
    (tmp_path / "apps.py").write_text(CLI_APP)
    certfile, keyfile = cert_files
    proc = subprocess.Popen([sys.executable, "-m", "gunicorn", "-k", f"asgi_lab.workers.{worker}",
                             "-w", "1", "-b", "127.0.0.1:0", *no_control, "--certfile", certfile,
                             "--keyfile", keyfile, target],
                            cwd=tmp_path, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    lines: list[str] = []
    threading.Thread(target=lambda: lines.extend(proc.stdout), daemon=True).start()
    try:
        deadline = time.monotonic() + 20
        port = None
        while time.monotonic() < deadline and not (port and any("worker serving" in l for l in lines)):
            for line in list(lines):
                if match := re.search(r"Listening at: https?://127\.0\.0\.1:(\d+)", line):
                    port = match.group(1)
            time.sleep(0.05)
        assert port, "".join(lines)
        response = httpx.get(f"https://127.0.0.1:{port}/", verify=client_context, timeout=5)
        assert response.text == "https"
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
