"""Render the stored result files into the docs' performance and reliability pages, and into
the README's marked blocks: the figures a reader sees are never typed.

    python tools/render_results.py            # called by `make docs` and `make bench`
    python tools/render_results.py --check    # exit 1 if the README's blocks are out of date
    python tools/render_results.py --pages-only   # only the docs pages (tests/test_docs_site.py)
    python tools/render_results.py --pages-only --results /tmp/results   # the pages of other files

Reads every `benchmarks/results/*.json` (or `--results DIR`'s) and `notebooks/data/*.json`.
Each holds the raw numbers of one run and where they came from: `command`, and `machine` =
{commit, date, cpu_model, cores, python, load_average} (older experiment files keep the same
facts under `environment`, with `cpus` and `time`); a missing fact is shown as "unknown".

Writes
- `docs/performance.md` and `docs/reliability.md` (not committed: built from the results by
  `make docs`), with their charts under `docs/_generated/`;
- `docs/images/sse-1000-clients.png`, the README's chart (committed, so a code host shows it);
- the README's blocks between `<!-- results:begin NAME -->` and `<!-- results:end NAME -->`
  (the 1000-SSE-clients table, and the stored notebooks' sizes; `make notebooks` rewrites
  these blocks too).

A result measured at a commit that does not contain the last commit touching `asgi_lab/`
(git log) is marked on its page: "measured at commit X, before later changes to the server".
The README's blocks depend on the result files alone (so `--check` stays true until a result
changes) and link to the pages for that mark.

A benchmark script offers `markdown(result) -> str` (each of `benchmarks/*.py` that writes a
result file does, sharing `benchmarks/harness.py`'s table helpers): its tables, computed from
the file's raw rounds, are used for its results (a file without a `benchmark` key, from an
older script, is matched to `benchmarks/<its name, - as _>.py`). Any other result file gets its
facts, its command and its parameters, so a new benchmark appears on the page the day it
writes a file.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
GENERATED = DOCS / "_generated"
README_CHART = DOCS / "images" / "sse-1000-clients.png"
SOURCES = [ROOT / "benchmarks" / "results", ROOT / "notebooks" / "data"]
RELIABILITY = {"slow_clients", "soak", "floods", "shutdown", "fuzz"}
"""Results about what the servers survive; every other result is about speed and cost."""
SERVER_CODE = "asgi_lab/"
NOT_MEASURED = ("asgi_lab/viz/",)
"""The part of the package no measurement runs (it draws the charts): a change there does not
make a result stale."""
SERVER_PATHSPEC = (SERVER_CODE, *(f":(exclude){path}" for path in NOT_MEASURED))
UNKNOWN = "unknown"
TITLES = {"sse-sweep": "SSE clients: threads against coroutines, 100 to 10,000 clients",
          "slow_clients": "Slow clients against a 4-thread WSGI pool",
          "http_hello": "Hello world over HTTP/1.1: our ASGI server, uvicorn (h11) and hypercorn",
          "ws_echo": "WebSocket echo: round trips per second and a 1 MiB round trip, against uvicorn (wsproto)",
          "chat_load": "A chat room's broadcasts: deliveries per second and lag, against uvicorn (wsproto)",
          "wsgi_hello": "Hello world over WSGI: our threaded server, gunicorn (gthread) and waitress",
          "wsgi_per_request": "What one WSGI request costs: context switches, system calls and CPU per request",
          "request_path": "Where a WSGI request's CPU time goes: h11 against our layers, no sockets",
          "tracer_overhead": "Is tracing free when it is off? Three builds of our ASGI server",
          "sse_clients": "SSE clients per server: memory, threads and lag (the issue-6 targets)",
          "sse_gc": "10,000 SSE clients with the garbage collector on and off: where the lag comes from",
          "sse_memory": "Where a waiting SSE client's memory goes: Python's allocations, line by line",
          "gunicorn_workers": "Our ASGI worker in gunicorn: one worker process against two",
          "soak": "Soak: mixed traffic for a while, then back to idle",
          "floods": "Floods and slow peers: bounded memory, idle connections closed"}
"""A heading for the kinds of result known here; any other is headed by its name."""
SSE_CLIENTS = 1000
BLOCK = re.compile(r"(<!-- results:begin (?P<name>[\w-]+) -->\n)(?P<body>.*?)(<!-- results:end (?P=name) -->)", re.S)


# -- reading a result: its facts, tolerant of old and partial files -------------------------------


def facts(result: dict) -> dict:
    """{commit, date, cpu_model, cores, python, load_average, command, note}, None where unknown."""
    machine = result.get("machine") if isinstance(result.get("machine"), dict) else {}
    env = result.get("environment") if isinstance(result.get("environment"), dict) else {}
    pick = lambda *keys: next((source[key] for source in (machine, env) for key in keys  # noqa: E731
                               if source.get(key) not in (None, "")), None)
    return {"commit": pick("commit"), "date": pick("date", "time"), "cpu_model": pick("cpu_model"),
            "cores": pick("cores", "cpus"), "python": pick("python"),
            "load_average": pick("load_average"),
            "command": result.get("command") or env.get("command"),
            "note": result.get("note") or env.get("note")}


def name_of(result: dict, path: Path) -> str:
    return str(result.get("benchmark") or result.get("experiment") or path.stem)


def title_of(result: dict, path: Path) -> str:
    """The section's heading: the kind's title, and what sets this file apart from others of
    its kind (wsgi_hello runs unpinned and pinned; soak may end with SIGTERM, or pause)."""
    name = name_of(result, path)
    title = TITLES.get(name) or TITLES.get(name.replace("-", "_"), name)
    if result.get("pin"):
        title += f", servers pinned to CPU {result['pin']}"
    if result.get("sigterm"):
        title += ", ended by SIGTERM under load"
    if result.get("pause"):
        title += f", the server frozen for {result['pause']:g} s halfway"
    return title


def shown(path: Path) -> str:
    """A result file's path as the page shows it: from the repository's root when inside it."""
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def show(value) -> str:
    return UNKNOWN if value in (None, "", []) else str(value)


def facts_line(f: dict) -> str:
    load = f["load_average"]
    load = " / ".join(f"{x:.1f}" for x in load) if isinstance(load, (list, tuple)) and load else UNKNOWN
    commit = f["commit"][:9] + (" (with uncommitted changes)" if "+" in f["commit"] else "") \
        if f["commit"] else UNKNOWN
    return (f"Measured {show(f['date'] and f['date'][:10])} on {show(f['cpu_model'])} "
            f"({show(f['cores'])} cores), Python {show(f['python'])}, load average (1/5/15 min) "
            f"{load}, commit {commit}.")


# -- the staleness mark ----------------------------------------------------------------------------


def git(*args: str) -> str | None:
    try:
        run = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return None
    return run.stdout.strip() if run.returncode == 0 else None


def staleness(commit: str | None) -> str | None:
    """None when `commit` holds the server's code as it is; else the sentence for the page."""
    last = git("log", "-1", "--format=%H", "--", *SERVER_PATHSPEC)
    if not last:
        return "Whether the server changed since this run is unknown (no git history here)."
    when = git("log", "-1", "--format=%cs", last) or UNKNOWN
    if not commit:
        return (f"Measured at an unknown commit: the server (`{SERVER_CODE}`) last changed in "
                f"{last[:9]} ({when}).")
    sha = commit.split("+")[0]
    if git("cat-file", "-e", f"{sha}^{{commit}}") is None:
        return (f"Measured at commit {sha[:9]}, which is not in this clone's history; the server "
                f"last changed in {last[:9]} ({when}).")
    if subprocess.run(["git", "merge-base", "--is-ancestor", last, sha], cwd=ROOT,
                      capture_output=True).returncode == 0:
        return None
    return (f"Measured at commit {sha[:9]}, before later changes to the server: `{SERVER_CODE}` "
            f"last changed in {last[:9]} ({when}). `make bench` measures it again.")


