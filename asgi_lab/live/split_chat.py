"""Run the split chat (`apps/split_chat.py`): a WSGI app and a WebSocket server, two processes.

    with SplitChat() as chat:               # starts both, on free ports; stops both at the end
        report = measure(chat, members=3)   # real clients: `websockets` members, HTTP posts

`measure` also runs the one-process ASGI chat (`apps/chat.py`) the same way, in a process of
its own, so that the two set-ups compare fairly: processes, ports, hops and the time from
"a member says something" to "another member has it".
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
from dataclasses import dataclass

from websockets.sync.client import connect

SERVING_LINE = re.compile(r"serving (\w+) app on (http://127\.0\.0\.1:\d+)")


class ChildServer:
    """One of our servers in a child process (`python -m asgi_lab asgi|wsgi APP --port 0`)."""

    def __init__(self, kind: str, app: str, env: dict | None = None, *options: str) -> None:
        self.command = [sys.executable, "-m", "asgi_lab", kind, app, "--port", "0",
                        "--log-level", "warning", "--no-access-log",
                        "--timeout-graceful-shutdown", "1", *options]
        self.env = dict(os.environ, PYTHONUNBUFFERED="1", **(env or {}))
        self.process: subprocess.Popen | None = None
        self.url = ""
        self.stderr: list[str] = []
        self._readers: list[threading.Thread] = []

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def port(self) -> int:
        return int(self.url.rsplit(":", 1)[1])

    def start(self, timeout: float = 20.0) -> "ChildServer":
        self.process = subprocess.Popen(self.command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                        stderr=subprocess.PIPE, text=True, env=self.env)
        _children.add(self)
        self._readers = [threading.Thread(target=self._collect, daemon=True)]
        self._readers[0].start()
        line = _readline(self.process.stdout, timeout)   # "asgi_lab: serving ... on http://..."
        match = SERVING_LINE.search(line)
        if match is None:
            self.stop()
            raise RuntimeError(f"{self.command[3:5]} did not start: {line!r} {self.stderr[-5:]}")
        self.url = match.group(2)
        self._readers.append(threading.Thread(target=self.process.stdout.read, daemon=True))
        self._readers[-1].start()  # keep draining its stdout
        return self

    def _collect(self) -> None:
        for line in self.process.stderr:
            self.stderr.append(line.rstrip())

    def stop(self, grace: float = 5.0) -> None:
        """SIGTERM (graceful shutdown), then SIGKILL if it is still there after `grace`."""
        _children.discard(self)
        if self.process is None or self.process.poll() is not None:
            if self.process is not None:
                self._close_pipes()
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(grace)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self._close_pipes()

    def _close_pipes(self) -> None:
        """The child has exited: once the reader threads saw EOF, close our ends of its pipes."""
        for reader in self._readers:
            reader.join(2)
        for stream in (self.process.stdout, self.process.stderr):
            try:
                stream.close()
            except (OSError, ValueError):
                pass

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None


_children: set[ChildServer] = set()
atexit.register(lambda: [child.stop(1.0) for child in list(_children)])  # none outlives us


def _readline(stream, timeout: float) -> str:
    result: list[str] = []
    reader = threading.Thread(target=lambda: result.append(stream.readline()), daemon=True)
    reader.start()
    reader.join(timeout)
    return result[0] if result else ""


class SplitChat:
    """The WebSocket server (the relay, ASGI) and the WSGI app that forwards to it."""

    def __init__(self) -> None:
        self.relay = ChildServer("asgi", "asgi_lab.apps.split_chat:relay")
        self.wsgi: ChildServer | None = None

    def start(self) -> "SplitChat":
        self.relay.start()
        self.wsgi = ChildServer("wsgi", "asgi_lab.apps.split_chat:poster",
                                {"ASGI_LAB_RELAY_URL": self.relay.url}).start()
        return self

    def stop(self) -> None:
        if self.wsgi is not None:
            self.wsgi.stop()
        self.relay.stop()

    def __enter__(self) -> "SplitChat":
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()

    @property
    def ws_url(self) -> str:
        return "ws" + self.relay.url[len("http"):]

    def post(self, room: str, name: str, text: str) -> dict:
        """What a member does to speak: an HTTP POST to the WSGI app."""
        request = urllib.request.Request(f"{self.wsgi.url}/rooms/{room}/messages", method="POST",
                                         data=json.dumps({"name": name, "text": text}).encode(),
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=5) as answer:
            return {"status": answer.status, **json.loads(answer.read())}


@dataclass
class SetUp:
    """One way to run the chat, as measured."""

    name: str
    processes: int
    ports: int
    hops: str                 # the path of one chat line
    connections_per_member: str
    latency_ms: float         # median, "a member says something" -> another member has it
    delivered: int            # chat lines that reached the listening member

    def row(self) -> dict:
        return {"set-up": self.name, "processes": self.processes, "ports": self.ports,
                "path of one chat line": self.hops, "network hops": self.hops.count("->"), "connections per member": self.connections_per_member,
                "median latency (ms)": round(self.latency_ms, 1), "lines delivered": self.delivered}


@contextlib.contextmanager
def _member(url: str, name: str):
    """A real third-party client (the `websockets` library), in the room once it has its welcome."""
    with connect(f"{url}/ws/lobby?name={name}", open_timeout=5, close_timeout=2) as member:
        while json.loads(member.recv(timeout=5))["type"] != "welcome":
            pass
        yield member


def _next_message(member) -> dict:
    while (message := json.loads(member.recv(timeout=5)))["type"] != "message":
        pass
    return message


def measure_split(chat: SplitChat, lines: int = 20) -> SetUp:
    """bob listens on the relay; ada speaks through the WSGI app, `lines` times."""
    servers = [server for server in (chat.relay, chat.wsgi) if server.running]
    times = []
    with _member(chat.ws_url, "ada") as ada, _member(chat.ws_url, "bob") as bob:
        for i in range(lines):
            started = time.perf_counter()
            answer = chat.post("lobby", "ada", f"line {i}")
            message = _next_message(bob)
            times.append(time.perf_counter() - started)
            assert answer["status"] == 202 and message["text"] == f"line {i}", (answer, message)
            _next_message(ada)  # she reads her own line too (an unread queue stalls a client)
    return SetUp("WSGI app + separate WebSocket server", len(servers),
                 len({server.port for server in servers}),
                 "client -HTTP-> WSGI app -HTTP-> WS server -frame-> members",
                 "1 WebSocket + 1 HTTP (to post)", 1000 * statistics.median(times), len(times))


def measure_asgi(lines: int = 20) -> SetUp:
    """The same with the one-process ASGI chat (`apps/chat.py`): ada's frame goes out to bob."""
    server = ChildServer("asgi", "asgi_lab.apps.chat:app").start()
    ws_url = "ws" + server.url[len("http"):]
    times = []
    try:
        with _member(ws_url, "ada") as ada, _member(ws_url, "bob") as bob:
            for i in range(lines):
                started = time.perf_counter()
                ada.send(f"line {i}")
                message = _next_message(bob)
                times.append(time.perf_counter() - started)
                assert message["text"] == f"line {i}"
                _next_message(ada)
    finally:
        server.stop()
    return SetUp("ASGI chat", 1, len({server.port}), "client -frame-> ASGI app -frame-> members",
                 "1 WebSocket", 1000 * statistics.median(times), len(times))


def explain_split(split: SetUp, asgi: SetUp) -> str:
    """What the comparison showed, in sentences computed from it."""
    return "\n".join([
        f"- The split set-up ran **{split.processes} processes on {split.ports} ports**; the ASGI "
        f"chat {asgi.processes} process on {asgi.ports} port.",
        f"- One chat line took **{split.hops.count('->')} network hops** ({split.hops}) against "
        f"{asgi.hops.count('->')} ({asgi.hops}).",
        f"- Median time from \"ada says it\" to \"bob has it\": **{split.latency_ms:.1f} ms** split, "
        f"{asgi.latency_ms:.1f} ms on ASGI ({split.latency_ms / asgi.latency_ms:.0f}× here, "
        f"{split.delivered} and {asgi.delivered} lines). Both are fast on loopback; the extra "
        "process, port and hop are what you deploy, monitor and keep in step.",
    ])
