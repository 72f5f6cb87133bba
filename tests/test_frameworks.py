"""Every major framework on both of our servers, and the same client script against the
production servers people compare us with: uvicorn (ASGI) and gunicorn's gthread worker (WSGI).

Each test is one client script, parametrized over the servers: it asserts the same answers
from ours and from the yardstick, so a difference in behaviour fails here. Apps live in
`asgi_lab/apps/frameworks/`; every server runs in a subprocess on 127.0.0.1, started once per
(server, app) for this module.
"""

from __future__ import annotations

import hashlib
import os
import re
import signal
import subprocess
import sys
import threading
import time

import httpx
import pytest

pytest.importorskip("fastapi")
pytest.importorskip("django")
pytest.importorskip("flask")
pytest.importorskip("sse_starlette")

from asgi_lab.experiments.servers import free_port  # noqa: E402  (the one launcher toolkit)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENV = {**os.environ, "PYTHONPATH": ROOT}
PY = sys.executable
FRAMEWORKS = "asgi_lab.apps.frameworks"


def command(server: str, target: str) -> list[str]:
    if server == "asgi_lab-asgi":
        return [PY, "-m", "asgi_lab", "asgi", target, "--port", "0", "--no-access-log"]
    if server == "asgi_lab-wsgi":
        return [PY, "-m", "asgi_lab", "wsgi", target, "--port", "0", "--threads", "8", "--no-access-log"]
    if server == "uvicorn":
        pytest.importorskip("uvicorn")
        return [PY, "-m", "uvicorn", target, "--host", "127.0.0.1", "--port", str(free_port()),
                "--http", "h11", "--lifespan", "auto", "--no-access-log"]
    if server == "gunicorn":
        pytest.importorskip("gunicorn")
        from gunicorn.config import Config

        no_control = ["--no-control-socket"] if "control_socket_disable" in Config().settings else []
        return [PY, "-m", "gunicorn", "-k", "gthread", "--threads", "8", "-w", "1",
                "-b", "127.0.0.1:0", *no_control, target]
    raise ValueError(server)


READY = re.compile(r"(?:serving \w+ app on|running on|Listening at:) (http://127\.0\.0\.1:\d+)")


