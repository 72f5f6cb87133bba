"""An in-process test harness: we play the server, and the app runs in our hands.

No socket and no server: the harness builds the `scope`, hands the app a `receive` and a
`send` of its own, and writes down every message that goes either way. That is how a check
can say *exactly* what went wrong ("your app sent http.response.body before
http.response.start") instead of "the connection was reset".

- `ASGIDriver(app, scope)`: like asgiref's `ApplicationCommunicator`. Put messages in with
  `send_input()`, take what the app sent with `receive_output()`, wait for it with `wait()`.
  Every message the app sends is checked against the ASGI spec (asgiref `specs/www.rst`,
  `specs/lifespan.rst`); a message the spec forbids is refused, as a real server would refuse it,
  and the reason is kept in plain words in `driver.problems`.
- `http_request(app, ...)`: one whole HTTP request/response, the body streamed in chunks.
- `call_wsgi(app, ...)`: build a PEP 3333 `environ`, play `start_response`, read the iterable
  and call its `close()`, checking each step against the PEP.
- `run(scenario)`: run an `async` scenario on a fresh event loop in a worker thread, so the
  same code works from a script, under pytest and inside a Jupyter cell (whose thread already
  runs a loop). It also catches Python's "coroutine ... was never awaited" warnings: the
  trace a forgotten `await send(...)` leaves behind.
"""

from __future__ import annotations

import asyncio
import inspect
import io
import threading
import time
import traceback
import warnings
from dataclasses import dataclass, field
from wsgiref.util import is_hop_by_hop

import h11

from ..asgi.scope import ASGI_VERSION, build_http_scope, build_websocket_scope
from ..wsgi.environ import build_environ, environ_base



class ProtocolViolation(RuntimeError):
    """Raised into the app by our `send()` when a message breaks the ASGI spec (a real server
    raises too: uvicorn and ours raise RuntimeError). The text is written for a student."""


class NotAsync(TypeError):
    """The app returned something that cannot be awaited: it is not an ASGI 3 app."""


class AppTimeout(Exception):
    """The app did not send (or finish) within the time we gave it."""


# -- running a scenario from anywhere ----------------------------------------------------------

@dataclass
class Outcome:
    """What `run()` brings back: the scenario's value and the warnings Python issued."""

    value: object = None
    unawaited: list[str] = field(default_factory=list)
    """The names in every "coroutine 'X' was never awaited" RuntimeWarning."""


def run(scenario, timeout: float = 30.0) -> Outcome:
    """Run `scenario()` (an async function) on a new event loop in a worker thread.

    Exceptions from the scenario are re-raised here, in the caller's thread.
    """
    outcome = Outcome()
    error: list[BaseException] = []

    def target() -> None:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", RuntimeWarning)
            try:
                outcome.value = asyncio.run(scenario())
            except BaseException as exc:  # handed to the calling thread below
                error.append(exc)
        for warning in caught:
            text = str(warning.message)
            if "was never awaited" in text:
                outcome.unawaited.append(text.split("'")[1] if "'" in text else text)

    thread = threading.Thread(target=target, name="exercise-harness", daemon=True)
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        _interrupt(thread)
        raise AppTimeout(f"the scenario did not finish within {timeout} s")
    if error:
        raise error[0]
    return outcome


def _interrupt(thread: threading.Thread) -> None:
    """Raise AppTimeout inside a scenario thread that is stuck in a loop that never awaits
    (`while True:` around a call that returns at once): otherwise it would spin, using a CPU
    core, for as long as the kernel lives. CPython checks for such an exception between two
    bytecodes; a thread blocked inside one C call (time.sleep) gets it when that call returns."""
    import ctypes

    ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(thread.ident),
                                               ctypes.py_object(AppTimeout))
    thread.join(1.0)


# -- ASGI --------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Record:
    """One message in a transcript: when (seconds since the start), who sent it, what."""

    t: float
    sender: str  # "server" (the app received it) or "app" (the app sent it)
    message: dict


