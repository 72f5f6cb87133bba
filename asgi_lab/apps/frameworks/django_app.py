"""A Django project in one file: settings in code, two views, ASGI and WSGI handlers.

    python -m asgi_lab asgi asgi_lab.apps.frameworks.django_app:application
    python -m asgi_lab wsgi asgi_lab.apps.frameworks.django_app:wsgi_application

Its middleware (settings.MIDDLEWARE) run inside Django's handler: the server cannot see
them one by one (see `asgi_lab/onion.py`).
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
from django.http import HttpResponse  # noqa: E402
from django.urls import path  # noqa: E402

from . import PAGE  # noqa: E402


def page(request):
    return HttpResponse(PAGE)


def hello(request):
    return HttpResponse("Hello, world!", content_type="text/plain")


urlpatterns = [path("", page), path("hello", hello)]

application = ASGIHandler()
wsgi_application = WSGIHandler()
