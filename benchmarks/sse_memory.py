"""Where does a waiting SSE client's memory go? Python's own accounting, line by line.

    python benchmarks/sse_memory.py [--clients 1000] [--top 25]

`benchmarks/sse_clients.py` measures what a waiting client costs from outside: the server
process's RSS. This script explains that number. It runs our ASGI server in this process with
`tracemalloc` on, opens `--clients` SSE clients on `asgi_lab.apps.sse:app` from a separate
load-generator process, and once they are all waiting compares two snapshots: before the
clients came, and while they wait. The difference, divided by the number of clients, is what
each one holds, by the line of code that allocated it (asyncio, h11, the app, or us).

Read it next to the server's code: the app's suspended coroutine (`create_task(self.app(...))`),
the scope dict, the h11 connection, the asyncio transport and its socket. The first line of
the report is the total, in bytes per client; RSS per client is usually within a few percent
of it (the C allocator's own overhead is not counted here, and tracemalloc adds its own).
`--json FILE` writes the sites with the machine; `markdown(result)` is the same list as a table.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import linecache
import os
import subprocess
import sys
import tracemalloc

from harness import markdown_table, measured, text_table

from asgi_lab.apps.sse import app
from asgi_lab.asgi.server import Server
from asgi_lab.config import Config
from asgi_lab.load import raise_open_files_limit

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def short(filename: str) -> str:
    """A path a reader can place: `asgi_lab/asgi/http.py`, `h11/_state.py`, `asyncio/tasks.py`."""
    parts = filename.replace("\\", "/").split("/")
    for i in range(len(parts) - 1, -1, -1):
        if parts[i] in ("asgi_lab", "site-packages") or parts[i].startswith("python3."):
            return "/".join(parts[i + 1:] if parts[i] != "asgi_lab" else parts[i:])
    return filename


async def measure(clients: int) -> tuple[list, float]:
    server = Server(app, Config(port=0, access_log=False, lifespan="off"))
    await server.start()
    host, port = server.address
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.take_snapshot()
    load = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "asgi_lab.load.sse", f"http://{host}:{port}/events",
        "--clients", str(clients), "--duration", "4", "--spread", "1",
        stdout=subprocess.DEVNULL, cwd=ROOT)
    # Every client connected (the spread is 1 s) and waiting between two events.
    while len(server.connections) < clients and load.returncode is None:
        await asyncio.sleep(0.1)
    await asyncio.sleep(1.5)
    gc.collect()
    after = tracemalloc.take_snapshot()
    tracemalloc.stop()
    await load.wait()
    await server.shutdown()
    stats = after.compare_to(before, "lineno")
    return stats, sum(stat.size_diff for stat in stats) / clients


HEADER = ["allocated at", "code", "bytes", "blocks"]
NOTE = "bytes, blocks: per client. Compare with KB/client in benchmarks/sse_clients.py (RSS)."


def title(result: dict) -> str:
    return (f"{result['clients']} waiting SSE clients on our ASGI server: {result['bytes_per_client']:,.0f} "
            "bytes per client (Python allocations, tracemalloc)")


def rows(result: dict) -> list[list[str]]:
    """The largest allocation sites, per client."""
    n = result["clients"]
    return [[f"{site['file']}:{site['line']}", site.get("code", ""), f"{site['bytes'] / n:,.0f}",
             f"{site['blocks'] / n:.1f}"] for site in result["sites"]]


def markdown(result: dict) -> str:
    """The printed list of a result file, as a Markdown table."""
    code = [[f"`{site}`", "`{}`".format(line.replace("|", "\\|")) if line else "", *rest]
            for site, line, *rest in rows(result)]
    return "\n".join([title(result) + ".", "", markdown_table(HEADER, code, left=2), "", NOTE, "",
                      measured(result)])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clients", type=int, default=1000)
    parser.add_argument("--top", type=int, default=25, help="how many allocation sites to list")
    parser.add_argument("--json", metavar="FILE", help="write the allocation sites and the machine here")
    args = parser.parse_args()
    raise_open_files_limit(args.clients)
    stats, total = asyncio.run(measure(args.clients))
    sites = []
    for stat in stats[:args.top]:
        frame = stat.traceback[0]
        sites.append({"file": short(frame.filename), "line": frame.lineno, "bytes": stat.size_diff,
                      "blocks": stat.count_diff,
                      "code": linecache.getline(frame.filename, frame.lineno).strip()[:70]})
    result = {"benchmark": "sse_memory", "clients": args.clients, "bytes_per_client": total, "sites": sites}
    print(f"{title(result)}\n")
    print(text_table(HEADER, rows(result), left=2))
    print(f"\n{NOTE}")
    if args.json:
        from asgi_lab.experiments.results import write_result

        write_result(result, args.json, indent=1)
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
