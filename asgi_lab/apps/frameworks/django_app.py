"""A Django project in one file: settings in code, a few views, ASGI and WSGI handlers.

    python -m asgi_lab asgi asgi_lab.apps.frameworks.django_app:application
    python -m asgi_lab wsgi asgi_lab.apps.frameworks.django_app:wsgi_application

Its middleware (settings.MIDDLEWARE) run inside Django's handler: the server cannot see
them one by one (see `asgi_lab/onion.py`).

For `tests/test_frameworks.py`: a sync view (`/sync`) and an async view (`/async`) under both
handlers (Django runs a sync view in a thread under ASGI, an async view in an event loop of
its own under WSGI), and streaming responses from a sync generator (`/stream`, for WSGI) and
an async one (`/astream`, for ASGI: Django warns when an ASGI server is given a sync one).
For `tests/test_blocking_app.py`: `/report`, the pitfall of notebook 05 in Django (a blocking
`sqlite3` query inside an async view), which `python -m asgi_lab experiment blocking` finds.
"""

from django.conf import settings

if not settings.configured:
    settings.configure(
        DEBUG=False,
        SECRET_KEY="asgi-lab-example-not-secret",
        ALLOWED_HOSTS=["127.0.0.1", "localhost"],
        ROOT_URLCONF=__name__,
        MIDDLEWARE=["django.middleware.security.SecurityMiddleware",
                    "django.middleware.common.CommonMiddleware",
                    "django.middleware.gzip.GZipMiddleware"],
        INSTALLED_APPS=[],
        DATABASES={},
    )

import django  # noqa: E402  (after the settings, as Django requires)

django.setup()

from django.core.handlers.asgi import ASGIHandler  # noqa: E402
from django.core.handlers.wsgi import WSGIHandler  # noqa: E402
import asyncio  # noqa: E402
import functools  # noqa: E402
import sqlite3  # noqa: E402
import threading  # noqa: E402

from django.http import HttpResponse, JsonResponse, StreamingHttpResponse  # noqa: E402
from django.urls import path  # noqa: E402

from . import PAGE  # noqa: E402


def page(request):
    return HttpResponse(PAGE)


def hello(request):
    return HttpResponse("Hello, world!", content_type="text/plain")


def sync_view(request):
    return JsonResponse({"view": "sync", "thread": threading.current_thread().name})


async def async_view(request):
    await asyncio.sleep(0.01)
    return JsonResponse({"view": "async", "in_event_loop": asyncio.get_running_loop() is not None})


def stream(request):
    chunks = int(request.GET.get("chunks", 5))
    return StreamingHttpResponse((f"chunk {i}\n" for i in range(chunks)), content_type="text/plain")


def astream(request):
    chunks = int(request.GET.get("chunks", 5))

    async def parts():
        for i in range(chunks):
            await asyncio.sleep(0.01)
            yield f"chunk {i}\n"

    return StreamingHttpResponse(parts(), content_type="text/plain")


@functools.cache
def _shop() -> tuple[str, int]:
    """The demo database's file and the first order of a report taking about 250 ms."""
    from asgi_lab import db
    from asgi_lab.db import shop

    return shop.sqlite_path(db.ensure_shop()), shop.ORDERS - min(db.rows_for(250), shop.ORDERS)


async def report(request):
    """A blocking query in an async view: the event loop waits for SQLite. Django's own ORM
    would refuse here (`SynchronousOnlyOperation`: "You cannot call this from an async
    context"); a raw driver does not, so nothing stops it. The fix is the usual one:
    `await asyncio.to_thread(...)`, or Django's `sync_to_async`."""
    from asgi_lab.db import shop

    path, latest = _shop()
    conn = sqlite3.connect(path)
    try:
        row = conn.execute(shop.REPORT.format(p="?"), (latest,)).fetchone()  # blocks the loop
    finally:
        conn.close()
    return HttpResponse(f"{row[0]} spent {row[3] / 100:.2f}\n", content_type="text/plain")


urlpatterns = [path("", page), path("hello", hello), path("sync", sync_view),
               path("async", async_view), path("stream", stream), path("astream", astream),
               path("report", report)]

application = ASGIHandler()
wsgi_application = WSGIHandler()
