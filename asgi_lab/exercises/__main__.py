"""Grade a submission from the command line: run one check, exit 0 if it passes, 1 if not.

    python -m asgi_lab.exercises sse submissions/alice.py:app
    python -m asgi_lab.exercises wsgi_middleware mymodule:request_id_middleware

The first argument names the check (`check_` optional); the second is `module:attribute` or
`path/to/file.py:attribute`. The verdict is the same plain-words message a notebook shows.

A teacher grades a whole class (a folder of student notebooks, see `grade.py`) with

    python -m asgi_lab.exercises grade submissions/ --csv grades.csv
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
from pathlib import Path

from . import checks
from ..cli import import_app


def load(target: str):
    """`pkg.module:name`, or `path/to/file.py:name` for a file that is not on sys.path."""
    location, _, name = target.rpartition(":")
    if location.endswith(".py"):
        spec = importlib.util.spec_from_file_location(Path(location).stem, location)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        if not hasattr(module, name):
            raise SystemExit(f"error: {location} has no attribute {name!r}")
        return getattr(module, name)
    return import_app(target)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["grade"]:
        from .grade import main as grade
        return grade(argv[1:])
    names = sorted(name[len("check_"):] for name in checks.__all__ if name.startswith("check_"))
    parser = argparse.ArgumentParser(prog="python -m asgi_lab.exercises",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("check", help="one of: " + ", ".join(names) + " (or `grade DIR`: a class)")
    parser.add_argument("target", help="module:attribute or file.py:attribute")
    parser.add_argument("--all-hints", action="store_true",
                        help="after a failure, print all three hint steps (for a teacher)")
    args = parser.parse_args(argv)
    name = args.check.removeprefix("check_")
    if name not in names:
        parser.error(f"no check named {args.check!r}; choose one of: {', '.join(names)}")
    try:
        getattr(checks, "check_" + name)(load(args.target))
    except checks.ExerciseFailed as failed:
        print("\n".join(failed._render_traceback_()))
        if args.all_hints and failed.all_hints:
            print("All hints:\n" + failed.all_hints)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
