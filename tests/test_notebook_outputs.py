"""The outputs committed with the notebooks are what a reader who never runs a kernel sees
(a code host's preview, the docs site). Three rules, checked on the files alone:

- no red boxes, neither stored nor when nbval runs them (`notebooks/conftest.py`): only a
  cell marked `# NBVAL_RAISES_EXCEPTION` may show an error or write to stderr;
- not stale: every code cell was run by `make notebooks` (tools/execute_notebooks.py), which
  records a hash of each cell's source, and not edited since; execution counts 1, 2, 3...
  (`make test` re-runs every notebook under nbval, but compares only the
  `# NBVAL_CHECK_OUTPUT` cells: this covers the other stored outputs);
- a cell that draws a figure stores an image.
"""

from __future__ import annotations

import importlib.util
import itertools
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"
_spec = importlib.util.spec_from_file_location("notebooks_conftest", NOTEBOOKS / "conftest.py")
guard = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(guard)
_spec = importlib.util.spec_from_file_location("execute_notebooks",
                                               NOTEBOOKS.parent / "tools" / "execute_notebooks.py")
executor = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(executor)
ALL_NOTEBOOKS = sorted(p for p in NOTEBOOKS.rglob("*.ipynb") if ".ipynb_checkpoints" not in p.parts)


def code_cell(source: str, outputs=(), tags=()) -> dict:
    return {"cell_type": "code", "execution_count": 1, "metadata": {"tags": list(tags)},
            "source": source, "outputs": list(outputs), "id": f"c{next(_ids)}"}


_ids = itertools.count()


STDERR = {"output_type": "stream", "name": "stderr", "text": "ERROR: something\n"}
STDOUT = {"output_type": "stream", "name": "stdout", "text": "fine\n"}
ERROR = {"output_type": "error", "ename": "ValueError", "evalue": "no", "traceback": []}


def test_the_rule_finds_stderr_and_errors_and_nothing_else():
    assert guard.red_boxes([STDOUT]) == []
    assert guard.red_boxes([STDOUT, STDERR, ERROR]) == ["stderr: ERROR: something",
                                                        "error: ValueError: no"]
    assert guard.red_boxes([{"output_type": "stream", "name": "stderr", "text": ["a", "b"]}]) \
        == ["stderr: ab"]


def test_only_nbvals_raises_marker_excuses_a_cell():
    assert guard.meant_to_fail(code_cell("# NBVAL_RAISES_EXCEPTION\nraise ValueError"))
    assert guard.meant_to_fail(code_cell(["x = 1\n", "# NBVAL_RAISES_EXCEPTION\n"]))
    assert guard.meant_to_fail(code_cell("raise ValueError", tags=["raises-exception"]))
    assert not guard.meant_to_fail(code_cell("print('NBVAL_RAISES_EXCEPTION')"))
    assert not guard.meant_to_fail(code_cell("# NBVAL_CHECK_OUTPUT\nprint(1)"))


def stored_red_boxes(path: Path) -> list[str]:
    notebook = json.loads(path.read_text(encoding="utf-8"))
    code_cells = [cell for cell in notebook["cells"] if cell["cell_type"] == "code"]
    return [f"cell {number}: {box}" for number, cell in enumerate(code_cells)
            if not guard.meant_to_fail(cell) for box in guard.red_boxes(cell.get("outputs", []))]


@pytest.mark.parametrize("path", ALL_NOTEBOOKS, ids=lambda path: str(path.relative_to(NOTEBOOKS)))
def test_no_committed_notebook_shows_a_red_box(path):
    assert stored_red_boxes(path) == []


@pytest.mark.parametrize("path", ALL_NOTEBOOKS, ids=lambda path: str(path.relative_to(NOTEBOOKS)))
def test_no_committed_notebook_is_stale(path):
    found = executor.stale_cells(json.loads(path.read_text(encoding="utf-8")))
    assert not found, (f"{path.name}: its stored outputs are not those of its sources; re-run "
                       f"`make notebooks` (or tools/execute_notebooks.py {path.relative_to(NOTEBOOKS.parent)}):\n"
                       + "\n".join(found))


@pytest.mark.parametrize("path", ALL_NOTEBOOKS, ids=lambda path: str(path.relative_to(NOTEBOOKS)))
def test_every_committed_figure_is_stored_as_an_image(path):
    assert executor.figures_without_images(json.loads(path.read_text(encoding="utf-8"))) == []


PNG = {"output_type": "display_data", "metadata": {},
       "data": {"image/png": "iVBORw0KGgo=", "text/plain": "<Figure>"}}


def stamped(source: str, count: int, outputs=()) -> dict:
    cell = code_cell(source, outputs)
    cell["execution_count"] = count
    cell["metadata"] = {"asgi_lab": {"source_sha256": executor.source_hash(source)}}
    return cell


