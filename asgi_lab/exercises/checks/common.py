"""What every check shares: calling an app once, explaining what went wrong, running
our servers quietly for a check."""

from __future__ import annotations

import logging

from ...background import serve_in_background
from ..feedback import fail
from ..harness import NotAsync, describe_exception, http_request, run


def require_callable(exercise: str, app, what: str = "app") -> None:
    if not callable(app):
        fail(exercise, f"the {what} you passed is a {type(app).__name__}, not a function.",
             f"pass the {what} itself: check(my_{what}), not check(my_{what}())")


def unawaited_note(unawaited: list[str]) -> str:
    names = ", ".join(sorted(set(unawaited)))
    return (f"Python warned that a coroutine was never awaited ({names}): a send(...) or "
            "receive() without `await` does nothing at all")


def explain_http(exercise: str, result, unawaited: list[str], hint: str) -> None:
    """Fail with the most useful explanation of what went wrong in one HTTP exchange."""
    if result.problems:
        fail(exercise, result.problems[0], hint)
    if result.error is not None:
        error = result.error
        if isinstance(error, NotAsync):
            fail(exercise, f"{error}.", "write `async def app(scope, receive, send):`")
        fail(exercise, f"your app raised {describe_exception(error)}.", hint)
    if unawaited and (result.status is None or result.timed_out):
        fail(exercise, unawaited_note(unawaited) + ", so your response was never sent.",
             "write `await send({...})` and `await receive()`")
    if result.timed_out:
        fail(exercise, "your app sent nothing more for 2 s and did not finish its response.",
             "the last http.response.body must have more_body=False (or leave more_body out)")
    if result.status is None:
        fail(exercise, "your app returned without sending http.response.start.", hint)
    if not result.driver.complete:
        fail(exercise, "your app returned before its response was complete: the last "
                       "http.response.body must have more_body=False.", hint)


def http_exchange(app, **request) -> tuple:
    outcome = run(lambda: http_request(app, **request))
    return outcome.value, outcome.unawaited


def describe_log(records: list[logging.LogRecord]) -> str:
    for record in records:
        if record.exc_info and record.exc_info[1] is not None:
            return f"your app raised {describe_exception(record.exc_info[1])}"
    return f"the server said: {records[0].getMessage()}" if records else ""


def serve(app, name: str, **settings):
    return serve_in_background(app, name=f"exercise:{name}", lifespan=settings.pop("lifespan", "off"),
                               access_log=False, timeout_graceful_shutdown=0.5, **settings)
