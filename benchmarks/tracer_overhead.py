"""Is tracing free when it is off? Hello-world load on three builds of the same ASGI server.

    python benchmarks/tracer_overhead.py [--rounds 5] [--seconds 3] [--connections 50]

The tracer has existed since the first commit, so there is no "before" to check out. We
build one: a copy of the `asgi_lab` package in which an `ast.NodeTransformer` removes every
`if self.tracer is not None:` / `if tracer is not None:` block (and `... and ...` variants),
exactly what a server written without a tracer would not contain. Three servers, each in its
own process, serve `asgi_lab.apps.hello:app`:

- `no tracer code`: the stripped copy (the reference), and `same, again`, a second process of
                    it: how far two identical servers drift apart is the noise;
- `tracer=None`:    an unmodified copy, as shipped, tracing off (the default);
- `tracer on`:      the unmodified copy with a `Tracer` recording every event (into a bounded
                    deque, so that memory stays flat under load; appending costs the same).

Load comes from the shared benchmark harness (`wrk` if installed, else its asyncio client),
in interleaved rounds. The claim holds if `tracer=None` is no further from the reference than
`same, again` is: the last table gives, round by round, each server's ratio to the reference
measured in the same round (a shared machine drifts; a round's neighbours drift with it).
`markdown(result)` gives both tables from a `--json` file's raw rounds.
"""

from __future__ import annotations

import argparse
import ast
import os
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

# The server processes run this file too (`serve()`, with another copy of asgi_lab first on
# sys.path): the benchmark's own imports are in the functions that run here only.

PACKAGE = Path(__file__).resolve().parent.parent / "asgi_lab"
APP = "asgi_lab.apps.hello:app"


# -- the baseline: the same package without its tracer blocks ----------------------------------

def is_tracer_check(test: ast.expr) -> bool:
    """`tracer is not None`, `self.tracer is not None`, or an `and` that starts with one."""
    if isinstance(test, ast.BoolOp) and isinstance(test.op, ast.And):
        return is_tracer_check(test.values[0])
    if (isinstance(test, ast.Compare) and len(test.ops) == 1 and isinstance(test.ops[0], ast.IsNot)
            and isinstance(test.comparators[0], ast.Constant) and test.comparators[0].value is None):
        subject = test.left
        return (isinstance(subject, ast.Name) and subject.id == "tracer") or \
               (isinstance(subject, ast.Attribute) and subject.attr == "tracer")
    return False


class RemoveTracerBlocks(ast.NodeTransformer):
    """Replace each `if <tracer check>: ... [else: ...]` by its else branch (usually nothing)."""

    def __init__(self) -> None:
        self.removed = 0

    def visit_If(self, node: ast.If):
        self.generic_visit(node)
        if is_tracer_check(node.test):
            self.removed += 1
            return node.orelse or None
        return node

    def generic_visit(self, node):
        super().generic_visit(node)
        if isinstance(getattr(node, "body", None), list) and not node.body:
            node.body = [ast.Pass()]  # a block that held nothing but tracer calls
        return node


def copy_package(destination: Path, strip: bool) -> int:
    """Copy asgi_lab into `destination`; with `strip`, remove the tracer blocks. Returns how
    many blocks were removed."""
    target = destination / "asgi_lab"
    shutil.copytree(PACKAGE, target, ignore=shutil.ignore_patterns("__pycache__"))
    removed = 0
    if strip:
        for path in target.rglob("*.py"):
            if path.name == "trace.py":
                continue  # the Tracer class itself stays importable; nothing calls it
            tree = ast.parse(path.read_text(encoding="utf-8"))
            remover = RemoveTracerBlocks()
            tree = ast.fix_missing_locations(remover.visit(tree))
            if remover.removed:
                path.write_text(ast.unparse(tree), encoding="utf-8")
                removed += remover.removed
        leftovers = [p for p in target.rglob("*.py") if p.name != "trace.py"
                     and "tracer.emit(" in p.read_text(encoding="utf-8")]
        if leftovers:
            raise RuntimeError(f"tracer calls left after stripping: {leftovers}")
    return removed


# -- the servers ------------------------------------------------------------------------------------

def server(name: str, package_root: Path, traced: bool):
    """A server process that imports asgi_lab from `package_root` (not from the working tree
    or the editable install: it goes first on sys.path), then runs `serve()` of this file."""
    from asgi_lab.experiments.servers import ServerProcess, ServerSpec

    mode = "--serve-traced" if traced else "--serve"
    code = (f"import runpy, sys; sys.path.insert(0, {str(package_root)!r}); "
            f"sys.argv = ['tracer_overhead', {mode!r}, *sys.argv[1:]]; "
            f"runpy.run_path({os.path.abspath(__file__)!r}, run_name='tracer_overhead')['serve']()")
    return ServerProcess(ServerSpec(name, ("{python}", "-c", code, "{port}")), app=APP, ready_path="/")


