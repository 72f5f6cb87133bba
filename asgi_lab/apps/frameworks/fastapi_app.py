"""The same app in FastAPI (CORS and GZip middleware), plus an SSE stream at `/events`.

    python -m asgi_lab asgi asgi_lab.apps.frameworks.fastapi_app:app --port 8000
    python -m asgi_lab load sse http://127.0.0.1:8000/events --clients 100 --duration 5

And what a FastAPI app does at work, for `tests/test_frameworks.py` to run against our server
and uvicorn alike: JSON in and out with validation (`POST /items`, 422 on a bad body), a
`StreamingResponse` (`/stream`), a WebSocket that the app closes with its own code (`/ws`),
state set by the lifespan and read by a request (`/state`), a background task that runs after
the response (`POST /tasks`, `GET /tasks`), and an `EventSourceResponse` from `sse-starlette`
that notices the client leaving (`/sse`, `GET /sse/disconnects`).
"""

import asyncio
import time
from contextlib import asynccontextmanager

from fastapi import BackgroundTasks, FastAPI, Request, WebSocket, WebSocketDisconnect
from fastapi.middleware.cors import CORSMiddleware
from fastapi.middleware.gzip import GZipMiddleware
from fastapi.responses import HTMLResponse, PlainTextResponse, StreamingResponse
from pydantic import BaseModel

from . import PAGE

WS_CLOSE_CODE = 4001
"""The code `/ws` closes with when told "bye": 4000-4999 are for applications (RFC 6455 §7.4.2)."""


@asynccontextmanager
async def lifespan(app):
    """ASGI lifespan, FastAPI's way: what this yields is copied into every request's
    `request.state` (the lifespan scope's "state", ASGI lifespan spec 2.3)."""
    yield {"greeting": "set in lifespan", "started_at": time.time()}


app = FastAPI(lifespan=lifespan)
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


class Item(BaseModel):
    name: str
    price: float
    quantity: int = 1


@app.post("/items")
async def create_item(item: Item):
    """JSON in, JSON out; a body that does not fit `Item` gets FastAPI's 422."""
    return {"name": item.name, "total": item.price * item.quantity}


@app.get("/stream")
async def stream(chunks: int = 5):
    async def parts():
        for i in range(chunks):
            yield f"chunk {i}\n"
            await asyncio.sleep(0.01)

    return StreamingResponse(parts(), media_type="text/plain")


@app.websocket("/ws")
async def websocket_echo(websocket: WebSocket):
    """Echo text; "bye" makes the app close with its own code."""
    await websocket.accept()
    try:
        while True:
            text = await websocket.receive_text()
            if text == "bye":
                await websocket.close(code=WS_CLOSE_CODE, reason="bye from the app")
                return
            await websocket.send_text(text)
    except WebSocketDisconnect:
        pass


@app.get("/state")
async def state(request: Request):
    return {"greeting": request.state.greeting}


TASKS_DONE: list[str] = []


@app.post("/tasks", status_code=202)
async def add_task(token: str, background_tasks: BackgroundTasks):
    """Answer 202 at once; the task runs after the response was sent."""
    async def record(token: str) -> None:
        await asyncio.sleep(0.05)
        TASKS_DONE.append(token)

    background_tasks.add_task(record, token)
    return {"accepted": token}


@app.get("/tasks")
async def tasks_done():
    return TASKS_DONE


SSE_DISCONNECTS: list[str] = []


@app.get("/sse")
async def sse(request: Request, client: str = "anonymous", interval: float = 0.1):
    """sse-starlette's `EventSourceResponse`: events until the client leaves; the generator
    is cancelled then (its `finally` runs), which it records for `/sse/disconnects`."""
    from sse_starlette.sse import EventSourceResponse

    async def events():
        seq = 0
        try:
            while True:
                seq += 1
                yield {"id": str(seq), "data": f"{client} {seq}"}
                await asyncio.sleep(interval)
        finally:
            SSE_DISCONNECTS.append(client)

    return EventSourceResponse(events())


@app.get("/sse/disconnects")
async def sse_disconnects():
    return SSE_DISCONNECTS
