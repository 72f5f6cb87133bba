"""The socket clients of `asgi_lab.wire`, and the two WSGI facts notebook 01 measures with
them: a streaming app learns at its next write that the client left; a waiting long poll
never learns it and keeps its thread until its own timeout."""

from __future__ import annotations

import threading
import time

from asgi_lab import serve_in_background
from asgi_lab.wire import GET_REQUEST, leave_early, time_to_first_byte


def test_time_to_first_byte_waits_for_a_late_head_and_reads_the_whole_answer():
    def late(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain")])
        yield b""                     # empty: PEP 3333 says the head must wait for real body
        time.sleep(0.3)
        yield b"ready"

    with serve_in_background(late, "wsgi", name="test-late", access_log=False) as server:
        first, answer = time_to_first_byte(server.address, GET_REQUEST)
    assert first >= 0.25, "the head went out before the first non-empty chunk"
    assert answer.startswith(b"HTTP/1.1 200 ") and b"ready" in answer


def test_leave_early_closes_after_the_bytes_it_waits_for_or_after_a_delay():
    def ticker(environ, start_response):
        start_response("200 OK", [])
        for n in range(1000):
            yield f"tick {n}\n".encode()
            time.sleep(0.01)

    with serve_in_background(ticker, "wsgi", name="test-leave", access_log=False) as server:
        started = time.monotonic()
        closed = leave_early(server.address, GET_REQUEST, until=b"tick 2")
        assert 0.015 < closed - started < 2
        started = time.monotonic()
        closed = leave_early(server.address, GET_REQUEST, after=0.2)
        assert 0.2 <= closed - started < 2


def test_a_streaming_wsgi_app_learns_at_its_next_write_that_the_client_left():
    ended = []

    def ticker(environ, start_response):
        start_response("200 OK", [])
        try:
            while True:
                yield b"tick\n"
                time.sleep(0.02)
        finally:
            ended.append(time.monotonic())   # close() raised GeneratorExit at the yield

    with serve_in_background(ticker, "wsgi", name="test-stream-leave", access_log=False) as server:
        closed = leave_early(server.address, GET_REQUEST, until=b"tick")
        deadline = time.monotonic() + 3
        while not ended and time.monotonic() < deadline:
            time.sleep(0.01)
    assert ended and ended[0] - closed < 1.0


def test_a_waiting_wsgi_long_poll_keeps_its_thread_until_its_timeout():
    news = threading.Condition()
    ended = []

    def long_poll(environ, start_response):
        with news:
            news.wait(timeout=0.8)           # only notify() or the timeout wakes it
        ended.append(time.monotonic())
        start_response("200 OK", [("Content-Length", "0")])
        return [b""]

    with serve_in_background(long_poll, "wsgi", name="test-poll-leave", access_log=False) as server:
        started = time.monotonic()
        closed = leave_early(server.address, GET_REQUEST, after=0.1)
        deadline = time.monotonic() + 3
        while not ended and time.monotonic() < deadline:
            time.sleep(0.01)
    assert ended and ended[0] - started >= 0.75, "something woke the long poll before its timeout"
    assert ended[0] - closed >= 0.6
