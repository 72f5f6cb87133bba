"""ASGI lifespan (asgiref specs/lifespan.rst): startup/shutdown, state, and the three modes."""

from __future__ import annotations

import logging

import httpx
import pytest

from asgi_lab import Config, serve_in_background
from asgi_lab.asgi.lifespan import LifespanFailure

events: list[str] = []


async def app_with_state(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            events.append(message["type"])
            if message["type"] == "lifespan.startup":
                scope["state"]["db"] = "connected"
                scope["state"]["counter"] = 0
                await send({"type": "lifespan.startup.complete"})
            else:
                await send({"type": "lifespan.shutdown.complete"})
                return
    state = scope["state"]
    state["counter"] += 1  # a per-request shallow copy: this must not leak to the next request
    state["mine"] = scope["path"]
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body",
                "body": f"{state['db']} {state['counter']} {state['mine']}".encode()})


def test_startup_and_shutdown_run_and_state_is_copied_per_request():
    events.clear()
    with serve_in_background(app_with_state, name="test-lifespan") as server:
        assert events == ["lifespan.startup"]
        assert httpx.get(server.url + "/a").text == "connected 1 /a"
        assert httpx.get(server.url + "/b").text == "connected 1 /b"  # not 2: a copy each time
    assert events == ["lifespan.startup", "lifespan.shutdown"]


async def refuses_to_start(scope, receive, send):
    if scope["type"] == "lifespan":
        await receive()
        await send({"type": "lifespan.startup.failed", "message": "no database"})
        return


@pytest.mark.parametrize("mode", ["on", "auto"])
def test_startup_failed_stops_the_server_with_a_clear_message(mode):
    with pytest.raises(LifespanFailure, match="no database"):
        serve_in_background(refuses_to_start, name="test-fail", config=Config(port=0, lifespan=mode))


async def http_only(scope, receive, send):
    assert scope["type"] == "http", "this app only speaks HTTP"
    await send({"type": "http.response.start", "status": 204, "headers": []})
    await send({"type": "http.response.body", "body": b""})


def test_auto_tolerates_an_app_without_lifespan_and_logs_why(caplog):
    with caplog.at_level(logging.INFO, logger="asgi_lab.error"):
        with serve_in_background(http_only, name="test-auto", config=Config(port=0, lifespan="auto")) as server:
            assert httpx.get(server.url).status_code == 204
    messages = [r.getMessage() for r in caplog.records]
    assert any("appears unsupported" in m and "this app only speaks HTTP" in m for m in messages)


def test_on_requires_lifespan_support():
    with pytest.raises(LifespanFailure):
        serve_in_background(http_only, name="test-on", config=Config(port=0, lifespan="on"))


def test_off_never_calls_the_app_with_lifespan():
    with serve_in_background(http_only, name="test-off", config=Config(port=0, lifespan="off")) as server:
        assert httpx.get(server.url).status_code == 204
