"""`python -m asgi_lab.exercises grade DIR`: a class folder in, a CSV and a table out.

The class is built from the course's own notebooks (the stub notebook with its stub cell
rewritten, the solution notebook as handed out), one student per way a submission goes wrong:
each mistake check_wsgi_app names, a syntax error, endless loops, a million lines printed, a
missing function, a crash on import, a process that dies, memory, the network. One grading run
(two processes at a time) serves every test of the CSV.
"""

from __future__ import annotations

import ast
import copy
import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from asgi_lab.exercises import grade
from asgi_lab.exercises.course import EXERCISES

ROOT = Path(__file__).resolve().parents[1]
EXERCISES_DIR = ROOT / "notebooks" / "exercises"
TIMEOUT = 6  # seconds per check: the endless loops cost this much

GOOD = '''from urllib.parse import parse_qs


def app(environ, start_response):
    name = parse_qs(environ["QUERY_STRING"]).get("name", ["world"])[0]
    start_response("200 OK", [("Content-Type", "text/plain; charset=utf-8")])
    return [f"Hello, {name}!".encode()]
'''

# student -> the stub cell they handed in, and what the grader must say (verdict, words in the reason)
STUB_CELLS = {
    "ada": (GOOD, "passed", "3 greetings"),
    "ben": (None, "failed", "returned None"),  # the untouched stub
    "cy": (GOOD.replace('return [f"Hello, {name}!".encode()]', 'return f"Hello, {name}!"'),
           "failed", "returned a str"),
    "dee": (GOOD.replace('"200 OK"', '"404 Not Found"'), "failed", "answered '404 Not Found'"),
    "eli": (GOOD.replace("text/plain; charset=utf-8", "text/html"), "failed", "Content-Type is 'text/html'"),
    "fay": (GOOD.replace('parse_qs(environ["QUERY_STRING"])', 'dict(pair.split("=") for pair in '
                         'environ["QUERY_STRING"].split("&") if pair)')
               .replace('.get("name", ["world"])[0]', '.get("name", "world")'),
            "failed", "expected 'Hello, Zoë!'"),
    "gus": (GOOD.replace('[("Content-Type", "text/plain; charset=utf-8")]',
                         '[("Content-Type", "text/plain; charset=utf-8"), '
                         '("Content-Length", str(len(f"Hello, {name}!")))]'),
            "failed", "Content-Length says"),
    "hal": (GOOD.replace('environ["QUERY_STRING"]', 'environ["QUERY"]'), "failed", "KeyError: 'QUERY'"),
    "ivy": (GOOD.replace("def app(environ, start_response):", "def app(environ, start_response)"),
            "error", "Syntax error in code cell 1, line 4: expected ':'"),
    "jon": ("while True:\n    pass\n" + GOOD, "timeout", "Did not finish running code cell 1"),
    "kim": (GOOD.replace("    name =", "    while True:\n        pass\n    name ="),
            "timeout", "check_wsgi_app did not finish"),
    # (in one print: a loop of a million prints takes seconds on a busy machine, and tests time)
    "lea": ('print("\\n".join(map(str, range(1_000_000))))\n' + GOOD, "passed", "Note: it printed 1,000,000 lines"),
    "max": (GOOD.replace("def app(", "def application("), "error", "never defines `app`"),
    "ned": ("import numpyy\n" + GOOD, "error",
            "Code cell 1 raised ModuleNotFoundError: No module named 'numpyy' (line 1: import numpyy), so `app`"),
    "ola": ("import os\nos._exit(3)\n" + GOOD, "crashed", "exited with code 3 (os._exit() in the code?) while running its cells"),
    "pat": ("hoard = bytearray(50 * 2**30)\n" + GOOD, "error", "MemoryError"),
    "uma": ("import ctypes\nctypes.string_at(0)\n" + GOOD, "crashed", "killed by SIGSEGV"),
    "quin": ('import sys\nsys.audit("socket.connect", None, ("192.0.2.1", 80))\n' + GOOD,
             "error", "the grader allows loopback only: connect to ('192.0.2.1', 80) refused"),
}