def test_the_staleness_check_names_each_kind_of_stale_cell():
    fresh = [stamped("x = 1", 1), stamped("print(x)", 2, [STDOUT])]
    assert executor.stale_cells({"cells": fresh}) == []
    edited = [stamped("x = 1", 1), {**stamped("print(x)", 2), "source": "print(x + 1)"}]
    assert executor.stale_cells({"cells": edited}) == [
        "cell 1 (print(x + 1)): edited after its outputs were stored"]
    by_hand = [stamped("x = 1", 1), code_cell("y = 2")]  # run in JupyterLab: no hash
    assert executor.stale_cells({"cells": by_hand}) == [
        "cell 1 (y = 2): not run by tools/execute_notebooks.py",
        "cell 1 (y = 2): execution count 1, expected 2 (one clean run, top to bottom)"]
    out_of_order = [stamped("x = 1", 3), stamped("print(x)", 4), stamped("", None)]
    assert executor.stale_cells({"cells": out_of_order}) == [  # said once, not for every later cell
        "cell 0 (x = 1): execution count 3, expected 1 (one clean run, top to bottom)"]
    # a line list (as nbformat may store it) hashes as its joined text
    assert executor.source_hash(["a = 1\n", "b = 2"]) == executor.source_hash("a = 1\nb = 2\n")


def test_the_figure_check_knows_asgi_labs_drawing_functions_and_pyplot():
    assert {"sequence_diagram", "side_by_side", "timeline", "threads_chart",
            "ttfe_chart"} <= executor.figure_functions()
    cells = [code_cell("sequence_diagram(tracer)", [PNG]),              # drawn and stored
             code_cell("fig = viz.side_by_side({'a': t})"),             # 1: drawn, nothing stored
             code_cell("import matplotlib.pyplot as plt\nfig, ax = plt.subplots()", [STDOUT]),  # 2
             code_cell("with server:\n    charts.threads_chart(sweep)"),  # 3: in a with block
             code_cell("if FULL:\n    threads_chart(full)"),            # only when asked
             code_cell("def later():\n    return timeline(t)"),         # only defined
             code_cell("%matplotlib inline\nprint(sequence_diagram.__doc__)"),  # not a call of it
             code_cell("result = run(app)  # no picture")]
    assert executor.figures_without_images({"cells": cells}) == [
        "cell 1: calls side_by_side() but stores no image",
        "cell 2: calls subplots() but stores no image",
        "cell 3: calls threads_chart() but stores no image"]


def test_make_notebooks_records_the_source_it_ran(tmp_path):
    """A real run of tools/execute_notebooks.py on a throwaway notebook: it stores outputs and
    hashes that pass the check; editing a cell afterwards fails it; a figure cell whose image
    does not reach the outputs is refused (the notebook is not written)."""
    kernel = {"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}}
    path = tmp_path / "fresh.ipynb"
    path.write_text(json.dumps({"cells": [code_cell("x = 20"), code_cell("print(x + 1)")],
                                "metadata": kernel, "nbformat": 4, "nbformat_minor": 5}))
    assert executor.execute(path) == []
    notebook = json.loads(path.read_text())
    assert executor.stale_cells(notebook) == []
    assert "".join(notebook["cells"][1]["outputs"][0]["text"]) == "21\n"
    notebook["cells"][1]["source"] = "print(x + 2)"
    assert executor.stale_cells(notebook) == [
        "cell 1 (print(x + 2)): edited after its outputs were stored"]

    hidden = tmp_path / "hidden.ipynb"
    cells = [code_cell("from asgi_lab.viz import sequence_diagram\nfrom asgi_lab.trace import Tracer"),
             code_cell("fig = sequence_diagram(Tracer())")]  # assigned, never displayed
    hidden.write_text(json.dumps({"cells": cells, "metadata": kernel, "nbformat": 4, "nbformat_minor": 5}))
    before = hidden.read_text()
    found = executor.execute(hidden)
    assert found and "calls sequence_diagram() but stores no image" in found[-1], found
    assert hidden.read_text() == before


def test_the_scan_of_stored_outputs_can_fail(tmp_path):
    notebook = {"cells": [code_cell("print('fine')", [STDOUT]),
                          code_cell("# NBVAL_RAISES_EXCEPTION\nraise ValueError('no')", [ERROR]),
                          code_cell("import logging; logging.warning('something')", [STDERR])],
                "metadata": {}, "nbformat": 4, "nbformat_minor": 5}
    path = tmp_path / "red.ipynb"
    path.write_text(json.dumps(notebook))
    assert stored_red_boxes(path) == ["cell 2: stderr: ERROR: something"]


def test_under_nbval_a_cell_writing_to_stderr_fails(tmp_path):
    """A throwaway notebook run by nbval with the real conftest: the stderr cell fails, the
    cell marked to raise and the quiet cells pass."""
    cells = [code_cell("print('fine')"),
             code_cell("import sys\nprint('oops', file=sys.stderr)"),
             code_cell("# NBVAL_RAISES_EXCEPTION\nraise ValueError('meant to fail')"),
             code_cell("import logging\nlogging.getLogger('x').warning('a logged warning')")]
    notebook = {"cells": cells, "nbformat": 4, "nbformat_minor": 5,
                "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3",
                                            "language": "python"}}}
    (tmp_path / "throwaway.ipynb").write_text(json.dumps(notebook))
    shutil.copy(NOTEBOOKS / "conftest.py", tmp_path / "conftest.py")
    run = subprocess.run([sys.executable, "-m", "pytest", "throwaway.ipynb", "--nbval-lax",
                          "-p", "no:cacheprovider", "-q", "-rf"],
                         cwd=tmp_path, capture_output=True, text=True, timeout=120)
    report = run.stdout
    assert run.returncode == 1, report
    assert "2 failed, 2 passed" in report, report
    assert "stderr: oops" in report and "stderr: a logged warning" in report, report
    assert "meant to fail" not in report.split("short test summary")[-1], report
