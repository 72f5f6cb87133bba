"""How a check talks to a student: a verdict in plain words and a graduated hint, never a
traceback.

A failing check raises `ExerciseFailed`. It is an `AssertionError`, so pytest and plain
`assert`-style tooling treat it as a failed check, and its text is the whole message. In a
notebook, IPython asks an exception for `_render_traceback_()` before printing a traceback; ours
returns the message alone, so the student reads what went wrong and what to try next, not
forty lines of our harness.

Hints come in three steps, as a teacher at your shoulder would give them:

1. **the idea**: which concept the code is missing ("the body arrives in pieces");
2. **the API**: which part of the spec or library to use ("`receive()`, `more_body`");
3. **the code**: the line or two that does it.

Each exercise registers its three steps (`register`). A failure may carry its own, sharper
steps for the mistake it found (`fail(..., hint, concept=..., api=...)`: `hint` is the code
step); a step it leaves out comes from the exercise's. The first failure of an exercise shows
step 1 only, so it never prints the solution; each further failure of the same exercise shows
the next step; `hint(check)` (or `hint()`, for the check that failed last) reveals the next
step on request, without running anything.
Progress is kept per exercise, per Python process (one notebook kernel), and `reset_hints()`
starts over.
"""

from __future__ import annotations

import textwrap
from dataclasses import dataclass

STEP_NAMES = ("the idea", "the API", "the code")


@dataclass(frozen=True)
class Hints:
    """The three steps of help for one exercise (or one mistake): concept, API, code."""

    concept: str
    api: str
    code: str

    def step(self, level: int) -> str:
        return (self.concept, self.api, self.code)[level - 1]

    def merged(self, concept: str | None, api: str | None, code: str | None) -> "Hints":
        return Hints(concept or self.concept, api or self.api, code or self.code)


@dataclass
class _Exercise:
    check: str
    """The name of the check function, as the student calls it (`check_sse`)."""
    hints: Hints
    shown: int = 0
    """The highest step shown so far (0: none)."""
    last: Hints | None = None
    """The steps of the last failure: `hint()` continues with them."""


_EXERCISES: dict[str, _Exercise] = {}
_last_failed: list[str] = []
"""The exercise whose check failed last: what `hint()` with no argument continues."""


def register(exercise: str, check: str, concept: str, api: str, code: str) -> None:
    """Give an exercise its three steps of help. Called once by each check module."""
    _EXERCISES[exercise] = _Exercise(check, Hints(concept, api, code))


def _find(exercise) -> _Exercise:
    """The exercise, by its name ("SSE that stops"), its check's name, or the check itself."""
    name = getattr(exercise, "__name__", exercise)
    for title, entry in _EXERCISES.items():
        if name in (title, entry.check) or name == entry.check.removeprefix("check_"):
            return entry
    known = ", ".join(entry.check for entry in _EXERCISES.values())
    raise KeyError(f"no exercise called {name!r}; pass a check, one of: {known}")


def reset_hints(exercise=None) -> None:
    """Start the hints again from step 1 (for one exercise, or for all)."""
    for entry in ([_find(exercise)] if exercise is not None else _EXERCISES.values()):
        entry.shown, entry.last = 0, None
    if exercise is None:
        _last_failed.clear()


def hint(exercise=None) -> None:
    """Print the next step of help for an exercise: `hint(check_sse)`, or `hint()` for the
    exercise whose check failed last. Every step up to it is printed again, so the idea stays
    in view beside the code."""
    if exercise is None:
        if not _last_failed:
            print("No check has failed yet in this kernel: run the check first, or name the "
                  "exercise, as in hint(check_sse).")
            return
        exercise = _last_failed[-1]
    entry = _find(exercise)
    hints = entry.last or entry.hints
    entry.shown = min(entry.shown + 1, len(STEP_NAMES))
    title = next(name for name, e in _EXERCISES.items() if e is entry)
    lines = [f"{title}: hints so far"]
    for level in range(1, entry.shown + 1):
        lines += _wrap(f"Hint {level}/3, {STEP_NAMES[level - 1]}: {hints.step(level)}")
    if entry.shown < len(STEP_NAMES):
        lines.append(f"(Next: {STEP_NAMES[entry.shown]}, with hint({entry.check}) or the next "
                     "failed check.)")
    print("\n".join(lines))


class ExerciseFailed(AssertionError):
    """A check found a mistake. `str(error)` is the friendly message: problem, then the hint
    step this failure has earned (`level`); `hints` keeps all three steps."""

    def __init__(self, exercise: str, problem: str, hint: str | Hints | None = None,
                 level: int = 3, check: str | None = None) -> None:
        self.exercise = exercise
        self.problem = problem
        self.hints = Hints("", "", hint) if isinstance(hint, str) else hint
        self.level = level
        self.check = check
        super().__init__(self.message)

    @property
    def hint(self) -> str | None:
        """The hint this failure shows (one step)."""
        return self.hints.step(self.level) if self.hints else None

    @property
    def hint_label(self) -> str:
        if self.hints is None or not self.hints.concept:
            return "Hint"
        return f"Hint {self.level}/3, {STEP_NAMES[self.level - 1]}"

    @property
    def next_step(self) -> str | None:
        if self.hints is None or not self.hints.concept or self.level >= len(STEP_NAMES):
            return None
        how = f"hint({self.check}) or " if self.check else ""
        return f"(Next: {STEP_NAMES[self.level]}, with {how}the next failed check.)"

    @property
    def message(self) -> str:
        text = f"{self.exercise}: {self.problem}"
        if self.hint:
            text += f"\n{self.hint_label}: {self.hint}"
        if self.next_step:
            text += f"\n{self.next_step}"
        return text

    @property
    def all_hints(self) -> str:
        """Every step, for a teacher or a grading script (and for tests)."""
        if self.hints is None:
            return ""
        return "\n".join(f"{STEP_NAMES[i]}: {self.hints.step(i + 1)}" for i in range(3)
                         if self.hints.step(i + 1))

    def __str__(self) -> str:
        return self.message

    def _render_traceback_(self) -> list[str]:
        """What IPython shows instead of a traceback."""
        lines = [f"✗ {self.exercise}"]
        lines += _wrap(self.problem[:1].upper() + self.problem[1:])
        if self.hint:
            lines += _wrap(f"{self.hint_label}: {self.hint}")
        if self.next_step:
            lines += _wrap(self.next_step)
        return lines


def _wrap(text: str) -> list[str]:
    return [line for paragraph in text.split("\n")
            for line in (textwrap.wrap(paragraph, 96, subsequent_indent="  ") or [""])]


def fail(exercise: str, problem: str, hint: str | None = None, *, concept: str | None = None,
         api: str | None = None):
    """Stop the check with a friendly verdict (and no chained traceback).

    `problem` says what is wrong in the learner's terms and never gives the fix. `hint` is the
    code step for this mistake; `concept` and `api` the sharper first and second steps, if
    this mistake has them. Missing steps come from the exercise's registered ones.
    """
    entry = _EXERCISES.get(exercise)
    if entry is None:  # an exercise without a ladder: the one hint, as before
        raise ExerciseFailed(exercise, problem, hint) from None
    hints = entry.hints.merged(concept, api, hint)
    entry.shown = min(entry.shown + 1, len(STEP_NAMES))
    entry.last = hints
    _last_failed[:] = [exercise]
    raise ExerciseFailed(exercise, problem, hints, entry.shown, entry.check) from None


def passed(exercise: str, detail: str) -> None:
    """Print the good news (and return nothing, so a notebook cell shows it once)."""
    print(f"✓ {exercise}: passed. {detail}")
