"""The primer's tiny servers (asgi_lab/primer/), over real sockets on 127.0.0.1.

Timing assertions compare orders (who was served before whom, which intervals overlap) and
use generous bounds, never tight numbers: the machine may be busy.
"""

from __future__ import annotations

import socket
import threading
import time

import h11
import pytest

from asgi_lab.primer import (BlockingServer, CoroutineServer, Loop, LoopServer, ThreadedServer,
                             measure)
from asgi_lab.primer.clients import parse_response, request_bytes
from asgi_lab.primer.coroutines import Wait
from asgi_lab.primer.exchange import Exchange
from asgi_lab.primer.timeline import timeline

ALL_SERVERS = [BlockingServer, ThreadedServer, LoopServer, CoroutineServer]
LOOP_SERVERS = [LoopServer, CoroutineServer]


def overlapping(visits) -> bool:
    """Every client was accepted before any was answered: all were served at the same time."""
    return max(v.accepted for v in visits) < min(v.answered for v in visits)


# -- the request they all answer (sans-IO) ------------------------------------------------------

def test_exchange_reads_a_request_in_pieces_and_answers_with_h11():
    exchange, data = Exchange(), request_bytes("/?ms=250")
    assert exchange.feed(data[:10]) is False
    assert exchange.feed(data[10:]) is True
    assert exchange.path == "/" and exchange.work_seconds() == 0.25
    assert parse_response(exchange.answer(0.25)) == (200, b"waited 250 ms\n")


@pytest.mark.parametrize("data, why", [
    (b"NOT HTTP AT ALL\r\n\r\n", b"not a valid HTTP/1.1 request"),
    (request_bytes("/?ms=soon"), b"ms must be a whole number"),
    (request_bytes("/?ms=999999"), b"ms must be a whole number"),
])
@pytest.mark.parametrize("server_class", ALL_SERVERS)
def test_bad_input_gets_a_400_and_the_server_keeps_serving(server_class, data, why):
    with server_class() as server:
        with socket.create_connection(server.address, timeout=5) as sock:
            sock.sendall(data)
            raw = _read_until_closed(sock)
        status, body = parse_response(raw)
        assert status == 400 and why in body
        run = measure(server, ["/?ms=0"])
    assert run.visits[0].status == 200


# -- who waits for whom -------------------------------------------------------------------------

def test_the_blocking_server_serves_clients_one_after_another():
    with BlockingServer() as server:
        run = measure(server, ["/?ms=150"] * 3)
    assert [v.status for v in run.visits] == [200] * 3
    first, second, third = server.served  # the server's own record, in the order answered
    assert second.accepted >= first.answered and third.accepted >= second.answered
    assert [v.accepted for v in run.visits] == sorted(v.accepted for v in run.visits)
    assert third.answered >= 3 * 0.150  # each waited for the ones before it
    assert run.server_threads == {"BlockingServer"}


def test_the_threaded_server_serves_clients_at_once_on_a_thread_each():
    with ThreadedServer() as server:
        run = measure(server, ["/?ms=400"] * 4)
    assert [v.status for v in run.visits] == [200] * 4
    assert overlapping(run.visits)
    assert run.elapsed < 4 * 0.400  # less than one after another
    assert len(run.server_threads) == 4
    assert run.threads_peak >= run.threads_before + 4


@pytest.mark.parametrize("server_class", LOOP_SERVERS)
def test_the_event_loop_serves_many_clients_at_once_on_one_thread(server_class):
    with server_class() as server:
        run = measure(server, ["/?ms=400"] * 20)
    assert [v.status for v in run.visits] == [200] * 20
    assert overlapping(run.visits)
    assert run.elapsed < 2 * 0.400  # far less than 20 one after another
    assert run.server_threads == {server_class.__name__}
    assert run.threads_peak <= run.threads_before  # no thread added for the clients
    assert server.loop.errors == [] and server.errors == []


@pytest.mark.parametrize("server_class", LOOP_SERVERS)
def test_a_blocking_call_in_one_task_delays_every_other_client(server_class):
    with server_class() as server:
        blocked = measure(server, ["/block?ms=400"] + ["/?ms=0"] * 3)
        yielding = measure(server, ["/?ms=400"] + ["/?ms=0"] * 3)
    assert [v.status for v in blocked.visits + yielding.visits] == [200] * 8
    # With time.sleep in a task, the requests that need no work wait for it...
    assert min(v.answered for v in blocked.visits[1:]) >= 0.350
    # ...and with the task yielding instead, they are answered long before it.
    assert max(v.answered for v in yielding.visits[1:]) < 0.200
    assert yielding.visits[0].answered >= 0.400