class ASGIDriver:
    """Drive one ASGI app call directly: we are the server.

        driver = ASGIDriver(app, http_scope())
        driver.start()
        await driver.send_input({"type": "http.request", "body": b"", "more_body": False})
        start = await driver.receive_output()

    `problems` lists, in plain words, every message the app sent that the spec forbids.
    For an `http` scope, once the response is complete or the client has gone (`disconnect()`),
    `receive()` returns `http.disconnect`, as the www spec says. With `spec_version="2.3"`, a
    `send()` after the client left is silently dropped (what servers did before spec 2.4);
    with "2.4" it raises `ConnectionResetError`, an `OSError`: the www spec, "Disconnected
    Client - send exception", says a server *should* raise one, since version 2.4.
    """

    def __init__(self, app, scope: dict, *, send_hook=None) -> None:
        self.app = app
        self.scope = scope
        self.send_hook = send_hook
        """An optional `async def hook(message)` awaited inside send() before the message is
        taken: a way to make send() slow, as a real server's may be."""
        self.transcript: list[Record] = []
        self.problems: list[str] = []
        self.error: BaseException | None = None
        self.task: asyncio.Task | None = None
        self.inbox: asyncio.Queue = asyncio.Queue()
        self.outbox: asyncio.Queue = asyncio.Queue()
        self.t0 = time.monotonic()
        # The state machine of the connection, from the server's side.
        self.kind = scope["type"]
        self.started = False       # http: response started / websocket: accepted
        self.accepting = False     # websocket: accept sent, still being written
        self.complete = False      # http: response complete / websocket: closed by the app
        self.disconnected = False  # the client has gone
        self.sends_after_disconnect = 0
        self.lifespan_phase = None  # "startup" or "shutdown" once received
        self._wakeup = asyncio.Event()

    # -- the side the test sees --------------------------------------------------------------

    def start(self) -> "ASGIDriver":
        self.task = asyncio.get_running_loop().create_task(self._run_app())
        return self

    async def _run_app(self) -> None:
        try:
            call = self.app(self.scope, self.receive, self.send)
            if not inspect.isawaitable(call):
                raise NotAsync("your app is a plain `def`: an ASGI app is an `async def` "
                               "function (the server awaits it)")
            await call
        except Exception as exc:  # kept for the check to explain; the test goes on
            self.error = exc

    @property
    def done(self) -> bool:
        return self.task is not None and self.task.done()

    def now(self) -> float:
        return time.monotonic() - self.t0

    async def send_input(self, message: dict) -> None:
        """Queue a message for the app's next `receive()`."""
        await self.inbox.put(message)

    def disconnect(self) -> None:
        """The client goes away: from now on `receive()` says so."""
        if not self.disconnected:
            self.disconnected = True
            self._wakeup.set()

    async def receive_output(self, timeout: float = 1.0) -> dict | None:
        """The next message the app sent, or None if the app returned first.

        Raises `AppTimeout` if the app neither sends nor returns within `timeout` seconds.
        """
        if not self.outbox.empty():
            return self.outbox.get_nowait()
        getter = asyncio.ensure_future(self.outbox.get())
        done, _ = await asyncio.wait({getter, self.task}, timeout=timeout,
                                     return_when=asyncio.FIRST_COMPLETED)
        if getter in done:
            return getter.result()
        getter.cancel()
        if self.task in done:
            return self.outbox.get_nowait() if not self.outbox.empty() else None
        raise AppTimeout(f"the app sent nothing for {timeout} s")

    async def wait(self, timeout: float = 1.0) -> bool:
        """Wait for the app to return; True if it did within `timeout` seconds."""
        if self.task is None:
            return False
        done, _ = await asyncio.wait({self.task}, timeout=timeout)
        return bool(done)

    async def stop(self) -> None:
        """Cancel the app if it is still running (the end of every scenario)."""
        if self.task is not None and not self.task.done():
            self.task.cancel()
            try:
                await asyncio.wait_for(asyncio.shield(self.task), 1.0)
            except (asyncio.CancelledError, asyncio.TimeoutError, Exception):
                pass

    def sent(self, message_type: str | None = None) -> list[dict]:
        """Every message the app sent (of one type, if given), in order."""
        return [r.message for r in self.transcript
                if r.sender == "app" and (message_type is None or r.message.get("type") == message_type)]

    # -- the side the app sees ----------------------------------------------------------------

    async def receive(self) -> dict:
        """The app's `receive()`."""
        if self.kind == "http":
            message = await self._receive_http()
        elif self.inbox.empty() and self.disconnected and self.kind == "websocket":
            message = {"type": "websocket.disconnect", "code": 1006}
        else:
            message = await self._next_input()
        if message.get("type") in ("lifespan.startup", "lifespan.shutdown"):
            self.lifespan_phase = message["type"].rsplit(".", 1)[1]
        self.transcript.append(Record(self.now(), "server", message))
        return message

    async def _wait_for_input(self) -> dict | None:
        """The next queued message, or None if `disconnect()` (or a completed response)
        woke us first."""
        if not self.inbox.empty():
            return self.inbox.get_nowait()
        getter = asyncio.ensure_future(self.inbox.get())
        waker = asyncio.ensure_future(self._wakeup.wait())
        try:
            done, _ = await asyncio.wait({getter, waker}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            waker.cancel()
            if not getter.done():
                getter.cancel()
        if getter in done:
            return getter.result()
        self._wakeup.clear()
        return None

    async def _next_input(self) -> dict:
        message = await self._wait_for_input()
        return message if message is not None else {"type": "websocket.disconnect", "code": 1006}

    async def _receive_http(self) -> dict:
        # The body first (whatever the test queued); then, like a real server, wait until the
        # response is complete or the client has gone, and say "http.disconnect".
        while True:
            if self.inbox.empty() and (self.disconnected or self.complete):
                return {"type": "http.disconnect"}
            message = await self._wait_for_input()
            if message is not None:
                return message

    async def send(self, message: dict) -> None:
        """The app's `send()`: check the message against the spec, then record it."""
        if not isinstance(message, dict) or not isinstance(message.get("type"), str):
            self._refuse(f"send() takes a dict with a 'type' key, like "
                         f"{{'type': 'http.response.start', ...}}; your app sent {message!r}")
        if self.kind == "http" and self.disconnected:
            self.sends_after_disconnect += 1
            self.transcript.append(Record(self.now(), "app", message))
            if _version(self.scope.get("asgi", {}).get("spec_version", "2.0")) >= (2, 4):
                raise ConnectionResetError("the client disconnected")
            return  # ASGI before 2.4: a send() after the client left is silently dropped
        if self.send_hook is not None:
            if self.kind == "websocket" and message["type"] == "websocket.accept":
                self.accepting = True
            await self.send_hook(message)
        getattr(self, f"_check_{self.kind}", _no_check)(message)
        self.transcript.append(Record(self.now(), "app", message))
        await self.outbox.put(message)

    def _refuse(self, problem: str) -> None:
        self.problems.append(problem)
        raise ProtocolViolation(problem)

    # -- the spec, one scope type at a time --------------------------------------------------

    def _check_http(self, message: dict) -> None:
        """ASGI www spec, "HTTP": one http.response.start, then http.response.body until
        more_body is false, then nothing."""
        kind = message["type"]
        if self.complete:
            self._refuse(f"your app sent {kind} after its response was complete "
                         "(the last http.response.body had more_body=False)")
        if not self.started:
            if kind == "http.response.body":
                self._refuse("your app sent http.response.body before http.response.start")
            if kind != "http.response.start":
                self._refuse(f"an HTTP response begins with http.response.start; your app sent {kind!r}")
            status = message.get("status")
            if not isinstance(status, int) or not 100 <= status <= 599:
                self._refuse(f"http.response.start needs an int status such as 200; got {status!r}")
            for pair in message.get("headers", []):
                if not (isinstance(pair, (tuple, list)) and len(pair) == 2
                        and all(isinstance(part, bytes) for part in pair)):
                    self._refuse("ASGI header names and values are bytes, given as pairs like "
                                 f"(b'content-type', b'text/plain'); your app sent {pair!r}")
            self.started = True
        elif kind == "http.response.start":
            self._refuse("your app sent http.response.start twice")
        elif kind != "http.response.body":
            self._refuse(f"after http.response.start come http.response.body messages; got {kind!r}")
        else:
            body = message.get("body", b"")
            if not isinstance(body, (bytes, bytearray)):
                self._refuse(f"http.response.body carries bytes; your app sent {type(body).__name__} "
                             f"{_short(body)} (encode it, e.g. text.encode())")
            if not message.get("more_body", False):
                self.complete = True
                self._wakeup.set()

    def _check_websocket(self, message: dict) -> None:
        """ASGI www spec, "WebSocket": accept (or close, to reject) first; then send; after
        close, nothing."""
        kind = message["type"]
        if self.complete:
            self._refuse(f"your app sent {kind} after websocket.close")
        if kind == "websocket.accept":
            if self.started:
                self._refuse("your app sent websocket.accept twice")
            self.started = True
            self.accepting = False
        elif kind == "websocket.send":
            if not self.started or self.accepting:
                self._refuse("your app sent websocket.send to a client whose connection was not "
                             "accepted yet (websocket.accept must come first, and must be finished)")
            if self.disconnected:
                self._refuse("your app sent websocket.send to a client that had already "
                             "disconnected (it should have left the room)")
            has_text, has_bytes = message.get("text") is not None, message.get("bytes") is not None
            if has_text == has_bytes:
                self._refuse("websocket.send carries exactly one of 'text' or 'bytes'")
        elif kind == "websocket.close":
            self.complete = True
        elif kind != "websocket.http.response.start" and kind != "websocket.http.response.body":
            self._refuse(f"{kind!r} is not a message an app sends on a WebSocket")

    def _check_lifespan(self, message: dict) -> None:
        """ASGI lifespan spec: answer startup once, then shutdown once."""
        kind = message["type"]
        if kind.startswith("lifespan.startup."):
            if self.lifespan_phase != "startup":
                self._refuse(f"{kind} was sent before the app received lifespan.startup"
                             if self.lifespan_phase is None else f"{kind} was sent during shutdown")
            if self.sent("lifespan.startup.complete") or self.sent("lifespan.startup.failed"):
                self._refuse(f"startup was answered twice ({kind} came after an earlier answer): "
                             "if you wrap an app, let only one of you answer")
        elif kind.startswith("lifespan.shutdown."):
            if self.lifespan_phase != "shutdown":
                self._refuse(f"{kind} was sent before the app received lifespan.shutdown")
            if self.sent("lifespan.shutdown.complete") or self.sent("lifespan.shutdown.failed"):
                self._refuse(f"shutdown was answered twice ({kind} came after an earlier answer)")
        else:
            self._refuse(f"{kind!r} is not a lifespan message")


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.split("."))


