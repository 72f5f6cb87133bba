"""Hello, world: the smallest complete app, once for each interface.

    python -m asgi_lab asgi asgi_lab.apps.hello:app
    python -m asgi_lab wsgi asgi_lab.apps.hello:wsgi_app
"""

BODY = b"Hello, world!"
HEADERS = [(b"content-type", b"text/plain"), (b"content-length", str(len(BODY)).encode())]


async def app(scope, receive, send):
    """ASGI: two messages, http.response.start then http.response.body."""
    if scope["type"] != "http":
        return  # lifespan: nothing to set up (returning tells the server so)
    await send({"type": "http.response.start", "status": 200, "headers": HEADERS})
    await send({"type": "http.response.body", "body": BODY})


def wsgi_app(environ, start_response):
    """WSGI: one call, one response."""
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(BODY)))])
    return [BODY]
