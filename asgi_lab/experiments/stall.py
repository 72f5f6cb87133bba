"""The price of gevent's monkey-patching: one blocking call in C stalls every client.

    from asgi_lab.experiments import stall
    result = stall.run(["gevent", "wsgi-threads", "asgi"], clients=50, block_ms=500)
    print(stall.format_table(result))

`gevent.monkey.patch_all()` replaces the blocking functions of the standard library (`socket`,
`time.sleep`, `threading`, `select`, ...) with ones that switch greenlets. Code it cannot patch
still blocks: a C extension that waits on its own socket (a database driver), calls libc's
`sleep()`, or computes for a while. gevent's greenlets all run on one OS thread, so while that
call runs, no other greenlet does.

Per server, the experiment:

1. starts the server (its own process) and `clients` SSE streams with a short interval;
2. once every client is connected, sends one `GET /block?ms=500`: the app spends 500 ms in
   libc's `usleep` through ctypes (`asgi_lab.apps.sse.blocking_c_call`);
3. reports how late the *other* clients' events were sent (the server's SENT - DUE stamps):
   the worst per client, and how many clients had an event held back by more than half the
   block.

On a thread per client the other threads run on (ctypes releases the GIL during the call; a
free-threaded CPython, 3.13t/3.14t, has no GIL to release, same result); on gevent, and on an
asyncio server whose `async def` app makes the same call, every stream waits: a GIL or none,
they all run on the one thread that is stuck in C.
"""

from __future__ import annotations

import http.client
import threading
import time

from ..load.sse import run_sse_load
from .measure import experiment_result, percentile
from .servers import ServerProcess, resolve_servers

DEFAULT_SERVERS = ("gevent", "wsgi-threads", "asgi")


def run(servers=DEFAULT_SERVERS, *, clients: int = 50, block_ms: float = 500.0,
        interval: float = 0.1, duration: float = 2.0, out=None) -> dict:
    """Measure the stall on each server in turn; returns (and saves to `out`) the result."""
    runs = [measure_stall(spec, clients, block_ms, interval, duration)
            for spec in resolve_servers(servers)]
    return experiment_result("stall", runs, out, clients=clients, block_ms=block_ms,
                             interval=interval, duration=duration)


def measure_stall(spec, clients: int, block_ms: float, interval: float, duration: float) -> dict:
    """One server: stream to `clients`, block one request in C, see who waited."""
    connected = threading.Event()
    holder: dict = {}

    def progress(totals):
        if totals["open"] >= clients:
            connected.set()

    with ServerProcess(spec) as server:
        def load():
            try:
                holder["load"] = run_sse_load(f"{server.url}/events?interval={interval}", clients,
                                              duration, interval=interval, spread=interval,
                                              progress=progress)
            finally:
                connected.set()  # also when the generator failed: do not wait for ever

        thread = threading.Thread(target=load, name="stall-load", daemon=True)
        thread.start()
        connected.wait(30)
        time.sleep(5 * interval)  # a few events on time first
        took_ms = timed_block_request(server.port, block_ms)
        thread.join(duration + 60)
    result = holder.get("load")
    if result is None:
        raise RuntimeError(f"{spec.name}: the load generator did not finish")
    worst = [w for w, e in zip(result["worst_late_ms"], result["errors"]) if e is None]
    return {
        "server": {"name": spec.name, "label": spec.label.format(threads=0), "waits_in": spec.waits_in},
        "block_request_ms": round(took_ms, 1),
        "clients": clients,
        "errors": sum(e is not None for e in result["errors"]),
        "events": sum(result["events"]),
        "worst_late_ms": [round(w, 1) for w in worst],
        "stalled_clients": sum(w > block_ms / 2 for w in worst),
        "late_p50_ms": percentile(result["lateness_ms"], 50),
        "late_max_ms": max(result["lateness_ms"], default=None),
    }


def timed_block_request(port: int, block_ms: float) -> float:
    """`GET /block?ms=...` on a connection of its own; milliseconds until the answer."""
    started = time.perf_counter()
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=block_ms / 1000 + 30)
    try:
        connection.request("GET", f"/block?ms={block_ms:g}")
        response = connection.getresponse()
        response.read()
        if response.status != 200:
            raise RuntimeError(f"/block answered {response.status}")
    finally:
        connection.close()
    return (time.perf_counter() - started) * 1000


def format_table(result: dict) -> str:
    """One line per server: how the other clients fared while one request blocked in C."""
    from .sse_concurrency import render_table

    rows = [{"server": run["server"]["name"], "waits in": run["server"]["waits_in"],
             "/block took": f"{run['block_request_ms']:.0f}",
             "stalled clients": f"{run['stalled_clients']}/{run['clients']}",
             "worst late": _ms(max(run["worst_late_ms"], default=None)),
             "late p50": _ms(run["late_p50_ms"])}
            for run in result["runs"]]
    return render_table(f"One request blocks {result['block_ms']:g} ms in C; {result['clients']} "
                        f"other clients stream an event every {result['interval'] * 1000:g} ms "
                        "(times in ms)", rows)


def describe(result: dict) -> str:
    """The conclusion, as Markdown computed from the numbers."""
    block = result["block_ms"]
    lines = []
    for run in result["runs"]:
        name, waits = run["server"]["name"], run["server"]["waits_in"]
        worst = max(run["worst_late_ms"], default=0.0)
        lines.append(f"- `{name}` ({waits}s): {run['stalled_clients']} of {run['clients']} other "
                     f"clients had an event held back by more than {block / 2:g} ms; the worst was "
                     f"{worst:.0f} ms late.")
    return "\n".join(lines)


def _ms(value) -> str:
    return "-" if value is None else f"{value:.0f}"