def _no_check(message: dict) -> None:
    return None


def _short(value, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit - 3] + "..."


# -- scopes ------------------------------------------------------------------------------------

SERVER = ("127.0.0.1", 8000)
CLIENT = ("127.0.0.1", 50000)


def _request_head(method: str, path: str, query_string: bytes, headers, extra=()) -> h11.Request:
    target = path.encode() + (b"?" + query_string if query_string else b"")
    return h11.Request(method=method, target=target,
                       headers=[(b"host", b"127.0.0.1:8000"), *headers, *extra])


def http_scope(method: str = "GET", path: str = "/", query_string: bytes = b"",
               headers=(), state: dict | None = None, spec_version: str = "2.4") -> dict:
    """An `http` scope, built by our ASGI server's own builder (`asgi/scope.py`) from the
    request head h11 would have parsed: the app sees exactly what the real server gives it.
    `spec_version` lets a check play an older server (2.3: send() after a disconnect is
    silently dropped)."""
    scope = build_http_scope(_request_head(method, path, query_string, headers), "1.1",
                             CLIENT, SERVER, state=state)
    scope["asgi"] = {**ASGI_VERSION, "spec_version": spec_version}
    return scope


def websocket_scope(path: str = "/", query_string: bytes = b"", state: dict | None = None,
                    client: tuple[str, int] = CLIENT) -> dict:
    """A `websocket` scope, built by the server's builder from an upgrade request."""
    upgrade = [(b"connection", b"upgrade"), (b"upgrade", b"websocket"),
               (b"sec-websocket-version", b"13"), (b"sec-websocket-key", b"dGhlIHNhbXBsZSBub25jZQ==")]
    return build_websocket_scope(_request_head("GET", path, query_string, (), upgrade), client,
                                 SERVER, state=state)


