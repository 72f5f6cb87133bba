"""The WSGI server over real sockets on 127.0.0.1: PEP 3333 behaviour, HTTP/1.1, limits,
errors, the pool, shutdown, and the clients the notebooks use (Flask, httpx, websockets).

Responses are read with h11 in the client role, so the tests check what a real client sees.
"""

from __future__ import annotations

import contextlib
import gc
import io
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import weakref

import h11
import httpx
import pytest

from asgi_lab import Tracer, serve_in_background
from asgi_lab.apps import wsgi_demo
from asgi_lab.apps.hello import wsgi_app as hello
from asgi_lab.config import Config
from asgi_lab.wsgi.server import WSGIServer
import rawhttp

pytestmark = pytest.mark.timeout(30)


# -- helpers ------------------------------------------------------------------------------------

@contextlib.contextmanager
def serving(app, tracer=None, **settings):
    settings.setdefault("timeout_graceful_shutdown", 1.0)
    settings.setdefault("access_log", False)
    server = WSGIServer(app, Config(port=0, **settings), tracer=tracer)
    server.start()
    try:
        yield server
    finally:
        server.shutdown()


class Client(rawhttp.Client):
    """rawhttp's client, with requests that may also be sent as raw bytes, and responses as
    (status, headers dict, body)."""

    def send_raw(self, data: bytes) -> None:
        self.sock.sendall(data)

    def response(self, method="GET"):
        """(status, headers dict, body) of the next response. For requests sent with send_raw,
        `method` tells h11 what was asked (it matters for HEAD)."""
        if self.conn.our_state is h11.IDLE:  # sent raw: let h11 know a request went out
            self.conn.send(h11.Request(method=method, target="/", headers=[("host", "test")]))
            self.conn.send(h11.EndOfMessage())
        response, body = super().response()
        headers = {name.decode(): value.decode("latin-1") for name, value in response.headers}
        return response.status_code, headers, body

    def is_closed(self, timeout: float = 3.0) -> bool:
        """True if the server closes the connection within `timeout` (extra bytes are ignored)."""
        self.sock.settimeout(timeout)
        try:
            while self.sock.recv(65536):
                pass
            return True
        except ConnectionResetError:
            return True
        except TimeoutError:
            return False

    def close(self) -> None:
        self.sock.close()


def get(server, target="/", **kwargs):
    client = Client(server.address)
    try:
        return client.request("GET", target, **kwargs).response()
    finally:
        client.close()


