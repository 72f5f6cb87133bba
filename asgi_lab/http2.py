"""HTTP/2 in memory: two requests multiplexed on one connection, frame by frame. No socket.

HTTP/2 (RFC 9113) carries many requests at once on one connection: each request and its
response is a *stream* with its own id (odd numbers, opened by the client: 1, 3, 5, ...;
§5.1.1), and their frames share the wire (§5: "A single HTTP/2 connection can contain
multiple concurrently open streams, with either endpoint interleaving frames from multiple
streams."). A response is a HEADERS frame then DATA frames, the
last one flagged END_STREAM (§8.1).

`h2` (python-hyper, https://python-hyper.org/projects/h2/) is h11's sibling: a sans-IO state
machine. We give it events ("send these headers on stream 1") and take bytes out
(`data_to_send()`); we feed it bytes (`receive_data()`) and get events back
(`RequestReceived`, `DataReceived`, `StreamEnded`, ...). So two `H2Connection`s, one
`client_side=True` and one server, can talk through plain method calls: `H2Pair` wires them.

What the pair sends is recorded as trace events, for `asgi_lab.viz.sequence_diagram`:

- layer "h2", kind "frame_in" (client to server) or "frame_out" (server to client), data
  `{"frame": "DATA", "stream_id": 1, "flags": ["END_STREAM"], "size": 7}` per frame; the
  frames are read out of h2's bytes by hyperframe, h2's own frame layer (never by hand);
- layer "h2", kind `RequestReceived` and friends: what the server's h2 made of them;
- layer "asgi", kind "receive" / "send": the ASGI messages of each stream's app, with the
  `stream_id` they belong to added to the recorded copy (it is not part of the message).

Two servers on top, to compare:

- `serve_asgi(app, paths)`: the ASGI way. Each stream gets its own `scope` (ASGI HTTP spec,
  "HTTP Connection Scope": `http_version` "2", pseudo-headers removed, `:authority` as
  `host`) and its own app call; their `send()`s become frames as they happen, so two apps that
  await between chunks produce interleaved DATA frames.
- `serve_wsgi(app, paths)`: the WSGI way, one call at a time on the connection's thread (as a
  WSGI server calls its app): one `environ`, one iterable, drained to its end before the next
  stream's call can start. Stream 3 waits for stream 1 to finish.

Request bodies are not handled (the demo sends GETs); flow control never blocks at these sizes.
"""

from __future__ import annotations

import asyncio
import io
import sys
import threading
from dataclasses import dataclass, field

import h2.config
import h2.connection
import h2.events
from hyperframe.frame import Frame

from .asgi.scope import ASGI_VERSION, split_target
from .trace import Tracer

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
"""The client connection preface (RFC 9113 §3.4): fixed bytes before the first frame."""

FRAME_NAMES = {0x0: "DATA", 0x1: "HEADERS", 0x2: "PRIORITY", 0x3: "RST_STREAM", 0x4: "SETTINGS",
               0x5: "PUSH_PROMISE", 0x6: "PING", 0x7: "GOAWAY", 0x8: "WINDOW_UPDATE",
               0x9: "CONTINUATION"}
"""Frame type codes and their names in RFC 9113 §6."""

CONN = 1
"""The trace's connection number: everything here happens on one connection."""


def frames_of(data: bytes) -> list[dict]:
    """The frames in `data` (bytes one side produced), in order: type, stream id, flags, payload
    size. hyperframe reads each 9-byte frame header (RFC 9113 §4.1) and its payload."""
    view = memoryview(data)
    if view[:len(PREFACE)] == PREFACE:
        view = view[len(PREFACE):]
    frames = []
    while len(view) >= 9:
        frame, length = Frame.parse_frame_header(view[:9])
        frame.parse_body(view[9:9 + length])
        frames.append({"frame": FRAME_NAMES.get(frame.type, hex(frame.type)),
                       "stream_id": frame.stream_id, "flags": sorted(frame.flags), "size": length})
        view = view[9 + length:]
    return frames