# -- renderers ---------------------------------------------------------------------------------------


def script_markdown(result: dict, path: Path | None = None) -> str | None:
    """The table of `benchmarks/<benchmark>.py`'s own `markdown(result)`, if it has one. A file
    with neither `benchmark` nor `experiment` (an older script's) is matched by its name."""
    benchmark = result.get("benchmark")
    if not benchmark and path is not None and not result.get("experiment"):
        benchmark = path.stem.replace("-", "_")
    script = ROOT / "benchmarks" / f"{benchmark}.py"
    if not benchmark or not script.exists():
        return None
    sys.path.insert(0, str(script.parent))
    try:
        spec = importlib.util.spec_from_file_location(f"_bench_{script.stem}", script)
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module  # as an import would: a dataclass in the script looks itself up
        spec.loader.exec_module(module)
        return module.markdown(result) if hasattr(module, "markdown") else None
    except Exception as exc:  # a renderer that breaks must not take the page with it
        return f"(`{script.relative_to(ROOT)}`'s `markdown()` failed on this file: {type(exc).__name__}: {exc})"
    finally:
        sys.path.remove(str(script.parent))
        sys.modules.pop(f"_bench_{script.stem}", None)


def parameters(result: dict) -> str:
    rows = [(key, value) for key, value in result.items()
            if isinstance(value, (str, int, float, bool)) and key not in ("command", "note")]
    if not rows:
        return ""
    return "\n".join(["| parameter | value |", "|---|---|"]
                     + [f"| `{key}` | {value} |" for key, value in rows])


