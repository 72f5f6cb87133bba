"""Trace your own app: serve it on our server with the tracer on, send it requests, draw them.

    python -m asgi_lab trace myproject.asgi:app --request "GET /" --request "POST /items \\
        -H 'content-type: application/json' -d '{\\"name\\": \\"x\\"}'" --onion --out trace.json
    python -m asgi_lab trace myflaskapp:app --wsgi --request "GET /hello" --out trace.json

or from Python (a script, a test, a Jupyter cell):

    from asgi_lab.trace_app import trace_app
    run = trace_app(app, ["GET /", "GET /missing"], kind="asgi", onion=True, out="trace.json")
    run.tracer.listing()        # every event; run.figures(): one sequence diagram per request

The app is served in the background on a free port of 127.0.0.1 (`serve_in_background`);
each request goes on a connection of its own, with `Connection: close`, so that one request
is one connection number in the trace and one diagram. h11 writes the requests.

A request is written like a short curl command line (split as a shell would, `shlex`):

    METHOD TARGET [-H 'name: value']... [-d BODY | -d @FILE]

e.g. `GET /hello?name=ada`, `POST /echo -H 'content-type: text/plain' -d 'hello'`,
`PUT /upload -d @photo.jpg`. `content-length` is added for a body; `host` is added.
HTTP requests only (a WebSocket is traced with `asgi_lab.live`). A response that is still
streaming after `timeout` seconds (an SSE stream: `--timeout` on the command line) is cut
there: the client hangs up, and the trace shows what the app does about it.

With `onion=True` the middleware onion (`asgi_lab/onion.py`) records each message at each
middleware layer, and the diagrams get a lane per layer; where the framework hides its stack
(Django), `run.onion.hidden` says so, and so does the command's output.

Written: the trace (`Tracer.load(path)` reads it back), a summary beside it
(`NAME.summary.json`: the requests, their connection numbers, the onion's layers) and one
PNG per request (`NAME-1.png`, ...).
"""

from __future__ import annotations

import json
import shlex
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path

import h11

from .background import serve_in_background, server_errors
from .trace import Tracer


class BadRequestSpec(ValueError):
    """A request could not be read from its one-line description."""


@dataclass
class RequestSpec:
    """One request to send: method, target, headers, body."""

    method: str
    target: str
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes = b""
    text: str = ""

    def to_bytes(self, host: str) -> bytes:
        """The request as bytes on the wire, written by h11 (HTTP/1.1, `Connection: close`)."""
        headers = [("host", host), *self.headers]
        names = {name.lower() for name, _ in self.headers}
        if self.body and "content-length" not in names:
            headers.append(("content-length", str(len(self.body))))
        if "connection" not in names:
            headers.append(("connection", "close"))
        client = h11.Connection(h11.CLIENT)
        try:
            data = client.send(h11.Request(method=self.method, target=self.target, headers=headers))
        except h11.LocalProtocolError as exc:
            raise BadRequestSpec(f"{self.text!r}: h11 refuses this request: {exc}") from None
        if self.body:
            data += client.send(h11.Data(data=self.body))
        return data + client.send(h11.EndOfMessage())


def parse_request(text: str) -> RequestSpec:
    """"POST /echo -H 'content-type: text/plain' -d hello" -> a RequestSpec (see the module)."""
    try:
        words = shlex.split(text)
    except ValueError as exc:
        raise BadRequestSpec(f"{text!r}: {exc}") from None
    if len(words) < 2:
        raise BadRequestSpec(f"{text!r}: expected at least METHOD TARGET, e.g. 'GET /'")
    method, target, rest = words[0].upper(), words[1], words[2:]
    if not target.startswith("/") and target != "*":
        raise BadRequestSpec(f"{text!r}: the target must start with '/', got {target!r}")
    spec = RequestSpec(method, target, text=text)
    while rest:
        option = rest.pop(0)
        if option not in ("-H", "--header", "-d", "--data") or not rest:
            raise BadRequestSpec(f"{text!r}: expected -H 'name: value' or -d BODY, got {option!r}")
        value = rest.pop(0)
        if option in ("-H", "--header"):
            name, colon, header_value = value.partition(":")
            if not colon or not name.strip():
                raise BadRequestSpec(f"{text!r}: a header looks like 'name: value', got {value!r}")
            spec.headers.append((name.strip(), header_value.strip()))
        elif value.startswith("@"):
            spec.body += Path(value[1:]).read_bytes()
        else:
            spec.body += value.encode("utf-8")
    return spec


