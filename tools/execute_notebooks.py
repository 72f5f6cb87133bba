"""Execute the course's notebooks in a clean kernel each and store them with their outputs.

    python tools/execute_notebooks.py                       # every notebook (make notebooks)
    python tools/execute_notebooks.py notebooks/01-the-wsgi-call.ipynb

A reader who never runs a notebook still sees every picture and table (COURSE-STYLE.md), so
the notebooks are committed executed. This is the one way to write them back:

- each runs top to bottom in a fresh kernel started in its own folder, as JupyterLab and
  nbval run it (nbclient, the library under `jupyter nbconvert --execute`);
- a cell marked `# NBVAL_RAISES_EXCEPTION` (an exercise's check on the untouched stub) may
  raise; any other error stops the run, and the notebook is not written;
- Jupyter's timestamps stay in each cell's metadata: the course table in notebook 00
  computes each notebook's run time from them (`asgi_lab.exercises.course.run_seconds`);
- addresses are written as nbval's sanitizer writes them (`HOST:PORT`), then the outputs
  are checked for what must never be stored: a red
  box (stderr or an error outside a cell meant to raise), a fixed `127.0.0.1:<port>` (ports
  change from run to run; print them through something the sanitizer maps), or a path of
  this machine;
- each code cell records a hash of the source it ran (`cell.metadata.asgi_lab.source_sha256`,
  see `source_hash`): `tests/test_notebook_outputs.py` fails a committed notebook whose cell
  was edited after this script ran it ("re-run make notebooks"), without running a kernel;
- notebook 00, whose course table reads the others' run times, runs last; then the README's
  copy of that table is rewritten (`course.readme_with_course`), and its notebook-size block
  (`tools/render_results.py`).
"""

from __future__ import annotations

import ast
import configparser
import functools
import hashlib
import importlib.util
import re
import sys
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient

from asgi_lab.exercises import course

ROOT = Path(__file__).resolve().parent.parent
START_HERE = "00-start-here.ipynb"
MARKER = "NBVAL_RAISES_EXCEPTION"
FIXED_ADDRESS = re.compile(r"(127\.0\.0\.1|localhost|\[::1\]):\d{2,5}")
TIMEOUT = 600  # seconds a single cell may take (notebook 03's full run is opt-in)


def source_hash(source) -> str:
    """The first 16 hex digits of the SHA-256 of a cell's source (a string, or the list of
    lines a notebook file may hold), trailing whitespace ignored: what `execute` records
    for each code cell it ran."""
    text = source if isinstance(source, str) else "".join(source)
    return hashlib.sha256(text.rstrip().encode("utf-8")).hexdigest()[:16]


def stamp(notebook) -> None:
    """Record in each code cell's metadata the hash of the source that produced its outputs."""
    for cell in notebook.cells:
        if cell.cell_type == "code":
            cell.metadata.setdefault("asgi_lab", {})["source_sha256"] = source_hash(cell.source)


def stale_cells(notebook) -> list[str]:
    """Why the stored outputs may not be what the sources give, cell by cell, read from the
    file alone (no kernel): a code cell this script never ran or that was edited after it
    ran (its recorded `source_hash` differs), a cell without an execution count, or counts
    that are not 1, 2, 3... in order (cells run by hand, out of order, in a kernel that had
    run others). `nbval --nbval-lax` compares only `# NBVAL_CHECK_OUTPUT` cells; this covers
    every other stored output, in milliseconds."""
    found = []
    expected = 1
    for number, cell in enumerate(notebook["cells"]):
        if cell["cell_type"] != "code":
            continue
        source = cell["source"] if isinstance(cell["source"], str) else "".join(cell["source"])
        if not source.strip():
            continue  # nbclient does not run an empty cell
        first = source.strip().splitlines()[0][:60]
        recorded = cell.get("metadata", {}).get("asgi_lab", {}).get("source_sha256")
        if recorded is None:
            found.append(f"cell {number} ({first}): not run by tools/execute_notebooks.py")
        elif recorded != source_hash(source):
            found.append(f"cell {number} ({first}): edited after its outputs were stored")
        count = cell.get("execution_count")
        if count != expected:
            found.append(f"cell {number} ({first}): execution count {count}, expected {expected} "
                         "(one clean run, top to bottom)")
        expected = (count if isinstance(count, int) else expected) + 1
    return found


