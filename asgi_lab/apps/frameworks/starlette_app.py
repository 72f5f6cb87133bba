"""A Starlette app behind CORS and GZip middleware: the middleware onion's example.

    python -m asgi_lab trace asgi_lab.apps.frameworks.starlette_app:app --onion \\
        --request "GET / -H 'accept-encoding: gzip' -H 'origin: http://example.org'"
"""

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.middleware.gzip import GZipMiddleware
from starlette.responses import HTMLResponse, PlainTextResponse
from starlette.routing import Route

from . import PAGE


async def page(request):
    return HTMLResponse(PAGE)


async def hello(request):
    return PlainTextResponse("Hello, world!")


async def echo(request):
    return PlainTextResponse(await request.body())


async def boom(request):
    raise RuntimeError("a bug in the endpoint")


app = Starlette(routes=[Route("/", page), Route("/hello", hello), Route("/echo", echo, methods=["POST"]),
                        Route("/boom", boom)],
                middleware=[Middleware(CORSMiddleware, allow_origins=["*"]),
                            Middleware(GZipMiddleware, minimum_size=500)])
