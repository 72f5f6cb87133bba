"""500 chat members in one room: broadcast throughput and delivery lag.

    python benchmarks/chat_load.py [--clients 500] [--rates 10,40] [--seconds 5] [--rounds 3]

The app is `asgi_lab.apps.chat:app` on each server, in its own process: ours, and uvicorn
with `--ws wsproto` (the same WebSocket library, so the difference is the server around it).
The members are `websockets` library clients in one separate process (the library's parser
is about 4x faster per frame than wsproto's, so the client process keeps up longer). They all join room `bench`; then `--senders` of them send messages at a fixed total
rate (an open loop: the rate does not slow down when the server does), each message carrying
its send time. Every message is broadcast to every member, so at 20 messages/s and 500
members the server delivers 10,000 messages/s. Each member notes, per message, the time from
send to arrival: the delivery lag (sender and receivers share one clock, in one process).

Reported per server and rate: deliveries/s (delivered / time from first send to last
arrival), the share of expected deliveries that arrived, lag p50 and p99, the server's CPU
time per delivery (user + system, read with psutil: steadier than rates on a shared machine)
and members dropped as too slow (close 1013). Rounds are interleaved (A B, A B, ...); the
table shows medians, and the spread of deliveries/s across rounds.

The client process is Python too: at high rates it competes with the server for the machine's two cores, which compresses the ratios. The
server CPU column is the fairest comparison. `markdown(result)` is the same table, from a
`--json` file's rounds.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time

from harness import markdown_table, measured, median, number, ratio, text_table, unique

from asgi_lab.experiments.results import write_result
from asgi_lab.experiments.servers import SERVERS, ServerProcess, ours

PYTHON = sys.executable

APP = "asgi_lab.apps.chat:app"


# -- the client process ----------------------------------------------------------------------

async def member(url: str, lags: list, counts: dict):
    """One chat member: the `websockets` client library (sans-IO core, fast C helpers), an
    implementation independent of ours, so the server is measured by someone else's client."""
    from websockets.asyncio.client import connect

    client = await connect(url, ping_interval=None, compression=None, max_queue=None,
                           open_timeout=60)

    async def read():
        try:
            async for data in client:
                counts["frames"] += 1
                if data.startswith('{"type": "message"'):
                    now = time.perf_counter()
                    lags.append(now - float(json.loads(data)["text"]))
                    counts["last"] = now
        except Exception:  # the connection broke: counted below by its close code
            pass
        counts["closed"] += 1
        counts["codes"].append(client.close_code)

    return client, asyncio.create_task(read())


async def run_clients(url: str, clients: int, senders: int, rate: float, seconds: float) -> dict:
    lags: list[float] = []
    counts = {"frames": 0, "closed": 0, "codes": [], "last": 0.0}
    members = []
    for start in range(0, clients, 50):  # connect in batches, like a room filling up
        batch = [member(f"{url}/ws/bench?name=m{i}", lags, counts)
                 for i in range(start, min(clients, start + 50))]
        members += await asyncio.gather(*batch)
    # Wait for the join notices to settle: every member has seen the room fill up.
    expected_joins = clients * (clients + 1) // 2 + clients  # joins seen + one welcome each
    deadline = time.monotonic() + 60
    while counts["frames"] < expected_joins and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    await asyncio.sleep(0.2)

    lags.clear()
    first_send = time.perf_counter()
    interval = 1.0 / rate
    sent = 0
    while (now := time.perf_counter()) - first_send < seconds:
        due = int((now - first_send) / interval) + 1
        while sent < due:
            client, _ = members[sent % senders]
            asyncio.create_task(client.send(repr(time.perf_counter())))
            sent += 1
        await asyncio.sleep(max(0.0, first_send + sent * interval - time.perf_counter()))
    expected = sent * clients
    deadline = time.monotonic() + 15
    while len(lags) < expected - counts["closed"] * sent and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
    elapsed = counts["last"] - first_send  # first send to last arrival
    ordered = sorted(lags)
    result = {
        "sent": sent, "expected": expected, "delivered": len(lags),
        "seconds": elapsed, "p50_ms": 1000 * ordered[len(ordered) // 2] if ordered else float("nan"),
        "p99_ms": 1000 * ordered[int(len(ordered) * 0.99)] if ordered else float("nan"),
        "dropped": sum(1 for code in counts["codes"] if code == 1013),
    }
    for client, reader in members:
        client.transport.abort()
        reader.cancel()
    return result


def client_main(argv: list[str]) -> None:
    url, clients, senders, rate, seconds = argv[0], int(argv[1]), int(argv[2]), float(argv[3]), float(argv[4])
    print(json.dumps(asyncio.run(run_clients(url, clients, senders, rate, seconds))))


# -- the benchmark ---------------------------------------------------------------------------

def servers() -> list[ServerProcess]:
    """Ours and uvicorn on wsproto, each logging to a file (uvicorn logs every WebSocket);
    ready when the port accepts."""
    specs = [ours("asgi", name="asgi_lab")]
    if SERVERS["uvicorn"].available:
        specs.append(SERVERS["uvicorn"].variant("uvicorn-wsproto", "--ws", "wsproto"))
    return [ServerProcess(spec, app=APP, ready_path=None) for spec in specs]


def measure(server: ServerProcess, clients: int, senders: int, rate: float, seconds: float) -> dict:
    cpu_before = server.cpu_seconds()
    out = subprocess.run([PYTHON, os.path.abspath(__file__), "--client", f"ws://127.0.0.1:{server.port}",
                          str(clients), str(senders), str(rate), str(seconds)],
                         capture_output=True, text=True, timeout=seconds + 180)
    if out.returncode != 0:
        raise RuntimeError(f"client process failed against {server.name}:\n{out.stderr[-3000:]}")
    result = json.loads(out.stdout.strip().splitlines()[-1])
    # The server's CPU time covers the joins too; they are broadcasts like the rest, so the
    # time is divided by every delivery: the measured messages plus the join notices.
    joins = clients * (clients + 1) // 2 + clients
    result["cpu_us"] = (server.cpu_seconds() - cpu_before) / (result["delivered"] + joins) * 1e6
    return result


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--client":
        client_main(sys.argv[2:])
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=500)
    parser.add_argument("--senders", type=int, default=10)
    parser.add_argument("--rates", default="10,40", help="messages/s offered, comma-separated")
    parser.add_argument("--seconds", type=float, default=5)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", metavar="FILE", help="write the per-round numbers and the machine here")
    args = parser.parse_args()
    rates = [float(r) for r in args.rates.split(",")]

    procs = servers()
    results: dict = {}
    try:
        for proc in procs:
            proc.start()
        print(f"chat: {args.clients} members in one room, {args.senders} of them sending; "
              f"{args.rounds} interleaved rounds of {args.seconds:g} s per rate; clients in one process")
        for round_ in range(args.rounds):
            for rate in rates:
                for proc in procs:
                    r = measure(proc, args.clients, args.senders, rate, args.seconds)
                    results.setdefault((proc.name, rate), []).append(r)
                    print(f"  round {round_ + 1} {proc.name:16} {rate:5g} msg/s: "
                          f"{r['delivered'] / r['seconds']:8.0f} deliveries/s, p99 {r['p99_ms']:.1f} ms",
                          flush=True)
    finally:
        for proc in procs:
            proc.stop()

    result = {"benchmark": "chat_load", "clients": args.clients, "senders": args.senders,
              "rates": rates, "seconds": args.seconds, "rounds": args.rounds,
              "runs": [{"server": name, "rate": rate, "round": i, **run}
                       for (name, rate), rounds in results.items() for i, run in enumerate(rounds)]}
    print()
    print(text_table(HEADER, table_rows(result)))
    print(f"\n{NOTE}")
    if args.json:
        write_result(result, args.json, indent=1)
        print(f"wrote {args.json}")