def test_a_coroutine_yields_to_the_loop_what_a_generator_task_yields():
    def generator_task():
        yield "sleep", 0.1

    async def coroutine_task():
        await Wait("sleep", 0.1)

    coroutine = coroutine_task()
    assert generator_task().send(None) == coroutine.send(None) == ("sleep", 0.1)
    coroutine.close()


# -- the loop survives its tasks' mistakes ------------------------------------------------------

def test_a_task_that_fails_is_recorded_and_the_loop_goes_on():
    finished = []

    def fails():
        yield "sleep", 0
        raise RuntimeError("boom")

    def confused():
        yield "wait for me", None

    def fine():
        yield "sleep", 0.01
        finished.append(True)

    loop, stop = Loop(), threading.Event()
    for task in (fails(), confused(), fine()):
        loop.spawn(task)
    runner = threading.Thread(target=loop.run, args=(stop,))
    runner.start()
    deadline = time.monotonic() + 5
    while not finished and time.monotonic() < deadline:
        time.sleep(0.01)
    stop.set()
    runner.join(5)
    assert finished == [True]
    assert len(loop.errors) == 2
    assert any("boom" in error for error in loop.errors)
    assert any("'wait for me'" in error for error in loop.errors)


@pytest.mark.parametrize("server_class", ALL_SERVERS)
def test_a_client_that_resets_is_recorded_not_fatal(server_class):
    with server_class() as server:
        sock = socket.create_connection(server.address, timeout=5)
        sock.sendall(request_bytes("/?ms=200"))
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        sock.close()  # a reset, while the server works
        run = measure(server, ["/?ms=0"])
        deadline = time.monotonic() + 5
        while not server.errors and time.monotonic() < deadline:
            time.sleep(0.02)
    assert run.visits[0].status == 200
    assert len(server.errors) == 1 and "Error" in server.errors[0]


# -- stopping ------------------------------------------------------------------------------------

@pytest.mark.parametrize("server_class", ALL_SERVERS)
def test_a_stopped_server_leaves_no_thread_and_frees_its_port(server_class):
    before = set(threading.enumerate())
    server = server_class().start()
    port = server.address[1]
    assert measure(server, ["/?ms=50"] * 2).visits[1].status == 200
    started = time.monotonic()
    server.stop()
    assert time.monotonic() - started < 2.0
    assert not server.running
    assert set(threading.enumerate()) <= before
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=2)
    with socket.socket() as again:  # the port can be listened on again
        again.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        again.bind(("127.0.0.1", port))
        again.listen()


@pytest.mark.parametrize("server_class", LOOP_SERVERS)
def test_stopping_the_loop_closes_the_connections_of_unfinished_tasks(server_class):
    server = server_class().start()
    with socket.create_connection(server.address, timeout=5) as sock:
        sock.sendall(request_bytes("/")[:5])  # half a request: its task waits for the rest
        time.sleep(0.1)
        assert len(server.loop.tasks) == 2  # the accepting task and this connection's
        server.stop()
        assert _read_until_closed(sock) == b""
    assert server.loop.tasks == set()


# -- the figure ----------------------------------------------------------------------------------

def test_the_timeline_has_a_panel_per_server_and_a_bar_per_client():
    runs = []
    for server_class in (BlockingServer, LoopServer):
        with server_class() as server:
            runs.append(measure(server, ["/?ms=20"] * 3))
    figure = timeline(runs, "two servers")
    axes = figure.axes
    assert [ax.get_title(loc="left") for ax in axes] == [
        "blocking: one at a time: 1 server thread", "an event loop of generators: 1 server thread"]
    assert all(len(ax.patches) == 6 for ax in axes)  # per client: waiting, and being served
    assert axes[-1].get_xlabel().startswith("milliseconds")
    renamed = timeline(runs, "two servers", names=["first", "second"])
    assert [ax.get_title(loc="left") for ax in renamed.axes] == [
        "first: 1 server thread", "second: 1 server thread"]


def _read_until_closed(sock: socket.socket, timeout: float = 5.0) -> bytes:
    sock.settimeout(timeout)
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    return data


def test_request_bytes_are_what_h11_expects():
    server = h11.Connection(h11.SERVER)
    server.receive_data(request_bytes("/x?ms=1"))
    request = server.next_event()
    assert isinstance(request, h11.Request) and request.target == b"/x?ms=1"