class H2Pair:
    """A client and a server `H2Connection`, back to back in memory, every frame traced."""

    def __init__(self, tracer: Tracer | None = None) -> None:
        self.tracer = tracer if tracer is not None else Tracer()
        self.client = h2.connection.H2Connection(
            h2.config.H2Configuration(client_side=True, header_encoding=None))
        self.server = h2.connection.H2Connection(
            h2.config.H2Configuration(client_side=False, header_encoding=None))
        self.responses: dict[int, dict] = {}
        """What the client received, per stream: status, headers, body, ended."""

    def connect(self) -> None:
        """Both sides send their preface and SETTINGS (RFC 9113 §3.4), and acknowledge."""
        self.client.initiate_connection()
        self.server.initiate_connection()
        self.to_server()
        self.to_client()
        self.to_server()  # the client's SETTINGS ACK

    def request(self, path: str, method: str = "GET", authority: str = "lab") -> int:
        """The client opens a stream with a request (no body); returns its stream id."""
        stream_id = self.client.get_next_available_stream_id()
        self.client.send_headers(stream_id, [(b":method", method.encode()), (b":scheme", b"https"),
                                             (b":authority", authority.encode()),
                                             (b":path", path.encode()),
                                             (b"user-agent", b"asgi_lab-h2")], end_stream=True)
        return stream_id

    def to_server(self) -> list[h2.events.Event]:
        """Move what the client has to send over to the server; return the server's events."""
        data = self.client.data_to_send()
        self._trace_frames(data, "frame_in")
        events = self.server.receive_data(data) if data else []
        for event in events:
            self._trace_event(event)
        return events

    def to_client(self) -> None:
        """Move what the server has to send over to the client, who notes each response."""
        data = self.server.data_to_send()
        self._trace_frames(data, "frame_out")
        for event in self.client.receive_data(data) if data else []:
            stream_id = getattr(event, "stream_id", None)
            response = self.responses.setdefault(stream_id, {"status": None, "headers": [],
                                                             "body": b"", "ended": False}) \
                if stream_id else None
            if isinstance(event, h2.events.ResponseReceived):
                headers = list(event.headers)
                response["status"] = int(dict(headers)[b":status"])
                response["headers"] = [(k, v) for k, v in headers if not k.startswith(b":")]
            elif isinstance(event, h2.events.DataReceived):
                response["body"] += event.data
                self.client.acknowledge_received_data(event.flow_controlled_length, stream_id)
            elif isinstance(event, h2.events.StreamEnded):
                response["ended"] = True

    def emit(self, layer: str, kind: str, data: dict) -> None:
        """Record one event on this connection (the demo always has a tracer; the guard keeps
        the rule every emitter in asgi_lab follows)."""
        if self.tracer is not None:
            self.tracer.emit(CONN, layer, kind, data)

    def _trace_frames(self, data: bytes, kind: str) -> None:
        for frame in frames_of(data):
            self.emit("h2", kind, frame)

    def _trace_event(self, event: h2.events.Event) -> None:
        data = {"stream_id": getattr(event, "stream_id", 0)}
        if isinstance(event, h2.events.RequestReceived):
            pseudo = dict((k, v) for k, v in event.headers if k.startswith(b":"))
            data.update(method=pseudo.get(b":method"), path=pseudo.get(b":path"))
        self.emit("h2", type(event).__name__, data)

    def trace_message(self, kind: str, stream_id: int, message: dict) -> None:
        """Record an ASGI message of one stream's app (the recorded copy names the stream)."""
        self.emit("asgi", kind, {**message, "stream_id": stream_id})


