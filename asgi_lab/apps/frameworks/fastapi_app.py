"""The same app in FastAPI (CORS and GZip middleware), plus an SSE stream at `/events`.

    python -m asgi_lab asgi asgi_lab.apps.frameworks.fastapi_app:app --port 8000
    python -m asgi_lab load sse http://127.0.0.1:8000/events --clients 100 --duration 5
"""

import asyncio
import time

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from fastapi.middleware.gzip import GZipMiddleware
from fastapi.responses import HTMLResponse, PlainTextResponse, StreamingResponse

from . import PAGE

app = FastAPI()
app.add_middleware(GZipMiddleware, minimum_size=500)
app.add_middleware(CORSMiddleware, allow_origins=["*"])  # added last: the outer one


@app.get("/", response_class=HTMLResponse)
async def page():
    return PAGE


@app.get("/hello", response_class=PlainTextResponse)
async def hello():
    return "Hello, world!"


@app.get("/events")
async def events(interval: float = 1.0, limit: int = 0):
    """Server-Sent Events: `data: SEQ DUE SENT`, one every `interval` s (`limit` 0: forever)."""
    async def stream():
        due = time.time()
        seq = 0
        while not limit or seq < limit:
            seq += 1
            due += interval
            await asyncio.sleep(max(0.0, due - time.time()))
            yield f"id: {seq}\ndata: {seq} {due:.6f} {time.time():.6f}\n\n"

    return StreamingResponse(stream(), media_type="text/event-stream")
