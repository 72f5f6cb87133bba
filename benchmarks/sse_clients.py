"""1000 SSE clients per server, then 10,000 on our ASGI server: the issue-6 targets, checked.

    python benchmarks/sse_clients.py [--rounds 3] [--clients 1000] [--duration 10] [--big 10000]
    python benchmarks/sse_clients.py --servers asgi,uvicorn --baseline DIR --json sse-clients.json

Part 1 runs `asgi_lab.experiments.sse_concurrency` `--rounds` times over the same servers,
in a rotated order each round (so no server always runs first, or right after the heaviest
one), and prints per server the median of the rounds, with the spread (min-max) of the
numbers that move most. Every server is its own process, serving `asgi_lab.apps.sse`; the
clients come from a separate load-generator process.

Targets (issue 6), checked round by round against uvicorn in the same round:
  - our ASGI server delivers every event to every client, with lag p99 under 50 ms;
  - it costs at most 6 KB of RSS per client, and its peak RSS is below uvicorn's.
Part 2: `--big` clients (10,000) fully served by our ASGI server (one thread, so one core),
the load split over two generator processes.

The machine is shared: a pause of the whole machine shows up in lag max and p99; compare
the spread across rounds before believing a difference.
"""

from __future__ import annotations

import argparse
import statistics
import sys

from asgi_lab.experiments import sse_concurrency
from asgi_lab.experiments.results import git_commit, write_result
from asgi_lab.experiments.servers import BASELINE_HELP, SERVERS, from_checkout, resolve_servers

DEFAULT_SERVERS = ("asgi", "uvicorn", "hypercorn", "gevent", "wsgi-threads", "wsgi-pool", "gunicorn")
TARGET_LAG_P99_MS = 50.0
TARGET_KB_PER_CLIENT = 6.0


def rounds(clients: int, duration: float, specs: list, count: int, pool_threads: int) -> list[dict]:
    results = []
    for i in range(count):
        order = specs[i % len(specs):] + specs[:i % len(specs)]
        print(f"round {i + 1}/{count}: {', '.join(spec.name for spec in order)}", file=sys.stderr)
        results.append(sse_concurrency.run(clients, duration, order, pool_threads=pool_threads))
    return results


def by_server(results: list[dict]) -> dict[str, list[dict]]:
    table: dict[str, list[dict]] = {}
    for result in results:
        for run in result["runs"]:
            table.setdefault(run["server"]["name"], []).append(run["summary"])
    return table


def median(values) -> float | None:
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def spread(values, digits: int = 1) -> str:
    values = [v for v in values if v is not None]
    if not values:
        return "-"
    return f"{statistics.median(values):.{digits}f} ({min(values):.{digits}f}-{max(values):.{digits}f})"


def print_table(table: dict[str, list[dict]], clients: int) -> None:
    rows = []
    for name, summaries in table.items():
        rows.append({
            "server": name,
            "served": f"{median(s['served'] for s in summaries):.0f}/{clients}",
            "never": f"{median(s['never'] for s in summaries):.0f}",
            "threads": f"{median(s['peak_threads'] for s in summaries):.0f}",
            "peak RSS MB": spread([s["peak_rss_mb"] for s in summaries]),
            "KB/client": spread([s["per_client_kb"] for s in summaries], 2),
            "VMS MB": f"{median(s['peak_vms_mb'] for s in summaries):,.0f}",
            "CPU s": spread([s["cpu_s"] for s in summaries], 2),
            "lag p50": spread([s["lag_ms"]["p50"] for s in summaries]),
            "lag p99": spread([s["lag_ms"]["p99"] for s in summaries]),
            "lag max": spread([s["lag_ms"]["max"] for s in summaries]),
            "TTFE p50": spread([s["ttfe_ms"]["p50"] for s in summaries]),
            "TTFE p99": spread([s["ttfe_ms"]["p99"] for s in summaries]),
        })
    print(sse_concurrency.render_table(
        f"{clients} SSE clients, median of {len(next(iter(table.values())))} rounds "
        f"(min-max); times in ms", rows))


