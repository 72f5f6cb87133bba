"""Hello-world requests/s and latency: our ASGI server against uvicorn (h11) and hypercorn.

    python benchmarks/http_hello.py [--rounds 5] [--seconds 5] [--connections 50]

Every server runs in its own process, with access logs off and warnings only, serving the same
app (`asgi_lab.apps.hello:app`). uvicorn runs with `--http h11`, the parser we use too, so the
difference is the server around the parser. Issue targets: >= 1.3x uvicorn-h11 with
keep-alive, >= 1.2x with `Connection: close`.
"""

from __future__ import annotations

import argparse
import importlib.util

from harness import PYTHON, ServerProcess, client_name, free_port, interleaved, print_table

APP = "asgi_lab.apps.hello:app"


def servers() -> list[ServerProcess]:
    found = [ServerProcess("asgi_lab", [PYTHON, "-m", "asgi_lab", "asgi", APP, "--port", "0",
                                        "--log-level", "warning", "--no-access-log"])]
    if importlib.util.find_spec("uvicorn"):
        found.append(ServerProcess("uvicorn-h11", [PYTHON, "-m", "uvicorn", APP, "--port", str(free_port()),
                                                   "--http", "h11", "--log-level", "info",
                                                   "--no-access-log", "--lifespan", "auto"]))
    if importlib.util.find_spec("hypercorn"):
        found.append(ServerProcess("hypercorn", [PYTHON, "-m", "hypercorn", APP, "--bind",
                                                 f"127.0.0.1:{free_port()}", "--log-level", "info"]))
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=5)
    parser.add_argument("--connections", type=int, default=50)
    args = parser.parse_args()
    scenarios = {
        "keep-alive": {"connections": args.connections, "close": False},
        "close": {"connections": args.connections, "close": True},
    }
    procs = servers()
    print(f"hello world, {args.rounds} interleaved rounds of {args.seconds:g} s, "
          f"{args.connections} connections, load from {client_name()}")
    results = interleaved(procs, scenarios, args.rounds, args.seconds)
    reference = "uvicorn-h11" if any(p.name == "uvicorn-h11" for p in procs) else procs[0].name
    ratios = print_table(results, procs, scenarios, reference)
    if reference != procs[0].name:
        for scenario, target in (("keep-alive", 1.3), ("close", 1.2)):
            print(f"asgi_lab / uvicorn-h11, {scenario}: {ratios[('asgi_lab', scenario)]:.2f}x req/s, "
                  f"{ratios[('asgi_lab', scenario, 'cpu')]:.2f}x CPU per request (target {target}x)")


if __name__ == "__main__":
    main()
