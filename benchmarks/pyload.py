"""A small HTTP/1.1 load client for when `wrk` is not installed: asyncio + h11, one process.

    python benchmarks/pyload.py URL SECONDS CONNECTIONS keep-alive|close
prints: requests/s p50_ms p99_ms errors requests
"""

import asyncio
import statistics
import sys
import time
from urllib.parse import urlsplit

import h11


async def client(host, port, target, deadline, close, latencies, errors):
    headers = [("host", f"{host}:{port}")] + ([("connection", "close")] if close else [])
    reader = writer = None
    conn = None
    while time.monotonic() < deadline:
        try:
            if writer is None:
                reader, writer = await asyncio.open_connection(host, port)
                conn = h11.Connection(h11.CLIENT)
            start = time.perf_counter()
            writer.write(conn.send(h11.Request(method="GET", target=target, headers=headers))
                         + conn.send(h11.EndOfMessage()))
            while True:
                event = conn.next_event()
                if event is h11.NEED_DATA:
                    conn.receive_data(await reader.read(65536))
                elif type(event) is h11.EndOfMessage:
                    break
                elif type(event) is h11.ConnectionClosed:
                    raise ConnectionError("closed early")
            latencies.append(time.perf_counter() - start)
            if conn.our_state is h11.MUST_CLOSE or close:
                writer.close()
                writer = None
            else:
                conn.start_next_cycle()
        except (OSError, h11.ProtocolError):
            errors.append(1)
            if writer is not None:
                writer.close()
            writer = None


async def main(url, seconds, connections, mode):
    parts = urlsplit(url)
    latencies, errors = [], []
    start = time.monotonic()
    deadline = start + seconds
    await asyncio.gather(*(client(parts.hostname, parts.port, parts.path or "/", deadline,
                                  mode == "close", latencies, errors) for _ in range(connections)))
    elapsed = time.monotonic() - start
    q = statistics.quantiles(latencies, n=100) if len(latencies) > 2 else [0] * 99
    print(f"{len(latencies) / elapsed:.1f} {q[49] * 1000:.3f} {q[98] * 1000:.3f} {len(errors)} {len(latencies)}")


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], float(sys.argv[2]), int(sys.argv[3]), sys.argv[4]))
