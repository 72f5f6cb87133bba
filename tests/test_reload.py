"""`--reload`: a supervisor restarts the server process when a .py file changes; a syntax
error is printed and the supervisor keeps watching. Real files, a real subprocess, real HTTP."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import httpx
import pytest

from processes import ENV, Output

pytest.importorskip("watchfiles")


ASGI_APP = """
async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    await send({{"type": "http.response.start", "status": 200, "headers": []}})
    await send({{"type": "http.response.body", "body": b"{text}"}})
"""

WSGI_APP = """
def app(environ, start_response):
    start_response("200 OK", [("content-type", "text/plain")])
    return [b"{text}"]
"""


def get_until(url: str, expected: str, timeout: float = 20.0) -> str:
    """Poll until the server answers `expected` (the new process serves), bounded."""
    deadline = time.monotonic() + timeout
    text = None
    while time.monotonic() < deadline:
        try:
            text = httpx.get(url, timeout=2).text
        except httpx.HTTPError:
            text = None
        if text == expected:
            return text
        time.sleep(0.1)
    raise AssertionError(f"still {text!r}, expected {expected!r}")


@pytest.mark.parametrize("command, source", [("asgi", ASGI_APP), ("wsgi", WSGI_APP)])
def test_reload_restarts_on_change_and_survives_a_syntax_error(tmp_path, command, source):
    appfile = tmp_path / "studentapp.py"
    appfile.write_text(source.format(text="one"))
    proc = subprocess.Popen([sys.executable, "-m", "asgi_lab", command, "studentapp:app",
                             "--port", "0", "--reload", "--reload-dir", str(tmp_path),
                             "--timeout-graceful-shutdown", "1"],
                            cwd=tmp_path, env=ENV, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    output = Output(proc)
    try:
        url = output.wait_for(r"serving \w+ app on (http://127\.0\.0\.1:\d+)").group(1)
        assert httpx.get(url, timeout=5).text == "one"
        first_pid = int(output.wait_for(r"Started server process \[(\d+)\]").group(1))

        mark = len(output.lines)
        appfile.write_text(source.format(text="two"))
        assert get_until(url, "two") == "two"  # the same port: the supervisor holds the socket
        output.wait_for(r"Changed: studentapp\.py", start=mark)
        second_pid = int(output.wait_for(r"Started server process \[(\d+)\]", start=mark).group(1))
        assert second_pid != first_pid

        mark = len(output.lines)
        appfile.write_text("async def app(scope, receive, send:\n")  # a syntax error
        output.wait_for(r"SyntaxError", start=mark)
        output.wait_for(r"exited with code 4; waiting", start=mark)
        assert proc.poll() is None  # the supervisor keeps watching

        appfile.write_text(source.format(text="three"))
        assert get_until(url, "three") == "three"
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(20)
        finally:
            if proc.poll() is None:
                proc.kill()
    output.thread.join(5)
    assert proc.returncode == 0, "".join(output.lines)
    text = "".join(output.lines)
    assert "Shutting down (SIGTERM)" in text
    with pytest.raises(httpx.ConnectError):  # nobody is left on the port
        httpx.get(url, timeout=2)


def test_server_argv_drops_the_reload_options():
    from asgi_lab.reload import server_argv

    assert server_argv(["asgi", "a:app", "--reload", "--reload-dir", "src", "--reload-dir=lib",
                        "--port", "0"], 7) == ["asgi", "a:app", "--port", "0", "--fd", "7"]


def test_the_server_process_stops_when_its_supervisor_is_killed(tmp_path):
    """SIGKILL leaves the supervisor no time to stop its server process: the server process
    notices its parent is gone and shuts down itself, freeing the port."""
    (tmp_path / "studentapp.py").write_text(ASGI_APP.format(text="one"))
    proc = subprocess.Popen([sys.executable, "-m", "asgi_lab", "asgi", "studentapp:app",
                             "--port", "0", "--reload", "--timeout-graceful-shutdown", "1"],
                            cwd=tmp_path, env=ENV, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    output = Output(proc)
    url = output.wait_for(r"serving \w+ app on (http://127\.0\.0\.1:\d+)").group(1)
    server_pid = int(output.wait_for(r"Started server process \[(\d+)\]").group(1))
    proc.kill()
    proc.wait(10)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        try:
            os.kill(server_pid, 0)
            with open(f"/proc/{server_pid}/stat") as f:  # exited, not yet reaped by init: gone
                if f.read().rsplit(")", 1)[1].split()[0] == "Z":
                    break
        except (ProcessLookupError, FileNotFoundError):
            break
        time.sleep(0.1)
    else:
        os.kill(server_pid, signal.SIGKILL)
        raise AssertionError("the server process outlived its supervisor")
    with pytest.raises(httpx.ConnectError):
        httpx.get(url, timeout=2)