REFERENCE = "uvicorn-wsproto"
HEADER = ["server", "offered", "deliveries/s", "ratio", "spread", "arrived", "lag p50 ms", "lag p99 ms",
          "CPU us/delivery", "CPU ratio", "dropped"]
NOTE = ("'offered' is messages/s x members: the deliveries/s an ideal server would make. Medians of the "
        f"rounds; 'spread' is (max - min) / median of deliveries/s. Ratios against {REFERENCE} at the same "
        "rate (ratio of the medians): deliveries/s its / uvicorn's; CPU ratio its server CPU time per delivery "
        "/ uvicorn's (lower is better).")


def table_rows(result: dict) -> list[list[str]]:
    """One row per (rate, server), medians of the rounds, with ratios to uvicorn-wsproto."""
    runs = result["runs"]
    names = unique(run["server"] for run in runs)
    rows = []
    for rate in unique(run["rate"] for run in runs):
        at_rate = {name: [run for run in runs if run["server"] == name and run["rate"] == rate] for name in names}
        per_s = {name: [r["delivered"] / r["seconds"] for r in rounds if r["seconds"] > 0]
                 for name, rounds in at_rate.items()}
        cpu = {name: median(r["cpu_us"] for r in rounds) for name, rounds in at_rate.items()}
        for name, rounds in at_rate.items():
            if not rounds:
                continue
            rate_median = median(per_s[name])
            spread = (max(per_s[name]) - min(per_s[name])) / rate_median if per_s[name] and rate_median else None
            vs = bool(at_rate.get(REFERENCE))
            rows.append([
                name, number(rate * result["clients"]), number(rate_median),
                ratio(rate_median / median(per_s[REFERENCE])) if vs else "-",
                "-" if spread is None else f"{spread:.0%}",
                f"{median(r['delivered'] / r['expected'] for r in rounds if r['expected']):.1%}",
                number(median(r["p50_ms"] for r in rounds), 1), number(median(r["p99_ms"] for r in rounds), 1),
                number(cpu[name], 1), ratio(cpu[name] / cpu[REFERENCE]) if vs else "-",
                str(max(r["dropped"] for r in rounds))])
    return rows


def markdown(result: dict) -> str:
    """The printed table of a result file, from its rounds, as Markdown."""
    return "\n".join([
        f"{result['clients']} chat members in one room, {result['senders']} of them sending at "
        f"{', '.join(f'{r:g}' for r in result['rates'])} messages/s in total; {result['rounds']} interleaved "
        f"rounds of {result['seconds']:g} s per rate.", "",
        markdown_table(HEADER, table_rows(result)), "",
        NOTE, "",
        measured(result)])


if __name__ == "__main__":
    main()