def asgi_scope(request: h2.events.RequestReceived, client=None, server=None) -> dict:
    """The `http` scope of one HTTP/2 stream (ASGI HTTP spec, "HTTP Connection Scope"):
    `http_version` "2"; "Pseudo headers (present in HTTP/2 and HTTP/3) must be removed; if
    :authority is present its value must be added to the start of the iterable with host as
    the header name or replace any existing host header already present." """
    pseudo = {k: v for k, v in request.headers if k.startswith(b":")}
    headers = [(k, v) for k, v in request.headers if not k.startswith(b":") and k != b"host"]
    if b":authority" in pseudo:
        headers.insert(0, (b"host", pseudo[b":authority"]))
    path, raw_path, query_string = split_target(pseudo[b":path"], "")
    return {"type": "http", "asgi": ASGI_VERSION, "http_version": "2",
            "method": pseudo[b":method"].decode("ascii"), "scheme": pseudo[b":scheme"].decode("ascii"),
            "path": path, "raw_path": raw_path, "query_string": query_string, "root_path": "",
            "headers": headers, "client": client, "server": server}


@dataclass
class H2Run:
    """One connection's worth of streams: the trace, each stream's scope or environ, and
    what the client received."""

    tracer: Tracer
    requests: dict[int, dict] = field(default_factory=dict)    # stream id -> scope or environ
    responses: dict[int, dict] = field(default_factory=dict)   # stream id -> status, body, ...

    def frames(self, kind: str | None = None) -> list[dict]:
        """The frames in wire order (`kind` "frame_in" or "frame_out" for one direction)."""
        return [e.data for e in self.tracer.filter(layer="h2", kind=kind or ["frame_in", "frame_out"])]

    def response_events(self) -> list:
        """The server's side of the responses only: the app's messages or calls, and the
        frames of the streams (not the connection's SETTINGS), for a side-by-side diagram."""
        return [e for e in self.tracer.events
                if e.layer in ("asgi", "wsgi") or (e.kind == "frame_out" and e.data["stream_id"])]

    def data_order(self) -> list[int]:
        """The stream id of every DATA frame the server sent, in order: [1, 3, 1, 3, ...]."""
        return [f["stream_id"] for f in self.frames("frame_out") if f["frame"] == "DATA"]


# -- the ASGI way: a scope and an app call per stream, all on one event loop ----------------------

async def serve_asgi_async(app, paths=("/a", "/b")) -> H2Run:
    """Open one stream per path on one connection; the server runs `app` once per stream,
    concurrently, each with its own scope, `receive` and `send`."""
    pair = H2Pair()
    pair.connect()
    for path in paths:
        pair.request(path)
    run = H2Run(pair.tracer, responses=pair.responses)
    calls = []
    for event in pair.to_server():
        if isinstance(event, h2.events.RequestReceived):
            scope = run.requests[event.stream_id] = asgi_scope(event)
            calls.append(_call_app(app, scope, event.stream_id, pair))
    pair.to_client()  # the server's SETTINGS ACK
    await asyncio.gather(*calls)
    return run


async def _call_app(app, scope: dict, stream_id: int, pair: H2Pair) -> None:
    finished = asyncio.Event()
    requested = False

    async def receive() -> dict:
        nonlocal requested
        if not requested:  # the request had END_STREAM on its HEADERS: an empty body
            requested = True
            message = {"type": "http.request", "body": b"", "more_body": False}
        else:  # nothing more will come: the next message is the end of the stream
            await finished.wait()
            message = {"type": "http.disconnect"}
        pair.trace_message("receive", stream_id, message)
        return message

    async def send(message: dict) -> None:
        pair.trace_message("send", stream_id, message)
        server = pair.server
        if message["type"] == "http.response.start":
            server.send_headers(stream_id, [(b":status", str(message["status"]).encode()),
                                            *message.get("headers", [])])
        elif message["type"] == "http.response.body":
            more_body = message.get("more_body", False)
            if message.get("body"):
                server.send_data(stream_id, message["body"], end_stream=not more_body)
            elif not more_body:
                server.end_stream(stream_id)
            if not more_body:
                finished.set()
        pair.to_client()  # the frames go out at once: nothing holds them back

    await app(scope, receive, send)


