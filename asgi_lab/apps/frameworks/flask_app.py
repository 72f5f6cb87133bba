"""The same app in Flask, behind werkzeug's ProxyFix (a WSGI middleware), plus SSE.

    python -m asgi_lab wsgi asgi_lab.apps.frameworks.flask_app:app --threads 32 --port 8001
    python -m asgi_lab load sse http://127.0.0.1:8001/events --clients 100 --duration 5

The SSE stream is a generator: each client holds one worker thread for as long as it stays.
"""

import time

from flask import Flask, Response, request
from werkzeug.middleware.proxy_fix import ProxyFix

from . import PAGE

app = Flask(__name__)
app.wsgi_app = ProxyFix(app.wsgi_app)  # Flask's documented way to add WSGI middleware


@app.get("/")
def page():
    return PAGE


@app.get("/hello")
def hello():
    return Response("Hello, world!", mimetype="text/plain")


@app.get("/events")
def events():
    """Server-Sent Events: `data: SEQ DUE SENT`, one every `interval` s (`limit` 0: forever)."""
    interval = float(request.args.get("interval", 1.0))
    limit = int(request.args.get("limit", 0))

    def stream():
        due = time.time()
        seq = 0
        while not limit or seq < limit:
            seq += 1
            due += interval
            time.sleep(max(0.0, due - time.time()))
            yield f"id: {seq}\ndata: {seq} {due:.6f} {time.time():.6f}\n\n"

    return Response(stream(), mimetype="text/event-stream")
