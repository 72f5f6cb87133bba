"""The in-process harness: it plays the server exactly, records everything, refuses what the
spec forbids, and runs from inside a running event loop (as in Jupyter)."""

from __future__ import annotations

import asyncio

import pytest

from asgi_lab.exercises.harness import (ASGIDriver, AppTimeout, ProtocolViolation, call_wsgi,
                                        describe_exception, http_request, http_scope,
                                        lifespan_scope, run, websocket_scope)


async def echo_body(scope, receive, send):
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    await send({"type": "http.response.start", "status": 200, "headers": [(b"x", b"y")]})
    await send({"type": "http.response.body", "body": body[:3], "more_body": True})
    await send({"type": "http.response.body", "body": body[3:]})


def test_http_request_streams_body_and_records_a_transcript():
    result = run(lambda: http_request(echo_body, "POST", body_chunks=[b"ab", b"cd", b"ef"])).value
    assert (result.status, result.body, result.body_messages) == (200, b"abcdef", 2)
    assert result.header(b"x") == b"y" and not result.problems and result.error is None
    senders = [(record.sender, record.message["type"]) for record in result.driver.transcript]
    assert senders == [("server", "http.request")] * 3 + [
        ("app", "http.response.start"), ("app", "http.response.body"), ("app", "http.response.body")]
    times = [record.t for record in result.driver.transcript]
    assert times == sorted(times)


def test_receive_says_disconnect_after_the_response_and_after_the_client_left():
    seen = []

    async def app(scope, receive, send):
        await receive()
        await send({"type": "http.response.start", "status": 204})
        await send({"type": "http.response.body"})
        seen.append(await receive())

    run(lambda: http_request(app))
    assert seen == [{"type": "http.disconnect"}]

    async def waits_for_client(scope, receive, send):
        await receive()
        seen.append(await receive())

    async def scenario():
        driver = ASGIDriver(waits_for_client, http_scope()).start()
        await driver.send_input({"type": "http.request", "body": b""})
        await asyncio.sleep(0.02)
        assert not driver.done
        driver.disconnect()
        assert await driver.wait(1.0)

    run(scenario)
    assert seen[-1] == {"type": "http.disconnect"}


@pytest.mark.parametrize("message, problem", [
    ({"type": "http.response.body", "body": b"x"}, "http.response.body before http.response.start"),
    ({"type": "http.response.start", "status": "200"}, "int status"),
    ({"type": "http.response.start", "status": 200, "headers": [("a", "b")]}, "bytes"),
])
def test_refuses_what_the_spec_forbids(message, problem):
    async def app(scope, receive, send):
        await send(message)

    result = run(lambda: http_request(app)).value
    assert problem in result.problems[0]
    assert isinstance(result.error, ProtocolViolation)


def test_send_after_disconnect_raises_in_2_4_and_is_dropped_in_2_3():
    outcomes = {}

    async def app(scope, receive, send):
        await receive()
        await send({"type": "http.response.start", "status": 200})
        while (await receive())["type"] != "http.disconnect":
            pass
        try:
            await send({"type": "http.response.body", "body": b"late", "more_body": True})
            outcomes[scope["asgi"]["spec_version"]] = "dropped"
        except OSError:
            outcomes[scope["asgi"]["spec_version"]] = "OSError"

    async def scenario(version):
        driver = ASGIDriver(app, http_scope(spec_version=version)).start()
        await driver.send_input({"type": "http.request", "body": b""})
        await driver.receive_output()
        driver.disconnect()
        await driver.wait(1.0)
        return driver.sends_after_disconnect

    assert run(lambda: scenario("2.4")).value == 1
    assert run(lambda: scenario("2.3")).value == 1
    assert outcomes == {"2.4": "OSError", "2.3": "dropped"}


def test_websocket_send_before_accept_and_lifespan_answered_twice():
    async def eager(scope, receive, send):
        await receive()
        await send({"type": "websocket.send", "text": "hi"})

    async def twice(scope, receive, send):
        await receive()
        await send({"type": "lifespan.startup.complete"})
        await send({"type": "lifespan.startup.complete"})

    async def scenario(app, scope, first):
        driver = ASGIDriver(app, scope).start()
        await driver.send_input({"type": first})
        await driver.wait(1.0)
        return driver.problems

    problems = run(lambda: scenario(eager, websocket_scope(), "websocket.connect")).value
    assert "not accepted yet" in problems[0]
    assert "answered twice" in run(lambda: scenario(twice, lifespan_scope({}), "lifespan.startup")).value[0]


def test_receive_output_times_out_and_reports_a_finished_app():
    async def silent(scope, receive, send):
        await asyncio.sleep(5)

    async def returns(scope, receive, send):
        return None

    async def scenario(app):
        driver = ASGIDriver(app, http_scope()).start()
        try:
            return await driver.receive_output(0.05)
        finally:
            await driver.stop()

    with pytest.raises(AppTimeout):
        run(lambda: scenario(silent))
    assert run(lambda: scenario(returns)).value is None


def test_run_catches_forgotten_awaits_and_works_inside_a_running_loop():
    async def forgets(scope, receive, send):
        send({"type": "http.response.start", "status": 200})

    async def inside_jupyter_like_loop():
        return run(lambda: http_request(forgets))  # a loop already runs in this thread

    outcome = asyncio.run(inside_jupyter_like_loop())
    assert outcome.value.status is None
    assert any("send" in name for name in outcome.unawaited)


