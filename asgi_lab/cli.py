"""The command line: `python -m asgi_lab asgi|wsgi MODULE:ATTR [options]`, uvicorn-style.

    python -m asgi_lab asgi asgi_lab.apps.hello:app --port 0
    python -m asgi_lab wsgi asgi_lab.apps.hello:wsgi_app --threads 32
    python -m asgi_lab trace myapp:app --request "GET /" --onion --out trace.json
    python -m asgi_lab load sse http://127.0.0.1:8000/events --clients 100 --duration 5

The server prints the address it actually listens on (useful with --port 0) and shuts down
gracefully on SIGINT or SIGTERM; a second SIGINT exits at once.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import logging
import signal
import sys

from .config import Config

LOG_LEVELS = ("critical", "error", "warning", "info", "debug")


def import_app(target: str):
    """"package.module:attr" -> the object. A readable error for each way it can go wrong."""
    module_name, _, attr = target.partition(":")
    if not module_name or not attr:
        raise SystemExit(f"error: app must look like MODULE:ATTR, got {target!r}")
    if "" not in sys.path and "." not in sys.path:
        sys.path.insert(0, "")  # like uvicorn: modules in the current directory can be served
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise SystemExit(f"error: could not import module {module_name!r}: {exc}")
    app = module
    for part in attr.split("."):
        try:
            app = getattr(app, part)
        except AttributeError:
            raise SystemExit(f"error: module {module_name!r} has no attribute {attr!r}")
    return app


def add_server_options(parser: argparse.ArgumentParser) -> None:
    defaults = Config()
    parser.add_argument("app", help="the application, as MODULE:ATTR")
    parser.add_argument("--host", default=defaults.host, help="address to bind (default: %(default)s)")
    parser.add_argument("--port", type=int, default=defaults.port,
                        help="port to bind; 0 picks a free one (default: %(default)s)")
    parser.add_argument("--root-path", default="", help="ASGI root_path / WSGI SCRIPT_NAME")
    parser.add_argument("--log-level", choices=LOG_LEVELS, default="info")
    parser.add_argument("--no-access-log", dest="access_log", action="store_false",
                        help="do not log a line per request")
    parser.add_argument("--timeout-keep-alive", type=float, default=defaults.timeout_keep_alive)
    parser.add_argument("--timeout-graceful-shutdown", type=float,
                        default=defaults.timeout_graceful_shutdown)
    parser.add_argument("--timeout-request-header", type=float,
                        default=defaults.timeout_request_header,
                        help="seconds to send a request head, or to go silent mid-body (default: %(default)s)")
    parser.add_argument("--max-header-size", type=int, default=defaults.max_header_bytes,
                        help="request line + headers, in bytes; more gets 431 (default: %(default)s)")
    parser.add_argument("--max-body-size", type=int, default=defaults.max_body_bytes,
                        help="request body, in bytes; more gets 413; 0: no limit (default: %(default)s)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m asgi_lab",
                                     description="asgi_lab: ASGI and WSGI servers for learning")
    commands = parser.add_subparsers(dest="command", required=True)

    asgi = commands.add_parser("asgi", help="serve an ASGI 3 application")
    add_server_options(asgi)
    asgi.add_argument("--lifespan", choices=("auto", "on", "off"), default="auto")
    asgi.add_argument("--ws-max-size", type=int, default=Config().ws_max_message_bytes,
                      help="largest WebSocket message, in bytes")
    asgi.add_argument("--ws-ping-interval", type=float, default=None,
                      help="send a keep-alive ping this often (seconds)")
    asgi.add_argument("--ws-ping-timeout", type=float, default=Config().ws_ping_timeout)

    wsgi = commands.add_parser("wsgi", help="serve a WSGI (PEP 3333) application")
    add_server_options(wsgi)
    wsgi.add_argument("--threads", type=int, default=Config().threads,
                      help="worker threads; 0 means one thread per connection (default: %(default)s)")
    wsgi.add_argument("--wsgi-upgrade", action="store_true",
                      help="NON-PORTABLE: offer environ['asgi_lab.upgrade'], which sends a 101 and "
                           "hands the app the raw socket (no other WSGI server knows it)")

    demo = commands.add_parser("demo", help="trace a GET and a POST through both servers; "
                                            "write sequence diagrams and a timeline (PNG)")
    demo.add_argument("--out", default="demo-output", help="folder for the PNG and JSON files")

    trace = commands.add_parser(
        "trace", help="serve your app with the tracer on, send it requests, write the trace "
                      "and sequence diagrams (PNG)",
        description="Serve MODULE:ATTR on 127.0.0.1 (a free port) with the tracer on, send each "
                    "--request on a connection of its own, write the trace and one sequence "
                    "diagram per request. A request reads like curl: "
                    "\"POST /echo -H 'content-type: text/plain' -d hello\" (-d @FILE reads a file).")
    trace.add_argument("app", help="the application, as MODULE:ATTR")
    trace.add_argument("--wsgi", action="store_true", help="it is a WSGI app (default: ASGI)")
    trace.add_argument("--request", action="append", default=[], metavar="'METHOD TARGET [-H ..] [-d ..]'",
                       help="a request to send (repeat for more; default: 'GET /')")
    trace.add_argument("--onion", action="store_true",
                       help="record every message at every middleware layer (Starlette, FastAPI, "
                            "Flask's wsgi_app chain); says so where a framework hides its stack")
    trace.add_argument("--out", default="trace.json",
                       help="the trace file; the summary and NAME-1.png, ... go beside it "
                            "(default: %(default)s)")
    trace.add_argument("--threads", type=int, default=4, help="WSGI worker threads (default: 4)")
    trace.add_argument("--timeout", type=float, default=5.0,
                       help="seconds to read a response before hanging up (a stream that never "
                            "ends); default: %(default)s")

    from .load.command import add_load_parser

    add_load_parser(commands)

    from .experiments.cli import add_experiment_parser

    add_experiment_parser(commands)
    return parser


def config_from(args: argparse.Namespace) -> Config:
    config = Config(host=args.host, port=args.port, root_path=args.root_path,
                    access_log=args.access_log, timeout_keep_alive=args.timeout_keep_alive,
                    timeout_graceful_shutdown=args.timeout_graceful_shutdown,
                    timeout_request_header=args.timeout_request_header,
                    max_header_bytes=args.max_header_size, max_body_bytes=args.max_body_size or None)
    if args.command == "asgi":
        config = config.replace(lifespan=args.lifespan, ws_max_message_bytes=args.ws_max_size,
                                ws_ping_interval=args.ws_ping_interval,
                                ws_ping_timeout=args.ws_ping_timeout)
    elif args.command == "wsgi":
        config = config.replace(threads=args.threads, wsgi_upgrade=args.wsgi_upgrade)
    return config


def setup_logging(level: str) -> None:
    logging.basicConfig(level=level.upper(), format="%(levelname)s:  %(message)s", stream=sys.stderr)


def run_asgi(app, config: Config) -> int:
    """Serve until SIGINT/SIGTERM. Returns the process exit code."""
    from .asgi.lifespan import LifespanFailure
    from .asgi.server import Server

    async def main() -> int:
        server = Server(app, config)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, server.request_shutdown)
        try:
            await server.start()
        except LifespanFailure as exc:
            logging.getLogger("asgi_lab.error").error("%s", exc)
            return 3
        print(f"asgi_lab: serving ASGI app on {server.url} (press CTRL+C to quit)", flush=True)
        await server.serve()
        return 0

    return asyncio.run(main())


def run_wsgi(app, config: Config) -> int:
    from .wsgi.server import WSGIServer

    server = WSGIServer(app, config)
    server.start()

    def ready() -> None:  # called once the signal handlers are in place
        print(f"asgi_lab: serving WSGI app on {server.url} with "
              f"{config.threads or 'one'} thread{'s' if config.threads != 1 else ''}"
              f"{'' if config.threads else ' per connection'} (press CTRL+C to quit)", flush=True)

    return server.serve_until_signal(ready)


def run_trace(args: argparse.Namespace) -> int:
    """`python -m asgi_lab trace MODULE:ATTR ...`: see `asgi_lab/trace_app.py`."""
    from .trace_app import BadRequestSpec, parse_request, report, trace_app

    try:
        requests = [parse_request(text) for text in args.request or ["GET /"]]
    except (BadRequestSpec, OSError) as exc:
        raise SystemExit(f"error: bad --request: {exc}")
    app = import_app(args.app)
    kind = "wsgi" if args.wsgi else "asgi"
    settings = {"threads": args.threads} if args.wsgi else {}
    run = trace_app(app, requests, kind=kind, onion=args.onion, out=args.out,
                    timeout=args.timeout, **settings)
    print(report(run))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "demo":
        from .demo import run_demo

        return run_demo(args.out)
    if args.command == "experiment":
        return args.run(args)
    if args.command == "trace":
        return run_trace(args)
    if args.command == "load":
        return args.run(args)
    setup_logging(args.log_level)
    config = config_from(args)
    app = import_app(args.app)
    if args.command == "asgi":
        return run_asgi(app, config)
    return run_wsgi(app, config)