def serve() -> None:
    """Run in the server process: the hello app, logs off, with or without a Tracer."""
    import asyncio
    import collections
    import logging
    import signal

    import asgi_lab
    from asgi_lab.apps.hello import app
    from asgi_lab.asgi.server import Server
    from asgi_lab.config import Config
    from asgi_lab.trace import Tracer

    logging.basicConfig(level="WARNING")
    tracer = None
    if sys.argv[1] == "--serve-traced":
        tracer = Tracer()
        tracer.events = collections.deque(maxlen=50_000)  # bounded memory under load

    async def main() -> None:
        server = Server(app, Config(port=int(sys.argv[2]), access_log=False), tracer=tracer)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, server.request_shutdown)
        await server.start()
        print(f"serving {asgi_lab.__file__} on {server.url}", flush=True)
        await server.serve()

    asyncio.run(main())


PAIRED_HEADER = ["scenario", "measure", "same, again (noise)", "tracer=None", "tracer on"]


def paired(rounds, name: str, reference: str, scenario: str, cpu: bool) -> list[float]:
    """Round by round, `name` against `reference` measured in the same round (higher is better
    for both measures): slow drifts of a shared machine cancel out. `rounds` is harness.group's
    {(server, scenario): [LoadResult, ...]}."""
    ours, theirs = rounds[(name, scenario)], rounds[(reference, scenario)]
    if cpu:
        return [t.cpu_us_per_request / o.cpu_us_per_request for o, t in zip(ours, theirs)]
    return [o.requests_per_s / t.requests_per_s for o, t in zip(ours, theirs)]


def paired_rows(result: dict) -> list[list[str]]:
    """The last table: per scenario and measure, each server's round-by-round ratios to the
    reference, as "median [min-max]"."""
    from harness import group, unique

    rounds = group(result["runs"], "server", "scenario")
    rows = []
    for scenario in unique(run["scenario"] for run in result["runs"]):
        for cpu, measure in ((False, "req/s"), (True, "CPU per req")):
            cells = []
            for name in PAIRED_HEADER[2:]:
                ratios = paired(rounds, name.replace(" (noise)", ""), result["reference"], scenario, cpu)
                cells.append(f"{statistics.median(ratios):.3f}x [{min(ratios):.2f}-{max(ratios):.2f}]")
            rows.append([scenario, measure, *cells])
    return rows


PAIRED_NOTE = ("The claim holds when tracer=None is no further from 1.00x than 'same, again' (two processes "
               "of the same server: the noise). CPU per request is the server's user+system time per "
               "request, inverted: higher is better, like req/s.")


def markdown(result: dict) -> str:
    """Both printed tables of a result file, from its raw rounds, as Markdown."""
    from harness import ROUNDS_HEADER, markdown_table, measured, rounds_note, rounds_rows

    reference = result["reference"]
    return "\n".join([
        f"Hello world (`{result['app']}`) on three builds of our ASGI server; the reference, `{reference}`, "
        f"is a copy without its {result['tracer_blocks_removed']} tracer blocks. {result['rounds']} "
        f"interleaved rounds of {result['seconds']:g} s, {result['connections']} connections, load from "
        f"{result['client']}.", "",
        markdown_table(ROUNDS_HEADER, rounds_rows(result["runs"], reference), left=2), "",
        rounds_note(reference), "",
        f"Round-by-round ratios against `{reference}` in the same round: median [min-max].", "",
        markdown_table(PAIRED_HEADER, paired_rows(result), left=2), "",
        PAIRED_NOTE, "",
        measured(result)])


def main() -> None:
    from asgi_lab.experiments.results import write_result
    from harness import client_name, interleaved, print_table, raw_rounds, text_table

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--seconds", type=float, default=2)
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument("--json", metavar="FILE", help="write the per-round numbers and the machine here")
    args = parser.parse_args()

    reference = "no tracer code"
    with tempfile.TemporaryDirectory(prefix="tracer-overhead-") as tmp:
        stripped, shipped = Path(tmp) / "stripped", Path(tmp) / "shipped"
        removed = copy_package(stripped, strip=True)
        copy_package(shipped, strip=False)
        servers = [server(reference, stripped, traced=False),
                   server("same, again", stripped, traced=False),
                   server("tracer=None", shipped, traced=False),
                   server("tracer on", shipped, traced=True)]
        scenarios = {"keep-alive": {"connections": args.connections, "close": False},
                     "close": {"connections": args.connections, "close": True}}
        print(f"hello world on the ASGI server; {removed} tracer blocks removed for the reference; "
              f"{args.rounds} interleaved rounds of {args.seconds:g} s, {args.connections} "
              f"connections, load from {client_name()}")
        results = interleaved(servers, scenarios, args.rounds, args.seconds)
        print_table(results, servers, scenarios, reference=reference)
    result = {"benchmark": "tracer_overhead", "app": APP, "rounds": args.rounds,
              "seconds": args.seconds, "connections": args.connections,
              "client": client_name(), "tracer_blocks_removed": removed,
              "reference": reference, "runs": raw_rounds(results)}

    # The noise: the reference against an identical copy of itself ("same, again"). The
    # claim holds when tracer=None is no further from 1.00x than that A/A comparison.
    print(f"\nround-by-round ratios against '{reference}' in the same round: median [min - max]")
    print(text_table(PAIRED_HEADER, paired_rows(result), left=2))
    print(f"({PAIRED_NOTE})")
    if args.json:
        write_result(result, args.json, indent=1)
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