def test_call_wsgi_plays_the_server_side_of_pep_3333():
    closed = []

    class Body:
        def __iter__(self):
            yield b"a"
            yield b""
            yield b"b"

        def close(self):
            closed.append(True)

    def app(environ, start_response):
        write = start_response("200 OK", [("Content-Type", "text/plain")])
        write(b"0")
        assert environ["REQUEST_METHOD"] == "POST" and environ["QUERY_STRING"] == "q=1"
        assert environ["wsgi.input"].read() == b"data" and environ["HTTP_X_A"] == "1"
        return Body()

    result = call_wsgi(app, "POST", "/p", "q=1", headers=[("x-a", "1")], body=b"data")
    assert (result.status_code, result.body, closed) == (200, b"0ab", [True])
    assert result.problems == [] and result.error is None

    def twice(environ, start_response):
        start_response("200 OK", [])
        start_response("500 Oops", [])
        return [b""]

    def hop_by_hop(environ, start_response):
        start_response("200 OK", [("Connection", "close")])
        return [b""]

    assert "twice" in call_wsgi(twice).problems[0]
    assert "hop-by-hop" in call_wsgi(hop_by_hop).problems[0]


def test_describe_exception_points_at_the_students_line():
    def student_code():
        scope = {}
        return scope["app_state"]

    try:
        student_code()
    except KeyError as exc:
        text = describe_exception(exc)
    assert text.startswith("KeyError: 'app_state' (in student_code, line ")
    assert 'return scope["app_state"]' in text


# -- the blocking-loop experiment and the pitfall apps it measures ----------------------------------

def test_blocking_loop_measures_the_stall_and_the_fixes():
    from asgi_lab.apps import pitfalls
    from asgi_lab.experiments import blocking_loop

    runs = blocking_loop.sweep({"time.sleep": pitfalls.blocking_sleep,
                                "to_thread": pitfalls.with_to_thread}, work_ms=(60,), concurrency=3)
    blocked, fixed = runs
    assert blocked.statuses == fixed.statuses == [200] * 4
    # Served one by one: the probe waits for (most of) the three 60 ms requests.
    assert blocked.probe_latency > 0.1 and blocked.loop_lag > 0.05 and blocked.slowest > 0.15
    # A real query on worker threads: the loop stays free (the queries share the machine's
    # cores, so they need not finish any sooner).
    assert fixed.probe_latency < 0.05 and fixed.loop_lag < 0.05
    assert "time.sleep" in blocking_loop.table(runs)


def test_blocking_loop_runs_round_trip_through_json(tmp_path):
    from asgi_lab.experiments import blocking_loop

    runs = [blocking_loop.Run("time.sleep", 50, 3, [0.05, 0.1, 0.15], 0.14, 0.1, 0.16, [200] * 4)]
    blocking_loop.save(runs, tmp_path / "runs.json")
    assert blocking_loop.load(tmp_path / "runs.json") == runs


def test_forgotten_await_demo_shows_the_warning_and_the_500():
    from asgi_lab.experiments.blocking_loop import forgotten_await_demo

    seen = forgotten_await_demo()
    assert seen["status"] == 500
    assert seen["warnings"] and all("was never awaited" in text for text in seen["warnings"])
    assert seen["server_log"] == ["ASGI app returned without starting its response"]


def test_exercise_clients_only_talk_to_loopback():
    from asgi_lab.exercises import client

    with pytest.raises(ValueError, match="loopback"):
        client.request(("192.0.2.1", 80))


def test_send_hook_can_hold_a_websocket_accept_and_sends_meanwhile_are_refused():
    async def app(scope, receive, send):
        await receive()
        await send({"type": "websocket.accept"})
        await send({"type": "websocket.send", "text": "welcome"})

    async def scenario():
        gate = asyncio.Event()

        async def hold(message):
            if message["type"] == "websocket.accept":
                await gate.wait()

        driver = ASGIDriver(app, websocket_scope(), send_hook=hold).start()
        await driver.send_input({"type": "websocket.connect"})
        await asyncio.sleep(0.02)
        assert driver.accepting and not driver.started  # the accept is "on the wire"
        with pytest.raises(ProtocolViolation):
            await driver.send({"type": "websocket.send", "text": "too early"})
        gate.set()
        assert (await driver.receive_output())["type"] == "websocket.accept"
        assert (await driver.receive_output())["text"] == "welcome"
        return driver.problems

    assert "not accepted yet" in run(scenario).value[0]


def test_call_wsgi_reraises_exc_info_once_the_body_has_started():
    import sys

    def app(environ, start_response):
        write = start_response("200 OK", [("Content-Type", "text/plain")])
        write(b"partial")
        try:
            raise ValueError("broke half-way")
        except ValueError:
            start_response("500 Internal Server Error", [], sys.exc_info())
        return [b""]

    result = call_wsgi(app)
    assert isinstance(result.error, ValueError)  # PEP 3333: too late to change the response
    assert result.body == b"partial"


def test_run_stops_a_scenario_that_never_awaits():
    """A `while True:` without an await would spin a core for as long as the kernel lives."""
    import threading

    async def spins():
        while True:
            pass

    with pytest.raises(AppTimeout):
        run(spins, timeout=0.3)
    assert not [t for t in threading.enumerate() if t.name == "exercise-harness" and t.is_alive()]


def test_describe_exception_names_the_students_line_not_a_library_frame():
    import h11

    def handler():
        conn = h11.Connection(h11.SERVER)
        conn.receive_data(b"NOT HTTP\r\n\r\n")
        return conn.next_event()

    try:
        handler()
    except h11.RemoteProtocolError as exc:
        text = describe_exception(exc)
    assert text.startswith("RemoteProtocolError: illegal request line")
    assert "(in handler, line" in text and "conn.next_event()" in text
