"""Small apps in the frameworks people use at work, to trace and load like your own.

- `starlette_app:app`: two routes behind CORS and GZip middleware (the onion's example);
- `fastapi_app:app`: the same in FastAPI, plus an SSE stream at `/events`;
- `flask_app:app`: the same in Flask, behind werkzeug's `ProxyFix` (a WSGI middleware),
  plus an SSE stream at `/events` (a generator: one worker thread per client);
- `django_app:application` (ASGI) and `django_app:wsgi_application` (WSGI): one Django
  project with its settings in code, no files.

The SSE streams send `data: SEQ DUE SENT` like `asgi_lab/apps/sse.py`, so the load
generator can time each event (`?interval=` seconds between events, `?limit=` events).

    python -m asgi_lab trace asgi_lab.apps.frameworks.fastapi_app:app --onion \\
        --request "GET / -H 'accept-encoding: gzip' -H 'origin: http://example.org'"
"""

#: The page both "/" routes return: long enough for GZipMiddleware (500 bytes at least).
PAGE = ("<!doctype html><title>asgi_lab</title>\n" +
        "<p>Every message passes each middleware layer on its way in and out.</p>\n" * 12)
