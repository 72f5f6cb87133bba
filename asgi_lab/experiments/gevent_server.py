"""A WSGI app on gevent: the chapter's monkey-patching escape, in a process of its own.

    python -m asgi_lab.experiments.gevent_server asgi_lab.apps.sse:wsgi_app --port 0

`monkey.patch_all()` must run before anything else imports `socket`, `time` or `threading`:
it swaps their blocking functions for ones that park the current *greenlet* and switch to
gevent's hub (a libev/libuv event loop). The app stays ordinary blocking WSGI code
(`time.sleep(delay)` between two events), yet one OS thread serves every client.

What that costs (measured by `asgi_lab/experiments/stall.py`): only what the patches reach
cooperates. A call that blocks inside C (a database driver waiting on its own socket, a
library's `sleep()`, a long computation) never returns to the hub, and every other client
waits for it, exactly like a blocking call inside an `async def` on asyncio.

Prints `serving WSGI app on http://127.0.0.1:PORT` once it listens, as our own servers do, so
the experiment runner can bind port 0. SIGTERM stops it.
"""

from gevent import monkey

monkey.patch_all()  # first, before the imports below

import argparse  # noqa: E402
import importlib  # noqa: E402
import signal  # noqa: E402
import sys  # noqa: E402

import gevent  # noqa: E402
from gevent.pywsgi import WSGIServer  # noqa: E402

BACKLOG = 2048


def load_app(target: str):
    """`package.module:attribute` -> the WSGI callable."""
    module_name, _, attribute = target.partition(":")
    return getattr(importlib.import_module(module_name), attribute or "app")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m asgi_lab.experiments.gevent_server",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("app", help="a WSGI app, module:attribute")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args(argv)
    # log=None: no access log; error_log=None: pywsgi would print a traceback for each
    # client that leaves mid-stream (the write fails; that is how the greenlet learns it).
    server = WSGIServer((args.host, args.port), load_app(args.app), log=None, error_log=None,
                        backlog=BACKLOG)
    server.start()
    host, port = server.address[:2]
    print(f"serving WSGI app on http://{host}:{port} with gevent", flush=True)
    gevent.signal_handler(signal.SIGTERM, server.stop, 1)
    server.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main())