@functools.cache
def figure_functions() -> frozenset[str]:
    """The names of asgi_lab's functions that draw a figure: those the package annotates as
    returning a matplotlib `Figure`, plus the three drawing functions `asgi_lab.viz` exports.
    Read from the source (ast), so the list grows with the package."""
    names = {"sequence_diagram", "side_by_side", "timeline"}
    for path in (ROOT / "asgi_lab").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if (isinstance(node, ast.FunctionDef) and not node.name.startswith("_")
                    and node.returns is not None and "Figure" in ast.unparse(node.returns)):
                names.add(node.name)
    return frozenset(names)


PYPLOT_DRAWING = {"subplots", "figure", "plot", "bar", "barh", "hist", "scatter", "imshow",
                  "step", "fill_between", "pie", "boxplot"}


def _drawing_calls(statements) -> list[str]:
    """The drawing calls a cell always reaches: statements at its top level and inside
    `with`, `for` and `try` blocks; not inside `if` (a cell like `if FULL: ...` draws only
    when asked), nor inside a function or class it only defines."""
    found = []
    for statement in statements:
        if isinstance(statement, (ast.If, ast.While, ast.FunctionDef, ast.AsyncFunctionDef,
                                  ast.ClassDef, ast.Match)):
            continue
        nested = [getattr(statement, name, []) for name in ("body", "orelse", "finalbody")]
        nested += [handler.body for handler in getattr(statement, "handlers", [])]
        if any(nested):
            found += _drawing_calls([s for block in nested for s in block])
            expressions = [getattr(statement, name, None) for name in ("iter", "items")]
        else:
            expressions = [statement]
        for expression in expressions:
            for node in ast.walk(expression) if isinstance(expression, ast.AST) else []:
                if not isinstance(node, ast.Call):
                    continue
                func = node.func
                name = func.id if isinstance(func, ast.Name) else getattr(func, "attr", None)
                owner = func.value.id if isinstance(func, ast.Attribute) and isinstance(
                    func.value, ast.Name) else None
                if name in figure_functions() or (owner == "plt" and name in PYPLOT_DRAWING):
                    found.append(name)
    return found


def figures_without_images(notebook) -> list[str]:
    """Code cells that draw a figure (call one of `figure_functions()` or pyplot) but store no
    image: a reader without a kernel would see nothing where the picture should be."""
    found = []
    for number, cell in enumerate(notebook["cells"]):
        if cell["cell_type"] != "code":
            continue
        source = cell["source"] if isinstance(cell["source"], str) else "".join(cell["source"])
        try:
            tree = ast.parse("\n".join(line for line in source.splitlines()
                                       if not line.lstrip().startswith(("%", "!"))))
        except SyntaxError:
            continue  # an exercise stub may be incomplete on purpose
        calls = _drawing_calls(tree.body)
        images = [key for output in cell.get("outputs", []) for key in output.get("data", {})
                  if key.startswith("image/")]
        if calls and not images:
            found.append(f"cell {number}: calls {calls[0]}() but stores no image")
    return found