@dataclass
class TracedRun:
    """What `trace_app` recorded: the trace, each request's connection, the onion if any."""

    tracer: Tracer
    requests: list[RequestSpec]
    conns: list[int]
    kind: str
    onion: object | None = None
    errors: list[str] = field(default_factory=list)
    written: list[Path] = field(default_factory=list)

    def events(self, index: int):
        """The events of request number `index` (0-based)."""
        return self.tracer.filter(conn=self.conns[index])

    def figures(self):
        """One sequence diagram per request, titled with the request."""
        from .viz.sequence import sequence_diagram

        titles = self.onion.lane_titles() if self.onion is not None else {}
        titles.setdefault("app", f"{self.kind.upper()} app")
        return [sequence_diagram(self.events(i), title=f"{spec.method} {spec.target} "
                                 f"on the {self.kind.upper()} server", lane_titles=titles)
                for i, spec in enumerate(self.requests)]

    def summary(self) -> dict:
        from .onion import summary

        return {"kind": self.kind,
                "requests": [{"request": spec.text or f"{spec.method} {spec.target}", "conn": conn}
                             for spec, conn in zip(self.requests, self.conns)],
                "onion": summary(self.onion), "server_errors": self.errors}


def trace_app(app, requests, *, kind: str = "asgi", onion: bool = False, out=None,
              timeout: float = 5.0, **settings) -> TracedRun:
    """Serve `app` (`kind` "asgi" or "wsgi") with a tracer, send each request (a string, see
    `parse_request`, or a RequestSpec), and return what was recorded. With `out` (a path
    ending in .json) also write the trace, its summary and one PNG per request. `settings`
    are server `Config` fields (e.g. `threads=4`). A response still streaming after
    `timeout` seconds (an SSE stream, say) is cut there: the client hangs up."""
    specs = [r if isinstance(r, RequestSpec) else parse_request(r) for r in requests]
    if not specs:
        raise BadRequestSpec("no request to send: give at least one, e.g. 'GET /'")
    tracer = Tracer()
    wrapper = None
    if onion:
        from .onion import MiddlewareOnion

        wrapper = MiddlewareOnion.install(app, tracer, kind)
    conns = []
    try:
        with server_errors() as records, serve_in_background(
                app, kind, name=f"trace-app-{kind}", tracer=tracer, access_log=False,
                **settings) as server:
            host = f"{server.host}:{server.port}"
            for spec in specs:
                conns.append(exchange_traced(server, tracer, spec.to_bytes(host), timeout))
    finally:
        if wrapper is not None:
            wrapper.remove()
    run = TracedRun(tracer, specs, conns, kind, wrapper,
                    errors=[record.getMessage() for record in records])
    if out is not None:
        save_run(run, out)
    return run


def exchange_traced(server, tracer: Tracer, request: bytes, timeout: float) -> int:
    """Send `request` on a new connection, read until the server closes or `timeout` seconds
    have passed (a stream that never ends: then we hang up, as a client would), wait until
    the server has closed its side too, and return the connection's number in the trace."""
    mark = len(tracer.events)
    deadline = time.monotonic() + timeout
    with socket.create_connection(server.address, timeout=timeout) as sock:
        sock.sendall(request)
        while (left := deadline - time.monotonic()) > 0:
            sock.settimeout(left)
            try:
                if not sock.recv(65536):
                    break
            except (TimeoutError, ConnectionError):
                break
    opened = [e for e in tracer.events[mark:] if e.kind == "connection_made"]
    if not opened:
        raise RuntimeError("the server recorded no connection: is the tracer its tracer?")
    conn = opened[0].conn
    tracer.wait_for(conn=conn, kind="connection_lost", timeout=timeout)
    return conn


def save_run(run: TracedRun, out) -> list[Path]:
    """Write the trace to `out`, the summary beside it, and one PNG per request."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    run.tracer.save(out)
    summary_path = out.with_name(out.stem + ".summary.json")
    summary_path.write_text(json.dumps(run.summary(), indent=1), encoding="utf-8")
    run.written = [out, summary_path]
    for number, fig in enumerate(run.figures(), 1):
        path = out.with_name(f"{out.stem}-{number}.png")
        fig.savefig(path, dpi=100)
        run.written.append(path)
    return run.written


def report(run: TracedRun) -> str:
    """What the command prints: each request's listing, the onion, the files written."""
    parts = []
    for index, spec in enumerate(run.requests):
        title = f"{spec.method} {spec.target} (connection {run.conns[index]})"
        parts.append(f"{title}\n{'-' * len(title)}\n{Tracer(run.events(index)).listing(times=True)}")
    if run.onion is not None:
        parts.append(run.onion.describe())
    if run.errors:
        parts.append("the server logged:\n" + "\n".join(f"  {line}" for line in run.errors))
    if run.written:
        parts.append("written:\n" + "\n".join(f"  {path}" for path in run.written))
    return "\n\n".join(parts)
