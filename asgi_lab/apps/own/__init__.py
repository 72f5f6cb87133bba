"""Stand-ins for *your own* apps, written the way a framework user writes them.

Two pairs, on the course's shop database (`asgi_lab.db`, SQLite by default):

- `flask_report.py` and `fastapi_report.py`: the same endpoint in Flask (WSGI, a thread per
  stream) and in FastAPI (ASGI, a coroutine per stream, the query in `asyncio.to_thread`).
  `GET /events` streams a fresh "top customer" report every interval, each one the same real
  query through `sqlite3`; `GET /report` answers once.
  Notebook 03 serves them with ordinary commands (gunicorn, uvicorn, our servers) and loads
  them side by side with `asgi_lab.load`.
- `blocking_route.py`: a FastAPI app whose `async def` route runs the query through `sqlite3`
  (it blocks the event loop) and `fixed_app`, the same route awaiting
  `asyncio.to_thread`. `python -m asgi_lab experiment blocking` finds the first, and clears
  the second.

Nothing here is imported by the servers: each module is a plain `MODULE:ATTR` to serve.
"""