def sanitize(notebook) -> None:
    """Apply nbval's own `[ports]` and `[hex-ids]` rules (notebooks/sanitize.cfg) to the stored
    text outputs: a live demo prints its real address, a reader sees `HOST:PORT`."""
    rules = configparser.ConfigParser()
    rules.read(ROOT / "notebooks" / "sanitize.cfg")
    subs = [(re.compile(rules[name]["regex"]), rules[name]["replace"]) for name in ("ports", "hex-ids")]

    def clean(text):
        for pattern, replace in subs:
            text = pattern.sub(replace, text)
        return text

    for cell in notebook.cells:
        for output in cell.get("outputs", []):
            if "text" in output:
                output["text"] = clean(output["text"])
            for key, value in output.get("data", {}).items():
                if key.startswith("text/") and isinstance(value, str):
                    output["data"][key] = clean(value)


def problems(notebook) -> list[str]:
    """What the stored outputs must not hold, cell by cell."""
    found = []
    home = str(ROOT)
    for number, cell in enumerate(notebook.cells):
        if cell.cell_type != "code":
            continue
        meant_to_fail = MARKER in cell.source
        for output in cell.get("outputs", []):
            text = output.get("text", "") if output.output_type == "stream" else ""
            text += "".join(str(value) for key, value in output.get("data", {}).items()
                            if key.startswith("text/"))
            if output.output_type == "error" and not meant_to_fail:
                found.append(f"cell {number}: error {output.ename}: {output.evalue}")
            if output.get("name") == "stderr" and text.strip() and not meant_to_fail:
                found.append(f"cell {number}: stderr: {text.strip()[:200]}")
            if FIXED_ADDRESS.search(text):
                found.append(f"cell {number}: a fixed address {FIXED_ADDRESS.search(text).group()}")
            if home in text:
                found.append(f"cell {number}: a path of this machine ({home})")
    return found


def execute(path: Path) -> list[str]:
    """Run `path` in place; returns the problems found (then the file is left as it was)."""
    notebook = nbformat.read(path, as_version=4)
    tagged = []
    for cell in notebook.cells:  # nbclient's own way to let one cell raise
        tags = cell.metadata.setdefault("tags", [])
        if cell.cell_type == "code" and MARKER in cell.source and "raises-exception" not in tags:
            tags.append("raises-exception")
            tagged.append(cell)
    NotebookClient(notebook, timeout=TIMEOUT, kernel_name="python3",
                   resources={"metadata": {"path": str(path.parent)}}).execute()
    for cell in notebook.cells:
        if any(cell is t for t in tagged):
            cell.metadata["tags"].remove("raises-exception")
        if not cell.metadata.get("tags"):
            cell.metadata.pop("tags", None)
    sanitize(notebook)
    stamp(notebook)
    found = problems(notebook) + figures_without_images(notebook)
    if not found:
        nbformat.write(notebook, path)
    return found


def render_results():
    """tools/render_results.py, which owns the README's result blocks."""
    spec = importlib.util.spec_from_file_location("render_results", ROOT / "tools" / "render_results.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def main(paths: list[str]) -> int:
    notebooks = [Path(p).resolve() for p in paths] or sorted(
        (p for p in (ROOT / "notebooks").rglob("*.ipynb") if ".ipynb_checkpoints" not in p.parts),
        key=lambda p: (p.name == START_HERE, str(p)))
    failed = 0
    for path in notebooks:
        started = time.monotonic()
        try:
            found = execute(path)
        except Exception as exc:  # a cell failed: say which, go on with the others
            found = [f"{type(exc).__name__}: {str(exc).strip().splitlines()[-1] if str(exc).strip() else ''}"]
        name = path.relative_to(ROOT)
        if found:
            failed += 1
            print(f"FAILED {name} (not written)", *(f"  {line}" for line in found), sep="\n", flush=True)
        else:
            print(f"ok     {name}  {time.monotonic() - started:5.1f} s", flush=True)
    readme = ROOT / "README.md"
    text = course.readme_with_course(readme.read_text(encoding="utf-8"), ROOT / "notebooks")
    readme.write_text(render_results().readme_with_results(text), encoding="utf-8")
    print(f"{len(notebooks) - failed} written, {failed} failed; README.md's course table and "
          "result blocks (notebook sizes) rewritten")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
