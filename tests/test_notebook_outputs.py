"""No red boxes in the notebooks: neither in the outputs committed with them (a reader who
never runs a kernel sees those) nor when nbval runs them (`notebooks/conftest.py`).

Only a cell marked `# NBVAL_RAISES_EXCEPTION` may show an error or write to stderr.
"""

from __future__ import annotations

import importlib.util
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


def code_cell(source: str, outputs=(), tags=()) -> dict:
    return {"cell_type": "code", "execution_count": 1, "metadata": {"tags": list(tags)},
            "source": source, "outputs": list(outputs)}


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


@pytest.mark.parametrize("path", sorted(NOTEBOOKS.rglob("*.ipynb")),
                         ids=lambda path: str(path.relative_to(NOTEBOOKS)))
def test_no_committed_notebook_shows_a_red_box(path):
    assert stored_red_boxes(path) == []


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
