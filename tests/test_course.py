"""The course's own numbers stay true: study times and run times are computed, never typed;
so are the README's result blocks and the docs' results pages (tools/render_results.py)."""

from __future__ import annotations

import importlib.util
import json
import re
import subprocess
from pathlib import Path

import pytest

from asgi_lab.exercises import course

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = ROOT / "notebooks"
_spec = importlib.util.spec_from_file_location("render_results", ROOT / "tools" / "render_results.py")
render = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(render)


def test_the_readmes_course_table_is_the_one_the_notebooks_give():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert course.readme_with_course(readme, NOTEBOOKS) == readme, (
        "README.md's course table differs from the notebooks: `make notebooks` rewrites it")


@pytest.mark.parametrize("step", course.COURSE, ids=lambda step: step.path)
def test_a_notebooks_stated_study_time_is_the_computed_one(step):
    intro = "".join(json.loads((NOTEBOOKS / step.path).read_text(encoding="utf-8"))["cells"][0]["source"])
    stated = re.search(r"\*\*Study time:\*\*\s+about\s+(\d+)\s+minutes", intro)
    assert stated, f"{step.path}: its first cell should say '**Study time:** about N minutes'"
    assert int(stated.group(1)) == course.study_minutes(NOTEBOOKS / step.path), (
        f"{step.path} says {stated.group(1)} minutes; course.study_minutes() computes "
        f"{course.study_minutes(NOTEBOOKS / step.path)}")


def test_run_seconds_reads_jupyters_timestamps(tmp_path):
    cell = {"cell_type": "code", "source": "", "outputs": [], "metadata": {"execution": {
        "iopub.execute_input": "2026-12-02T10:00:00.000000Z", "shell.execute_reply": "2026-12-02T10:00:01.500000Z"}}}
    late = {**cell, "metadata": {"execution": {
        "iopub.execute_input": "2026-12-02T10:00:02.000000Z", "shell.execute_reply": "2026-12-02T10:00:04.250000Z"}}}
    notebook = tmp_path / "n.ipynb"
    notebook.write_text(json.dumps({"cells": [cell, late]}))
    assert course.run_seconds(notebook) == 4.25
    notebook.write_text(json.dumps({"cells": [{"cell_type": "code", "source": "", "metadata": {}}]}))
    assert course.run_seconds(notebook) is None


def test_the_exercise_table_names_a_notebook_by_its_number_as_the_course_does():
    table = course.exercises_markdown(NOTEBOOKS)
    assert "[00a From the ground up: a thread, an event loop](00a-from-the-ground-up.ipynb)" in table
    assert "[00 From the ground up" not in table


def test_the_readmes_result_blocks_are_rendered_from_the_result_files():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert "<!-- results:begin sse-1000 -->" in readme and "<!-- results:begin notebook-sizes -->" in readme
    assert render.readme_with_results(readme) == readme, (
        "README.md's result blocks differ from the result files: run tools/render_results.py (make docs)")


def test_a_readme_block_without_a_renderer_is_an_error():
    with pytest.raises(ValueError, match="no renderer"):
        render.readme_with_results("<!-- results:begin typed-by-hand -->\n1.46x\n<!-- results:end typed-by-hand -->")


def test_missing_facts_of_a_result_read_as_unknown():
    f = render.facts({"benchmark": "x"})
    assert set(f.values()) == {None}
    assert render.facts_line(f) == ("Measured unknown on unknown (unknown cores), Python unknown, "
                                    "load average (1/5/15 min) unknown, commit unknown.")
    old = render.facts({"environment": {"cpus": 2, "time": "2026-12-02T16:25:58+0000", "commit": "ab" * 20,
                                        "command": "python -m asgi_lab experiment sse"}})
    assert (old["cores"], old["date"][:10], old["command"]) == (2, "2026-12-02", "python -m asgi_lab experiment sse")
    new = render.facts({"command": "python benchmarks/x.py", "machine": {
        "commit": "cd" * 20 + "+dirty", "date": "2026-12-02T17:07:14+00:00", "cpu_model": "AMD EPYC",
        "cores": 2, "python": "3.11.7", "load_average": [1.5, 4.8, 5.2]}})
    assert render.facts_line(new) == ("Measured 2026-12-02 on AMD EPYC (2 cores), Python 3.11.7, load average "
                                      "(1/5/15 min) 1.5 / 4.8 / 5.2, commit cdcdcdcdc (with uncommitted changes).")


def test_a_result_measured_before_the_servers_last_change_is_marked():
    def git(*args):
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    changes = git("log", "--format=%H", "-2", "--", *render.SERVER_PATHSPEC)
    if len(changes) < 2:
        pytest.skip("a shallow clone: no earlier change to asgi_lab/ to measure at")
    assert render.staleness(git("rev-parse", "HEAD")[0]) is None
    assert render.staleness(changes[0]) is None
    before = git("rev-parse", f"{changes[0]}~1")[0]
    assert render.staleness(before).startswith(f"Measured at commit {before[:9]}, before later changes to the server")
    assert "not in this clone's history" in render.staleness("0" * 40)
    assert render.staleness(None).startswith("Measured at an unknown commit")


def test_every_result_file_gets_a_section_on_a_page():
    pages = render.render_pages()
    text = "\n".join(pages.values())
    for folder in render.SOURCES:
        for path in folder.glob("*.json"):
            assert f"From `{path.relative_to(ROOT)}`" in text
    assert "slow_clients" in pages[render.DOCS / "reliability.md"]
