"""The command line as a user meets it: `python -m asgi_lab asgi|wsgi ...` in a subprocess,
on real sockets on 127.0.0.1. Each way to get it wrong is one line and its own exit code."""

from __future__ import annotations

import re
import signal
import socket
import subprocess
import sys
import textwrap

import httpx
import pytest

from asgi_lab import loader
from processes import ENV, ROOT, start_cli

APPS = textwrap.dedent("""
    import sys

    async def asgi_app(scope, receive, send):
        if scope["type"] == "lifespan":
            message = await receive()
            print("startup ran", flush=True)
            await send({"type": "lifespan.startup.complete"})
            await receive()
            print("shutdown ran", flush=True)
            await send({"type": "lifespan.shutdown.complete"})
            return
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"asgi"})

    def wsgi_app(environ, start_response):
        start_response("200 OK", [("content-type", "text/plain")])
        return [b"wsgi"]

    def create_app():
        return asgi_app

    not_an_app = {"routes": []}
""")


def run(*args: str, cwd, timeout: float = 30) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "asgi_lab", *args], cwd=cwd, env=ENV,
                          capture_output=True, text=True, timeout=timeout)


def stop(proc: subprocess.Popen, lines: list[str]) -> str:
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=20)
    assert proc.returncode == 0, out
    return "".join(lines) + out


@pytest.fixture
def app_dir(tmp_path):
    (tmp_path / "apps.py").write_text(APPS)
    return tmp_path


def test_version():
    result = run("--version", cwd=ROOT)
    assert result.returncode == 0
    assert re.fullmatch(r"asgi_lab \d+\.\d+\.\d+ \(Python 3\.\d+\.\d+\w*\)\n", result.stdout)


@pytest.mark.parametrize("command", ["asgi", "wsgi", "trace", "demo"])
def test_help_shows_a_default_for_every_option(command):
    text = run(command, "--help", cwd=ROOT).stdout
    options = re.split(r"\n  (?=-)", text.split("options:", 1)[1].split("exit codes:")[0])
    without = [o.split()[0] for o in options[1:]  # [0] is the header, then -h first
               if "default:" not in o and not o.startswith("-h")]
    assert without == [], f"options without a default in --help: {without}"
    assert ("exit codes:" in text) == (command in ("asgi", "wsgi"))


@pytest.mark.parametrize("command, target, code, words", [
    ("asgi", "no_such_module:app", loader.EXIT_IMPORT, "could not import module 'no_such_module'"),
    ("asgi", "apps:nope", loader.EXIT_ATTRIBUTE, "module 'apps' has no attribute 'nope'"),
    ("asgi", "apps:not_an_app", loader.EXIT_NOT_CALLABLE, "apps:not_an_app is not callable: found dict"),
    ("asgi", "apps:wsgi_app", loader.EXIT_WRONG_INTERFACE, "found a WSGI app"),
    ("wsgi", "apps:asgi_app", loader.EXIT_WRONG_INTERFACE, "found an ASGI app"),
    ("asgi", "asgi_lab.apps.frameworks.flask_app:app", loader.EXIT_WRONG_INTERFACE,
     "found a WSGI app (an instance of flask.app.Flask"),
    ("wsgi", "asgi_lab.apps.frameworks.fastapi_app:app", loader.EXIT_WRONG_INTERFACE,
     "found an ASGI app (an instance of fastapi.applications.FastAPI"),
    ("wsgi", "asgi_lab.apps.frameworks.django_app:application", loader.EXIT_WRONG_INTERFACE,
     "found an ASGI app (an instance of django.core.handlers.asgi.ASGIHandler"),
])
def test_a_bad_app_is_one_line_and_its_own_exit_code(app_dir, command, target, code, words):
    result = run(command, target, "--port", "0", cwd=app_dir)
    assert result.returncode == code, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("ERROR:") and words in lines[0], result.stderr
    assert "startup ran" not in result.stdout


def test_the_exit_codes_are_distinct():
    codes = [loader.EXIT_IMPORT, loader.EXIT_ATTRIBUTE, loader.EXIT_NOT_CALLABLE,
             loader.EXIT_WRONG_INTERFACE, loader.EXIT_ADDRESS_IN_USE, loader.EXIT_PERMISSION,
             loader.EXIT_LIFESPAN_FAILED]
    assert len(set(codes)) == len(codes) and 0 not in codes and 1 not in codes and 2 not in codes


def test_a_syntax_error_in_the_module_says_where(app_dir):
    (app_dir / "broken.py").write_text("def app(:\n")
    result = run("asgi", "broken:app", cwd=app_dir)
    assert result.returncode == loader.EXIT_IMPORT
    assert "SyntaxError" in result.stderr and "broken.py\", line 1" in result.stderr
    assert "importlib" not in result.stderr