def serve_asgi(app, paths=("/a", "/b")) -> H2Run:
    """`serve_asgi_async` from synchronous code, a Jupyter cell included (whose thread already
    runs a loop): on a fresh event loop in a thread of its own."""
    result: list = []

    def run() -> None:
        try:
            result.append(asyncio.run(serve_asgi_async(app, paths)))
        except BaseException as exc:  # hand it to the caller
            result.append(exc)
    thread = threading.Thread(target=run, name="h2-demo")
    thread.start()
    thread.join(30)
    if not result:
        raise TimeoutError("the in-memory HTTP/2 exchange did not finish within 30 s")
    if isinstance(result[0], BaseException):
        raise result[0]
    return result[0]


def chunked_app(chunks: int = 3):
    """An ASGI app that answers in `chunks` pieces, awaiting between them (here only
    `asyncio.sleep(0)`, a stand-in for a real wait: the other stream's app runs meanwhile)."""
    async def app(scope, receive, send):
        await receive()
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"text/plain")]})
        for n in range(chunks):
            await send({"type": "http.response.body", "more_body": n < chunks - 1,
                        "body": f"{scope['path']} part {n + 1}\n".encode()})
            await asyncio.sleep(0)
    return app


# -- the WSGI way: one environ, one call, one iterable at a time ----------------------------------

def wsgi_environ(request: h2.events.RequestReceived) -> dict:
    """A PEP 3333 `environ` for one stream: one request's CGI variables. Nothing in it can
    name the connection it came on or the other streams on it."""
    pseudo = {k: v for k, v in request.headers if k.startswith(b":")}
    path, _, query = pseudo[b":path"].decode("latin-1").partition("?")
    environ = {"REQUEST_METHOD": pseudo[b":method"].decode("ascii"), "SCRIPT_NAME": "",
               "PATH_INFO": path, "QUERY_STRING": query, "SERVER_NAME": "lab", "SERVER_PORT": "443",
               "SERVER_PROTOCOL": "HTTP/2", "HTTP_HOST": pseudo.get(b":authority", b"").decode("latin-1"),
               "wsgi.version": (1, 0), "wsgi.url_scheme": pseudo[b":scheme"].decode("ascii"),
               "wsgi.input": io.BytesIO(b""), "wsgi.errors": sys.stderr, "wsgi.multithread": False,
               "wsgi.multiprocess": False, "wsgi.run_once": False}
    for name, value in request.headers:
        if not name.startswith(b":"):
            environ["HTTP_" + name.decode("latin-1").upper().replace("-", "_")] = value.decode("latin-1")
    return environ


def serve_wsgi(app, paths=("/a", "/b")) -> H2Run:
    """The streams of one connection served the way a WSGI server calls its app: one call on
    the connection's thread, its iterable drained to the end, then the next stream's call."""
    pair = H2Pair()
    pair.connect()
    for path in paths:
        pair.request(path)
    run = H2Run(pair.tracer, responses=pair.responses)
    received = pair.to_server()
    pair.to_client()
    for event in received:
        if not isinstance(event, h2.events.RequestReceived):
            continue
        stream_id = event.stream_id
        environ = run.requests[stream_id] = wsgi_environ(event)
        head: list = []  # filled by start_response, sent before the first chunk (PEP 3333)

        def start_response(status, headers, exc_info=None, head=head):
            head[:] = [(b":status", status.split()[0].encode()),
                       *((k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers)]
        pair.emit("wsgi", "app_call", {"stream_id": stream_id})
        result = app(environ, start_response)
        headers_sent = False
        try:
            for chunk in result:
                pair.emit("wsgi", "body_chunk", {"data": chunk, "stream_id": stream_id})
                if not headers_sent:
                    pair.server.send_headers(stream_id, head)
                    headers_sent = True
                if chunk:
                    pair.server.send_data(stream_id, chunk)
                pair.to_client()
        finally:
            if hasattr(result, "close"):
                result.close()
        if not headers_sent:
            pair.server.send_headers(stream_id, head)
        pair.server.end_stream(stream_id)
        pair.to_client()
    return run


def chunked_wsgi_app(chunks: int = 3):
    """The same answer as `chunked_app`, as a WSGI app: a generator of `chunks` pieces."""
    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain")])
        return (f"{environ['PATH_INFO']} part {n + 1}\n".encode() for n in range(chunks))
    return app
