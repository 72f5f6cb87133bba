"""The load generators (asgi_lab.load) and the apps they drive (asgi_lab.apps.sse).

Real servers on 127.0.0.1, port 0; the generators run in their own processes, as in the
experiments. Short intervals (0.1-0.5 s) keep each test to a couple of seconds.
"""

from __future__ import annotations

import asyncio
import resource
import socket
import subprocess
import sys
import threading
import time

import pytest

from asgi_lab import serve_in_background
from asgi_lab.apps import sse
from asgi_lab.load import TooManyClients, percentile, plan_open_files, raise_open_files_limit
from asgi_lab.load.longpoll import run_longpoll_load
from asgi_lab.load.process import split
from asgi_lab.load.sse import fully_served, run_sse_load


@pytest.fixture
def asgi_server():
    server = serve_in_background(sse.app, name="test_load-asgi", access_log=False)
    yield server
    server.stop()


def test_sse_clients_receive_every_event_with_small_lag(asgi_server):
    result = run_sse_load(asgi_server.url + "/events?interval=0.2", clients=30, duration=1.0,
                          interval=0.2, processes=2)
    assert result["clients"] == 30 and result["processes"] == 2
    assert result["errors"] == [None] * 30
    assert all(fully_served(result))
    # About (1 s + ramp) / 0.2 s events each: at least the 5 of the hold, at most 5 + ramp + 1.
    assert all(5 <= events <= 12 for events in result["events"]), result["events"]
    assert len(result["lags_ms"]) == sum(result["events"])
    assert all(ttfe is not None and ttfe < 1000 for ttfe in result["ttfe_ms"])
    assert all(connect is not None and connect < 1000 for connect in result["connect_ms"])
    assert 0 <= percentile(result["lags_ms"], 50) < 100
    assert max(result["lateness_ms"]) < 500  # the server kept its schedule


def test_a_client_that_never_gets_an_event_is_not_fully_served():
    result = {"errors": [None, None, "connect: refused"], "events": [5, 0, 0], "expected": [5, 5, 0]}
    assert fully_served(result) == [True, False, False]


def test_sse_client_leaving_early_is_seen_by_the_asgi_app():
    finished = threading.Event()

    async def app(scope, receive, send):
        try:
            await sse.app(scope, receive, send)
        finally:
            if scope["type"] == "http":
                finished.set()

    with serve_in_background(app, name="test_load-leaving", access_log=False) as server:
        with socket.create_connection(server.address, timeout=5) as sock:
            sock.sendall(b"GET /events?interval=0.1 HTTP/1.1\r\nhost: x\r\n\r\n")
            received = b""
            while b"data: 0 " not in received:
                received += sock.recv(4096)
            assert b"200 OK" in received and b"text/event-stream" in received
        # The next send() raises ClientDisconnected (ASGI www spec 2.4): the app ends.
        assert finished.wait(3), "the SSE app kept streaming to a client that left"


def test_sse_client_leaving_early_is_seen_by_the_wsgi_server():
    """The WSGI side learns it only by writing: the next event fails, and the server closes
    the generator (PEP 3333), which frees the thread."""
    closed = threading.Event()

    class Watched:
        def __init__(self, iterable):
            self.iterable = iterable

        def __iter__(self):
            return iter(self.iterable)

        def close(self):
            self.iterable.close()
            closed.set()

    def wsgi_app(environ, start_response):
        return Watched(sse.wsgi_app(environ, start_response))

    with serve_in_background(wsgi_app, kind="wsgi", name="test_load-leaving-wsgi", threads=2,
                             access_log=False) as server:
        with socket.create_connection(server.address, timeout=5) as sock:
            sock.sendall(b"GET /events?interval=0.1 HTTP/1.1\r\nhost: x\r\n\r\n")
            received = b""
            while b"data: 0 " not in received:
                received += sock.recv(4096)
        assert closed.wait(3), "the WSGI server kept a thread streaming to a client that left"


