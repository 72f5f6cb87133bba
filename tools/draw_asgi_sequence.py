"""Draw the README's picture: one POST through the ASGI server, as a sequence diagram.

    python tools/draw_asgi_sequence.py        # writes docs/images/asgi-sequence.png

A real run, not a drawing by hand: the echo app is served by `asgi_lab`'s ASGI server on a
free loopback port with a `Tracer`, one request is sent with `http.client`, and
`asgi_lab.viz.sequence_diagram` draws what the tracer recorded (the same picture notebook
02 shows). Times in the diagram are this run's; run it again after the server changes.
"""

from __future__ import annotations

import http.client
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

from asgi_lab import Tracer, serve_in_background  # noqa: E402
from asgi_lab.apps.echo import app  # noqa: E402
from asgi_lab.viz import sequence_diagram  # noqa: E402

OUT = Path(__file__).resolve().parent.parent / "docs" / "images" / "asgi-sequence.png"


def main() -> None:
    tracer = Tracer()
    with serve_in_background(app, kind="asgi", tracer=tracer) as server:
        client = http.client.HTTPConnection(server.host, server.port, timeout=5)
        client.request("POST", "/echo", body=b"hello, ASGI", headers={"content-type": "text/plain"})
        client.getresponse().read()
        client.close()
    fig = sequence_diagram(tracer, conn=1, title="POST /echo through the ASGI server",
                           lane_titles={"app": "ASGI app"})
    OUT.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(OUT, dpi=90, metadata={"Software": None})
    print(f"wrote {OUT.relative_to(OUT.parent.parent.parent)}")


if __name__ == "__main__":
    main()
