"""Your Flask app: a live report over Server-Sent Events, one real query per event (WSGI).

    gunicorn -k gthread --threads 32 -b 127.0.0.1:8001 asgi_lab.apps.own.flask_report:app
    python -m asgi_lab wsgi asgi_lab.apps.own.flask_report:app --threads 32 --port 8001
    python -m asgi_lab load sse "http://127.0.0.1:8001/events?interval=0.5" --clients 20 --duration 5

Routes (the same in `fastapi_report.py`):

- `GET /events?interval=1&orders=2000&limit=0`: every `interval` seconds, run the shop's
  report (who spent most over the latest `orders` orders: a join of four tables with a
  `GROUP BY` and a `sum()`), then send an event. The data line keeps
  the lab's stamp format, `data: SEQ DUE SENT`, so `asgi_lab.load.sse` can time each event;
  the report's answer rides in a comment line (`: Ada Lovelace spent 123.45`), which
  browsers' `EventSource` and the load generator skip. A real dashboard would send JSON.
- `GET /report?orders=2000`: the same report, once, as text.
- `GET /ready`: answers at once (for launchers that wait until a server is up).

The WSGI way: the stream is a generator, and the thread that runs it *is* the client's
worker for as long as the client stays. The query is a plain blocking `sqlite3` call on the
thread's own connection: it blocks that thread only, the other threads run on (`sqlite3`
releases the GIL while the database works). Between two events the thread waits for the
next tick in `time.sleep`: that sleep is the stream's schedule, not a stand-in for work.
"""

import time

from flask import Flask, Response, request

from asgi_lab import db

ORDERS = 2000
"""The report covers the latest 2000 orders unless `?orders=` says otherwise: a few
milliseconds of SQLite work, the same fixed amount of work in both apps."""

app = Flask(__name__)


def top_customer(orders: int) -> str:
    """The report, through the blocking driver, on this thread's connection."""
    name, _region, _orders, spent = db.report(db.thread_connection(), orders)
    return f"{name} spent {spent / 100:.2f}"


@app.get("/ready")
def ready():
    return Response("ready", mimetype="text/plain")


@app.get("/report")
def report():
    return Response(top_customer(int(request.args.get("orders", ORDERS))) + "\n", mimetype="text/plain")


@app.get("/events")
def events():
    interval = float(request.args.get("interval", 1.0))
    orders = int(request.args.get("orders", ORDERS))
    limit = int(request.args.get("limit", 0))

    def stream():
        due = time.time()
        seq = 0
        while not limit or seq < limit:
            seq += 1
            due += interval
            time.sleep(max(0.0, due - time.time()))  # wait for the next tick
            answer = top_customer(orders)                # the query: this thread waits for SQLite
            yield f": {answer}\nid: {seq}\ndata: {seq} {due:.6f} {time.time():.6f}\n\n"

    return Response(stream(), mimetype="text/event-stream", headers={"Cache-Control": "no-cache"})