def test_sse_app_listens_for_disconnect_when_send_does_not_raise():
    """Before spec 2.4 (uvicorn says 2.3) send() after a disconnect may do nothing: the app
    must notice through receive() returning http.disconnect, between two events."""
    sent = []

    async def scenario():
        left = asyncio.Event()

        async def receive():
            if not sent:
                return {"type": "http.request", "body": b"", "more_body": False}
            await left.wait()
            return {"type": "http.disconnect"}

        async def send(message):
            sent.append(message)
            if len(sent) == 3:  # start + two events, then the client goes
                asyncio.get_running_loop().call_later(0.05, left.set)

        scope = {"type": "http", "path": "/events", "query_string": b"interval=0.5",
                 "asgi": {"version": "3.0", "spec_version": "2.3"}}
        started = time.monotonic()
        await asyncio.wait_for(sse.app(scope, receive, send), 5)
        return time.monotonic() - started

    elapsed = asyncio.run(scenario())
    assert [m["type"] for m in sent] == ["http.response.start"] + ["http.response.body"] * 2
    assert elapsed < 0.9  # left at ~0.55 s, not at the next tick (1.0 s), nor never


def test_sse_event_format_carries_due_and_sent_stamps():
    event = sse.sse_event(7, 100.25, 100.5)
    assert event == b"id: 7\ndata: 7 100.250000 100.500000\n\n"


def test_long_polling_clients_get_every_message(asgi_server):
    result = run_longpoll_load(asgi_server.url + "/poll?period=0.5", clients=20, duration=2.5,
                               period=0.5, spread=0.2)
    assert result["errors"] == [None] * 20
    assert sum(result["expected"]) >= 20 * 3
    missed = sum(max(0, due - got) for got, due in zip(result["messages"], result["expected"]))
    # A busy machine may delay some re-requests past a publication (0.5 s apart); not many.
    assert missed <= 0.2 * sum(result["expected"]), (result["messages"], result["expected"])
    assert all(r >= 4 for r in result["requests"])  # a new request after every message
    assert result["reconnects"] == [0] * 20  # keep-alive: one connection per client
    assert percentile(result["lags_ms"], 50) < 200


def test_long_poll_times_out_with_204(asgi_server):
    with socket.create_connection(asgi_server.address, timeout=5) as sock:
        started = time.monotonic()
        sock.sendall(b"GET /poll?timeout=0.2&period=60 HTTP/1.1\r\nhost: x\r\n\r\n")
        answer = sock.recv(4096)
    assert answer.startswith(b"HTTP/1.1 204 ")
    assert 0.15 < time.monotonic() - started < 2


def test_open_files_plan():
    inf = resource.RLIM_INFINITY
    assert plan_open_files(100, 1024, 4096) == 1024          # enough already
    assert plan_open_files(2000, 1024, 4096) == 4096         # raised as far as allowed
    assert plan_open_files(2000, 1024, inf) == inf
    with pytest.raises(TooManyClients, match="at most 4096.*load processes"):
        plan_open_files(5000, 1024, 4096)


