"""The command line (signals, --port 0) and the background runner (scripts, Jupyter-like loops)."""

from __future__ import annotations

import asyncio
import os
import re
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

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def start_cli(*args: str, cwd: str = ROOT) -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen([sys.executable, "-m", "asgi_lab", *args], cwd=cwd,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 20
    lines = []
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(line)
        match = re.search(r"http://127\.0\.0\.1:(\d+)", line)
        if match and "serving" in line:
            return proc, match.group(0)
    proc.kill()
    raise AssertionError("server did not print its address:\n" + "".join(lines))


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
    proc, url = start_cli("asgi", "slowapp:app", "--port", "0", cwd=str(tmp_path))
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
        assert httpx.get(server.url).text == "Hello, world!"
    with pytest.raises(httpx.ConnectError):
        httpx.get(server.url)


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
    proc, url = start_cli("asgi", "slowstop:app", "--port", "0", cwd=str(tmp_path))
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
