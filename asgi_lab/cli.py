"""The command line: `python -m asgi_lab asgi|wsgi MODULE:ATTR [options]`, uvicorn-style.

    python -m asgi_lab asgi asgi_lab.apps.hello:app --port 0
    python -m asgi_lab wsgi asgi_lab.apps.hello:wsgi_app --threads 32
    python -m asgi_lab trace myapp:app --request "GET /" --onion --out trace.json
    python -m asgi_lab load sse http://127.0.0.1:8000/events --clients 100 --duration 5

The server prints the address it actually listens on (useful with --port 0) and shuts down
gracefully on SIGINT or SIGTERM; a second SIGINT exits at once.

Order of start-up, so that a mistake costs nothing: load and check the app (`loader.py`),
bind the socket, and only then run the app's lifespan startup. A port already in use is one
ERROR line and exit code 8 before the app ever started, so there is no startup to undo. Each
failure has its own exit code: see `loader.EXIT_CODES`.

Logging: only the `asgi_lab` loggers get a handler here (`asgi_lab.error`, `asgi_lab.access`);
the root logger is left to the app, so a framework's own log lines (Django's "Not Found") are
printed only if the app configured them.
"""

from __future__ import annotations

import argparse
import asyncio
import errno
import logging
import os
import signal
import socket
import sys

from . import __version__
from .config import Config
from .unix_socket import remove_socket_file
from .loader import (EXIT_ADDRESS_IN_USE, EXIT_BIND_FAILED, EXIT_LIFESPAN_FAILED,
                     EXIT_PERMISSION, EXIT_TLS, LoadError, import_from_string, load_app)

LOG_LEVELS = ("critical", "error", "warning", "info", "debug")


logger = logging.getLogger("asgi_lab.error")


def import_app(target: str):
    """"package.module:attr" -> the object, or SystemExit with one readable line (for the
    `trace` and `exercises` commands; the servers use `loader.load_app`, which also checks it)."""
    from .loader import add_app_dir

    add_app_dir("")
    try:
        return import_from_string(target)
    except LoadError as exc:
        raise SystemExit(f"error: {exc}")


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows every option's default, except on on/off flags, where it says nothing useful."""

    def _get_help_string(self, action: argparse.Action) -> str:
        if action.nargs == 0 or "default:" in action.help:  # a flag, or said in words
            return action.help
        if action.default == "":
            return f"{action.help} (default: none)"
        return super()._get_help_string(action)