class Running:
    """One server process, its output read on a thread (no pipe ever fills up)."""

    def __init__(self, server: str, target: str) -> None:
        self.proc = subprocess.Popen(command(server, target), cwd=ROOT, env=ENV,
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.lines: list[str] = []
        self.url: str | None = None
        ready = threading.Event()

        def read() -> None:
            for line in self.proc.stdout:
                self.lines.append(line)
                if self.url is None and (match := READY.search(line)):
                    self.url = match.group(1)
                    ready.set()
            ready.set()

        threading.Thread(target=read, daemon=True).start()
        if not ready.wait(30) or self.url is None:
            self.stop()
            raise AssertionError(f"{server} did not start {target}:\n" + "".join(self.lines))

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@pytest.fixture(scope="module")
def serve():
    """serve(server, target) -> the base URL; each (server, target) started once."""
    running: dict[tuple[str, str], Running] = {}

    def get(server: str, target: str) -> str:
        key = (server, target)
        if key not in running:
            running[key] = Running(server, target)
        return running[key].url

    yield get
    for process in running.values():
        process.stop()


ASGI_SERVERS = ["asgi_lab-asgi", "uvicorn"]
WSGI_SERVERS = ["asgi_lab-wsgi", "gunicorn"]
FASTAPI = f"{FRAMEWORKS}.fastapi_app:app"
FLASK = f"{FRAMEWORKS}.flask_app:app"


def poll(fetch, until, timeout: float = 10.0):
    """Call fetch() until until(result) holds (bounded); the last result."""
    deadline = time.monotonic() + timeout
    while True:
        result = fetch()
        if until(result) or time.monotonic() > deadline:
            return result
        time.sleep(0.05)


# -- FastAPI (and sse-starlette) on ASGI servers -------------------------------------------------

@pytest.mark.parametrize("server", ASGI_SERVERS)
def test_fastapi_json_and_validation(serve, server):
    url = serve(server, FASTAPI)
    ok = httpx.post(f"{url}/items", json={"name": "tea", "price": 2.5, "quantity": 4}, timeout=10)
    assert ok.status_code == 200 and ok.json() == {"name": "tea", "total": 10.0}
    bad = httpx.post(f"{url}/items", json={"name": "tea", "price": "a lot"}, timeout=10)
    assert bad.status_code == 422
    assert [error["loc"] for error in bad.json()["detail"]] == [["body", "price"]]
    assert httpx.post(f"{url}/items", content=b"{not json", timeout=10,
                      headers={"content-type": "application/json"}).status_code == 422


@pytest.mark.parametrize("server", ASGI_SERVERS)
def test_fastapi_streaming_response(serve, server):
    url = serve(server, FASTAPI)
    with httpx.stream("GET", f"{url}/stream?chunks=6", timeout=10,
                      headers={"accept-encoding": "identity"}) as response:
        assert response.headers["transfer-encoding"] == "chunked"
        body = response.read().decode()
    assert body == "".join(f"chunk {i}\n" for i in range(6))


@pytest.mark.parametrize("server", ASGI_SERVERS)
def test_fastapi_websocket_closed_by_the_app_with_its_code(serve, server):
    from websockets.exceptions import ConnectionClosed
    from websockets.sync.client import connect

    from asgi_lab.apps.frameworks.fastapi_app import WS_CLOSE_CODE

    url = serve(server, FASTAPI).replace("http://", "ws://")
    with connect(f"{url}/ws", open_timeout=10) as ws:
        ws.send("hello")
        assert ws.recv(timeout=10) == "hello"
        ws.send("bye")
        with pytest.raises(ConnectionClosed) as closed:
            ws.recv(timeout=10)
    assert closed.value.rcvd.code == WS_CLOSE_CODE
    assert closed.value.rcvd.reason == "bye from the app"


@pytest.mark.parametrize("server", ASGI_SERVERS)
def test_fastapi_lifespan_state_reaches_the_request(serve, server):
    url = serve(server, FASTAPI)
    assert httpx.get(f"{url}/state", timeout=10).json() == {"greeting": "set in lifespan"}


@pytest.mark.parametrize("server", ASGI_SERVERS)
def test_fastapi_background_task_runs_after_the_response(serve, server):
    url = serve(server, FASTAPI)
    token = f"t{time.monotonic_ns()}"
    response = httpx.post(f"{url}/tasks", params={"token": token}, timeout=10)
    assert response.status_code == 202 and response.json() == {"accepted": token}
    done = poll(lambda: httpx.get(f"{url}/tasks", timeout=10).json(), lambda tasks: token in tasks)
    assert token in done


@pytest.mark.parametrize("server", ASGI_SERVERS)
def test_sse_starlette_notices_the_client_leaving(serve, server):
    url = serve(server, FASTAPI)
    client = f"c{time.monotonic_ns()}"
    events = []
    with httpx.stream("GET", f"{url}/sse", params={"client": client, "interval": 0.05},
                      headers={"accept-encoding": "identity"}, timeout=10) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        for line in response.iter_lines():
            if line.startswith("data:"):
                events.append(line)
            if len(events) == 3:
                break  # leaving the block closes the connection: the client is gone
    assert events == [f"data: {client} {i}" for i in (1, 2, 3)]
    gone = poll(lambda: httpx.get(f"{url}/sse/disconnects", timeout=10).json(),
                lambda clients: client in clients, timeout=5)
    assert client in gone, "the app never noticed the client had left"


# -- Django on both kinds of server -----------------------------------------------------------------

DJANGO = [("asgi_lab-asgi", "application"), ("uvicorn", "application"),
          ("asgi_lab-wsgi", "wsgi_application"), ("gunicorn", "wsgi_application")]


@pytest.mark.parametrize("server, handler", DJANGO)
def test_django_sync_and_async_views(serve, server, handler):
    url = serve(server, f"{FRAMEWORKS}.django_app:{handler}")
    assert httpx.get(f"{url}/sync", timeout=10).json()["view"] == "sync"
    assert httpx.get(f"{url}/async", timeout=10).json() == {"view": "async", "in_event_loop": True}
    assert httpx.get(f"{url}/hello", timeout=10).text == "Hello, world!"
    assert httpx.get(f"{url}/no-such-page", timeout=10).status_code == 404


@pytest.mark.parametrize("server, handler", DJANGO)
def test_django_streaming_response(serve, server, handler):
    url = serve(server, f"{FRAMEWORKS}.django_app:{handler}")
    # An async iterator under ASGI, a sync one under WSGI: each handler's native kind.
    path = "astream" if handler == "application" else "stream"
    with httpx.stream("GET", f"{url}/{path}?chunks=7", timeout=10,
                      headers={"accept-encoding": "identity"}) as response:
        assert response.status_code == 200
        assert "content-length" not in response.headers
        body = response.read().decode()
    assert body == "".join(f"chunk {i}\n" for i in range(7))


# -- Flask on WSGI servers ---------------------------------------------------------------------------

@pytest.mark.parametrize("server", WSGI_SERVERS)
def test_flask_stream_with_context_reads_the_request_in_the_generator(serve, server):
    url = serve(server, FLASK)
    with httpx.stream("GET", f"{url}/stream", params={"chunks": 4, "name": "part"}, timeout=10) as response:
        body = response.read().decode()
    assert body == "".join(f"part {i}\n" for i in range(4))


@pytest.mark.parametrize("server", WSGI_SERVERS)
def test_flask_send_file_whole_and_a_range(serve, server):
    from asgi_lab.apps.frameworks.flask_app import SENT_FILE

    url = serve(server, FLASK)
    with open(SENT_FILE, "rb") as f:
        expected = f.read()
    whole = httpx.get(f"{url}/file", timeout=10, headers={"accept-encoding": "identity"})
    assert whole.status_code == 200 and whole.content == expected
    assert int(whole.headers["content-length"]) == len(expected)
    part = httpx.get(f"{url}/file", timeout=10, headers={"range": "bytes=0-15"})
    assert part.status_code == 206 and part.content == expected[:16]
    assert part.headers["content-range"] == f"bytes 0-15/{len(expected)}"


@pytest.mark.parametrize("server", WSGI_SERVERS)
def test_flask_ten_megabyte_upload(serve, server):
    url = serve(server, FLASK)
    data = os.urandom(10 * 1024 * 1024)
    response = httpx.post(f"{url}/upload", files={"file": ("big.bin", data)}, timeout=60)
    assert response.status_code == 200
    assert response.json() == {"name": "big.bin", "size": len(data),
                               "sha256": hashlib.sha256(data).hexdigest()}