def lifespan_scope(state: dict) -> dict:
    return {"type": "lifespan", "asgi": dict(ASGI_VERSION), "state": state}


# -- one HTTP request, start to finish ----------------------------------------------------------

@dataclass
class HTTPResult:
    """Everything one in-process HTTP request produced."""

    status: int | None
    headers: list
    body: bytes
    body_messages: int
    driver: ASGIDriver
    timed_out: bool = False

    @property
    def problems(self) -> list[str]:
        return self.driver.problems

    @property
    def error(self) -> BaseException | None:
        return self.driver.error

    def header(self, name: bytes) -> bytes | None:
        for key, value in self.headers:
            if key.lower() == name:
                return value
        return None


async def http_request(app, method: str = "GET", path: str = "/", *, query_string: bytes = b"",
                       headers=(), body_chunks=(b"",), state: dict | None = None,
                       spec_version: str = "2.4", timeout: float = 2.0) -> HTTPResult:
    """Send one request (its body as `body_chunks`, one http.request message each) and
    collect the response until it is complete, the app returns, or `timeout` passes."""
    scope = http_scope(method, path, query_string, headers, state, spec_version)
    driver = ASGIDriver(app, scope).start()
    chunks = list(body_chunks) or [b""]
    for i, chunk in enumerate(chunks):
        await driver.send_input({"type": "http.request", "body": chunk,
                                 "more_body": i < len(chunks) - 1})
    status, response_headers, body, messages, timed_out = None, [], b"", 0, False
    deadline = time.monotonic() + timeout
    try:
        while not (driver.complete and driver.outbox.empty()):
            message = await driver.receive_output(max(deadline - time.monotonic(), 0.001))
            if message is None:
                break
            if message["type"] == "http.response.start":
                status, response_headers = message["status"], list(message.get("headers", []))
            elif message["type"] == "http.response.body":
                body += bytes(message.get("body", b""))
                messages += 1
    except AppTimeout:
        timed_out = True
    if driver.complete:
        await driver.wait(0.5)
    await driver.stop()
    return HTTPResult(status, response_headers, body, messages, driver, timed_out)


