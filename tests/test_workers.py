"""gunicorn worker classes: our servers in gunicorn's process manager. Two workers share the
load, SIGHUP replaces them without a failed request, SIGTERM lets a request in flight finish."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
import threading
import time

import httpx
import pytest

gunicorn = pytest.importorskip("gunicorn")
from gunicorn.config import Config as GunicornConfig  # noqa: E402
from processes import ENV, Output  # noqa: E402

# gunicorn 24+ opens a control socket in ~/.gunicorn by default: one per test run is enough.
NO_CONTROL = ["--no-control-socket"] if "control_socket_disable" in GunicornConfig().settings else []

APP = textwrap.dedent("""
    import asyncio, os, time

    async def asgi_app(scope, receive, send):
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                else:
                    print(f"lifespan shutdown in {os.getpid()}", flush=True)
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        delay = float(scope["query_string"].decode().partition("=")[2] or 0)
        if delay > 1:
            print(f"slow request in {os.getpid()}", flush=True)
        if scope["path"] == "/block":
            time.sleep(delay)  # blocks the event loop: the heartbeat stops too
        await asyncio.sleep(delay)
        body = str(os.getpid()).encode()
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})

    def wsgi_app(environ, start_response):
        delay = float(environ.get("QUERY_STRING", "").partition("=")[2] or 0)
        if delay > 1:
            print(f"slow request in {os.getpid()}", flush=True)
        time.sleep(delay)
        body = str(os.getpid()).encode()
        start_response("200 OK", [("content-length", str(len(body)))])
        return [body]
