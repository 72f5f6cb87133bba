"""Find the application the command line names, and check it is the kind the server speaks.

    app = load_app("myproject.main:app", interface="asgi")            # an object in a module
    app = load_app("myproject.main:create_app", interface="asgi", factory=True)  # call it first

Each way this can go wrong raises `LoadError` with one sentence and its own exit code, so a
script (or a student) can tell "no such module" from "no such attribute" from "not an app":
see `EXIT_CODES`. The command line prints the sentence and exits with the code.

What `detect_interface()` can and cannot tell
---------------------------------------------
An ASGI 3 app is "an asynchronous callable" taking `(scope, receive, send)` (ASGI spec,
"Applications"); a WSGI app is a callable taking `(environ, start_response)` that returns an
iterable (PEP 3333, "The Application/Framework Side"). Python cannot tell the two apart for
certain without calling them, so the check reads what it can:

- a coroutine function (`async def`), or an object whose `__call__` is one (Starlette,
  FastAPI, Django's `ASGIHandler`, asgiref's adapters): ASGI;
- a plain function, or an object whose `__call__` is a plain method, with exactly two
  positional parameters (Flask, Django's `WSGIHandler`, werkzeug middleware): WSGI;
- anything else is "unknown" and served as asked: a plain function that *returns* an
  awaitable, `functools.partial` or decorator wrappers that hide `async def` (a wrapper
  without `functools.wraps` or `inspect.markcoroutinefunction`), a `__call__(self, *args)`,
  a C callable without a signature, or an ASGI 2 class (`App(scope)`, which this server does
  not speak: it then fails at the first request).

So the check refuses only what it recognises as the other interface: it never refuses an app
that might be right.
"""

from __future__ import annotations

import importlib
import inspect
import os
import reprlib
import sys
import traceback

EXIT_LIFESPAN_FAILED = 3
EXIT_IMPORT = 4
EXIT_ATTRIBUTE = 5
EXIT_NOT_CALLABLE = 6
EXIT_WRONG_INTERFACE = 7
EXIT_ADDRESS_IN_USE = 8
EXIT_PERMISSION = 9
EXIT_BIND_FAILED = 10
EXIT_TLS = 11

EXIT_CODES = {
    EXIT_LIFESPAN_FAILED: "the app's lifespan startup failed",
    EXIT_IMPORT: "the module could not be imported",
    EXIT_ATTRIBUTE: "the module has no such attribute",
    EXIT_NOT_CALLABLE: "the object (or what the factory returned) is not callable",
    EXIT_WRONG_INTERFACE: "a WSGI app given to the ASGI server, or the reverse",
    EXIT_ADDRESS_IN_USE: "the address is already in use",
    EXIT_PERMISSION: "permission denied (a port below 1024, or a directory)",
    EXIT_BIND_FAILED: "the address could not be bound for another reason",
    EXIT_TLS: "the TLS certificate or key could not be loaded",
}
"""Exit code -> what it means. 1 is an unexpected error, 2 a command-line usage error (argparse)."""

EXPECTED = {
    "asgi": "an ASGI 3 app: async def app(scope, receive, send)",
    "wsgi": "a WSGI app: def app(environ, start_response) returning an iterable",
}


class LoadError(Exception):
    """The app could not be loaded, or is not what the server speaks. `str()` is one sentence."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def add_app_dir(app_dir: str) -> None:
    """Put `app_dir` first on `sys.path`, like `python script.py` does for the script's folder.

    The default, "", is the current directory (how uvicorn and gunicorn find `main:app`).
    """
    entry = "" if app_dir in ("", ".") else os.path.abspath(app_dir)
    if entry not in sys.path and (entry or "." not in sys.path):
        sys.path.insert(0, entry)


def import_from_string(target: str):
    """"package.module:attr.sub" -> the object. Raises LoadError."""
    module_name, _, attr = target.partition(":")
    if not module_name or not attr:
        raise LoadError(f"app must look like MODULE:ATTR, got {target!r}", EXIT_IMPORT)
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name is not None and (exc.name == module_name
                                     or module_name.startswith(f"{exc.name}.")):
            raise LoadError(f"could not import module {module_name!r}: {exc}", EXIT_IMPORT) from None
        raise LoadError(_failed_inside(module_name, exc), EXIT_IMPORT) from None
    except Exception as exc:  # SyntaxError, or an exception raised while the module ran
        raise LoadError(_failed_inside(module_name, exc), EXIT_IMPORT) from None
    app = module
    for part in attr.split("."):
        try:
            app = getattr(app, part)
        except AttributeError:
            raise LoadError(f"module {module_name!r} has no attribute {attr!r}", EXIT_ATTRIBUTE) from None
    return app


def _failed_inside(module_name: str, exc: BaseException) -> str:
    """The module exists but raised while being imported: that is the user's code, so the
    message keeps the traceback's last frames (the file and line to fix)."""
    if isinstance(exc, SyntaxError):
        detail = "".join(traceback.format_exception_only(exc)).rstrip()
    else:  # the frames of the user's files, not importlib's
        frames = [frame for frame in traceback.extract_tb(exc.__traceback__)
                  if "importlib" not in frame.filename and frame.filename != __file__]
        detail = ("".join(traceback.format_list(frames[-3:]))
                  + "".join(traceback.format_exception_only(exc))).rstrip()
    return f"could not import module {module_name!r}: it raised {type(exc).__name__}\n{detail}"