def sse_runs(sweep: dict, clients: int) -> list[dict]:
    result = next((r for r in sweep.get("results", []) if r.get("clients") == clients), None)
    return result["runs"] if result else []


def sse_table(sweep: dict, clients: int = SSE_CLIENTS) -> str:
    """One row per server at `clients` clients, from the sweep's own summaries."""
    lines = ["| server | clients served | OS threads | memory per client | lag p99 | first event p99 |",
             "|---|---:|---:|---:|---:|---:|"]
    for run in sse_runs(sweep, clients):
        s, label = run["summary"], run["server"].get("label", run["server"]["name"])
        never = s["clients"] - s["served"]
        first = f"{s['ttfe_ms']['p99']:,.1f} ms" if not never and s.get("ttfe_ms") else f"({never:,} never served)"
        lag = f"{s['lag_ms']['p99']:,.1f} ms" if s.get("lag_ms", {}).get("p99") is not None else UNKNOWN
        lines.append(f"| {label} | {s['served']:,} / {s['clients']:,} | {s['peak_threads']:,} | "
                     f"{s['per_client_kb']:.1f} KB | {lag} | {first} |")
    return "\n".join(lines)


def fresh(path: Path, *sources: Path) -> bool:
    """`path` exists and is newer than its sources and than the code that draws it."""
    code = [Path(__file__), ROOT / "asgi_lab" / "viz" / "charts.py"]
    return path.exists() and all(path.stat().st_mtime >= s.stat().st_mtime for s in [*sources, *code] if s.exists())


def write(path: Path, text: str) -> None:
    """Write `text` unless the file already holds it (a rebuild then reads nothing again)."""
    if not path.exists() or path.read_text(encoding="utf-8") != text:
        path.write_text(text, encoding="utf-8")


def save(fig, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100, bbox_inches="tight", metadata={"Software": None})  # same numbers, same bytes
    return path


def sse_charts(sweep: dict, path: Path, folder: Path) -> list[tuple[str, Path]]:
    from asgi_lab.experiments.measure import source_line
    from asgi_lab.viz import charts

    rel = shown(path)
    made = []
    names = ("threads", "memory", "never-served")
    if all(fresh(folder / f"{path.stem}-{name}.png", path) for name in names):
        return [(name, folder / f"{path.stem}-{name}.png") for name in names]
    for name, draw in (("threads", lambda: charts.threads_chart(sweep, source=source_line(sweep, rel))),
                       ("memory", lambda: charts.memory_per_client_chart(sweep, SSE_CLIENTS, source_line(sweep, rel))),
                       ("never-served", lambda: charts.never_served_chart(sweep, source=source_line(sweep, rel)))):
        try:
            made.append((name, save(draw(), folder / f"{path.stem}-{name}.png")))
        except (KeyError, ValueError, TypeError):
            continue  # a sweep without that dimension: no such chart
    return made