""")


class Gunicorn(Output):
    """`gunicorn -k asgi_lab.workers.WORKER -w 2` on a free port, once both workers serve."""

    def __init__(self, tmp_path, worker: str, target: str, *options: str) -> None:
        (tmp_path / "pidapp.py").write_text(APP)
        super().__init__(subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "-k", f"asgi_lab.workers.{worker}", "-w", "2",
             "-b", "127.0.0.1:0", "--graceful-timeout", "10", *NO_CONTROL, *options, target],
            cwd=tmp_path, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
        self.url = "http://127.0.0.1:" + self.wait_for(r"Listening at: http://127\.0\.0\.1:(\d+)").group(1)
        self.wait_for(r"asgi_lab \w+ worker serving", count=2)

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(30)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()


def pids_serving(url: str, requests: int = 40, expected: int = 2, rounds: int = 5) -> set[str]:
    """The worker pids that answer rounds of concurrent slow-ish requests, until `expected`
    pids have answered or after `rounds` rounds. Which process accepts a connection is the
    kernel's choice, and one worker may take a whole burst (our acceptor takes up to 64 at
    once), so one round proves nothing on a busy machine."""
    seen: set[str] = set()
    with httpx.Client(timeout=10) as client:  # one client: its pool opens a connection per thread

        def one() -> None:
            seen.add(client.get(url + "/?delay=0.05").text)

        for _ in range(rounds):
            threads = [threading.Thread(target=one) for _ in range(requests)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(20)
            if len(seen) >= expected:
                break
    return seen


@pytest.mark.parametrize("worker, target", [("ASGIWorker", "pidapp:asgi_app"),
                                            ("WSGIWorker", "pidapp:wsgi_app")])
def test_two_workers_serve_and_hup_replaces_them_without_a_failed_request(tmp_path, worker, target):
    server = Gunicorn(tmp_path, worker, target, *(["--threads", "4"] if worker == "WSGIWorker" else []))
    try:
        before = pids_serving(server.url)
        assert len(before) == 2, before  # two worker processes answered

        failures: list[BaseException] = []
        answered: list[str] = []
        stop = threading.Event()

        def hammer() -> None:  # a new connection per request, during the reload
            while not stop.is_set():
                try:
                    response = httpx.get(server.url, timeout=10)
                    assert response.status_code == 200
                    answered.append(response.text)
                except BaseException as exc:  # noqa: BLE001 - any failure counts
                    failures.append(exc)

        slow: dict = {}
        clients = [threading.Thread(target=hammer) for _ in range(3)]
        for client in clients:
            client.start()
        in_flight = threading.Thread(target=lambda: slow.setdefault(
            "r", httpx.get(server.url + "/?delay=1.5", timeout=20)))
        in_flight.start()
        slow_pid = server.wait_for(r"slow request in (\d+)").group(1)
        server.proc.send_signal(signal.SIGHUP)
        server.wait_for(r"asgi_lab \w+ worker serving", count=4)  # two new workers
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and not (set(answered) - before):
            time.sleep(0.1)
        time.sleep(0.5)
        stop.set()
        for client in clients:
            client.join(20)
        in_flight.join(20)
        assert failures == []
        assert slow["r"].status_code == 200 and slow["r"].text == slow_pid  # the old worker finished it
        assert slow_pid in before
        after = pids_serving(server.url)
        assert len(after) == 2 and not (after & before), (before, after)
    finally:
        code = server.stop()
    assert code == 0
    assert "Traceback" not in server.text


@pytest.mark.parametrize("worker, target", [("ASGIWorker", "pidapp:asgi_app"),
                                            ("WSGIWorker", "pidapp:wsgi_app")])
def test_sigterm_lets_the_request_in_flight_finish(tmp_path, worker, target):
    server = Gunicorn(tmp_path, worker, target, *(["--threads", "2"] if worker == "WSGIWorker" else []))
    result: dict = {}
    try:
        request = threading.Thread(target=lambda: result.setdefault(
            "r", httpx.get(server.url + "/?delay=1.5", timeout=20)))
        request.start()
        server.wait_for(r"slow request in \d+")
        started = time.monotonic()
        server.proc.send_signal(signal.SIGTERM)
        request.join(20)
        code = server.proc.wait(20)
        took = time.monotonic() - started
    finally:
        server.stop()
    assert result["r"].status_code == 200
    assert code == 0 and took < 10
    assert "Traceback" not in server.text
    if worker == "ASGIWorker":
        assert server.text.count("lifespan shutdown in") == 2  # each worker ran its shutdown


def test_a_wsgi_app_given_to_the_asgi_worker_stops_gunicorn_with_one_line(tmp_path):
    (tmp_path / "pidapp.py").write_text(APP)
    result = subprocess.run(
        [sys.executable, "-m", "gunicorn", "-k", "asgi_lab.workers.ASGIWorker", "-w", "1",
         "-b", "127.0.0.1:0", *NO_CONTROL, "pidapp:wsgi_app"],
        cwd=tmp_path, env=ENV, capture_output=True, text=True, timeout=60)
    assert result.returncode != 0
    assert "found a WSGI app" in result.stderr and "Traceback" not in result.stderr


def test_max_requests_restarts_the_worker(tmp_path):
    server = Gunicorn(tmp_path, "ASGIWorker", "pidapp:asgi_app", "--max-requests", "5")
    try:
        first = httpx.get(server.url, timeout=10).text
        seen = {first}
        deadline = time.monotonic() + 20
        while len(seen) < 3 and time.monotonic() < deadline:  # 2 workers, then a fresh one
            seen.add(httpx.get(server.url, timeout=10).text)
            time.sleep(0.05)
        assert len(seen) >= 3, seen
        assert "served" in server.text and "--max-requests" in server.text
    finally:
        assert server.stop() == 0


def test_the_heartbeat_keeps_an_idle_worker_and_a_blocked_loop_gets_it_restarted(tmp_path):
    """gunicorn kills a worker that has not notified for --timeout seconds. Our heartbeat runs
    on the event loop: idle workers live on, and an app that blocks the loop is noticed."""
    server = Gunicorn(tmp_path, "ASGIWorker", "pidapp:asgi_app", "--timeout", "2")
    try:
        before = pids_serving(server.url)
        time.sleep(3)  # longer than --timeout, idle
        assert "WORKER TIMEOUT" not in server.text
        with pytest.raises(httpx.HTTPError):  # the worker is killed under the request
            httpx.get(server.url + "/block?delay=30", timeout=20)
        server.wait_for(r"WORKER TIMEOUT")
        server.wait_for(r"asgi_lab \w+ worker serving", count=3)  # a replacement booted
        after = pids_serving(server.url)
        assert len(after) == 2 and after != before
    finally:
        server.stop()
