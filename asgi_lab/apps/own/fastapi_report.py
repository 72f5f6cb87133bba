"""Your FastAPI app: the same live report as `flask_report.py`, on coroutines (ASGI).

    uvicorn asgi_lab.apps.own.fastapi_report:app --host 127.0.0.1 --port 8002
    python -m asgi_lab asgi asgi_lab.apps.own.fastapi_report:app --port 8002
    python -m asgi_lab load sse "http://127.0.0.1:8002/events?interval=0.5" --clients 20 --duration 5

The routes and the event format are those of `flask_report.py`. The ASGI way: the stream is
an async generator, and while it waits for the next tick the event loop's one thread serves
everyone else.

The query is the very same call as in Flask, `db.report` through the blocking driver
(`sqlite3`, or `psycopg` when `ASGI_LAB_DB` is a PostgreSQL URL), awaited with
`asyncio.to_thread`: a thread of the loop's default executor (at most `min(32, cores + 4)`
threads, CPython docs, `ThreadPoolExecutor`) runs it on that thread's own connection, and the
loop runs on. So a stream borrows a thread for the milliseconds of its query, where the Flask
stream holds one for as long as the client stays.

Why not `aiosqlite`? It would do as well for the loop, and `blocking_loop` measures it; but it
runs each connection on a thread of its own, so a connection per stream costs a thread per
stream again, and one connection shared by every stream makes all their queries wait in one
line.
"""

import asyncio
import contextlib
import time

from fastapi import FastAPI
from fastapi.responses import PlainTextResponse, StreamingResponse

from asgi_lab import db

ORDERS = 2000
"""The report covers the latest 2000 orders unless `?orders=` says otherwise (as in Flask)."""


@contextlib.asynccontextmanager
async def lifespan(app):
    """Startup: create the shop if needed (blocking work: in a thread, not on the loop)."""
    await asyncio.to_thread(db.ensure_shop)
    yield


app = FastAPI(lifespan=lifespan)


def top_customer(orders: int) -> str:
    """The report, through the blocking driver, on the calling thread's connection."""
    name, _region, _orders, spent = db.report(db.thread_connection(), orders)
    return f"{name} spent {spent / 100:.2f}"


@app.get("/ready", response_class=PlainTextResponse)
async def ready():
    return "ready"


@app.get("/report", response_class=PlainTextResponse)
async def report(orders: int = ORDERS):
    return await asyncio.to_thread(top_customer, orders) + "\n"


@app.get("/events")
async def events(interval: float = 1.0, orders: int = ORDERS, limit: int = 0):
    async def stream():
        due = time.time()
        seq = 0
        while not limit or seq < limit:
            seq += 1
            due += interval
            await asyncio.sleep(max(0.0, due - time.time()))           # wait for the next tick
            answer = await asyncio.to_thread(top_customer, orders)     # the query, off the loop
            yield f": {answer}\nid: {seq}\ndata: {seq} {due:.6f} {time.time():.6f}\n\n"

    return StreamingResponse(stream(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache"})