# -- WSGI --------------------------------------------------------------------------------------

def make_environ(method: str = "GET", path: str = "/", query_string: str = "",
                 headers=(), body: bytes = b"") -> dict:
    """A PEP 3333 `environ` for one request, built by our WSGI server's own builder
    (`asgi_lab.wsgi.environ`) from the request head h11 would have parsed."""
    target = path + ("?" + query_string if query_string else "")
    all_headers = [("host", "127.0.0.1:8000"), *headers]
    if body:
        all_headers.append(("content-length", str(len(body))))
    request = h11.Request(method=method, target=target, headers=all_headers)
    base = environ_base(server=SERVER, client=CLIENT)
    return build_environ(request, io.BytesIO(body), base)


@dataclass
class WSGIResult:
    """What one WSGI call produced, and what it did wrong (in `problems`)."""

    status: str | None = None
    headers: list = field(default_factory=list)
    body: bytes = b""
    chunks: list = field(default_factory=list)
    closed: bool = False
    problems: list = field(default_factory=list)
    error: BaseException | None = None
    environ: dict | None = None
    exc_info: tuple | None = None
    """What the app passed as start_response's third argument, if anything."""

    @property
    def status_code(self) -> int | None:
        try:
            return int(self.status.split(" ", 1)[0])
        except (AttributeError, ValueError):
            return None

    def header(self, name: str) -> str | None:
        for key, value in self.headers:
            if key.lower() == name.lower():
                return value
        return None


