"""The command line (signals, --port 0) and the background runner (scripts, Jupyter-like loops)."""

from __future__ import annotations

import asyncio
import errno
import logging
import signal
import socket
import subprocess
import sys
import textwrap
import time

import httpx
import pytest

from asgi_lab import running_servers, serve_in_background
from asgi_lab.apps.hello import app as hello
from processes import ROOT, start_cli


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_cli_prints_its_real_address_and_stops_gracefully(sig, tmp_path):
    (tmp_path / "slowapp.py").write_text(textwrap.dedent("""
        import asyncio
        async def app(scope, receive, send):
            if scope["type"] == "lifespan":
                while True:
                    message = await receive()
                    if message["type"] == "lifespan.startup":
                        await send({"type": "lifespan.startup.complete"})
                    else:
                        print("lifespan shutdown ran", flush=True)
                        await send({"type": "lifespan.shutdown.complete"})
                        return
            await asyncio.sleep(0.5)   # a request in flight when the signal arrives
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b"finished"})
    """))
    proc, url, _ = start_cli("asgi", "slowapp:app", "--port", "0", cwd=str(tmp_path))
    try:
        assert not url.endswith(":0")
        with httpx.Client(timeout=10) as client:
            import threading
            result = {}
            t = threading.Thread(target=lambda: result.setdefault("r", client.get(url)))
            t.start()
            time.sleep(0.2)
            proc.send_signal(sig)
            t.join(10)
        assert result["r"].text == "finished"  # the in-flight request finished
        out, _ = proc.communicate(timeout=15)
        assert proc.returncode == 0
        assert "lifespan shutdown ran" in out
    finally:
        if proc.poll() is None:
            proc.kill()


def test_cli_reports_a_bad_app_path_readably():
    result = subprocess.run([sys.executable, "-m", "asgi_lab", "asgi", "no_such_module:app"],
                            capture_output=True, text=True, timeout=30, cwd=ROOT)
    assert result.returncode != 0
    assert "could not import module 'no_such_module'" in result.stderr
    assert "Traceback" not in result.stderr


def test_background_server_from_a_plain_script():
    with serve_in_background(hello, name="test-bg") as server:
        assert server.url.startswith("http://127.0.0.1:")
        url = server.url
        assert httpx.get(url).text == "Hello, world!"
    with pytest.raises(httpx.ConnectError):
        httpx.get(url)


def test_background_server_from_inside_a_running_event_loop():
    """What a Jupyter cell does: the kernel's loop is already running."""
    async def cell():
        server = serve_in_background(hello, name="test-in-loop")
        try:
            async with httpx.AsyncClient() as client:
                return (await client.get(server.url)).text
        finally:
            server.stop()

    assert asyncio.run(cell()) == "Hello, world!"


def test_rerunning_a_cell_replaces_the_server_and_frees_its_port():
    first = serve_in_background(hello, name="test-cell")
    port = first.port
    second = serve_in_background(hello, name="test-cell")  # the same cell, run again
    try:
        assert [s for s in running_servers() if s.name == "test-cell"] == [second]
        with socket.socket() as probe:  # the first server's port is free again
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind(("127.0.0.1", port))
        assert httpx.get(second.url).status_code == 200
    finally:
        second.stop()
    assert not [s for s in running_servers() if s.name == "test-cell"]


def test_a_second_sigint_cuts_a_slow_lifespan_shutdown_short(tmp_path):
    (tmp_path / "slowstop.py").write_text(textwrap.dedent("""
        import asyncio
        async def app(scope, receive, send):
            assert scope["type"] == "lifespan"
            await receive()
            await send({"type": "lifespan.startup.complete"})
            await receive()
            await asyncio.sleep(60)   # a shutdown that would take a minute
    """))
    proc, url, _ = start_cli("asgi", "slowstop:app", "--port", "0", cwd=str(tmp_path))
    try:
        proc.send_signal(signal.SIGINT)
        time.sleep(0.5)
        second = time.monotonic()
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=10)
        assert time.monotonic() - second < 5
        assert proc.returncode == 0
        assert "cut short" in out and "Traceback" not in out
    finally:
        if proc.poll() is None:
            proc.kill()


CELL = """
from fastapi import FastAPI

app = FastAPI()

@app.get("/")
def home():
    return {"built": BUILT}

server = serve_in_background(app)
"""


def test_a_cell_that_rebuilds_a_fastapi_app_replaces_its_server_and_says_so(caplog):
    """The same cell run twice: a new FastAPI object each time (a new memory address), no
    name=. The second run must replace the first server, and log one INFO line."""
    first, second = {"serve_in_background": serve_in_background, "BUILT": 1}, \
        {"serve_in_background": serve_in_background, "BUILT": 2}
    exec(CELL, first)
    try:
        assert httpx.get(first["server"].url).json() == {"built": 1}
        first_url = first["server"].url
        with caplog.at_level(logging.INFO, logger="asgi_lab.error"):
            exec(CELL, second)
        assert first["server"].name == second["server"].name == "asgi:fastapi.applications.FastAPI"
        assert [s for s in running_servers() if s.name == second["server"].name] == [second["server"]]
        assert httpx.get(second["server"].url).json() == {"built": 2}
        with pytest.raises(httpx.ConnectError):
            httpx.get(first_url, timeout=2)
        replaced = [r for r in caplog.records if "Replaced the background server" in r.getMessage()]
        assert len(replaced) == 1 and replaced[0].levelno == logging.INFO
        assert first_url in replaced[0].getMessage()
    finally:
        second.get("server", first["server"]).stop()


def test_the_default_name_never_holds_a_memory_address():
    from starlette.applications import Starlette

    from asgi_lab.background import default_name

    assert default_name(Starlette(), "asgi") == default_name(Starlette(), "asgi") \
        == "asgi:starlette.applications.Starlette"
    assert default_name(hello, "asgi") == "asgi:asgi_lab.apps.hello.app"
    assert "0x" not in default_name(object(), "wsgi")


@pytest.mark.parametrize("kind", ["asgi", "wsgi"])
def test_a_stopped_server_url_says_it_is_stopped(kind):
    from asgi_lab.apps.hello import wsgi_app
    from asgi_lab.background import ServerStopped

    server = serve_in_background(hello if kind == "asgi" else wsgi_app, kind, name=f"test-url-{kind}")
    assert server.url.startswith("http://127.0.0.1:")
    address = server.address
    server.stop()
    for attribute in ("url", "ws_url"):
        with pytest.raises(ServerStopped, match=f"'test-url-{kind}'\\) is stopped"):
            getattr(server, attribute)
    assert server.address == address  # where it was: what a test compares a scope with
    assert "stopped" in repr(server)
    server.start()  # started again: a new port, a new url
    try:
        assert httpx.get(server.url).status_code == 200
    finally:
        server.stop()


def test_a_background_server_binds_before_the_lifespan_startup():
    """An address in use is an OSError for the caller, and the app's startup never ran."""
    events = []

    async def app(scope, receive, send):
        assert scope["type"] == "lifespan"
        await receive()
        events.append("startup")
        await send({"type": "lifespan.startup.complete"})
        await receive()
        events.append("shutdown")
        await send({"type": "lifespan.shutdown.complete"})

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        with pytest.raises(OSError) as caught:
            serve_in_background(app, name="test-bind-first", port=taken.getsockname()[1])
    assert caught.value.errno == errno.EADDRINUSE
    assert events == []
    assert not [s for s in running_servers() if s.name == "test-bind-first"]
