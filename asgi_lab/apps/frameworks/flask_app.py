"""The same app in Flask, behind werkzeug's ProxyFix (a WSGI middleware), plus SSE.

    python -m asgi_lab wsgi asgi_lab.apps.frameworks.flask_app:app --threads 32 --port 8001
    python -m asgi_lab load sse http://127.0.0.1:8001/events --clients 100 --duration 5

The SSE stream is a generator: each client holds one worker thread for as long as it stays.

And what a Flask app does at work, for `tests/test_frameworks.py` (our server and gunicorn
alike): a stream that reads the request inside its generator (`stream_with_context`,
`/stream`), a file with `send_file` (`/file`, Range requests included), and an upload
(`POST /upload`, the size and SHA-256 of the file it got).
"""

import hashlib
import os
import time

from flask import Flask, Response, request, send_file, stream_with_context
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


@app.get("/stream")
def stream():
    """The generator runs after the view returned: `stream_with_context` keeps the request
    context alive for it, so it may still read `request.args`."""
    def parts():
        for i in range(int(request.args.get("chunks", 5))):
            yield f"{request.args.get('name', 'chunk')} {i}\n"

    return Response(stream_with_context(parts()), mimetype="text/plain")


#: The file `/file` sends: the chat page shipped with the package.
SENT_FILE = os.path.join(os.path.dirname(os.path.dirname(__file__)), "static", "chat.html")


@app.get("/file")
def file():
    return send_file(SENT_FILE, mimetype="text/html", conditional=True)


@app.post("/upload")
def upload():
    """A multipart upload: werkzeug spools a large file to disk while parsing."""
    uploaded = request.files["file"]
    digest, size = hashlib.sha256(), 0
    while chunk := uploaded.stream.read(1 << 16):
        digest.update(chunk)
        size += len(chunk)
    return {"name": uploaded.filename, "size": size, "sha256": digest.hexdigest()}