def add_server_options(parser: argparse.ArgumentParser) -> None:
    """The options both servers share. Every one has help text; the formatter adds its default."""
    defaults = Config()
    parser.add_argument("app", help="the application, as MODULE:ATTR (with --factory: a function "
                                    "that returns it)")
    parser.add_argument("--factory", action="store_true",
                        help="MODULE:ATTR is a function with no arguments that returns the app "
                             "(default: MODULE:ATTR is the app itself)")
    parser.add_argument("--app-dir", default=".",
                        help="directory put first on sys.path before importing the app")
    parser.add_argument("--host", default=defaults.host, help="address to bind")
    parser.add_argument("--port", type=int, default=defaults.port,
                        help="port to bind; 0 picks a free one")
    parser.add_argument("--uds", default=None, metavar="PATH",
                        help="listen on this Unix domain socket instead of --host/--port; a "
                             "stale socket file there is removed first (default: TCP)")
    parser.add_argument("--ssl-certfile", default=None, metavar="FILE",
                        help="serve HTTPS (and WSS) with this certificate chain, PEM "
                             "(asgi_lab/tls.py; default: plain HTTP)")
    parser.add_argument("--ssl-keyfile", default=None, metavar="FILE",
                        help="the certificate's private key, PEM (default: in --ssl-certfile)")
    parser.add_argument("--ssl-keyfile-password", default=None, metavar="PASSWORD",
                        help="password of an encrypted --ssl-keyfile (default: none)")
    parser.add_argument("--root-path", default="", help="ASGI root_path / WSGI SCRIPT_NAME")
    parser.add_argument("--log-level", choices=LOG_LEVELS, default="info",
                        help="level of the asgi_lab loggers (never the root logger)")
    parser.add_argument("--no-access-log", dest="access_log", action="store_false",
                        help="do not log a line per request (default: one line per request)")
    parser.add_argument("--timeout-keep-alive", type=float, default=defaults.timeout_keep_alive,
                        help="seconds an idle keep-alive connection stays open")
    parser.add_argument("--timeout-graceful-shutdown", type=float,
                        default=defaults.timeout_graceful_shutdown,
                        help="seconds requests in flight get to finish at shutdown")
    parser.add_argument("--timeout-request-header", type=float,
                        default=defaults.timeout_request_header,
                        help="seconds to send a request head, or to go silent mid-body")
    parser.add_argument("--max-header-size", type=int, default=defaults.max_header_bytes,
                        help="request line + headers, in bytes; more gets 431")
    parser.add_argument("--max-body-size", type=int, default=defaults.max_body_bytes,
                        help="request body, in bytes; more gets 413; 0: no limit")
    parser.add_argument("--proxy-headers", action="store_true",
                        help="believe Forwarded (RFC 7239) and X-Forwarded-For/-Proto from "
                             "--forwarded-allow-ips peers: set the client address and scheme "
                             "(asgi_lab/proxy_headers.py; default: off)")
    parser.add_argument("--forwarded-allow-ips", default="127.0.0.1",
                        help="with --proxy-headers: comma-separated proxy addresses or "
                             "networks to trust, or '*' for any (a peer on a --uds Unix socket "
                             "is always trusted)")
    parser.add_argument("--reload", action="store_true",
                        help="restart the server when a .py file changes (asgi_lab/reload.py; "
                             "default: off)")
    parser.add_argument("--reload-dir", action="append", default=None, metavar="DIR",
                        help="with --reload: a directory to watch (repeat for more); "
                             "default: the --app-dir")
    parser.add_argument("--fd", type=int, default=None,
                        help="serve on this already bound listening socket (a file descriptor "
                             "inherited from --reload's supervisor or a process manager) "
                             "instead of binding --host/--port; default: bind")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m asgi_lab",
                                     description="asgi_lab: ASGI and WSGI servers for learning")
    parser.add_argument("--version", action="version", version=f"asgi_lab {__version__} "
                        f"(Python {sys.version.split()[0]})")
    commands = parser.add_subparsers(dest="command", required=True)
    formatter = HelpFormatter
    exit_codes = "exit codes: " + "; ".join(
        f"{code} {meaning}" for code, meaning in sorted(_exit_codes().items()))

    asgi = commands.add_parser("asgi", help="serve an ASGI 3 application", epilog=exit_codes,
                               formatter_class=formatter)
    add_server_options(asgi)
    asgi.add_argument("--lifespan", choices=("auto", "on", "off"), default="auto",
                      help="ASGI lifespan: auto uses it if the app supports it")
    asgi.add_argument("--ws-max-size", type=int, default=Config().ws_max_message_bytes,
                      help="largest WebSocket message, in bytes")
    asgi.add_argument("--ws-ping-interval", type=float, default=None,
                      help="send a keep-alive ping this often (seconds); None: never")
    asgi.add_argument("--ws-ping-timeout", type=float, default=Config().ws_ping_timeout,
                      help="seconds to wait for the pong to a keep-alive ping")

    wsgi = commands.add_parser("wsgi", help="serve a WSGI (PEP 3333) application",
                               epilog=exit_codes, formatter_class=formatter)
    add_server_options(wsgi)
    wsgi.add_argument("--threads", type=int, default=Config().threads,
                      help="worker threads; 0 means one thread per connection")
    wsgi.add_argument("--wsgi-upgrade", action="store_true",
                      help="NON-PORTABLE: offer environ['asgi_lab.upgrade'], which sends a 101 and "
                           "hands the app the raw socket (no other WSGI server knows it; default: off)")

    demo = commands.add_parser("demo", help="trace a GET and a POST through both servers; "
                                            "write sequence diagrams and a timeline (PNG)",
                               formatter_class=formatter)
    demo.add_argument("--out", default="demo-output", help="folder for the PNG and JSON files")

    trace = commands.add_parser(
        "trace", help="serve your app with the tracer on, send it requests, write the trace "
                      "and sequence diagrams (PNG)",
        description="Serve MODULE:ATTR on 127.0.0.1 (a free port) with the tracer on, send each "
                    "--request on a connection of its own, write the trace and one sequence "
                    "diagram per request. A request reads like curl: "
                    "\"POST /echo -H 'content-type: text/plain' -d hello\" (-d @FILE reads a file).",
        formatter_class=formatter)
    trace.add_argument("app", help="the application, as MODULE:ATTR")
    trace.add_argument("--wsgi", action="store_true", help="it is a WSGI app (default: ASGI)")
    trace.add_argument("--request", action="append", default=[], metavar="'METHOD TARGET [-H ..] [-d ..]'",
                       help="a request to send (repeat for more; default: 'GET /')")
    trace.add_argument("--onion", action="store_true",
                       help="record every message at every middleware layer (default: off; Starlette, FastAPI, "
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
    config = Config(host=args.host, port=args.port, root_path=args.root_path, uds=args.uds,
                    ssl_certfile=args.ssl_certfile, ssl_keyfile=args.ssl_keyfile,
                    ssl_keyfile_password=args.ssl_keyfile_password,
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


def _exit_codes() -> dict[int, str]:
    from .loader import EXIT_CODES

    return EXIT_CODES


def setup_logging(level: str) -> None:
    """A handler on the `asgi_lab` logger only (its children `asgi_lab.error` and
    `asgi_lab.access` use it); `propagate = False` keeps our lines out of the root logger's
    handlers, and we never add one there, so the app's own loggers stay as the app set them."""
    root = logging.getLogger("asgi_lab")
    for handler in list(root.handlers):
        if getattr(handler, "asgi_lab_cli", False):
            root.removeHandler(handler)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(levelname)s:  %(message)s"))
    handler.asgi_lab_cli = True
    root.addHandler(handler)
    root.setLevel(level.upper())
    root.propagate = False


def with_proxy_headers(app, kind: str, trusted: str):
    """The app behind the ASGI or WSGI proxy-headers middleware; None (after one ERROR line)
    if `trusted` is not a list of addresses."""
    from .proxy_headers import ProxyHeadersMiddleware, WSGIProxyHeadersMiddleware

    middleware = ProxyHeadersMiddleware if kind == "asgi" else WSGIProxyHeadersMiddleware
    try:
        return middleware(app, trusted)
    except ValueError as exc:
        logger.error("--forwarded-allow-ips: %s", exc)
        return None


def bind(config: Config) -> socket.socket | int:
    """Bind the listening socket before the app starts: the socket, or the exit code after
    one ERROR line naming the address (in use, permission denied, any other OSError)."""
    from .http11 import bind_socket

    address = f"[{config.host}]:{config.port}" if ":" in config.host else f"{config.host}:{config.port}"
    if config.uds:
        address = f"unix socket {config.uds}"
    try:
        return bind_socket(config)
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            logger.error("Could not bind %s: address already in use (another server is running "
                         "there? pick another %s)", address,
                         "--uds path" if config.uds else "--port, or 0 for a free one")
            return EXIT_ADDRESS_IN_USE
        if exc.errno in (errno.EACCES, errno.EPERM):
            logger.error("Could not bind %s: permission denied (%s)", address,
                         "the directory is not writable for you" if config.uds else
                         "ports below 1024 need privileges; pick a port above 1023")
            return EXIT_PERMISSION
        logger.error("Could not bind %s: %s", address, exc.strerror or exc)
        return EXIT_BIND_FAILED


def where(server) -> str:
    """What the "serving on" line says: the URL, and a Unix socket's path in words."""
    host, port = server.address
    return server.url if port is not None else f"unix socket {host} ({server.url})"


def run_asgi(app, config: Config, sock: socket.socket | None = None) -> int:
    """Serve until SIGINT/SIGTERM. Returns the process exit code."""
    from .asgi.lifespan import LifespanFailure
    from .asgi.server import Server

    async def main() -> int:
        server = Server(app, config)
        loop = asyncio.get_running_loop()
        signals: list[int] = []

        def on_signal(sig: int) -> None:
            signals.append(sig)
            if len(signals) == 1:
                logger.info("Shutting down (%s); press CTRL+C again to force",
                            signal.Signals(sig).name)
            server.request_shutdown()

        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, on_signal, sig)
        if config.lifespan != "off":
            logger.info("Waiting for application startup (lifespan %s)", config.lifespan)
        try:
            await server.start(sock)
        except LifespanFailure as exc:
            logger.error("%s", exc)
            if sock is not None:
                sock.close()
            return EXIT_LIFESPAN_FAILED
        if config.lifespan != "off" and server.lifespan is not None and server.lifespan.supported:
            logger.info("Application startup complete")
        print(f"asgi_lab: serving ASGI app on {where(server)} (press CTRL+C to quit)", flush=True)
        await server.serve()
        return 0

    return asyncio.run(main())


def run_wsgi(app, config: Config, sock: socket.socket | None = None) -> int:
    from .wsgi.server import WSGIServer

    server = WSGIServer(app, config)
    server.start(sock)

    def ready() -> None:  # called once the signal handlers are in place
        print(f"asgi_lab: serving WSGI app on {where(server)} with "
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
    return serve(args, argv)


def serve(args: argparse.Namespace, argv: list[str] | None = None) -> int:
    """`asgi` / `wsgi`: load and check the app, bind, serve. One line and an exit code for
    each way it can fail before serving."""
    setup_logging(args.log_level)
    config = config_from(args)
    if check_tls(config) is not None:
        return EXIT_TLS
    if args.reload:  # the supervisor binds, and never imports the app: see reload.py
        from .reload import run_with_reload

        sock = bind(config)
        if isinstance(sock, int):
            return sock
        argv = sys.argv[1:] if argv is None else argv
        try:
            return run_with_reload(argv, sock, args.reload_dir or [args.app_dir],
                                   config.timeout_graceful_shutdown)
        finally:
            remove_socket_file(config.uds)  # the supervisor bound it: the server processes do not remove it
    try:
        app = load_app(args.app, args.command, factory=args.factory, app_dir=args.app_dir)
    except LoadError as exc:
        logger.error("%s", exc)
        return exc.exit_code
    if args.proxy_headers:
        app = with_proxy_headers(app, args.command, args.forwarded_allow_ips)
        if app is None:
            return 2
    if args.fd is not None:
        from .reload import watch_supervisor

        sock = socket.socket(fileno=args.fd)
        sock.setblocking(False)
        watch_supervisor()
        config = config.replace(uds=None)  # the supervisor's socket file: it removes it, not us
    else:
        sock = bind(config)
        if isinstance(sock, int):
            return sock
    logger.info("Started server process [%d]", os.getpid())
    try:
        if args.command == "asgi":
            return run_asgi(app, config, sock)
        return run_wsgi(app, config, sock)
    finally:
        remove_socket_file(config.uds)  # if the server never got to (a failed lifespan startup)


def check_tls(config: Config) -> int | None:
    """Load the certificate and key once before anything starts: None if they load (or TLS
    is off), else one ERROR line and the exit code."""
    from .tls import server_ssl_context

    try:
        server_ssl_context(config)
    except (OSError, ValueError) as exc:  # ssl.SSLError is an OSError
        files = f"--ssl-certfile {config.ssl_certfile}" + (
            f" / --ssl-keyfile {config.ssl_keyfile}" if config.ssl_keyfile else "")
        logger.error("Could not load the TLS certificate or key (%s): %s", files,
                     getattr(exc, "strerror", None) or exc)
        return EXIT_TLS
    return None
