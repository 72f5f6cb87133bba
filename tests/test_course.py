"""The course's own numbers stay true: study times and run times are computed, never typed."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from asgi_lab.exercises import course

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = ROOT / "notebooks"


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