def text_app(body: bytes = b"ok", status="200 OK"):
    def app(environ, start_response):
        start_response(status, [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
        return [body]
    return app


# -- PEP 3333: environ over the wire ---------------------------------------------------------------

def test_environ_over_the_wire():
    seen = {}

    def app(environ, start_response):
        seen.update(environ)
        start_response("200 OK", [("Content-Length", "0")])
        return []

    with serving(app, root_path="/mount") as server:
        port = server.address[1]
        client = Client(server.address)
        client.request("POST", "/caf%C3%A9?q=%41", headers=[("content-type", "text/plain"), ("x-a", "1"),
                                                               ("x-a", "2")], body=b"hi")
        assert client.response()[0] == 200
        client.close()
    assert seen["PATH_INFO"].encode("latin-1").decode("utf-8") == "/café"
    assert seen["SCRIPT_NAME"] == "/mount"
    assert seen["QUERY_STRING"] == "q=%41"
    assert (seen["CONTENT_TYPE"], seen["CONTENT_LENGTH"]) == ("text/plain", "2")
    assert seen["HTTP_X_A"] == "1,2"
    assert seen["SERVER_NAME"] == "127.0.0.1" and seen["SERVER_PORT"] == str(port)
    assert seen["REMOTE_ADDR"] == "127.0.0.1"
    assert seen["wsgi.multithread"] is True and seen["wsgi.version"] == (1, 0)


# -- wsgi.input ------------------------------------------------------------------------------------

def reader_app(environ, start_response):
    """Reads the body in the way ?how= says, and answers with what it read."""
    stream = environ["wsgi.input"]
    how = environ["QUERY_STRING"]
    if how == "sizes":
        parts = []
        while chunk := stream.read(3):
            parts.append(chunk)
        body = b"|".join(parts)
    elif how == "lines":
        body = b"|".join(stream)
    elif how == "readline":
        body = stream.readline() + b"|" + stream.read()
    else:
        body = stream.read()
    start_response("200 OK", [("Content-Length", str(len(body)))])
    return [body]


@pytest.mark.parametrize("how, expected", [("all", b"ab\ncdef\ng"), ("sizes", b"ab\n|cde|f\ng"),
                                            ("lines", b"ab\n|cdef\n|g"), ("readline", b"ab\n|cdef\ng")])
def test_wsgi_input_reads_the_body_and_never_past_it(how, expected):
    body = b"ab\ncdef\ng"
    with serving(reader_app) as server:
        client = Client(server.address)
        # The body, then a pipelined second request: reading the first body must not eat it.
        client.send_raw(f"POST /?{how} HTTP/1.1\r\nHost: t\r\nContent-Length: {len(body)}\r\n\r\n".encode()
                        + body + b"GET /?all HTTP/1.1\r\nHost: t\r\n\r\n")
        assert client.response()[2] == expected
        assert client.response()[:3:2] == (200, b"")  # the pipelined request, intact
        client.close()


def test_chunked_request_body_is_readable():
    with serving(reader_app) as server:
        client = Client(server.address)
        client.send_raw(b"POST /?all HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
                        b"5\r\nhello\r\n1\r\n \r\n5\r\nworld\r\n0\r\n\r\n")
        assert client.response()[2] == b"hello world"
        client.close()


def test_an_unread_body_is_skipped_before_the_next_request():
    with serving(text_app(b"ignored your body")) as server:
        client = Client(server.address)
        client.request("POST", "/", body=b"x" * 1000)
        assert client.response()[2] == b"ignored your body"
        client.request("GET", "/")
        assert client.response()[0] == 200
        client.close()


def test_100_continue_is_sent_when_the_app_first_reads_the_body():
    with serving(reader_app) as server:
        client = Client(server.address)
        client.send_raw(b"POST /?all HTTP/1.1\r\nHost: t\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n")
        client.conn.send(h11.Request(method="POST", target="/", headers=[("host", "t"), ("content-length", "5"),
                                                                          ("expect", "100-continue")]))
        interim = client.next_event()
        assert type(interim) is h11.InformationalResponse and interim.status_code == 100
        client.send_raw(b"hello")
        client.conn.send(h11.Data(data=b"hello"))
        client.conn.send(h11.EndOfMessage())
        assert client.response()[2] == b"hello"
        client.close()


def test_no_100_continue_when_the_app_does_not_read():
    with serving(text_app(b"no thanks", "403 Forbidden")) as server:
        client = Client(server.address)
        client.send_raw(b"POST / HTTP/1.1\r\nHost: t\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n")
        status, _, body = client.response()
        assert (status, body) == (403, b"no thanks")  # straight to the final response
        assert client.is_closed()  # the body never came: the connection cannot be reused
        client.close()


# -- start_response, write(), the iterable ------------------------------------------------------------

def test_exc_info_before_the_head_is_sent_replaces_the_response():
    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain")])
        try:
            raise ValueError("database down")
        except ValueError:
            start_response("503 Service Unavailable", [("Content-Length", "5")], sys.exc_info())
        return [b"sorry"]

    with serving(app) as server:
        status, _, body = get(server)
    assert (status, body) == (503, b"sorry")


def test_exc_info_after_the_head_is_sent_re_raises_and_cuts_the_connection():
    raised = []

    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain")])
        yield b"partial"
        try:
            raise ValueError("broke mid-stream")
        except ValueError:
            try:
                start_response("500 Internal Server Error", [], sys.exc_info())
            except ValueError as exc:
                raised.append(exc)
                raise
        yield b"never"

    with serving(app) as server:
        client = Client(server.address).request()
        assert type(client.next_event()) is h11.Response
        assert client.next_event().data == b"partial"
        with pytest.raises(h11.RemoteProtocolError):  # closed before the chunked body ended
            client.next_event()
        client.close()
    assert [str(exc) for exc in raised] == ["broke mid-stream"]


def test_start_response_twice_without_exc_info_is_a_500():
    def app(environ, start_response):
        start_response("200 OK", [])
        start_response("404 Not Found", [])
        return [b"x"]

    with serving(app) as server:
        assert get(server)[0] == 500


def test_the_write_callable():
    def app(environ, start_response):
        write = start_response("200 OK", [("Content-Type", "text/plain")])
        write(b"hello ")
        write(b"")
        return [b"world"]

    with serving(app) as server:
        status, headers, body = get(server)
    assert (status, body) == (200, b"hello world")
    assert headers["transfer-encoding"] == "chunked"


class Closing:
    """An iterable with close(): records that the server called it."""

    def __init__(self, chunks, forever=False):
        self.chunks, self.forever = chunks, forever
        self.closed = threading.Event()

    def __iter__(self):
        yield from self.chunks
        while self.forever:
            time.sleep(0.01)
            yield b"." * 1024

    def close(self):
        self.closed.set()


def test_close_is_called_after_a_normal_response_and_after_an_error():
    iterables = {"/ok": Closing([b"fine"]), "/error": Closing([b"x", 1])}

    def app(environ, start_response):
        start_response("200 OK", [])
        return iterables[environ["PATH_INFO"]]

    with serving(app) as server:
        assert get(server, "/ok")[2] == b"fine"
        with pytest.raises((ConnectionError, h11.RemoteProtocolError)):
            get(server, "/error")  # an int in the body, after the head went: connection cut
    assert all(iterable.closed.wait(5) for iterable in iterables.values())


def test_close_is_called_when_the_client_leaves_mid_response():
    stream = Closing([b"start"], forever=True)

    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain")])
        return stream if environ["PATH_INFO"] == "/stream" else [b"ok"]

    with serving(app, threads=1) as server:
        client = Client(server.address).request(target="/stream")
        assert type(client.next_event()) is h11.Response
        client.close()
        assert stream.closed.wait(5)
        assert get(server)[2] == b"ok"  # the only worker is free again


@pytest.mark.parametrize("length", [True, False], ids=["content-length", "chunked"])
def test_file_wrapper_sends_the_file_with_sendfile_and_closes_it(tmp_path, length):
    path = tmp_path / "data.bin"
    path.write_bytes(os.urandom(200_000))
    opened = []
    tracer = Tracer()

    def app(environ, start_response):
        f = open(path, "rb")
        f.seek(1000)  # the rest of the file, from where the app left it
        opened.append(f)
        start_response("200 OK", [("Content-Length", str(199_000))] if length else [])
        return environ["wsgi.file_wrapper"](f, 8192)

    with serving(app, tracer=tracer) as server:
        client = Client(server.address)
        status, headers, body = client.request().response()
        assert (status, body) == (200, path.read_bytes()[1000:])
        assert ("transfer-encoding" in headers) is not length
        client.request("HEAD")
        status, headers, body = client.response()  # HEAD: the head only, file untouched
        assert (status, body) == (200, b"")
        client.close()
    assert all(f.closed for f in opened)
    assert [e.data for e in tracer.filter(kind="sendfile")][0] == {"offset": 1000, "count": 199_000}


def test_file_wrapper_around_a_file_like_object_is_iterated():
    def app(environ, start_response):
        start_response("200 OK", [])
        return environ["wsgi.file_wrapper"](io.BytesIO(b"abc" * 10_000), 4096)

    tracer = Tracer()
    with serving(app, tracer=tracer) as server:
        assert get(server)[2] == b"abc" * 10_000
    assert not tracer.filter(kind="sendfile") and len(tracer.filter(kind="body_chunk")) == 8


def test_no_head_before_the_first_non_empty_chunk():
    go = threading.Event()

    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain")])
        yield b""
        go.wait(5)
        if environ["PATH_INFO"] == "/fail":
            raise RuntimeError("failed before any body")
        yield b"late"

    with serving(app) as server:
        client = Client(server.address).request()
        client.sock.settimeout(0.3)
        with pytest.raises(TimeoutError):
            client.sock.recv(1)  # start_response was called, and an empty chunk yielded: nothing sent
        client.sock.settimeout(5)
        go.set()
        assert client.response()[2] == b"late"
        client.close()
        assert get(server, "/fail")[0] == 500  # so an error there is still a clean 500


def test_streaming_sends_each_chunk_as_it_is_produced():
    gate = threading.Event()

    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain")])
        yield b"first"
        gate.wait(5)
        yield b"second"

    with serving(app) as server:
        client = Client(server.address).request()
        response = client.next_event()
        assert dict(response.headers)[b"transfer-encoding"] == b"chunked"
        assert client.next_event().data == b"first"  # while the app is still blocked
        gate.set()
        assert client.next_event().data == b"second"
        assert type(client.next_event()) is h11.EndOfMessage
        client.close()


# -- HTTP/1.1 -----------------------------------------------------------------------------------------

def test_keep_alive_and_pipelining():
    def app(environ, start_response):
        body = (environ["PATH_INFO"] + ":" + environ["wsgi.input"].read().decode()).encode()
        start_response("200 OK", [("Content-Length", str(len(body)))])
        return [body]

    with serving(app) as server:
        client = Client(server.address)
        client.request("GET", "/one")
        assert client.response()[2] == b"/one:"
        client.send_raw(b"GET /a HTTP/1.1\r\nHost: t\r\n\r\n"
                        b"POST /b HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\n\r\nxyz"
                        b"GET /c HTTP/1.1\r\nHost: t\r\n\r\n")
        assert [client.response()[2] for _ in range(3)] == [b"/a:", b"/b:xyz", b"/c:"]
        assert server.stats()["connections"] == 1
        client.close()


def test_a_request_s_objects_are_freed_when_it_ends_without_the_garbage_collector():
    """Reference counting alone frees what a request made: its environ, its wsgi.input, its
    cycle. Were they in a reference cycle, each request would leave them to the cyclic
    garbage collector, which runs more often the more a process allocates."""
    streams = []

    def app(environ, start_response):
        streams.append(weakref.ref(environ["wsgi.input"]))
        start_response("200 OK", [("Content-Length", "2")])
        return [b"ok"]

    with serving(app) as server:
        client = Client(server.address)
        gc.disable()
        try:
            for _ in range(3):
                client.request("GET", "/")
                assert client.response()[2] == b"ok"
            # The worker drops its references just after the response is sent: wait for it.
            deadline = time.monotonic() + 3
            while any(stream() is not None for stream in streams) and time.monotonic() < deadline:
                time.sleep(0.01)
            assert [stream() for stream in streams] == [None, None, None]
        finally:
            gc.enable()
            client.close()


def test_http_1_0_gets_a_response_delimited_by_close():
    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain")])
        return iter([b"old ", b"client"])

    with serving(app) as server:
        client = Client(server.address)
        client.send_raw(b"GET / HTTP/1.0\r\n\r\n")
        status, headers, body = client.response()
        assert (status, body) == (200, b"old client")
        assert "transfer-encoding" not in headers
        assert client.is_closed()


def test_head_sends_the_headers_without_the_body():
    with serving(hello) as server:
        client = Client(server.address)
        client.request("HEAD", "/")
        status, headers, body = client.response()
        assert (status, headers["content-length"], body) == (200, "13", b"")
        client.request("GET", "/")
        assert client.response()[2] == b"Hello, world!"  # and the connection is still fine
        client.close()


def test_malformed_request_gets_400_and_close():
    with serving(hello) as server:
        client = Client(server.address)
        client.send_raw(b"THIS IS NOT HTTP\r\n\r\n")
        assert client.response()[0] == 400
        assert client.is_closed()


def test_oversized_head_gets_431():
    with serving(hello, max_header_bytes=2048) as server:
        client = Client(server.address)
        client.send_raw(b"GET / HTTP/1.1\r\nHost: t\r\nX-Big: " + b"a" * 5000 + b"\r\n\r\n")
        assert client.response()[0] == 431
        assert client.is_closed()


def test_oversized_body_gets_413():
    with serving(wsgi_demo.echo, max_body_bytes=100) as server:
        client = Client(server.address)
        client.send_raw(b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 1000\r\n\r\n")
        assert client.response()[0] == 413
        client.close()
        client = Client(server.address)  # chunked: found out while the app reads
        client.send_raw(b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
                        + b"40\r\n" + b"x" * 64 + b"\r\n" + b"40\r\n" + b"y" * 64 + b"\r\n")
        assert client.response()[0] == 413
        client.close()


def test_malformed_chunked_body_gets_400():
    with serving(wsgi_demo.echo) as server:
        client = Client(server.address)
        client.send_raw(b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\nZZ\r\nhello\r\n")
        assert client.response()[0] == 400
        assert client.is_closed()


@pytest.mark.parametrize("threads", [4, 0])
def test_idle_connections_time_out(threads):
    with serving(hello, threads=threads, timeout_keep_alive=0.3) as server:
        silent = Client(server.address)          # never sends a byte
        used = Client(server.address)            # idle after one request
        used.request()
        assert used.response()[0] == 200
        started = time.monotonic()
        assert silent.is_closed(5) and used.is_closed(5)
        assert time.monotonic() - started < 3


@pytest.mark.parametrize("threads", [4, 0])
def test_slow_request_head_times_out(threads):
    with serving(hello, threads=threads, timeout_request_header=0.4, timeout_keep_alive=5) as server:
        client = Client(server.address)
        client.send_raw(b"GET / HTTP/1.1\r\nHost: t\r\n")  # ...and never the end of the head
        started = time.monotonic()
        assert client.is_closed(5)
        assert 0.3 < time.monotonic() - started < 3


def test_slow_request_body_gets_408():
    with serving(wsgi_demo.echo, timeout_request_header=0.4) as server:
        client = Client(server.address)
        client.send_raw(b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 10\r\n\r\nabc")
        assert client.response()[0] == 408
        client.close()


# -- errors: a bad app never takes a worker or the server down -------------------------------------------

def bad_app(environ, start_response):
    path = environ["PATH_INFO"]
    if path == "/raise":
        raise RuntimeError("boom")
    if path == "/none":
        start_response("200 OK", [])
        return None
    if path == "/no-start":
        return [b"body without a status"]
    if path == "/str-body":
        start_response("200 OK", [])
        return ["text, not bytes"]
    if path == "/bad-status":
        start_response("OK", [])
        return [b""]
    if path == "/bytes-headers":
        start_response("200 OK", [(b"content-type", b"text/plain")])
        return [b""]
    if path == "/newline-header":
        start_response("200 OK", [("X-Evil", "a\r\nSet-Cookie: x=1")])
        return [b""]
    if path == "/exit":
        sys.exit(1)
    if path == "/101":
        start_response("101 Switching Protocols", [("Upgrade", "websocket")])
        return []
    if path == "/short":
        start_response("200 OK", [("Content-Length", "100")])
        return [b"only five"]
    if path == "/mid-stream":
        def stream():
            yield b"started"
            raise RuntimeError("broke after the head")
        start_response("200 OK", [])
        return stream()
    start_response("200 OK", [("Content-Length", "2")])
    return [b"ok"]


@pytest.mark.parametrize("path", ["/raise", "/none", "/no-start", "/str-body", "/bad-status", "/bytes-headers",
                                  "/newline-header", "/exit", "/101"])
def test_app_errors_before_the_head_are_500(path, caplog):
    with serving(bad_app, threads=2) as server:
        with caplog.at_level(logging.ERROR, "asgi_lab.error"):
            assert get(server, path)[:3:2] == (500, b"500 Internal Server Error\n")
        assert "Exception in WSGI application" in caplog.text
        assert get(server, "/")[2] == b"ok"
        assert all(worker.is_alive() for worker in server.worker_threads())


def test_a_failing_close_is_logged_and_the_connection_closed(caplog):
    class BadClose(list):
        def close(self):
            raise RuntimeError("close failed")

    def app(environ, start_response):
        start_response("200 OK", [("Content-Length", "2")])
        return BadClose([b"ok"])

    with serving(app, threads=1) as server:
        client = Client(server.address).request()
        with caplog.at_level(logging.ERROR, "asgi_lab.error"):
            assert client.response()[2] == b"ok"  # complete: close() runs after the iterable
            assert client.is_closed()
        assert "close failed" in caplog.text
        assert get(server)[2] == b"ok"


@pytest.mark.parametrize("path", ["/short", "/mid-stream"])
def test_app_errors_after_the_head_cut_the_connection(path):
    with serving(bad_app, threads=2) as server:
        with pytest.raises((ConnectionError, h11.RemoteProtocolError)):
            get(server, path)
        assert get(server, "/")[2] == b"ok"
        assert all(worker.is_alive() for worker in server.worker_threads())


# -- threads -----------------------------------------------------------------------------------------

def test_100_concurrent_clients_on_an_8_thread_pool_are_all_served():
    lock = threading.Lock()
    running = [0, 0]  # now, most at once

    def app(environ, start_response):
        with lock:
            running[0] += 1
            running[1] = max(running)
        time.sleep(0.02)
        with lock:
            running[0] -= 1
        body = threading.current_thread().name.encode()
        start_response("200 OK", [("Content-Length", str(len(body)))])
        return [body]

    results = []
    with serving(app, threads=8) as server:
        def one():
            results.append(get(server))
        clients = [threading.Thread(target=one) for _ in range(100)]
        for thread in clients:
            thread.start()
        for thread in clients:
            thread.join(20)
    assert len(results) == 100 and {status for status, _, _ in results} == {200}
    names = {body.decode() for _, _, body in results}
    assert names <= {f"wsgi-worker-{n}" for n in range(1, 9)}
    assert 2 <= running[1] <= 8  # never more than the pool


def test_idle_keep_alive_connections_do_not_hold_pool_threads():
    with serving(hello, threads=2, timeout_keep_alive=10) as server:
        idle = [Client(server.address).request() for _ in range(10)]
        for client in idle:
            assert client.response()[0] == 200  # ten keep-alive connections, now idle
        started = time.monotonic()
        assert get(server)[0] == 200  # an eleventh client is served at once...
        assert time.monotonic() - started < 3  # ...not after the idle ones time out (10 s)
        assert server.stats()["connections"] >= 10
        for client in idle:
            client.close()


def test_streaming_responses_hold_their_threads():
    """The lab's point: two SSE streams fill a two-thread pool; a third client waits."""
    with serving(wsgi_demo.sse_clock, threads=2) as server:
        streams = [Client(server.address).request(target="/?interval=0.05") for _ in range(2)]
        for stream in streams:
            assert type(stream.next_event()) is h11.Response
        waiting = Client(server.address).request(target="/?count=1")
        waiting.sock.settimeout(0.5)
        with pytest.raises(TimeoutError):
            waiting.sock.recv(1)
        assert server.stats()["busy"] == 2 and server.stats()["queued"] == 1
        streams[0].close()  # its generator's next write fails: the thread is free again
        waiting.sock.settimeout(5)
        assert waiting.response()[0] == 200
        streams[1].close()
        waiting.close()


def test_one_thread_per_connection_when_threads_is_0():
    names = []  # (client port, thread name)

    def app(environ, start_response):
        names.append((environ["REMOTE_PORT"], threading.current_thread().name))
        time.sleep(0.3)
        start_response("200 OK", [("Content-Length", "0")])
        return []

    with serving(app, threads=0) as server:
        clients = [Client(server.address).request() for _ in range(20)]
        started = time.monotonic()
        assert all(client.response()[0] == 200 for client in clients)
        assert time.monotonic() - started < 2.5  # all twenty at once, not one after another
        threads = dict(names)
        assert len(set(threads.values())) == 20
        assert all(name.startswith("wsgi-conn-") for name in threads.values())
        clients[0].request()
        assert clients[0].response()[0] == 200
        port, name = names[-1]
        assert port == str(clients[0].sock.getsockname()[1]) and threads[port] == name  # same thread
        for client in clients:
            client.close()


class StderrLines:
    """A subprocess's stderr, read line by line on a thread of its own, so a test can wait
    for a line (the server reporting a state) without blocking on the pipe."""

    def __init__(self, process: subprocess.Popen) -> None:
        self.lines: list[str] = []
        self.new_line = threading.Condition()
        self.reader = threading.Thread(target=self._read, args=(process.stderr,), daemon=True)
        self.reader.start()

    def _read(self, stream) -> None:
        for line in stream:
            with self.new_line:
                self.lines.append(line)
                self.new_line.notify_all()

    def wait_for(self, text: str, timeout: float = 10) -> bool:
        with self.new_line:
            return self.new_line.wait_for(lambda: any(text in line for line in self.lines), timeout)

    @property
    def text(self) -> str:
        return "".join(self.lines)


def test_out_of_file_descriptors_pauses_accepting_instead_of_spinning():
    """accept() fails with EMFILE while the backlog is full of clients: the acceptor must not
    retry in a busy loop, and it must recover once descriptors are free again."""
    import psutil
    import resource

    def low_fd_limit():
        resource.setrlimit(resource.RLIMIT_NOFILE, (48, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))

    process = subprocess.Popen([sys.executable, "-m", "asgi_lab", "wsgi", "asgi_lab.apps.hello:wsgi_app",
                                "--port", "0", "--threads", "2", "--log-level", "error", "--no-access-log",
                                "--timeout-keep-alive", "60"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=low_fd_limit)
    clients = []
    stderr = StderrLines(process)
    try:
        url = process.stdout.readline().split(" on ")[1].split()[0]
        host, port = url.removeprefix("http://").split(":")
        address = (host, int(port))
        for _ in range(60):  # more than the server has descriptors for
            clients.append(socket.create_connection(address, timeout=5))
        assert stderr.wait_for("not accepting for 1 s")  # accept() failed: it paused
        server = psutil.Process(process.pid)
        cpu_before = sum(server.cpu_times()[:2])
        time.sleep(1.0)  # kept: the window in which the CPU time is measured
        assert sum(server.cpu_times()[:2]) - cpu_before < 0.5  # not spinning on accept()
        for sock in clients:
            sock.close()
        clients.clear()
        client = Client(address, timeout=10)
        assert client.request().response()[2] == b"Hello, world!"  # accepting again
        client.close()
    finally:
        for sock in clients:
            sock.close()
        process.kill()
        process.wait()
        stderr.reader.join(5)
    assert "not accepting for 1 s" in stderr.text


# -- shutdown ----------------------------------------------------------------------------------------

def test_graceful_shutdown_finishes_the_request_in_flight():
    started = threading.Event()

    def app(environ, start_response):
        if environ["PATH_INFO"] == "/slow":
            started.set()
            time.sleep(0.5)
        start_response("200 OK", [("Content-Length", "4")])
        return [b"done"]

    server = WSGIServer(app, Config(port=0, access_log=False, timeout_graceful_shutdown=5))
    server.start()
    address = server.address
    idle = Client(address).request()  # a keep-alive connection, idle during the shutdown
    assert idle.response()[0] == 200
    busy = Client(address).request(target="/slow")
    assert started.wait(5)
    stopper = threading.Thread(target=server.shutdown)
    stopper.start()
    assert busy.response()[2] == b"done"
    stopper.join(5)
    assert not stopper.is_alive()
    assert idle.is_closed()
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(address, timeout=1)


def test_shutdown_with_a_thread_per_connection_closes_an_idle_one_at_once():
    """threads=0: an idle keep-alive connection's own thread is blocked in recv(). Shutdown
    wakes it (`Connection.shutdown`) and closes the connection at once, not after the grace
    period, while the request in flight on another connection still finishes."""
    inside, release = threading.Event(), threading.Event()

    def app(environ, start_response):
        if environ["PATH_INFO"] == "/slow":
            inside.set()
            release.wait(10)
        start_response("200 OK", [("Content-Length", "4")])
        return [b"done"]

    server = WSGIServer(app, Config(port=0, threads=0, access_log=False, timeout_graceful_shutdown=5))
    server.start()
    idle = Client(server.address).request()
    assert idle.response()[0] == 200
    busy = Client(server.address).request(target="/slow")
    assert inside.wait(5)
    stopper = threading.Thread(target=server.shutdown)
    stopper.start()
    assert idle.is_closed(timeout=3)  # at once, not after the 5 s grace period
    release.set()
    assert busy.response()[2] == b"done"
    stopper.join(5)
    assert not stopper.is_alive() and server.wait_stopped(0)
    idle.close()
    busy.close()


def test_shutdown_cuts_a_never_ending_stream_after_the_grace_period():
    stream = Closing([b"tick"], forever=True)

    def app(environ, start_response):
        start_response("200 OK", [])
        return stream

    server = WSGIServer(app, Config(port=0, access_log=False, timeout_graceful_shutdown=0.3))
    server.start()
    client = Client(server.address).request()
    assert type(client.next_event()) is h11.Response
    started = time.monotonic()
    server.shutdown()
    assert time.monotonic() - started < 3
    assert stream.closed.wait(5)
    client.close()


def test_serve_in_background():
    with serve_in_background(hello, kind="wsgi", name="wsgi-test", threads=2) as server:
        assert httpx.get(server.url).text == "Hello, world!"
        first_url = server.url
        again = serve_in_background(hello, kind="wsgi", name="wsgi-test")  # stops its namesake
        assert not server.running and again.running
        url = again.url
        assert httpx.get(url).text == "Hello, world!"
        again.stop()
        assert not again.running
    for stopped in (first_url, url):
        with pytest.raises(httpx.ConnectError):
            httpx.get(stopped, timeout=1)


def test_command_line_serves_until_sigint():
    process = subprocess.Popen([sys.executable, "-m", "asgi_lab", "wsgi", "asgi_lab.apps.hello:wsgi_app",
                                "--port", "0", "--threads", "2", "--log-level", "warning"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = process.stdout.readline()
        url = line.split(" on ")[1].split()[0]
        assert httpx.get(url).text == "Hello, world!"
        process.send_signal(signal.SIGINT)
        assert process.wait(10) == 0
    finally:
        process.kill()


def test_a_second_sigint_cuts_the_grace_period_short():
    process = subprocess.Popen([sys.executable, "-m", "asgi_lab", "wsgi", "asgi_lab.apps.wsgi_demo:sse_clock",
                                "--port", "0", "--threads", "2", "--log-level", "info", "--no-access-log",
                                "--timeout-graceful-shutdown", "30"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    stderr = StderrLines(process)
    try:
        url = process.stdout.readline().split(" on ")[1].split()[0]
        host, port = url.removeprefix("http://").split(":")
        stream = Client((host, int(port))).request(target="/?interval=0.2")  # never ends by itself
        assert type(stream.next_event()) is h11.Response
        process.send_signal(signal.SIGINT)
        assert stderr.wait_for("Shutting down (SIGINT)")  # the first signal was handled...
        with pytest.raises(subprocess.TimeoutExpired):
            process.wait(0.5)  # ...and it waits for the stream, up to 30 s (kept: a "not yet")
        started = time.monotonic()
        process.send_signal(signal.SIGINT)
        assert process.wait(10) == 0
        assert time.monotonic() - started < 5
        stream.close()
    finally:
        process.kill()


# -- the clients the notebooks use ---------------------------------------------------------------------

def test_a_flask_app():
    import flask  # the test extra installs it
    app = flask.Flask(__name__)

    @app.get("/hello/<name>")
    def hello_name(name):
        return {"hello": name, "q": flask.request.args.get("q")}

    @app.post("/echo")
    def echo():
        return {"got": flask.request.get_json()}

    @app.get("/stream")
    def stream():
        return flask.Response((f"line {n}\n" for n in range(3)), mimetype="text/plain")

    @app.get("/missing")
    def missing():
        flask.abort(404)

    with serve_in_background(app, kind="wsgi", name="flask-test") as server:
        with httpx.Client(base_url=server.url) as client:
            assert client.get("/hello/wörld", params={"q": "ç"}).json() == {"hello": "wörld", "q": "ç"}
            assert client.post("/echo", json={"a": [1, 2]}).json() == {"got": {"a": [1, 2]}}
            assert client.get("/stream").text == "line 0\nline 1\nline 2\n"
            assert client.get("/missing").status_code == 404


def test_the_demo_apps():
    with serving(wsgi_demo.environ_app) as server:
        status, headers, body = get(server, "/x%20y?q=1")
        shown = json.loads(body)
        assert (status, shown["PATH_INFO"], shown["QUERY_STRING"]) == (200, "/x y", "q=1")
        assert shown["wsgi.version"] == [1, 0] and "wsgi.input" not in shown
    with serving(wsgi_demo.long_poll) as server:
        started = time.monotonic()
        status, _, body = get(server, "/?wait=0.2")
        assert status == 200 and body.startswith(b"no news after 0.2 s (wsgi-worker-")
        assert time.monotonic() - started >= 0.2
    with serving(wsgi_demo.sse_clock) as server:
        status, headers, body = get(server, "/?interval=0.01&count=3")
        assert headers["content-type"] == "text/event-stream"
        assert body.count(b"data: ") == 3 and body.startswith(b"id: 1\n")


def test_a_websocket_client_cannot_connect():
    from websockets.exceptions import InvalidStatus
    from websockets.sync.client import connect

    with serve_in_background(wsgi_demo.websocket_attempt, kind="wsgi", name="ws-on-wsgi") as server:
        with pytest.raises(InvalidStatus) as refused:
            connect(server.ws_url, open_timeout=5)
        assert refused.value.response.status_code == 426
        assert b"cannot switch" in refused.value.response.body
        with serve_in_background(bad_app, kind="wsgi", name="ws-101") as other:
            with pytest.raises(InvalidStatus) as failed:  # answering 101 is not possible
                connect(other.ws_url + "/101", open_timeout=5)
            assert failed.value.response.status_code == 500


# -- tracing and logging --------------------------------------------------------------------------------

def test_the_tracer_sees_every_layer():
    tracer = Tracer()

    def app(environ, start_response):
        write = start_response("200 OK", [("Content-Type", "text/plain")])
        write(b"a")
        yield b"b"
        yield b""  # a generator: it has a close()

    with serving(app, tracer=tracer, threads=2) as server:
        client = Client(server.address).request(target="/t?x=1")
        assert client.response()[2] == b"ab"
        client.close()
        tracer.wait_for(kind="connection_lost")
    kinds = [(event.layer, event.kind) for event in tracer]
    for expected in [("socket", "connection_made"), ("socket", "bytes_in"), ("h11", "Request"),
                     ("wsgi", "environ"), ("wsgi", "app_call"), ("wsgi", "start_response"),
                     ("wsgi", "write"), ("wsgi", "app_return"), ("wsgi", "body_chunk"), ("wsgi", "close"),
                     ("h11", "EndOfMessage"), ("socket", "bytes_out"), ("socket", "connection_lost")]:
        assert expected in kinds
    environ = tracer.filter(kind="environ")[0]
    assert environ.data["PATH_INFO"] == "/t" and environ.data["QUERY_STRING"] == "x=1"
    assert environ.thread.startswith("wsgi-worker-")
    assert len(tracer.filter(kind="body_chunk")) == 2


def test_access_log(caplog):
    with serving(hello, access_log=True) as server:
        with caplog.at_level(logging.INFO, "asgi_lab.access"):
            get(server, "/logged?x=1")
    assert '"GET /logged?x=1 HTTP/1.1" 200' in caplog.text  # the target as sent, in both servers


def test_shutdown_returns_within_the_grace_period_even_with_a_stuck_app():
    """A WSGI app cannot be interrupted: after the grace period its thread is left behind
    (a daemon), and shutdown() returns, rather than waiting seconds more for it."""
    release, inside = threading.Event(), threading.Event()

    def stuck(environ, start_response):
        inside.set()
        release.wait(30)
        start_response("200 OK", [("Content-Length", "0")])
        return [b""]

    server = WSGIServer(stuck, Config(port=0, timeout_graceful_shutdown=1.0, access_log=False, threads=2))
    server.start()
    try:
        sock = socket.create_connection(server.address)
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert inside.wait(5)
        started = time.monotonic()
        server.shutdown()
        assert time.monotonic() - started < 1.5
        assert server.wait_stopped(0)
    finally:
        release.set()
        sock.close()
