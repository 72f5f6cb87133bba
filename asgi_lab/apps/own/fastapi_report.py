"""Your FastAPI app: the same live report as `flask_report.py`, on coroutines (ASGI).

    uvicorn asgi_lab.apps.own.fastapi_report:app --host 127.0.0.1 --port 8002
    python -m asgi_lab asgi asgi_lab.apps.own.fastapi_report:app --port 8002
    python -m asgi_lab load sse "http://127.0.0.1:8002/events?interval=0.5" --clients 20 --duration 5

The routes and the event format are those of `flask_report.py`. The ASGI way: the stream is
an async generator, and while it waits (for the next tick, or for the database) the event
loop's one thread serves everyone else. The query goes through an async driver
(`aiosqlite`, or `psycopg.AsyncConnection` when `ASGI_LAB_DB` is a PostgreSQL URL): one
connection per stream, opened when the stream starts and closed when it ends, so `await`
gives the loop back while the database works.
"""

import asyncio
import contextlib
import time

from fastapi import FastAPI
from fastapi.responses import PlainTextResponse, StreamingResponse

from asgi_lab import db



@contextlib.asynccontextmanager
async def lifespan(app):
    """Startup: create the shop if needed and time the report once (`db.rows_for` then only
    multiplies), both blocking, so in a thread rather than on the loop."""
    await asyncio.to_thread(db.rows_per_ms)
    yield


app = FastAPI(lifespan=lifespan)


async def top_customer(conn, ms: float) -> str:
    """The report, through the async driver: awaiting it frees the loop."""
    name, _region, _orders, spent = await db.report_async(conn, db.rows_for(ms))
    return f"{name} spent {spent / 100:.2f}"


@app.get("/ready", response_class=PlainTextResponse)
async def ready():
    return "ready"


@app.get("/report", response_class=PlainTextResponse)
async def report(ms: float = 5):
    async with db.async_connection() as conn:
        return await top_customer(conn, ms) + "\n"


@app.get("/events")
async def events(interval: float = 1.0, ms: float = 5, limit: int = 0):
    async def stream():
        async with db.async_connection() as conn:
            due = time.time()
            seq = 0
            while not limit or seq < limit:
                seq += 1
                due += interval
                await asyncio.sleep(max(0.0, due - time.time()))  # wait for the next tick
                answer = await top_customer(conn, ms)             # the query: the loop runs on
                yield f": {answer}\nid: {seq}\ndata: {seq} {due:.6f} {time.time():.6f}\n\n"

    return StreamingResponse(stream(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache"})