def section(path: Path, result: dict, folder: Path) -> str:
    """One result file as a page section: what, where and when, how, the numbers."""
    f = facts(result)
    name = name_of(result, path)
    out = [f"## {title_of(result, path)}", "", f"From `{shown(path)}` ({name}). {facts_line(f)}", ""]
    stale = staleness(f["commit"])
    if stale:
        out += [":::{warning}", stale, ":::", ""]
    out += ["Command:", "", "```bash", show(f["command"]), "```", ""]
    if f["note"]:
        out += [f"Note from the run: {f['note']}", ""]
    if result.get("experiment") == "sse-sweep":
        out += [f"At {SSE_CLIENTS:,} clients:", "", sse_table(result), ""]
        for name, png in sse_charts(result, path, folder):
            out += [f"![{name}]({Path('_generated') / png.name})", ""]
        return "\n".join(out)
    table = script_markdown(result, path)
    if table:
        out += [table, ""]
    else:
        raw = ", ".join(f"`{key}` ({len(value)})" for key, value in result.items() if isinstance(value, list))
        out += [f"No table for this kind of result yet (`benchmarks/{result.get('benchmark', '...')}.py` "
                "has no `markdown(result)`); its parameters:", "", parameters(result), ""]
        if raw:
            out += [f"The raw numbers are in the file: {raw}.", ""]
    return "\n".join(out)


PAGES = {
    "performance": ("Performance", """\
What the servers cost and how fast they answer, beside uvicorn, hypercorn, gunicorn and
waitress. Every figure on this page is rendered by `tools/render_results.py` from a result
file a benchmark or an experiment wrote, with the commit, date, machine and exact command of
its run; `make bench` runs them again and re-renders this page. How each benchmark measures
(separate processes, interleaved rounds, CPU time per request beside requests per second) is
in the docstring at the top of its script in `benchmarks/`, and the design choices behind the
numbers in the [design notes](design.md).
"""),
    "reliability": ("Reliability", """\
What the servers survive: slow clients, floods, malformed and hostile requests, shutdown under
load. The promises are tests (`tests/test_hardening.py`, `tests/test_security.py`,
`tests/test_slow_clients.py`, `tests/test_fuzz.py`, `tests/test_request_corpus.py`), run by
`make test`; the limits they check are the defaults of
[`asgi_lab.config.Config`](api/shared.md). The measurements below are rendered by
`tools/render_results.py` from the result files their scripts wrote; `make bench` refreshes
them.
"""),
}


def render_pages(sources: list[Path] | None = None) -> dict[Path, str]:
    """{page path: its Markdown}, from the result files in `sources` (default: SOURCES)."""
    sections: dict[str, list[str]] = {page: [] for page in PAGES}
    for folder in SOURCES if sources is None else sources:
        for path in sorted(folder.glob("*.json")):
            result = json.loads(path.read_text(encoding="utf-8"))
            if not isinstance(result, dict):
                continue
            page = "reliability" if name_of(result, path).replace("-", "_") in RELIABILITY else "performance"
            sections[page].append(section(path, result, GENERATED))
    pages = {}
    for page, (title, intro) in PAGES.items():
        body = sections[page] or ["No result files yet: `make bench` writes them."]
        pages[DOCS / f"{page}.md"] = "\n".join(
            [f"# {title}", "", "<!-- written by tools/render_results.py from the result files: do not edit -->",
             "", intro, *body]).rstrip() + "\n"
    return pages


# -- the README's blocks: from the result files alone -----------------------------------------------