def notebook(stub_cell: str | None, check_cell: str | None = None) -> dict:
    """The course's exercise 1 notebook with the stub cell (and the check cell) replaced."""
    nb = json.loads((EXERCISES_DIR / "01-wsgi-app.ipynb").read_text(encoding="utf-8"))
    nb = copy.deepcopy(nb)
    code = [cell for cell in nb["cells"] if cell["cell_type"] == "code"]
    if stub_cell is not None:
        code[0]["source"] = stub_cell
    if check_cell is not None:
        code[1]["source"] = check_cell
    return nb


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    """Grade the class once: (its CSV rows by (student, check), the table on stdout, the run)."""
    folder = tmp_path_factory.mktemp("class")
    for student, (cell, _, _) in STUB_CELLS.items():
        (folder / student).mkdir()
        (folder / student / "01-wsgi-app.ipynb").write_text(json.dumps(notebook(cell)), encoding="utf-8")
    # Renamed the function, and the check cell with it: the grader grades the name it passes.
    (folder / "rae").mkdir()
    renamed = notebook(GOOD.replace("def app(", "def greet("), "from asgi_lab.exercises import "
                       "check_wsgi_app\n\ncheck_wsgi_app(greet)\n")
    (folder / "rae" / "01-wsgi-app.ipynb").write_text(json.dumps(renamed), encoding="utf-8")
    # A whole repository handed in: the exercise deep inside, a solutions/ folder beside it
    # (skipped), and exercise 8's solution notebook (four checks, four rows).
    deep = folder / "sam" / "asgi-lab" / "notebooks" / "exercises"
    (deep / "solutions").mkdir(parents=True)
    (deep / "01_wsgi_app.py").write_text("def app(environ, start_response)\n", encoding="utf-8")
    (deep / "solutions" / "01-wsgi-app.ipynb").write_bytes((EXERCISES_DIR / "solutions" / "01-wsgi-app.ipynb").read_bytes())
    (deep / "08-spot-the-bug.ipynb").write_bytes((EXERCISES_DIR / "solutions" / "08-spot-the-bug.ipynb").read_bytes())
    # A notebook that is no longer JSON (a merge conflict, an editor that cut it short).
    (folder / "vic").mkdir()
    (folder / "vic" / "01-wsgi-app.ipynb").write_text(json.dumps(notebook(GOOD))[:500], encoding="utf-8")
    # Every solution notebook of the course, as handed out: each must pass, all checks.
    (folder / "sol").mkdir()
    for solution in sorted((EXERCISES_DIR / "solutions").glob("*.ipynb")):
        (folder / "sol" / solution.name).write_bytes(solution.read_bytes())
    # Flat, as some platforms hand them out: the student is the file name's prefix; a copy.
    (folder / "tia_01-wsgi-app-Copy1.ipynb").write_text(json.dumps(notebook(GOOD)), encoding="utf-8")
    out = folder.parent / "grades.csv"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    run = subprocess.run([sys.executable, "-m", "asgi_lab.exercises", "grade", str(folder), "--csv", str(out),
                          "--timeout", str(TIMEOUT), "--jobs", "2"],
                         capture_output=True, text=True, env=env, timeout=180)
    with open(out, newline="", encoding="utf-8") as file:
        rows = list(csv.DictReader(file))
    return {(row["student"], row["check"]): row for row in rows}, rows, run


def test_the_grader_finishes_and_exits_0(graded):
    _, rows, run = graded
    assert run.returncode == 0, run.stderr
    assert list(rows[0]) == grade.COLUMNS
    assert "student" in run.stdout and "verdict" in run.stdout and "Passed: 01-wsgi-app" in run.stdout


@pytest.mark.parametrize("student", sorted(STUB_CELLS))
def test_each_submission_gets_its_verdict_in_plain_words(graded, student):
    by_key, _, _ = graded
    _, verdict, words = STUB_CELLS[student]
    row = by_key[(student, "check_wsgi_app")]
    assert (row["verdict"], words in row["reason"]) == (verdict, True), row
    assert "Traceback" not in row["reason"]
    assert float(row["seconds"]) < TIMEOUT + 5


def test_a_file_that_is_no_notebook_gets_a_verdict(graded):
    row = graded[0][("vic", "check_wsgi_app")]
    assert row["verdict"] == "error" and row["reason"].startswith("The file could not be read as a notebook (JSONDecodeError")