def test_open_files_limit_is_raised_in_a_real_process():
    """In a child whose soft limit starts at 256: room for 1000 clients means raising it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < 2000:
        pytest.fail(f"this machine's hard open-files limit ({hard}) is below what the lab needs")
    code = ("import resource; from asgi_lab.load import raise_open_files_limit as r; "
            "print(r(1000), resource.getrlimit(resource.RLIMIT_NOFILE)[0])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=20,
                         preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard)),
                         check=True).stdout.split()
    assert int(out[0]) == int(out[1]) >= 1000 + 64
    assert raise_open_files_limit(10) >= 74  # and in this process, a no-op


def test_generator_fails_clearly_when_n_cannot_be_reached():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    too_many = 10_000_000 if hard == resource.RLIM_INFINITY else hard + 1
    done = subprocess.run([sys.executable, "-m", "asgi_lab.load.sse", "http://127.0.0.1:9/events",
                           "--clients", str(too_many), "--duration", "1"],
                          capture_output=True, text=True, timeout=20)
    if hard == resource.RLIM_INFINITY:
        pytest.fail("no hard open-files limit here: cannot check the error path")
    assert done.returncode == 2
    assert "file descriptors are needed" in done.stderr and "--load-processes" in done.stderr
    with pytest.raises(RuntimeError, match="file descriptors are needed"):
        run_sse_load("http://127.0.0.1:9/events", clients=too_many, duration=1)


def test_refused_connections_are_errors_not_crashes():
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    result = run_sse_load(f"http://127.0.0.1:{port}/events", clients=5, duration=0.2, spread=0)
    assert all(error and error.startswith("connect: ConnectionRefusedError") for error in result["errors"])
    assert not any(fully_served(result))


def test_split_and_percentile():
    assert split(10, 3) == [4, 3, 3]
    assert split(2, 5) == [1, 1]
    assert percentile([], 50) is None
    assert percentile(list(range(1, 101)), 99) == 99
    assert percentile([5.0], 99) == 5.0


def test_each_client_records_its_worst_lateness(asgi_server):
    result = run_sse_load(asgi_server.url + "/events?interval=0.1", clients=5, duration=0.5,
                          interval=0.1)
    assert len(result["worst_late_ms"]) == 5
    for worst, errors in zip(result["worst_late_ms"], result["errors"]):
        assert errors is None and 0.0 <= worst < 1000  # no stall here: well under a second
    assert max(result["worst_late_ms"]) == pytest.approx(max(0.0, *result["lateness_ms"]))


@pytest.mark.parametrize("interface", ["asgi", "wsgi"])
def test_block_route_spends_the_time_in_one_c_call(interface):
    app = sse.app if interface == "asgi" else sse.wsgi_app
    with serve_in_background(app, interface, name=f"test_load-block-{interface}",
                             access_log=False) as server:
        started = time.perf_counter()
        with socket.create_connection(server.address, timeout=10) as sock:
            sock.sendall(b"GET /block?ms=200 HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
            answer = b""
            while chunk := sock.recv(4096):
                answer += chunk
        took = time.perf_counter() - started
    assert answer.startswith(b"HTTP/1.1 200") and b"blocked 200 ms" in answer
    assert 0.19 < took < 5


def test_block_ms_is_bounded():
    assert sse.block_ms("ms=50") == 50 and sse.block_ms("") == 500 and sse.block_ms("ms=1e9") == 10_000


@pytest.mark.parametrize("kind", ["sse", "longpoll", "ws"])
def test_every_generator_honours_the_same_ramp_options(kind, asgi_server):
    """One ramp for all (load/clients.py): spread, connect concurrency, ramp timeout."""
    from asgi_lab.load.longpoll import LongPollLoad
    from asgi_lab.load.sse import SSELoad
    from asgi_lab.load.ws import WSLoad

    from asgi_lab.apps import echo

    with serve_in_background(echo.app, name="test_load-echo", access_log=False) as echo_server:
        load_class, url = {"sse": (SSELoad, asgi_server.url + "/events?interval=0.1"),
                           "longpoll": (LongPollLoad, asgi_server.url + "/poll?period=0.1"),
                           "ws": (WSLoad, echo_server.ws_url + "/")}[kind]
        # Four clients spread over 2 s, one handshake at a time, but only 0.3 s to connect
        # them: the first is due at once, the others at 0.5, 1.0 and 1.5 s, too late.
        load = load_class(url, 4, 0.3, spread=2.0, connect_concurrency=1, ramp_timeout=0.3)
        result = asyncio.run(load.run())
    assert result["errors"] == [None] + ["not connected: ramp timeout"] * 3
    assert result["connect_ms"][0] is not None and result["connect_ms"][1:] == [None] * 3
    assert result["ramp_s"] < 0.3
