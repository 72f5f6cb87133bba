"""Your FastAPI app with the pitfall of notebook 05: a blocking query in an `async def` route.

    python -m asgi_lab experiment blocking asgi_lab.apps.own.blocking_route:app --path /slow --path /hello
    python -m asgi_lab experiment blocking asgi_lab.apps.own.blocking_route:fixed_app --path /slow --path /hello

`app`'s `/slow` calls `sqlite3` directly inside `async def`: the event loop's thread waits for
SQLite, and every other request on the server (`/hello` too) waits with it. `fixed_app`'s
`/slow` runs the same function with `await asyncio.to_thread(...)`: a worker thread waits for
SQLite, the loop runs on. FastAPI would also run a plain `def` route in its thread pool; the
mistake is the `async def` that blocks.

The report covers as many orders as take about `SLOW_MS` milliseconds on this machine
(timed once at startup, in the lifespan). Each call opens its own `sqlite3` connection: a
connection is used by one thread at a time. SQLite only (the file of `asgi_lab.db`).
"""

import asyncio
import contextlib
import sqlite3

from fastapi import FastAPI
from fastapi.responses import PlainTextResponse

from asgi_lab import db
from asgi_lab.db import shop

SLOW_MS = 250.0
"""About how long the report of `/slow` takes, in milliseconds."""


@contextlib.asynccontextmanager
async def lifespan(app):
    url = await asyncio.to_thread(db.ensure_shop)
    app.state.latest = shop.ORDERS - min(await asyncio.to_thread(db.rows_for, SLOW_MS), shop.ORDERS)
    app.state.path = shop.sqlite_path(url)
    yield


def top_customer(path, latest: int) -> str:
    conn = sqlite3.connect(path)
    try:
        row = conn.execute(shop.REPORT.format(p="?"), (latest,)).fetchone()  # waits for SQLite
    finally:
        conn.close()
    return f"{row[0]} spent {row[3] / 100:.2f}\n"


app = FastAPI(lifespan=lifespan)


@app.get("/slow", response_class=PlainTextResponse)
async def slow():
    return top_customer(app.state.path, app.state.latest)  # blocks the event loop


@app.get("/hello", response_class=PlainTextResponse)
async def hello():
    return "Hello, world!\n"


fixed_app = FastAPI(lifespan=lifespan)


@fixed_app.get("/slow", response_class=PlainTextResponse)
async def slow_fixed():
    return await asyncio.to_thread(top_customer, fixed_app.state.path, fixed_app.state.latest)


@fixed_app.get("/hello", response_class=PlainTextResponse)
async def hello_fixed():
    return "Hello, world!\n"