def test_a_failure_says_what_is_wrong_without_the_hints(graded):
    row = graded[0][("ben", "check_wsgi_app")]
    assert "Hint" not in row["reason"] and "hints" not in row


def test_the_timeouts_name_where_the_code_was_stuck(graded):
    by_key, _, _ = graded
    assert f"within {TIMEOUT} s" in by_key[("jon", "check_wsgi_app")]["reason"]
    assert "endless loop" in by_key[("kim", "check_wsgi_app")]["reason"]
    assert float(by_key[("kim", "check_wsgi_app")]["seconds"]) >= TIMEOUT


def test_a_renamed_function_is_graded_by_the_name_its_check_cell_passes(graded):
    row = graded[0][("rae", "check_wsgi_app")]
    assert row["verdict"] == "passed" and "graded `greet`" in row["reason"]


def test_layouts_a_whole_repository_a_flat_file_and_a_copy(graded):
    by_key, rows, _ = graded
    sam = by_key[("sam", "check_wsgi_app")]
    assert sam["verdict"] == "error" and "Syntax error in 01_wsgi_app.py, line 1" in sam["reason"]  # not solutions/
    assert [by_key[("sam", check)]["verdict"] for check, _ in grade.TASKS["08-spot-the-bug"]] == ["passed"] * 4
    assert by_key[("tia", "check_wsgi_app")]["verdict"] == "passed"
    # Who handed in exercise 1 only has the others "missing", once per check.
    missing = [r for r in rows if r["student"] == "ada" and r["exercise"] != "01-wsgi-app"]
    assert {r["verdict"] for r in missing} == {"missing"}
    assert len(missing) == sum(len(checks) for checks in grade.TASKS.values()) - 1


def test_every_solution_notebook_of_the_course_passes(graded):
    """The cells run as in Jupyter (a top-level await, threads, imports), under the limits."""
    rows = [row for row in graded[1] if row["student"] == "sol"]
    assert len(rows) == sum(len(checks) for checks in grade.TASKS.values())
    assert [(r["exercise"], r["verdict"], r["reason"]) for r in rows if r["verdict"] != "passed"] == []


# == the pieces, without a process ================================================================

def test_tasks_match_the_check_cells_of_the_course_notebooks():
    """TASKS must name the checks, and the names, that the handed-out notebooks check."""
    assert sorted(grade.TASKS) == sorted(Path(step.path).stem for step in EXERCISES)
    for step in EXERCISES:
        cells = [cell for cell in json.loads((ROOT / "notebooks" / step.path).read_text(encoding="utf-8"))["cells"]
                 if cell["cell_type"] == "code"]
        called = []
        for cell in cells:
            for node in ast.walk(ast.parse("".join(cell["source"]))):
                if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id.startswith("check_"):
                    called.append((node.func.id, node.args[0].id))
        assert grade.TASKS[Path(step.path).stem] == called, step.path


def test_a_file_maps_to_its_exercise_by_name():
    assert grade.exercise_of(Path("01-wsgi-app.ipynb")) == ("01-wsgi-app", "")
    assert grade.exercise_of(Path("01_wsgi_app.py")) == ("01-wsgi-app", "")
    assert grade.exercise_of(Path("carol_03-streamed-body.ipynb")) == ("03-streamed-body", "carol")
    assert grade.exercise_of(Path("01-wsgi-app (1).ipynb")) == ("01-wsgi-app", "")
    assert grade.exercise_of(Path("101-wsgi-app.ipynb")) is None
    assert grade.exercise_of(Path("notes.py")) is None
    assert grade.exercise_of(Path("01-wsgi-app.txt")) is None


def test_the_exact_name_wins_over_a_copy(tmp_path):
    (tmp_path / "ada").mkdir()
    for name in ("01-wsgi-app-Copy1.ipynb", "01-wsgi-app.ipynb"):
        (tmp_path / "ada" / name).write_text("{}")
    [submission] = grade.find_submissions(tmp_path)
    assert submission.path.name == "01-wsgi-app.ipynb" and "not 01-wsgi-app-Copy1.ipynb" in submission.note


