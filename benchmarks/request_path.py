"""Where the CPU time of one hello-world request goes on the WSGI server's request path: h11
(parsing the request, framing the response) against all of ours around it.

    python benchmarks/request_path.py [--requests 20000] [--rounds 5] [--baseline DIR] [--json FILE]

No socket, no thread, no pool: one `wsgi.connection.Connection` on a stand-in socket whose
recv() returns the same request every time and whose send() takes everything, serving
`asgi_lab.apps.hello:wsgi_app` as a pooled worker does (`Connection.serve_ready`), minus the
system calls. Then h11 alone makes the same exchange: the same request bytes in, a response
with the same four headers out. The difference between the two is the cost of our layers:
the core's rules (`core.py`, `http11.refuse_request`), the environ, `start_response`, the
app call, the cycle. Two modes: keep-alive (one connection, request after request) and
`Connection: close` (a new Connection, and a new h11 state machine, per request).

Times are the best of the rounds (the least disturbed one), in microseconds per request on
this process's one thread, each mode in a fresh process. They also count Python function
calls per request, by package: a count, the same on every machine. A real server adds the
system calls (recv, send, epoll) and the pool's hand-offs, which `wsgi_per_request.py`
measures. `--baseline DIR` measures another checkout's `asgi_lab` too (its h11 is the same).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

from harness import baseline_line, markdown_table, measured, number, text_table, unique

from asgi_lab.experiments.results import git_commit, write_result
from asgi_lab.experiments.servers import BASELINE_HELP

REQUESTS = {
    "keep-alive": b"GET / HTTP/1.1\r\nHost: 127.0.0.1:8000\r\n\r\n",
    "close": b"GET / HTTP/1.1\r\nHost: 127.0.0.1:8000\r\nConnection: close\r\n\r\n",
}
"""What wrk sends, in each mode."""

H11_CALLS = ["receive_data", "next_event: Request", "next_event: EndOfMessage", "send: Response",
             "send: Data", "send: EndOfMessage", "start_next_cycle"]


# -- the measuring process (one per mode and checkout) ---------------------------------------

def measure(mode: str, requests: int, rounds: int) -> dict:
    """(in a child process, `asgi_lab` importable from the checkout under test)"""
    import h11

    from asgi_lab.apps.hello import BODY, wsgi_app
    from asgi_lab.config import Config
    from asgi_lab.core import ResponseHeads
    from asgi_lab.wsgi.connection import Connection

    request = REQUESTS[mode]

    class StandInSocket:
        def fileno(self) -> int:
            return -1

        def recv(self, size: int, flags: int = 0) -> bytes:
            return request

        def send(self, data, flags: int = 0) -> int:
            return len(data)

        def settimeout(self, timeout) -> None:
            pass

        def setsockopt(self, *args) -> None:
            pass

        def close(self) -> None:
            pass

    class StandInServer:
        """What a Connection asks of its server."""
        app = staticmethod(wsgi_app)
        config = Config(access_log=False)
        tracer = None
        heads = ResponseHeads()
        address = ("127.0.0.1", 8000)
        scheme = "http"

        def connection_closed(self, connection) -> None:
            pass

    server, client = StandInServer(), ("127.0.0.1", 50000)
    if mode == "keep-alive":
        connection = Connection(server, StandInSocket(), client, 1)

        def ours() -> None:
            connection.serve_ready()
    else:
        def ours() -> None:
            Connection(server, StandInSocket(), client, 1).serve_ready()

    head = h11.Response(status_code=200, headers=server.heads.default_headers() + [
        (b"content-type", b"text/plain"), (b"content-length", str(len(BODY)).encode())])
    end = h11.EndOfMessage()
    conn = h11.Connection(h11.SERVER)

    def h11_alone() -> None:
        nonlocal conn
        if mode == "close":
            conn = h11.Connection(h11.SERVER)
        conn.receive_data(request)
        conn.next_event()
        conn.next_event()
        conn.send(head)
        conn.send(h11.Data(data=BODY))
        conn.send(end)
        if mode == "keep-alive":
            conn.start_next_cycle()

    def best_of(function) -> float:
        for _ in range(requests // 10):  # warm up
            function()
        best = float("inf")
        for _ in range(rounds):
            start = time.perf_counter()
            for _ in range(requests):
                function()
            best = min(best, (time.perf_counter() - start) / requests)
        return best * 1e6

    result = {"ours_us": best_of(ours), "h11_us": best_of(h11_alone), "calls": count_calls(ours, 1000)}
    if mode == "keep-alive":
        result["h11_call_us"] = time_h11_calls(h11, request, head, BODY, requests, rounds)
    return result


def time_h11_calls(h11, request: bytes, head, body: bytes, requests: int, rounds: int) -> dict:
    """Each h11 call of a keep-alive exchange timed on its own (perf_counter around each: a
    little more in all than the exchange timed whole), best round by round total."""
    conn = h11.Connection(h11.SERVER)
    clock = time.perf_counter
    best: list[float] | None = None
    for _ in range(rounds):
        spent = [0.0] * len(H11_CALLS)
        for _ in range(requests):
            t0 = clock()
            conn.receive_data(request)
            t1 = clock()
            conn.next_event()
            t2 = clock()
            conn.next_event()
            t3 = clock()
            conn.send(head)
            t4 = clock()
            conn.send(h11.Data(data=body))
            t5 = clock()
            conn.send(h11.EndOfMessage())
            t6 = clock()
            conn.start_next_cycle()
            t7 = clock()
            for i, (a, b) in enumerate(((t0, t1), (t1, t2), (t2, t3), (t3, t4), (t4, t5), (t5, t6), (t6, t7))):
                spent[i] += b - a
        if best is None or sum(spent) < sum(best):
            best = spent
    return {name: value / requests * 1e6 for name, value in zip(H11_CALLS, best)}


def count_calls(function, times: int) -> dict:
    """Python function calls per call of `function`, by where the called code lives: h11,
    asgi_lab, or anything else (the standard library, the app's helpers)."""
    counts = {"h11": 0, "asgi_lab": 0, "other": 0}

    def profile(frame, event, arg) -> None:
        if event == "call":
            path = frame.f_code.co_filename.replace(os.sep, "/")
            counts["h11" if "/h11/" in path else "asgi_lab" if "/asgi_lab/" in path else "other"] += 1

    sys.setprofile(profile)
    try:
        for _ in range(times):
            function()
    finally:
        sys.setprofile(None)
    return {package: count / times for package, count in counts.items()}


# -- the driver ----------------------------------------------------------------------------

def run_child(root: str, mode: str, args) -> dict:
    code = (f"import sys; sys.path.insert(0, {root!r}); sys.path.insert(1, {os.path.dirname(__file__)!r}); "
            f"import json, request_path; print(json.dumps(request_path.measure({mode!r}, "
            f"{args.requests}, {args.rounds})))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         timeout=600, cwd=root)
    return json.loads(out.stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=20000, help="requests per round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--baseline", metavar="DIR", help=BASELINE_HELP)
    parser.add_argument("--json", metavar="FILE")
    args = parser.parse_args()

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    checkouts = [("asgi_lab", root)] + ([("baseline", os.path.abspath(args.baseline))] if args.baseline else [])
    runs = []
    for mode in REQUESTS:
        for name, directory in checkouts:  # one after the other, each in a fresh process
            runs.append({"checkout": name, "mode": mode, **run_child(directory, mode, args)})
            print(f"{mode:10} {name:9} {runs[-1]['ours_us']:6.1f} us per request, h11 alone "
                  f"{runs[-1]['h11_us']:5.1f} us", flush=True)
    result = {"benchmark": "request_path", "app": "asgi_lab.apps.hello:wsgi_app",
              "requests": args.requests, "rounds": args.rounds, "baseline": args.baseline,
              "baseline_commit": git_commit(args.baseline) if args.baseline else None, "runs": runs}
    print()
    print(text_table(HEADER, table_rows(runs), left=2))
    print()
    print(text_table(CALL_HEADER, call_rows(runs), left=1))
    if args.json:
        write_result(result, args.json, indent=1)
        print(f"wrote {args.json}")


# -- the tables ----------------------------------------------------------------------------

HEADER = ["mode", "checkout", "request path us", "h11 alone us", "ours us", "h11 share",
          "calls: h11", "calls: asgi_lab", "calls: other"]
CALL_HEADER = ["h11 call (keep-alive)", "us"]


def table_rows(runs: list[dict]) -> list[list[str]]:
    """Per mode and checkout: the whole path, h11 alone, their difference (ours), h11's share,
    and the Python calls per request by package."""
    rows = []
    for run in runs:
        ours = run["ours_us"] - run["h11_us"]
        calls = run["calls"]
        rows.append([run["mode"], run["checkout"], number(run["ours_us"], 1), number(run["h11_us"], 1),
                     number(ours, 1), f"{run['h11_us'] / run['ours_us']:.0%}", number(calls["h11"]),
                     number(calls["asgi_lab"]), number(calls["other"])])
    return rows


def call_rows(runs: list[dict]) -> list[list[str]]:
    """The h11 calls of a keep-alive exchange, each timed alone (the first checkout's run)."""
    run = next((r for r in runs if r.get("h11_call_us")), None)
    if run is None:
        return []
    calls = run["h11_call_us"]
    return [[name, number(calls[name], 1)] for name in H11_CALLS] + [["all", number(sum(calls.values()), 1)]]


def markdown(result: dict) -> str:
    """The tables of a result file, as Markdown."""
    checkouts = unique(run["checkout"] for run in result["runs"])
    return "\n".join([
        f"`{result['app']}` on a stand-in socket, one thread, no system calls: best of "
        f"{result['rounds']} rounds of {result['requests']:,} requests, microseconds per request. "
        "'h11 alone' makes the same exchange with h11 only; 'ours' is the difference: the core, "
        "the environ, start_response, the app call. Calls: Python function calls per request, by "
        "the package of the called code (a count, the same on any machine).", "",
        markdown_table(HEADER, table_rows(result["runs"]), left=2), "",
        "Each h11 call of the keep-alive exchange, timed alone:", "",
        markdown_table(CALL_HEADER, call_rows(result["runs"])), "",
        (f"Checkouts: {', '.join(checkouts)}." + baseline_line(result)).strip(), "",
        measured(result)])


if __name__ == "__main__":
    sys.exit(main())