@pytest.mark.parametrize("command, target", [("asgi", "apps:asgi_app"), ("wsgi", "apps:wsgi_app")])
def test_port_in_use_is_one_error_line_before_the_app_starts(app_dir, command, target):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run(command, target, "--port", str(port), cwd=app_dir)
    assert result.returncode == loader.EXIT_ADDRESS_IN_USE
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and f"127.0.0.1:{port}" in lines[0] and "already in use" in lines[0]
    assert "Traceback" not in result.stderr
    assert "startup ran" not in result.stdout  # bound before the lifespan startup


def test_permission_denied_is_one_error_line(app_dir):
    """The tests run as root, where any port binds: make bind() fail as it does for a user
    binding a port below 1024, and run the real command line in a subprocess."""
    code = textwrap.dedent("""
        import errno, socket, sys
        def bind(self, address):
            raise PermissionError(errno.EACCES, "Permission denied")
        socket.socket.bind = bind
        from asgi_lab.cli import main
        sys.exit(main(["asgi", "apps:asgi_app", "--port", "80"]))
    """)
    result = subprocess.run([sys.executable, "-c", code], cwd=app_dir, env=ENV,
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == loader.EXIT_PERMISSION
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "127.0.0.1:80" in lines[0] and "permission denied" in lines[0]


def test_factory_and_app_dir(tmp_path):
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "apps.py").write_text(APPS)
    proc, url, lines = start_cli("asgi", "apps:create_app", "--factory", "--app-dir", "elsewhere",
                             "--port", "0", cwd=tmp_path)
    try:
        assert httpx.get(url, timeout=10).text == "asgi"
    finally:
        out = stop(proc, lines)
    assert "startup ran" in out and "shutdown ran" in out


def test_factory_that_returns_a_wsgi_app_to_the_asgi_server(app_dir):
    (app_dir / "made.py").write_text("from apps import wsgi_app\ndef make():\n    return wsgi_app\n")
    result = run("asgi", "made:make", "--factory", cwd=app_dir)
    assert result.returncode == loader.EXIT_WRONG_INTERFACE
    assert "found a WSGI app (apps.wsgi_app" in result.stderr


@pytest.mark.parametrize("command, target", [("asgi", "apps:asgi_app"), ("wsgi", "apps:wsgi_app")])
def test_startup_and_shutdown_lines(app_dir, command, target):
    proc, url, lines = start_cli(command, target, "--port", "0", cwd=app_dir)
    try:
        assert httpx.get(url, timeout=10).text == command
    finally:
        out = stop(proc, lines)
    assert f"Started server process [{proc.pid}]" in out
    assert "Shutting down (SIGTERM)" in out
    assert "Traceback" not in out


@pytest.mark.parametrize("command, target", [
    ("asgi", "asgi_lab.apps.frameworks.django_app:application"),
    ("wsgi", "asgi_lab.apps.frameworks.django_app:wsgi_application"),
])
def test_django_only_our_own_lines(command, target):
    """Our loggers only: Django's own "Not Found" warning (logger django.request) is not
    printed because of us; lifespan auto with Django is one INFO line, no traceback."""
    proc, url, lines = start_cli(command, target, "--port", "0", cwd=ROOT)
    try:
        assert httpx.get(url + "/hello", timeout=10).text == "Hello, world!"
        assert httpx.get(url + "/no-such-page", timeout=10).status_code == 404
    finally:
        out = stop(proc, lines)
    assert "Not Found: /no-such-page" not in out  # django.request's warning, in its own words
    assert "Traceback" not in out
    assert '"GET /no-such-page HTTP/1.1" 404 Not Found' in out  # our access line is there
    if command == "asgi":
        unsupported = [line for line in out.splitlines() if "lifespan" in line and "unsupported" in line]
        assert len(unsupported) == 1 and unsupported[0].startswith("INFO:")
        assert "Django can only handle ASGI/HTTP connections, not lifespan" in unsupported[0]


def test_detect_interface_reads_what_it_can_and_says_unknown_otherwise():
    import functools

    async def asgi(scope, receive, send): ...

    def wsgi(environ, start_response): ...

    class ASGIApp:
        async def __call__(self, scope, receive, send): ...

    class WSGIApp:
        def __call__(self, environ, start_response): ...

    class ASGI2:
        def __init__(self, scope): ...

    def returns_an_awaitable(scope, receive, send):
        return asgi(scope, receive, send)

    detect = loader.detect_interface
    assert detect(asgi) == detect(ASGIApp()) == detect(functools.partial(asgi)) == "asgi"
    assert detect(wsgi) == detect(WSGIApp()) == "wsgi"
    # Cannot tell: served as asked, never refused.
    assert detect(ASGI2) is detect(returns_an_awaitable) is detect(lambda *args: None) is None
    assert detect(print) is None