def notebook_sizes() -> str:
    """How big the stored notebooks are, and which are over 1 MB (the README says so)."""
    notebooks = sorted((p for p in (ROOT / "notebooks").rglob("*.ipynb") if ".ipynb_checkpoints" not in p.parts),
                       key=lambda p: -p.stat().st_size)
    mb = lambda p: p.stat().st_size / 1e6  # noqa: E731
    total = sum(p.stat().st_size for p in notebooks) / 1e6
    big = [p for p in notebooks if mb(p) > 1.0]
    text = f"The {len(notebooks)} stored notebooks take {total:.1f} MB together; "
    if big:
        text += "over 1 MB: " + ", ".join(f"`{p.relative_to(ROOT)}` ({mb(p):.1f} MB)" for p in big) + "."
    elif notebooks:
        text += f"none is over 1 MB (the largest, `{notebooks[0].relative_to(ROOT)}`, is {mb(notebooks[0]):.1f} MB)."
    return text


def readme_blocks() -> dict[str, str]:
    path = ROOT / "notebooks" / "data" / "sse-reference.json"
    sweep = json.loads(path.read_text(encoding="utf-8"))
    f = facts(sweep)
    chart = README_CHART.relative_to(ROOT)
    sse = "\n".join([
        f"![{SSE_CLIENTS:,} SSE clients: the memory one waiting client costs each server]({chart})", "",
        sse_table(sweep), "",
        f"From `{path.relative_to(ROOT)}` (notebook 03's reference run), one event every "
        f"{show((sweep.get('results') or [{}])[0].get('interval'))} s per client for "
        f"{show(sweep.get('duration'))} s. {facts_line(f)} Command and the other sizes: "
        f"[Performance](docs/performance.md)."])
    return {"sse-1000": sse, "notebook-sizes": notebook_sizes()}


def readme_chart() -> None:
    from asgi_lab.experiments.measure import source_line
    from asgi_lab.viz import charts

    path = ROOT / "notebooks" / "data" / "sse-reference.json"
    sweep = json.loads(path.read_text(encoding="utf-8"))
    save(charts.memory_per_client_chart(sweep, SSE_CLIENTS, source_line(sweep, str(path.relative_to(ROOT)))),
         README_CHART)


def readme_with_results(readme: str) -> str:
    blocks = readme_blocks()

    def fill(match: re.Match) -> str:
        name = match["name"]
        if name not in blocks:
            raise ValueError(f"README block {name!r}: no renderer for it in tools/render_results.py")
        return f"{match.group(1)}{blocks[name]}\n{match.group(4)}"

    return BLOCK.sub(fill, readme)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="only check the README's blocks")
    parser.add_argument("--pages-only", action="store_true",
                        help="write the docs pages (not committed) only, not the README or its chart")
    parser.add_argument("--results", metavar="DIR", type=Path,
                        help="read the benchmarks' result files from DIR instead of benchmarks/results "
                             "(notebooks/data is read as always); only with --pages-only")
    args = parser.parse_args(argv)
    if args.results and not args.pages_only:
        parser.error("--results renders the pages only: add --pages-only (the README's blocks come "
                     "from the committed result files)")
    readme_path = ROOT / "README.md"
    readme = readme_path.read_text(encoding="utf-8")
    rendered = readme_with_results(readme)
    if args.check:
        if rendered != readme:
            print("README.md's result blocks differ from the result files: run tools/render_results.py")
            return 1
        return 0
    import matplotlib
    matplotlib.use("Agg")
    sources = [args.results.resolve(), *SOURCES[1:]] if args.results else None
    pages = render_pages(sources)
    for path, text in pages.items():
        write(path, text)
    print(f"rendered {', '.join(str(p.relative_to(ROOT)) for p in pages)}", end="")
    if args.pages_only:
        print()
        return 0
    if rendered != readme:
        readme_path.write_text(rendered, encoding="utf-8")
    readme_chart()
    print(f", {README_CHART.relative_to(ROOT)} and README.md's result blocks")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