def check_targets(results: list[dict], clients: int) -> None:
    print("\nTargets, round by round:")
    for i, result in enumerate(results, 1):
        runs = {run["server"]["name"]: run["summary"] for run in result["runs"]}
        ours = runs.get("asgi")
        if ours is None:
            continue
        every_event = ours["served"] == clients and ours["errors"] == 0
        lag = ours["lag_ms"]["p99"]
        checks = [
            f"all events delivered: {'yes' if every_event else 'NO'} "
            f"({ours['served']}/{clients} clients, {ours['events']} events)",
            f"lag p99 {lag:.1f} ms {'<' if lag < TARGET_LAG_P99_MS else '>='} {TARGET_LAG_P99_MS:g}",
            f"{ours['per_client_kb']:.2f} KB/client {'<=' if ours['per_client_kb'] <= TARGET_KB_PER_CLIENT else '>'} "
            f"{TARGET_KB_PER_CLIENT:g}",
        ]
        uvicorn = runs.get("uvicorn")
        if uvicorn:
            checks.append(f"peak RSS {ours['peak_rss_mb']:.1f} MB vs uvicorn {uvicorn['peak_rss_mb']:.1f} MB "
                          f"({ours['peak_rss_mb'] / uvicorn['peak_rss_mb']:.2f}x), per client "
                          f"{ours['per_client_kb'] / uvicorn['per_client_kb']:.2f}x uvicorn's")
        print(f"  round {i}: " + "; ".join(checks))


def compare_baseline(results: list[dict]) -> None:
    """Ours against the baseline checkout, round by round (the A/B of a change)."""
    print("\nasgi / baseline, round by round (peak RSS, KB per client, CPU s: lower is better):")
    for i, result in enumerate(results, 1):
        runs = {run["server"]["name"]: run["summary"] for run in result["runs"]}
        ours, base = runs.get("asgi"), runs.get("baseline")
        if ours and base:
            print(f"  round {i}: peak RSS {ours['peak_rss_mb'] / base['peak_rss_mb']:.3f}x, "
                  f"KB/client {ours['per_client_kb']:.2f} vs {base['per_client_kb']:.2f}, "
                  f"CPU s {ours['cpu_s']:.2f} vs {base['cpu_s']:.2f}, lag p99 "
                  f"{ours['lag_ms']['p99']:.1f} vs {base['lag_ms']['p99']:.1f} ms, served "
                  f"{ours['served']} vs {base['served']}")


def big_run(clients: int, duration: float) -> dict:
    print(f"\n{clients} clients on our ASGI server (one thread), load from 2 processes:", file=sys.stderr)
    result = sse_concurrency.run(clients, duration, ["asgi"], load_processes=2)
    print()
    print(sse_concurrency.format_table(result))
    s = result["runs"][0]["summary"]
    print(f"fully served: {s['served']}/{clients}; events {s['events']} of {s['expected_events']} "
          f"due; errors {s['errors']}; ramp {result['runs'][0]['load']['ramp_s']:.1f} s")
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--clients", type=int, default=1000)
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--servers", default=",".join(DEFAULT_SERVERS))
    parser.add_argument("--pool-threads", type=int, default=32)
    parser.add_argument("--big", type=int, default=10_000, help="clients for the ASGI-only run (0: skip)")
    parser.add_argument("--baseline", metavar="DIR", help=BASELINE_HELP)
    parser.add_argument("--out", "--json", help="save every round as JSON here, with the machine")
    args = parser.parse_args()

    specs = resolve_servers(args.servers)
    if args.baseline:  # right after ours, so both see the same neighbours in the rotation
        at = next((i + 1 for i, spec in enumerate(specs) if spec.name == "asgi"), 0)
        specs.insert(at, from_checkout(SERVERS["asgi"], args.baseline))
    results = rounds(args.clients, args.duration, specs, args.rounds, args.pool_threads)
    print()
    print_table(by_server(results), args.clients)
    check_targets(results, args.clients)
    big = big_run(args.big, args.duration) if args.big else None
    if args.baseline:
        compare_baseline(results)
    if args.out:
        write_result({"benchmark": "sse_clients", "clients": args.clients, "duration": args.duration,
                      "pool_threads": args.pool_threads, "baseline": args.baseline,
                      "baseline_commit": git_commit(args.baseline) if args.baseline else None,
                      "rounds": [sse_concurrency.slim_result(r) for r in results],
                      "big": big and sse_concurrency.slim_result(big)}, args.out)
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
