"""How a check talks to a student: a verdict in plain words and a hint, never a traceback.

A failing check raises `ExerciseFailed`. It is an `AssertionError`, so pytest and plain
`assert`-style tooling treat it as a failed check, and its text is the whole message. In a
notebook, IPython asks an exception for `_render_traceback_()` before printing a traceback; ours
returns the message alone, so the student reads what went wrong and what to try next, not
forty lines of our harness.
"""

from __future__ import annotations

import textwrap


class ExerciseFailed(AssertionError):
    """A check found a mistake. `str(error)` is the friendly message: problem, then hint."""

    def __init__(self, exercise: str, problem: str, hint: str | None = None) -> None:
        self.exercise = exercise
        self.problem = problem
        self.hint = hint
        super().__init__(self.message)

    @property
    def message(self) -> str:
        text = f"{self.exercise}: {self.problem}"
        return f"{text}\nHint: {self.hint}" if self.hint else text

    def __str__(self) -> str:
        return self.message

    def _render_traceback_(self) -> list[str]:
        """What IPython shows instead of a traceback."""
        lines = [f"✗ {self.exercise}"]
        lines += _wrap(self.problem[:1].upper() + self.problem[1:])
        if self.hint:
            lines += _wrap("Hint: " + self.hint)
        return lines


def _wrap(text: str) -> list[str]:
    return [line for paragraph in text.split("\n")
            for line in (textwrap.wrap(paragraph, 96, subsequent_indent="  ") or [""])]


def fail(exercise: str, problem: str, hint: str | None = None):
    """Stop the check with a friendly verdict (and no chained traceback)."""
    raise ExerciseFailed(exercise, problem, hint) from None


def passed(exercise: str, detail: str) -> None:
    """Print the good news (and return nothing, so a notebook cell shows it once)."""
    print(f"✓ {exercise}: passed. {detail}")
