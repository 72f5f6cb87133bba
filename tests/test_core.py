"""The sans-IO connection core (asgi_lab/core.py): its rules, with a fake clock and no socket.

Each test feeds bytes, advances the clock by hand, and reads the events and bytes that come
out. The last tests check the other promise of the core: both servers, given the same
request, produce the same socket and h11 trace layers.
"""

from __future__ import annotations

import ast
import inspect

import h11
import pytest

from asgi_lab import Tracer, serve_in_background
from asgi_lab import core as core_module
from asgi_lab.config import Config
from asgi_lab.core import (COMPLETE, NEED_DATA, NOT_STARTED, SENDING, STARTED, ConnectionCore,
                           IllegalTransition, Refused, ResponseHeads, Wait, tick_interval)
from asgi_lab.apps.pair import asgi_app, wsgi_app
from asgi_lab.wire import POST_REQUEST, trace_exchange
from asgi_lab.trace import merge_chunks

GET = b"GET /a?b=1 HTTP/1.1\r\nHost: x\r\n\r\n"


class Clock:
    """A clock that moves only when told to."""

    def __init__(self, now: float = 100.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def make(config: Config | None = None, tracer=None, wall: float = 1_000_000.0):
    clock = Clock()
    heads = ResponseHeads(clock=lambda: wall)
    config = config or Config(access_log=False)
    return ConnectionCore(config, heads, tracer, 1, ("127.0.0.1", 5000), clock), clock


def events(core) -> list:
    """Every event the core gives until it needs more bytes (or pauses)."""
    out = []
    while True:
        event = core.next_event()
        out.append(event)
        if event is NEED_DATA or event is h11.PAUSED or type(event) is Refused:
            return out


def ok_head(core, length: int = 2) -> h11.Response:
    return h11.Response(status_code=200, headers=core.heads.default_headers()
                        + [(b"content-length", str(length).encode())])


def answer(core, body: bytes = b"ok") -> bytes:
    core.start(ok_head(core, len(body)))
    return core.respond(body, end=True)


# -- the core does no I/O -----------------------------------------------------------------------

def test_the_core_imports_no_socket_thread_or_event_loop():
    tree = ast.parse(inspect.getsource(core_module))
    imported = {alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import)
                for alias in node.names}
    imported |= {node.module.split(".")[0] for node in ast.walk(tree)
                 if isinstance(node, ast.ImportFrom) and node.module}
    assert not imported & {"socket", "asyncio", "threading", "selectors", "select"}


# -- refusals -------------------------------------------------------------------------------------