def test_check_calls_magics_and_hints_are_taken_out_of_a_cell():
    source = ("%matplotlib inline\nimport asyncio\n!pip install h11\ncheck_sse(app)\nhint(check_sse)\n"
              "same = (1\n        != 2)\n"
              "try:\n    check_sse(my_app)\nexcept AssertionError:\n    pass\n"
              "def helper():\n    return check_sse\nx = 1\n")
    tree, calls = grade.prepare(source, "<cell 1>")
    code = ast.unparse(tree)
    assert "check_sse(" not in code and "hint(" not in code and "pip" not in code
    assert "def helper" in code and "x = 1" in code and "import asyncio" in code and "1 != 2" in code
    assert calls == {"check_sse": "my_app", "hint": "check_sse"}
    assert grade.prepare("%%timeit\nx = 1\n", "<cell 2>") == (None, {})


@pytest.mark.parametrize("event, args, allowed", [
    ("socket.connect", (None, ("127.0.0.1", 8000)), True),
    ("socket.connect", (None, ("::1", 8000, 0, 0)), True),
    ("socket.connect", (None, "/tmp/a.sock"), True),
    ("socket.bind", (None, ("127.0.0.1", 0)), True),
    ("socket.bind", (None, ("0.0.0.0", 0)), False),
    ("socket.connect", (None, ("192.0.2.1", 80)), False),
    ("socket.sendto", (None, ("192.0.2.1", 53)), False),
    ("socket.getaddrinfo", ("localhost", 80, 0, 0, 0), True),
    ("socket.getaddrinfo", (None, 0, 0, 0, 0), True),
    ("socket.getaddrinfo", ("example.com", 80, 0, 0, 0), False),
    ("socket.gethostbyname", ("example.com",), False),
    ("open", ("x", "r", 0), True),
])
def test_the_audit_hook_allows_loopback_only(event, args, allowed):
    """Called directly, with the arguments CPython passes: no socket is made."""
    try:
        grade.loopback_only(event, args)
        refused = False
    except PermissionError:
        refused = True
    assert refused is not allowed


def test_no_submissions_is_the_graders_failure(tmp_path):
    (tmp_path / "ada").mkdir()
    (tmp_path / "ada" / "notes.txt").write_text("nothing")
    assert grade.main([str(tmp_path), "--csv", str(tmp_path / "g.csv")]) == 2
    (tmp_path / "ada" / "03-streamed-body.py").write_text("app = None\n")
    assert grade.main([str(tmp_path), "--csv", str(tmp_path / "g.csv"), "--exercises", "01,02"]) == 2
    with pytest.raises(SystemExit):
        grade.main([str(tmp_path / "nowhere")])


def test_the_hints_go_to_the_csv_only_when_asked(tmp_path):
    row = grade.Row("ada", "01-wsgi-app", "check_wsgi_app", "failed", "It returned None.", 0.5,
                    "the idea: one call\nthe API: start_response\nthe code: return [body]")
    grade.write_csv([row], tmp_path / "plain.csv")
    grade.write_csv([row], tmp_path / "hints.csv", hints=True)
    plain = list(csv.DictReader(open(tmp_path / "plain.csv", encoding="utf-8")))
    hinted = list(csv.DictReader(open(tmp_path / "hints.csv", encoding="utf-8")))
    assert "hints" not in plain[0]
    assert hinted[0]["hints"] == "the idea: one call | the API: start_response | the code: return [body]"


def test_the_table_shows_the_reason_of_a_failure_and_only_the_notes_of_a_pass():
    rows = [grade.Row("ada", "01-wsgi-app", "check_wsgi_app", "passed", "3 greetings right. Note: x.", 1.0,
                      notes="Note: x."),
            grade.Row("ben", "01-wsgi-app", "check_wsgi_app", "failed", "It returned None.", 1.0)]
    table = grade.summary(rows, width=100).splitlines()
    assert table[2].split() == ["ada", "01-wsgi-app", "passed", "Note:", "x."]
    assert table[3].split()[2:] == ["failed", "It", "returned", "None."]
    assert table[-1] == "Passed: 01-wsgi-app 1/2"
