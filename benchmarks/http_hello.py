"""Hello-world requests/s and latency: our ASGI server against uvicorn (h11) and hypercorn.

    python benchmarks/http_hello.py [--rounds 5] [--seconds 5] [--connections 50] [--baseline DIR]
    python benchmarks/http_hello.py --json benchmarks/results/http-hello.json

Every server runs in its own process, with access logs off and warnings only, serving the same
app (`asgi_lab.apps.hello:app`). uvicorn runs with `--http h11`, the parser we use too, so the
difference is the server around the parser. Issue targets: >= 1.3x uvicorn-h11 with
keep-alive, >= 1.2x with `Connection: close`. `--baseline DIR` adds our server run from
another checkout, as "baseline" (an A/B of a change, in the same interleaved rounds).
`markdown(result)` is the same table and ratios, from a `--json` file's raw rounds.
"""

from __future__ import annotations

import argparse

from asgi_lab.experiments.results import git_commit, write_result
from asgi_lab.experiments.servers import (BASELINE_HELP, SERVERS, ServerProcess, ours,
                                          with_baseline)
from harness import (ROUNDS_HEADER, baseline_line, client_name, group, interleaved, markdown_table,
                     measured, median_result, paired_median, print_table, raw_rounds, ratio, rounds_note,
                     rounds_rows, unique)

APP = "asgi_lab.apps.hello:app"
REFERENCE = "uvicorn-h11"
TARGETS = {"keep-alive": 1.3, "close": 1.2}


def servers(baseline: str | None = None) -> list[ServerProcess]:
    specs = [ours("asgi", name="asgi_lab")]
    for name, renamed in (("uvicorn", "uvicorn-h11"), ("hypercorn", "hypercorn")):
        if SERVERS[name].available:
            specs.append(SERVERS[name].variant(renamed))
    return [ServerProcess(spec, app=APP, ready_path="/") for spec in with_baseline(specs, baseline)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=5)
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument("--baseline", metavar="DIR", help=BASELINE_HELP)
    parser.add_argument("--json", metavar="FILE", help="write the per-round numbers and the machine here")
    args = parser.parse_args()
    scenarios = {
        "keep-alive": {"connections": args.connections, "close": False},
        "close": {"connections": args.connections, "close": True},
    }
    procs = servers(args.baseline)
    print(f"hello world, {args.rounds} interleaved rounds of {args.seconds:g} s, "
          f"{args.connections} connections, load from {client_name()}")
    results = interleaved(procs, scenarios, args.rounds, args.seconds)
    result = {"benchmark": "http_hello", "app": APP, "rounds": args.rounds,
              "seconds": args.seconds, "connections": args.connections,
              "client": client_name(), "baseline": args.baseline,
              "baseline_commit": git_commit(args.baseline) if args.baseline else None,
              "runs": raw_rounds(results)}
    print_table(results, procs, scenarios, reference_of(result))
    for line in ratio_lines(result):
        print(line)
    if args.json:
        write_result(result, args.json, indent=1)
        print(f"wrote {args.json}")


def reference_of(result: dict) -> str:
    """uvicorn-h11 when it ran, else our server."""
    names = unique(run["server"] for run in result["runs"])
    return REFERENCE if REFERENCE in names else names[0]


def ratio_lines(result: dict) -> list[str]:
    """Under the table: ours / uvicorn-h11 against the issue's targets (ratios of the medians),
    and ours / baseline (the median of the per-round ratios: an A/B wants the pairs)."""
    rounds = group(result["runs"], "server", "scenario")
    scenarios = unique(run["scenario"] for run in result["runs"])
    lines = []
    if reference_of(result) == REFERENCE:
        for scenario in scenarios:
            ours, them = median_result(rounds[("asgi_lab", scenario)]), median_result(rounds[(REFERENCE, scenario)])
            lines.append(f"asgi_lab / {REFERENCE}, {scenario}: "
                         f"{ratio(ours.requests_per_s / them.requests_per_s)} req/s, "
                         f"{ratio(them.cpu_us_per_request / ours.cpu_us_per_request)} CPU per request"
                         + (f" (target {TARGETS[scenario]}x)" if scenario in TARGETS else ""))
    if ("baseline", scenarios[0]) in rounds:
        for scenario in scenarios:
            ours, before = rounds[("asgi_lab", scenario)], rounds[("baseline", scenario)]
            rps = paired_median([r.requests_per_s for r in ours], [r.requests_per_s for r in before])
            cpu = paired_median([r.cpu_us_per_request for r in before], [r.cpu_us_per_request for r in ours])
            lines.append(f"asgi_lab / baseline, {scenario}: {ratio(rps, 3)} req/s, {ratio(cpu, 3)} CPU per "
                         "request (median of per-round ratios; higher is better for both)")
    return lines


def markdown(result: dict) -> str:
    """The printed table and ratios of a result file, from its raw rounds, as Markdown."""
    reference = reference_of(result)
    return "\n".join([
        f"Hello world (`{result['app']}`), {result['rounds']} interleaved rounds of {result['seconds']:g} s, "
        f"{result['connections']} connections, load from {result['client']}.", "",
        markdown_table(ROUNDS_HEADER, rounds_rows(result["runs"], reference), left=2), "",
        rounds_note(reference), "",
        *(f"- {line}" for line in ratio_lines(result)), "",
        measured(result) + baseline_line(result)])


if __name__ == "__main__":
    main()
