"""Plain request/response load against two or more servers in turn, from a process of its own.

    python -m asgi_lab.load.http http://127.0.0.1:8001/ --also http://127.0.0.1:8002/ \\
        --clients 8 --seconds 1 --rounds 4 --out result.json

or from Python (this starts the generator process and reads what it measured):

    from asgi_lab.load.http import run_http_load
    result = run_http_load(["http://127.0.0.1:8001/", "http://127.0.0.1:8002/"], clients=8)

Each round loads every URL for `seconds`, one after the other (A B, A B, ...): interleaved,
so that a burst of noise on a busy machine hits both servers rather than one. `clients`
keep-alive connections each send a GET, wait for the whole response, and send the next one
(a closed loop: the rate is what the server sustains, not what we push). h11 frames and
parses; a round opens fresh connections and closes them at its end.

Before and after each round the generator prints a progress line and pauses a moment, so a
caller in the servers' process can read its own CPU clock at each round's edges (the CPU a
server spent per request: a steadier figure than requests/s on a shared machine).

Why another process: a load generator inside the servers' process would share their GIL
and count its own work as theirs (see `asgi_lab/load/__init__.py`).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from urllib.parse import urlsplit

import h11

from . import percentile
from .process import run_in_processes

PAUSE = 0.1
"""Seconds of quiet around each round, for the caller's CPU-clock readings."""


async def _client(host: str, port: int, target: str, deadline: float, latencies: list[float],
                  errors: list[str]) -> None:
    """One keep-alive connection: request, whole response, next request, until `deadline`."""
    request = h11.Request(method="GET", target=target, headers=[("host", f"{host}:{port}")])
    reader = writer = conn = None
    try:
        while time.monotonic() < deadline:
            if writer is None:
                reader, writer = await asyncio.open_connection(host, port)
                conn = h11.Connection(h11.CLIENT)
            started = time.perf_counter()
            writer.write(conn.send(request) + conn.send(h11.EndOfMessage()))
            status = None
            while True:
                event = conn.next_event()
                if event is h11.NEED_DATA:
                    conn.receive_data(await reader.read(65536))
                elif type(event) is h11.Response:
                    status = event.status_code
                elif type(event) is h11.EndOfMessage:
                    break
                elif type(event) is h11.ConnectionClosed:
                    raise ConnectionError("closed before the response ended")
            if status != 200:
                errors.append(f"status {status}")
            else:
                latencies.append(time.perf_counter() - started)
            if conn.our_state is h11.MUST_CLOSE:
                writer.close()
                writer = None
            else:
                conn.start_next_cycle()
    except (OSError, h11.ProtocolError) as exc:
        errors.append(repr(exc))
    finally:
        if writer is not None:
            writer.close()


async def load_once(url: str, clients: int, seconds: float) -> dict:
    """`clients` connections against `url` for `seconds`: requests/s and latency percentiles."""
    parts = urlsplit(url)
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    latencies: list[float] = []
    errors: list[str] = []
    started = time.monotonic()
    await asyncio.gather(*(_client(parts.hostname, parts.port or 80, target, started + seconds,
                                   latencies, errors) for _ in range(clients)))
    elapsed = time.monotonic() - started
    return {"url": url, "requests": len(latencies), "errors": len(errors),
            "first_error": errors[0] if errors else None, "elapsed": elapsed,
            "requests_per_s": len(latencies) / elapsed,
            "p50_ms": (percentile(latencies, 50) or 0) * 1000,
            "p99_ms": (percentile(latencies, 99) or 0) * 1000}


async def interleaved_rounds(urls: list[str], clients: int, seconds: float, rounds: int,
                             warmup: float = 0.3, progress=None) -> dict:
    """Warm each URL up, then `rounds` rounds of every URL in turn. `progress(report)` is
    called at the start and at the end of each measured round, after a pause of `PAUSE`."""
    for url in urls:
        await load_once(url, clients, warmup)
    cpu_started = time.process_time()
    runs = []
    for number in range(rounds):
        for index, url in enumerate(urls):
            await asyncio.sleep(PAUSE)
            if progress is not None:
                progress({"round": number, "url": index, "edge": 0})
            run = await load_once(url, clients, seconds)
            run["round"] = number
            runs.append(run)
            if progress is not None:
                progress({"round": number, "url": index, "edge": 1})
    return {"urls": urls, "clients": clients, "seconds": seconds, "rounds": rounds, "runs": runs,
            "client_cpu_s": time.process_time() - cpu_started,
            "client_busy_s": sum(run["elapsed"] for run in runs)}


def run_http_load(urls: list[str], clients: int = 8, seconds: float = 1.0, rounds: int = 4,
                  progress=None, timeout: float | None = None) -> dict:
    """Run the generator in a child process (`asgi_lab.load.process`); return its result.
    `progress(report)` is called on this thread at each round's start and end."""
    first, *others = urls
    args = ["--seconds", str(seconds), "--rounds", str(rounds)]
    for url in others:
        args += ["--also", url]
    timeout = timeout or len(urls) * rounds * (seconds + 1) + 60
    (result,) = run_in_processes("asgi_lab.load.http", first, clients, args, processes=1,
                                 progress=progress, timeout=timeout)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m asgi_lab.load.http",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("url", help="the first server, e.g. http://127.0.0.1:8000/")
    parser.add_argument("--also", action="append", default=[], help="another server, loaded in turn")
    parser.add_argument("--clients", type=int, default=8, help="keep-alive connections at once")
    parser.add_argument("--seconds", type=float, default=1.0, help="length of one server's turn")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--out", help="write the JSON result here (default: stdout)")
    parser.add_argument("--progress", action="store_true", help="print progress lines (JSON)")
    args = parser.parse_args(argv)
    progress = (lambda report: print(json.dumps({"progress": report}), flush=True)) if args.progress else None
    result = asyncio.run(interleaved_rounds([args.url, *args.also], args.clients, args.seconds,
                                            args.rounds, progress=progress))
    text = json.dumps(result)
    if args.out:
        with open(args.out, "w", encoding="utf-8") as f:
            f.write(text)
    else:
        print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