def describe(obj) -> str:
    """A short name for what was found: `module.qualname` or the type's name."""
    target = obj if inspect.isfunction(obj) or inspect.isclass(obj) or inspect.ismethod(obj) else type(obj)
    module = getattr(target, "__module__", None) or "?"
    name = getattr(target, "__qualname__", None) or getattr(target, "__name__", None) or repr(obj)
    kind = "" if target is obj else "an instance of "
    return f"{kind}{module}.{name}"


def detect_interface(app) -> str | None:
    """"asgi", "wsgi", or None when it cannot tell (see the module docstring)."""
    if inspect.iscoroutinefunction(app):
        return "asgi"
    if inspect.isclass(app):
        return None  # calling a class builds an instance: ASGI 2, or a factory; cannot tell
    call = app if inspect.isfunction(app) or inspect.ismethod(app) else getattr(app, "__call__", None)
    if call is None:
        return None
    if inspect.iscoroutinefunction(call):
        return "asgi"
    if not (inspect.isfunction(call) or inspect.ismethod(call)):
        return None  # a builtin or a C extension: no reliable signature
    try:
        parameters = list(inspect.signature(call).parameters.values())
    except (TypeError, ValueError):
        return None
    positional = [p for p in parameters if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    if any(p.kind is p.VAR_POSITIONAL for p in parameters):
        return None
    required = [p for p in positional if p.default is p.empty]
    if len(required) == 2 and len(positional) >= 2:
        return "wsgi"
    return None


def check_app(app, interface: str, name: str = "the app") -> None:
    """Refuse an app that is not callable, or that is recognisably the other interface."""
    if not callable(app):
        raise LoadError(f"{name} is not callable: found {type(app).__name__} {reprlib.repr(app)}; "
                        f"expected {EXPECTED[interface]}", EXIT_NOT_CALLABLE)
    found = detect_interface(app)
    if found is not None and found != interface:
        signature = _signature_text(app)
        raise LoadError(f"found {'an ASGI' if found == 'asgi' else 'a WSGI'} app "
                        f"({describe(app)}{signature}); the {interface} server expects "
                        f"{EXPECTED[interface]}" + (" (use: python -m asgi_lab "
                                                    f"{found} ...)"), EXIT_WRONG_INTERFACE)


def _signature_text(app) -> str:
    call = app if inspect.isfunction(app) or inspect.ismethod(app) else getattr(app, "__call__", app)
    try:
        names = [p.name for p in inspect.signature(call).parameters.values()]
    except (TypeError, ValueError):
        return ""
    text = f"({', '.join(names)})"  # the names only: annotations make it unreadable
    prefix = "async def " if inspect.iscoroutinefunction(call) else "def "
    return f": {prefix}{getattr(call, '__name__', '__call__')}{text}"


def load_app(target: str, interface: str, factory: bool = False, app_dir: str = "") -> object:
    """Import `target`, call it if `factory`, check the result speaks `interface`."""
    add_app_dir(app_dir)
    app = import_from_string(target)
    if factory:
        if not callable(app):
            raise LoadError(f"--factory: {target} is not callable: found {type(app).__name__} "
                            f"{reprlib.repr(app)}; expected a function that returns the app",
                            EXIT_NOT_CALLABLE)
        try:
            app = app()
        except TypeError as exc:
            raise LoadError(f"--factory: calling {target} with no arguments failed: {exc}",
                            EXIT_NOT_CALLABLE) from None
    check_app(app, interface, f"what {target}() returned" if factory else target)
    return app
