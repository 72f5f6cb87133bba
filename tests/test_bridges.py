"""Async code on the WSGI server (asgi_lab/bridges.py, and the server's answer to an
`async def` app), over real sockets on 127.0.0.1.

Timing assertions are loose on purpose (a busy 2-core machine): they separate "one at a
time" from "all at once", which differ by a factor of ten here, not 10 % from 20 %.
"""

from __future__ import annotations

import logging

import pytest

from asgi_lab import bridges
from asgi_lab.background import serve_in_background
from asgi_lab.exercises.client import request

pytestmark = pytest.mark.timeout(60)


# -- an `async def` app served as it is ---------------------------------------------------------

def test_an_async_app_on_the_wsgi_server_is_a_500_that_names_the_mistake():
    seen = bridges.serve_async_app_unbridged()
    assert seen["status"] == 500
    assert seen["body"] == "500 Internal Server Error\n"  # no detail for the client
    assert seen["server_log"] == ["Exception in WSGI application"]
    (error,) = seen["error"]
    assert "returned a coroutine (async_hello)" in error and "async def" in error
    assert not seen["app_code_ran"]
    assert "returned coroutine" in seen["listing"]


def test_an_async_generator_app_is_named_too_and_the_server_survives(caplog):
    async def app(environ, start_response):
        yield b"never"

    with serve_in_background(app, "wsgi", name="test:async-gen", access_log=False, threads=1) as server:
        with caplog.at_level(logging.ERROR, "asgi_lab.error"):
            assert request(server.address).status == 500
        assert "returned an async generator" in caplog.text
        assert request(server.address).status == 500  # the worker is still there


def test_the_server_closes_the_coroutine_so_python_does_not_warn(recwarn):
    bridges.serve_async_app_unbridged()
    import gc
    gc.collect()
    assert not [w for w in recwarn if "never awaited" in str(w.message)]


def test_a_coroutine_dropped_without_close_warns_and_the_warning_is_data(capsys):
    warned = bridges.never_awaited_warnings(bridges.async_hello, {}, None)
    assert warned == ["coroutine 'async_hello' was never awaited"]
    assert capsys.readouterr().err == ""


# -- the bridges: each call holds its worker thread --------------------------------------------

@pytest.mark.parametrize("bridge", [bridges.asyncio_run_bridge, bridges.async_to_sync_bridge])
def test_a_per_request_bridge_serves_one_request_at_a_time_per_worker(bridge):
    run = bridges.measure(bridge(bridges.async_hello), name="per request", threads=1,
                          requests=4, wait_ms=100)
    assert run.statuses == [200] * 4
    assert run.elapsed >= 0.39          # 4 x 100 ms, one after another
    assert run.at_once < 1.05


def test_the_loop_thread_bridge_is_limited_by_worker_threads_not_by_the_loop():
    with bridges.LoopThread() as loop_thread:
        app = bridges.loop_thread_bridge(bridges.async_hello, loop_thread)
        one = bridges.measure(app, name="one worker", threads=1, requests=4, wait_ms=100)
        four = bridges.measure(app, name="four workers", threads=4, requests=4, wait_ms=100)
    assert one.statuses == four.statuses == [200] * 4
    assert one.elapsed >= 0.39
    assert four.elapsed < 0.3 and four.at_once > 1.5


def test_the_asgi_server_overlaps_every_wait_and_the_trace_has_each_connection():
    run = bridges.measure(bridges.asgi_hello, "asgi", name="ASGI", requests=6, wait_ms=200, trace=True)
    assert run.statuses == [200] * 6
    assert run.elapsed < 0.6 and run.at_once > 2
    assert run.threads is None
    assert len(run.tracer.filter(kind="connection_lost")) == 6


def test_a_traced_wsgi_run_shows_one_worker_thread_holding_every_request():
    run = bridges.measure(bridges.asyncio_run_bridge(bridges.async_hello), name="traced",
                          threads=1, requests=3, wait_ms=50, trace=True)
    calls = run.tracer.filter(kind="app_call")
    assert len(calls) == 3 and len({e.thread for e in calls}) == 1
    assert "returned list" in bridges.Tracer(run.tracer.filter(kind="app_return")).listing()


def test_table_lists_every_run():
    run = bridges.Run("x", 1, 100, [0.1, 0.2], 0.2, [200, 200])
    assert run.at_once == pytest.approx(1.0)
    assert "x" in bridges.table([run]).splitlines()[1]


# -- what the one-loop bridge cannot do ---------------------------------------------------------

def test_streaming_the_bridge_returns_all_at_once_asgi_streams_to_everyone():
    results = bridges.streaming_demo(count=3, interval=0.1, clients=2)
    whole, pulling, asgi = (results[name] for name in (
        "WSGI, one-loop bridge", "WSGI, one-loop bridge pulling each chunk", "ASGI"))
    assert all(len(arrivals) == 1 for arrivals in whole)          # one piece, at the end
    assert all(b"".join(c for _, c in a) == b"tick 0\ntick 1\ntick 2\n" for a in whole + pulling + asgi)
    assert max(a[0][0] for a in pulling) > 0.35                  # the second client waited for the first
    assert all(len(a) == 3 and a[0][0] < 0.25 for a in asgi)      # both streams at once
    assert "first byte" in bridges.streaming_table(results)


def test_a_waiting_bridged_coroutine_never_learns_the_client_left_an_asgi_app_does():
    results = bridges.disconnect_demo(wait=0.6, leave_after=0.1)
    wsgi, asgi = results["WSGI, one-loop bridge"], results["ASGI"]
    assert wsgi.app_learned is None and wsgi.app_done >= 0.59
    assert asgi.app_learned is not None and 0.09 <= asgi.app_learned < 0.4