@pytest.mark.parametrize("request_bytes, status", [
    (b"GARBAGE\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\n\r\n", 400),                                   # no Host (h11)
    (b"CONNECT x:443 HTTP/1.1\r\nHost: x\r\n\r\n", 501),
    (b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", 414),
    (b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"b" * 70_000 + b"\r\n\r\n", 431),
    (b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n", 400),
    (b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 999999999999\r\n\r\n", 413),
    (b"GET /#frag HTTP/1.1\r\nHost: x\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\nHost: x\r\nX: a\x07b\r\n\r\n", 400),
    (b"POST / HTTP/1.1\r\nHost: x\r\nContent-Type: a/b\r\ncontent-TYPE: c/d\r\n\r\n", 400),  # names: any case
    (b"POST / HTTP/1.1\r\nHost: x\r\ncontent-LENGTH: 3\r\nTRANSFER-encoding: chunked\r\n\r\n", 400),
])
def test_a_request_head_that_breaks_a_rule_is_refused(request_bytes, status):
    core, _ = make()
    core.receive_data(request_bytes)
    event = events(core)[-1]
    assert type(event) is Refused and event.status == status
    out = core.refuse(event.status, event.reason)
    assert out.startswith(f"HTTP/1.1 {status} ".encode()) and b"connection: close" in out
    assert core.state is COMPLETE and core.cycle_done() is False


@pytest.mark.parametrize("size", [1, 7, 10_000], ids=["byte-by-byte", "7-byte-reads", "one-read"])
@pytest.mark.parametrize("te_lines, status", [
    (b"Transfer-Encoding: gzip, chunked", 501),
    (b"Transfer-Encoding: gzip\r\nTransfer-Encoding: chunked", 501),
    (b"Transfer-Encoding: chunked, gzip", 400),
    (b"Transfer-Encoding: gzip", 400),
])
def test_a_transfer_encoding_h11_refuses_gets_its_status_from_the_heads_bytes(te_lines, status, size):
    """h11 refuses every Transfer-Encoding but a lone chunked, without the request: the core
    keeps the head's bytes (`head_data`), however they came, for `http11.refusal_for`."""
    core, _ = make()
    request = b"POST / HTTP/1.1\r\nHost: x\r\n" + te_lines + b"\r\n\r\n0\r\n\r\n"
    for start in range(0, len(request), size):
        core.receive_data(request[start:start + size])
    event = events(core)[-1]
    assert type(event) is Refused and event.status == status


def test_the_head_bytes_kept_are_those_of_the_current_request_only():
    core, _ = make()
    core.receive_data(GET + b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n")
    assert type(events(core)[0]) is h11.Request and core.head_data is None  # dropped once parsed
    answer(core)
    assert core.cycle_done() is True
    assert core.head_data == [b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n"]
    assert events(core)[-1].status == 501


def test_a_chunked_body_growing_over_the_limit_is_refused_with_413():
    core, _ = make(Config(max_body_bytes=10, access_log=False))
    core.receive_data(b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                      b"8\r\n12345678\r\n8\r\n12345678\r\n0\r\n\r\n")
    got = events(core)
    assert type(got[0]) is h11.Request and type(got[1]) is h11.Data
    assert type(got[-1]) is Refused and got[-1].status == 413


def test_an_absolute_form_target_becomes_origin_form_with_its_host():
    core, _ = make()
    core.receive_data(b"GET http://example.com/p?q HTTP/1.1\r\nHost: other\r\n\r\n")
    request = events(core)[0]
    assert request.target == b"/p?q" and (b"host", b"example.com") in list(request.headers)


# -- pipelining, keep-alive ---------------------------------------------------------------------

def test_pipelined_requests_come_one_at_a_time_in_order():
    core, _ = make()
    core.receive_data(GET + b"GET /second HTTP/1.1\r\nHost: x\r\n\r\n")
    first = events(core)
    assert [type(e) for e in first[:2]] == [h11.Request, h11.EndOfMessage] and first[2] is h11.PAUSED
    assert core.request_buffered
    answer(core)
    assert core.cycle_done() is True
    assert core.head_bytes > 0  # the next head is already here
    second = events(core)
    assert second[0].target == b"/second"


def test_between_requests_the_core_needs_data_until_bytes_or_eof_arrive():
    """Nothing received since the last response: NEED_DATA without asking h11. But EOF
    counts as something, whether it came before the response was done or after."""
    core, _ = make()
    assert core.next_event() is NEED_DATA  # a new connection, nothing sent yet
    core.receive_data(GET)
    events(core)
    answer(core)
    assert core.cycle_done() is True and core.next_event() is NEED_DATA
    core.receive_data(b"")
    assert type(core.next_event()) is h11.ConnectionClosed

    core, _ = make()
    core.receive_data(GET)
    events(core)
    core.receive_data(b"")  # the client closed its side while we answered
    answer(core)
    assert core.cycle_done() is True
    assert type(core.next_event()) is h11.ConnectionClosed


@pytest.mark.parametrize("request_bytes", [
    b"GET / HTTP/1.0\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
])
def test_h11_decides_to_close_after_http_1_0_and_connection_close(request_bytes):
    core, _ = make()
    core.receive_data(request_bytes)
    events(core)
    answer(core)
    assert core.cycle_done() is False


def test_shutdown_closes_after_the_response():
    core, _ = make()
    core.receive_data(GET)
    events(core)
    core.keep_alive = False
    answer(core)
    assert core.cycle_done() is False


def test_an_unread_body_is_skipped_if_buffered_and_closes_the_connection_if_not():
    core, _ = make()
    core.receive_data(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n\r\nabcd")
    assert type(core.next_event()) is h11.Request  # the app answers without reading the body
    answer(core)
    assert core.cycle_done() is True  # all of it was buffered: skipped
    core.receive_data(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nabcd")
    assert type(core.next_event()) is h11.Request
    answer(core)
    assert core.cycle_done() is False  # the rest is still on its way: close


# -- 100 Continue, HEAD ---------------------------------------------------------------------------

def test_100_continue_is_sent_once_when_asked_and_not_after_the_head():
    core, _ = make()
    core.receive_data(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nExpect: 100-continue\r\n\r\n")
    assert type(core.next_event()) is h11.Request
    assert core.go_ahead() == b"HTTP/1.1 100 Continue\r\n\r\n"
    assert core.go_ahead() == b""
    core2, _ = make()
    core2.receive_data(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nExpect: 100-continue\r\n\r\n")
    core2.next_event()
    core2.start(ok_head(core2))
    core2.respond(b"")  # the final head went out first
    assert core2.go_ahead() == b""


def test_a_head_request_gets_the_head_but_no_body():
    core, _ = make()
    core.receive_data(b"HEAD / HTTP/1.1\r\nHost: x\r\n\r\n")
    events(core)
    out = answer(core, b"hi")
    assert out.endswith(b"\r\n\r\n") and b"content-length: 2" in out


# -- the response state machine -------------------------------------------------------------------

def test_the_response_state_moves_only_forward():
    core, _ = make()
    core.receive_data(GET)
    events(core)
    assert core.state is NOT_STARTED
    core.start(ok_head(core))
    core.start(ok_head(core))  # replaced before it went out (WSGI exc_info): allowed
    assert core.state is STARTED
    core.respond(b"o")
    assert core.state is SENDING
    with pytest.raises(IllegalTransition):
        core.start(ok_head(core))
    core.respond(b"k", end=True)
    assert core.state is COMPLETE
    with pytest.raises(IllegalTransition):
        core.respond(b"", end=True)
    assert core.refuse(500) == b""  # too late for an error response: the caller closes


def test_an_error_before_the_head_went_out_replaces_it():
    core, _ = make()
    core.receive_data(GET)
    events(core)
    core.start(ok_head(core))
    out = core.refuse(500)
    assert out.startswith(b"HTTP/1.1 500 Internal Server Error\r\n") and core.state is COMPLETE


# -- deadlines, with a fake clock ------------------------------------------------------------------

def test_an_idle_connection_gets_timeout_keep_alive_and_is_closed_at_the_second_sweep():
    core, clock = make(Config(timeout_keep_alive=5, timeout_request_header=10, access_log=False))
    assert core.time_left(clock.now) == 5
    clock.now += 5.01
    assert core.past_deadline(clock.now) is False  # overdue: the next sweep decides
    clock.now += 0.25
    assert core.past_deadline(clock.now) is True
    assert core.expired() == b""  # nothing to say to an idle client: just close


def test_a_request_arriving_between_two_sweeps_rescues_an_overdue_connection():
    core, clock = make(Config(timeout_keep_alive=5, access_log=False))
    clock.now += 6
    assert core.past_deadline(clock.now) is False
    core.receive_data(GET)  # read between the sweeps
    assert type(core.next_event()) is h11.Request
    clock.now += 1
    assert core.past_deadline(clock.now) is False  # the app is running: no deadline
    answer(core)
    assert core.cycle_done() and core.time_left(clock.now) == 5  # a fresh idle wait


def test_a_head_that_has_begun_gets_timeout_request_header_from_the_start():
    core, clock = make(Config(timeout_keep_alive=5, timeout_request_header=10, access_log=False))
    clock.now += 1
    core.receive_data(b"GET / HTTP/1.1\r\n")
    assert events(core) == [NEED_DATA]
    assert core.time_left(clock.now) == 9  # counted from when the wait began
    clock.now += 3
    core.receive_data(b"X-Slow: 1\r\n")  # trickling bytes do not reset it
    assert core.time_left(clock.now) == 6
    clock.now += 7
    assert not core.past_deadline(clock.now) and core.past_deadline(clock.now)
    core.expired()
    assert core.wait is Wait.HEAD


def test_a_silent_body_gets_408_after_timeout_request_header_of_silence():
    core, clock = make(Config(timeout_request_header=2, access_log=False))
    core.receive_data(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nab")
    assert type(core.next_event()) is h11.Request
    assert core.time_left(clock.now) == float("inf")  # the app is not waiting yet
    core.waiting_for(Wait.BODY)
    clock.now += 1.5
    core.receive_data(b"cd")  # progress: the silence starts again
    assert core.time_left(clock.now) == 2
    clock.now += 2.5
    assert not core.past_deadline(clock.now) and core.past_deadline(clock.now)
    assert core.expired().startswith(b"HTTP/1.1 408 Request Timeout\r\n")


def test_a_client_not_taking_our_bytes_gets_wsgi_timeout_write_from_its_last_progress():
    core, clock = make(Config(wsgi_timeout_write=30, access_log=False))
    core.waiting_for(Wait.WRITE)
    clock.now += 20
    core.progress()
    assert core.time_left(clock.now) == 30


def test_the_tick_is_a_quarter_of_the_shortest_timeout_within_bounds():
    assert tick_interval(Config(timeout_keep_alive=1, timeout_request_header=10)) == 0.25
    assert tick_interval(Config(timeout_keep_alive=0.01)) == 0.05
    assert tick_interval(Config(timeout_keep_alive=100, timeout_request_header=100)) == 1.0


# -- response heads -------------------------------------------------------------------------------

def test_response_heads_are_built_once_per_second_and_carry_that_seconds_date():
    wall = [1_000_000.2]
    heads = ResponseHeads(clock=lambda: wall[0])
    built = []

    def build(status):
        built.append(status)
        return h11.Response(status_code=status, headers=heads.default_headers())

    first = heads.head(("200",), build, 200)
    assert heads.head(("200",), build, 200) is first and built == [200]
    wall[0] += 1
    second = heads.head(("200",), build, 200)
    assert second is not first and built == [200, 200]
    assert dict(second.headers)[b"date"] != dict(first.headers)[b"date"]
    assert heads.head([1], build, 201).status_code == 201  # unhashable key: built, not cached


# -- the trace: both directions ---------------------------------------------------------------------

def test_outgoing_h11_events_are_traced_before_their_bytes():
    tracer = Tracer()
    core, _ = make(tracer=tracer)
    core.receive_data(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nExpect: 100-continue\r\n\r\n")
    core.next_event()
    core.go_ahead()
    core.receive_data(b"hi")
    events(core)
    answer(core)
    assert [(e.layer, e.kind) for e in tracer.events] == [
        ("socket", "bytes_in"), ("h11", "Request"),
        ("h11", "InformationalResponse"), ("socket", "bytes_out"),
        ("socket", "bytes_in"), ("h11", "Data"), ("h11", "EndOfMessage"),
        ("h11", "Response"), ("h11", "Data"), ("h11", "EndOfMessage"), ("socket", "bytes_out")]
    assert tracer.events[-4].data["status_code"] == 200


def test_a_refusal_is_traced_as_h11_events_then_bytes():
    tracer = Tracer()
    core, _ = make(tracer=tracer)
    core.receive_data(b"NOPE\r\n\r\n")
    event = core.next_event()
    core.refuse(event.status)
    assert [(e.layer, e.kind) for e in tracer.events] == [
        ("socket", "bytes_in"), ("h11", "Response"), ("h11", "Data"), ("h11", "EndOfMessage"),
        ("socket", "bytes_out")]


# -- both shells, same layers ------------------------------------------------------------------------

def layers(events) -> list[tuple[str, str]]:
    return [(e.layer, e.kind) for e in merge_chunks(events) if e.layer in ("socket", "h11")]


def test_the_two_servers_produce_the_same_socket_and_h11_layers():
    traces = {}
    for kind, app in (("asgi", asgi_app), ("wsgi", wsgi_app)):
        tracer = Tracer()
        with serve_in_background(app, kind, name=f"test-core-{kind}", tracer=tracer,
                                 access_log=False) as server:
            traces[kind] = layers(trace_exchange(server, tracer, POST_REQUEST))
    assert traces["asgi"] == traces["wsgi"]
    assert ("h11", "Response") in traces["asgi"]


# -- the access line ---------------------------------------------------------------------------------

def test_one_access_line_per_response_with_status_bytes_and_time_also_for_refusals(caplog):
    core, clock = make(Config(access_log=True))
    with caplog.at_level("INFO", "asgi_lab.access"):
        core.receive_data(GET)
        events(core)
        clock.now += 0.002
        core.start(ok_head(core))
        assert not caplog.records  # logged when the response is complete, not at its head
        out = core.respond(b"ok", end=True)
        core.cycle_done()
        core.receive_data(b"BROKEN\r\n\r\n")
        refused = events(core)[-1]
        refusal = core.refuse(refused.status)
    lines = [record.getMessage() for record in caplog.records]
    assert lines == [f'127.0.0.1:5000 - "GET /a?b=1 HTTP/1.1" 200 OK {len(out)} B 2.0 ms',
                     f'127.0.0.1:5000 - "- - HTTP/1.1" 400 Bad Request {len(refusal)} B 0.0 ms']


# -- the shells' own states use the same rule -----------------------------------------------------

def test_the_shells_request_and_websocket_states_refuse_illegal_transitions():
    from asgi_lab.asgi import http, websocket
    from asgi_lab.core import advance

    assert advance(http.RECEIVING, http.RECEIVED, http.INBOUND) is http.RECEIVED
    with pytest.raises(IllegalTransition, match="delivered -> received"):
        advance(http.DELIVERED, http.RECEIVED, http.INBOUND)  # no body after the last piece
    assert advance(websocket.CONNECTING, websocket.ACCEPTED, websocket.ALLOWED) is websocket.ACCEPTED
    with pytest.raises(IllegalTransition, match="closing -> accepted"):
        advance(websocket.CLOSING, websocket.ACCEPTED, websocket.ALLOWED)  # no reopening


async def asgi_crash(scope, receive, send):
    if scope["type"] == "http":
        raise RuntimeError("boom before the response")


def wsgi_crash(environ, start_response):
    raise RuntimeError("boom before the response")


@pytest.mark.parametrize("kind, app", [("asgi", asgi_crash), ("wsgi", wsgi_crash)])
def test_an_unhandled_exception_before_the_response_is_a_500_then_the_connection_closes(kind, app, caplog):
    """The app's state for that connection is unknown after a crash: answer 500 and close,
    even on a keep-alive connection (as uvicorn does), with an access line for the 500."""
    import socket

    with caplog.at_level("INFO", "asgi_lab.access"):
        with serve_in_background(app, kind, name=f"test-core-crash-{kind}", access_log=True) as server:
            with socket.create_connection(server.address, timeout=5) as sock:
                sock.sendall(b"GET /crash HTTP/1.1\r\nHost: x\r\n\r\n")  # keep-alive by default
                answer = b""
                while chunk := sock.recv(65536):
                    answer += chunk
    assert answer.startswith(b"HTTP/1.1 500 Internal Server Error\r\n")
    assert b"connection: close" in answer.lower()
    assert any('"GET /crash HTTP/1.1" 500 Internal Server Error' in r.getMessage() for r in caplog.records)