def call_wsgi(app, method: str = "GET", path: str = "/", query_string: str = "",
              headers=(), body: bytes = b"", environ: dict | None = None) -> WSGIResult:
    """Call a WSGI app once, as a server would (PEP 3333, "The Server/Gateway Side")."""
    result = WSGIResult()
    result.environ = environ if environ is not None else make_environ(method, path, query_string,
                                                                       headers, body)

    def start_response(status, response_headers, exc_info=None):
        """PEP 3333, "The start_response() Callable"."""
        if result.status is not None and exc_info is None:
            _wsgi_problem(result, "your app called start_response twice; a second call is only "
                                  "allowed with exc_info, to replace the response after an error")
        if exc_info is not None and result.chunks:
            raise exc_info[1].with_traceback(exc_info[2])  # too late to change the response
        if not isinstance(status, str) or len(status) < 4 or not status[:3].isdigit() or status[3] != " ":
            _wsgi_problem(result, "the status is a str like '200 OK' (code, space, reason); "
                                  f"your app passed {status!r}")
        if not isinstance(response_headers, list):
            _wsgi_problem(result, "the headers are a list of (name, value) tuples; your app passed "
                                  f"a {type(response_headers).__name__}")
        for pair in response_headers:
            if not (isinstance(pair, tuple) and len(pair) == 2 and all(isinstance(p, str) for p in pair)):
                _wsgi_problem(result, "each header is a tuple of two str, like ('Content-Type', "
                                      f"'text/plain'); your app passed {pair!r}")
            if is_hop_by_hop(pair[0]):  # PEP 3333 forbids them; our WSGI server refuses them too
                _wsgi_problem(result, f"your app set {pair[0]!r}, a hop-by-hop header: PEP 3333 "
                                      "leaves those to the server")
        result.status, result.headers = status, list(response_headers)
        result.exc_info = exc_info or result.exc_info
        return write

    def write(data):
        if result.status is None:
            _wsgi_problem(result, "your app called write() before start_response")
        result.chunks.append(_wsgi_bytes(result, data))

    iterable = None
    try:
        iterable = app(result.environ, start_response)
        if isinstance(iterable, (str, bytes)):
            _wsgi_problem(result, f"your app returned a {type(iterable).__name__}; a WSGI app returns "
                                  f"an iterable of bytes, such as [body] (a list with one bytes item)")
        if iterable is None:
            _wsgi_problem(result, "your app returned None; a WSGI app returns an iterable of bytes, "
                                  "such as [body]")
        for chunk in iterable:
            chunk = _wsgi_bytes(result, chunk)
            if chunk and result.status is None:
                _wsgi_problem(result, "your app produced body bytes before calling start_response")
            result.chunks.append(chunk)
        if result.status is None:
            _wsgi_problem(result, "your app never called start_response(status, headers)")
    except _WSGIProblem:
        pass
    except Exception as exc:
        result.error = exc
    finally:
        close = getattr(iterable, "close", None)
        if close is not None:
            try:
                close()  # PEP 3333: the server must call close() if the iterable has one
            except Exception as exc:
                result.error = result.error or exc
    result.body = b"".join(c for c in result.chunks if isinstance(c, bytes))
    return result


class _WSGIProblem(Exception):
    pass


def _wsgi_problem(result: WSGIResult, text: str):
    result.problems.append(text)
    raise _WSGIProblem(text)


def _wsgi_bytes(result: WSGIResult, chunk) -> bytes:
    if isinstance(chunk, (bytes, bytearray)):
        return bytes(chunk)
    if isinstance(chunk, str):
        _wsgi_problem(result, f"your app produced a str ({_short(chunk)}); WSGI bodies are bytes: "
                              "encode it, e.g. text.encode('utf-8')")
    _wsgi_problem(result, f"your app produced a {type(chunk).__name__} ({_short(chunk)}) in its body; "
                          "each item of the iterable must be bytes")


# -- telling a student where their code failed --------------------------------------------------

_OUR_DIRS = ("asgi_lab/exercises", "asgi_lab\\exercises", "/asyncio/", "\\asyncio\\",
             "/concurrent/", "/threading.py", "site-packages")


def describe_exception(exc: BaseException) -> str:
    """`KeyError: 'db' (line 7: db = scope["db"])`: the exception and the last line of the
    student's own code it passed through, without a traceback."""
    where = ""
    frames = [f for f in traceback.extract_tb(exc.__traceback__)
              if not any(part in f.filename for part in _OUR_DIRS)]
    if frames:
        frame = frames[-1]
        where = f" (in {frame.name}, line {frame.lineno}"
        where += f": {frame.line.strip()})" if frame.line else ")"
    text = str(exc)
    if isinstance(exc, KeyError):
        text = repr(exc.args[0]) if exc.args else ""
    return f"{type(exc).__name__}{': ' + text if text else ''}{where}"
