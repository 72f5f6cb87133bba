"""The middleware onion: every message, recorded as it passes each middleware layer.

    onion = MiddlewareOnion.install(app, tracer)    # a Starlette or FastAPI app, or a Flask app
    ...                                              # serve it with the same tracer, send requests
    onion.remove()                                   # the app as it was

A framework app is a chain of objects, each calling the next: Starlette builds it in
`Starlette.build_middleware_stack()` (`ServerErrorMiddleware`, your `add_middleware(...)` in
order, `ExceptionMiddleware`, then the router), each layer keeping the next one in its `.app`
attribute; a Flask app calls `self.wsgi_app`, and WSGI middleware such as werkzeug's
`ProxyFix` are installed by wrapping it (`app.wsgi_app = ProxyFix(app.wsgi_app)`), keeping
the wrapped one in `.app` too.

The onion puts a *boundary* between every two layers: a tiny ASGI app (or WSGI app) that
records what crosses it and passes everything on unchanged. No framework code is patched:
it sets attributes the frameworks read (`app.middleware_stack`, `layer.app`, Flask's
`app.wsgi_app`) on a stack it built itself, or on the chain the user installed.

Each crossing is a trace event on layer "onion": kind "receive" / "send" (ASGI), "call" /
"start_response" / "body_chunk" / "close" (WSGI), with `from` and `to` lanes ("app" is the
object the server calls, "app/1" the first layer inside it, ...), the lanes' names
(`lanes`), the message, and `changes`: how this message differs from the same message one
layer further in (a header added or removed, a status, a body's size), e.g. the
`content-encoding: gzip` that `GZipMiddleware` adds on the way out.

Where a framework does not expose its stack, the onion says so in `hidden` (and `describe()`):
Django's middleware (settings.MIDDLEWARE) are not ASGI or WSGI middleware; they pass
`HttpRequest` and `HttpResponse` objects to each other inside one call of the handler, chained
through a private attribute, so only the handler's own boundary can be seen from the server.

What the onion adds to the trace: a WSGI layer's iterable is wrapped (to record each chunk and
`close()`), so the server sees `RecordedBody` returned, not the app's own iterable.
"""

from __future__ import annotations

import inspect
from typing import Any

MAX_LAYERS = 32  # a chain longer than this is surely a loop


def layer_name(layer) -> str:
    """A readable name for a layer: its class, or its function's name."""
    if inspect.ismethod(layer):
        return f"{type(layer.__self__).__name__}.{layer.__func__.__name__}"
    if inspect.isfunction(layer):
        return layer.__name__
    return type(layer).__name__


def _inner(layer):
    """The next layer inside `layer`, or None: the `.app` attribute middleware keep (a
    method of the layer itself, such as Starlette's `Router.app`, is the layer's own code,
    not a next layer; a method of another object, such as Flask's `wsgi_app`, is one)."""
    inner = getattr(layer, "app", None)
    if not callable(inner) or (inspect.ismethod(inner) and inner.__self__ is layer):
        return None
    return inner


def chain(outermost) -> list:
    """The layers from `outermost` inwards, following `.app` (at most MAX_LAYERS)."""
    layers = [outermost]
    while len(layers) < MAX_LAYERS and (inner := _inner(layers[-1])) is not None:
        layers.append(inner)
    return layers


# -- what changed between two layers -----------------------------------------------------------

def _headers(message: dict) -> list[tuple[str, str]]:
    return [(bytes(k).decode("latin-1").lower() if not isinstance(k, str) else k.lower(),
             bytes(v).decode("latin-1") if not isinstance(v, str) else v)
            for k, v in message.get("headers") or ()]


def _body_size(message: dict) -> int | None:
    for key in ("body", "bytes", "text"):
        if message.get(key) is not None:
            return len(message[key])
    return None


def changes(inner: dict | None, outer: dict) -> list[str]:
    """What differs between a message as one layer saw it (`inner`) and as the next saw it:
    "+content-encoding: gzip" (added), "content-length: 915 -> 124" (changed), "-etag: ..."
    (removed), "status 200 -> 500", "body 915 B -> 124 B"."""
    if inner is None:
        return []
    found = []
    if inner.get("status") != outer.get("status"):
        found.append(f"status {inner.get('status')} -> {outer.get('status')}")
    before, after = _headers(inner), _headers(outer)
    gone = [(k, v) for k, v in before if (k, v) not in after]
    new = [(k, v) for k, v in after if (k, v) not in before]
    gone_names, new_names = dict(gone), dict(new)
    found += [f"+{k}: {v}" for k, v in new if k not in gone_names]
    found += [f"{k}: {gone_names[k]} -> {v}" for k, v in new if k in gone_names]
    found += [f"-{k}: {v}" for k, v in gone if k not in new_names]
    size_before, size_after = _body_size(inner), _body_size(outer)
    if size_before != size_after:
        found.append(f"body {size_before} B -> {size_after} B")
    elif size_before and inner.get(_body_key(inner)) != outer.get(_body_key(outer)):
        found.append("body rewritten")
    if bool(inner.get("more_body")) != bool(outer.get("more_body")):
        found.append(f"more_body {bool(inner.get('more_body'))} -> {bool(outer.get('more_body'))}")
    return found


def _body_key(message: dict) -> str:
    return next((k for k in ("body", "bytes", "text") if message.get(k) is not None), "body")


# -- the onion ----------------------------------------------------------------------------------

class MiddlewareOnion:
    """Boundaries between the layers of one app, recording into `tracer`. See the module text."""

    def __init__(self, app, tracer, kind: str) -> None:
        self.app, self.tracer, self.kind = app, tracer, kind
        self.lanes: list[str] = [layer_name(app)]  # lane titles: "app", "app/1", ...
        self.hidden: str | None = None
        self._undo: list[tuple[object, str, object]] = []
        self._last: dict[tuple, dict] = {}  # (conn, depth, kind, type) -> the message seen there

    # -- installing -----------------------------------------------------------------------------

    @classmethod
    def install(cls, app, tracer, kind: str | None = None) -> "MiddlewareOnion":
        """Put boundaries between the layers of `app` (a Starlette/FastAPI app, a Flask app,
        or any app whose middleware keep the next layer in `.app`). `kind`: "asgi" or "wsgi"
        (guessed when not given)."""
        kind = kind or ("wsgi" if _is_flask(app) or not _looks_async(app) else "asgi")
        onion = cls(app, tracer, kind)
        if _is_starlette(app):
            onion._install_starlette()
        elif _is_flask(app):
            onion._install_chain(app, "wsgi_app", app.wsgi_app)
        elif _is_django(app):
            onion.hidden = django_hidden()
        elif _inner(app) is not None:  # plain middleware objects, e.g. CORSMiddleware(app)
            onion._install_chain(None, None, app)
        else:
            onion.hidden = (f"{layer_name(app)} exposes no middleware stack (no `.app` attribute "
                            f"to follow): the onion has one layer, the app itself.")
        return onion

    def _install_starlette(self) -> None:
        # Starlette builds its stack on the first request; we build it ourselves, from the
        # same public method, and hand the app a stack with boundaries in it.
        self._undo.append((self.app, "middleware_stack", self.app.middleware_stack))
        stack = self.app.build_middleware_stack()
        self.app.middleware_stack = self._wrap_chain(stack, first_depth=1)

    def _install_chain(self, owner, attribute: str | None, outermost) -> None:
        if owner is not None:  # Flask: the app calls self.wsgi_app
            self._undo.append((owner, attribute, getattr(owner, attribute)))
            wrapped = self._wrap_chain(outermost, first_depth=1)
            setattr(owner, attribute, wrapped)
        else:  # the app is itself the outermost middleware: boundaries inside it only
            self._wrap_chain(outermost, first_depth=0)

    def _wrap_chain(self, outermost, first_depth: int):
        """Put a boundary in front of each layer of the chain; returns the new outermost."""
        layers = chain(outermost)
        self.lanes[first_depth:] = [layer_name(layer) for layer in layers]
        boundary_type = ASGIBoundary if self.kind == "asgi" else WSGIBoundary
        for index, layer in enumerate(layers):
            depth = index + first_depth
            inner = _inner(layer)
            if inner is not None:  # the boundary between this layer and the next
                self._undo.append((layer, "app", inner))
                layer.app = boundary_type(self, inner, depth + 1)
        if first_depth == 0:
            return outermost
        return boundary_type(self, outermost, first_depth)

    def remove(self) -> None:
        """Take every boundary out again: the app is as it was."""
        for owner, attribute, value in reversed(self._undo):
            setattr(owner, attribute, value)
        self._undo.clear()

    # -- describing --------------------------------------------------------------------------------

    def lane_titles(self) -> dict[str, str]:
        """{"app": "FastAPI", "app/1": "ServerErrorMiddleware", ...} for the sequence diagram."""
        return {lane_id(depth): name for depth, name in enumerate(self.lanes)}

    def describe(self) -> str:
        """The layers, outermost first, and what cannot be seen."""
        lines = [f"{self.kind.upper()} onion of {layer_name(self.app)}, outermost first:"]
        lines += [f"  {depth}. {name}" for depth, name in enumerate(self.lanes)]
        if self.hidden:
            lines.append(f"  hidden: {self.hidden}")
        return "\n".join(lines)

    # -- recording ---------------------------------------------------------------------------------

    def conn_of(self, client) -> int:
        """The tracer's connection number for a client address (from `connection_made`)."""
        if client:
            wanted = [client[0], int(client[1])]
            for event in reversed(self.tracer.events):
                if event.kind == "connection_made" and list(event.data.get("client") or ()) == wanted:
                    return event.conn
        return 0

    def record(self, conn: int, depth: int, kind: str, outward: bool, message: dict) -> None:
        """One crossing of the boundary in front of layer `depth`; compares it with the same
        message at the boundary one step further in (outward) or out (inward)."""
        mtype = message.get("type", kind)
        # A copy: a middleware may change a message in place after passing it on (Starlette's
        # MutableHeaders edits the headers list it was given).
        message = {key: list(value) if key == "headers" else value for key, value in message.items()}
        self._last[(conn, depth, kind, mtype)] = message
        seen_before = self._last.get((conn, depth + 1 if outward else depth - 1, kind, mtype))
        outer, inner = lane_id(depth - 1), lane_id(depth)
        if self.tracer is not None:  # the lab's rule: every emit behind this check (it is set)
            self.tracer.emit(conn, "onion", kind, {
                "type": mtype, "from": inner if outward else outer, "to": outer if outward else inner,
                "lanes": self.lane_titles(), "message": message,
                "changes": changes(seen_before, message) if seen_before is not None else [],
            })


def lane_id(depth: int) -> str:
    """The lane of layer `depth`: "app" for the object the server calls, then "app/1", ..."""
    return "app" if depth == 0 else f"app/{depth}"


class ASGIBoundary:
    """An ASGI app in front of layer `depth`: records each message that crosses, changes none."""

    def __init__(self, onion: MiddlewareOnion, app, depth: int) -> None:
        self.onion, self.app, self.depth = onion, app, depth

    async def __call__(self, scope, receive, send):
        if scope["type"] not in ("http", "websocket"):  # lifespan: nothing to see per request
            return await self.app(scope, receive, send)
        onion, depth = self.onion, self.depth
        conn = onion.conn_of(scope.get("client"))

        async def receive_recorded():
            message = await receive()
            onion.record(conn, depth, "receive", False, message)
            return message

        async def send_recorded(message):
            onion.record(conn, depth, "send", True, message)
            await send(message)

        return await self.app(scope, receive_recorded, send_recorded)


class WSGIBoundary:
    """A WSGI app in front of layer `depth` (PEP 3333): records the call, `start_response`,
    each body chunk and `close()`, and passes them on."""

    def __init__(self, onion: MiddlewareOnion, app, depth: int) -> None:
        self.onion, self.app, self.depth = onion, app, depth

    def __call__(self, environ, start_response):
        onion, depth = self.onion, self.depth
        conn = onion.conn_of((environ.get("REMOTE_ADDR"), environ.get("REMOTE_PORT") or 0))
        onion.record(conn, depth, "call", False, {
            "type": "call", "method": environ.get("REQUEST_METHOD"),
            "path": environ.get("SCRIPT_NAME", "") + environ.get("PATH_INFO", ""),
            "headers": [(k[5:].replace("_", "-").lower(), v) for k, v in environ.items()
                        if k.startswith("HTTP_")]})

        def start_response_recorded(status, headers, exc_info=None):
            onion.record(conn, depth, "start_response", True,
                         {"type": "start_response", "status": status, "headers": headers})
            if exc_info is None:
                return start_response(status, headers)
            return start_response(status, headers, exc_info)

        return RecordedBody(self.app(environ, start_response_recorded), onion, conn, depth)


class RecordedBody:
    """The iterable a layer returned, recorded chunk by chunk; `close()` passed on."""

    def __init__(self, iterable, onion: MiddlewareOnion, conn: int, depth: int) -> None:
        self.iterable, self.onion, self.conn, self.depth = iterable, onion, conn, depth

    def __iter__(self):
        for chunk in self.iterable:
            self.onion.record(self.conn, self.depth, "body_chunk", True,
                              {"type": "body_chunk", "body": chunk})
            yield chunk

    def close(self) -> None:
        self.onion.record(self.conn, self.depth, "close", False, {"type": "close"})
        close = getattr(self.iterable, "close", None)
        if close is not None:
            close()


# -- recognising frameworks, without importing them ---------------------------------------------

def _classes(app) -> set[str]:
    return {f"{c.__module__}.{c.__name__}" for c in type(app).__mro__}


def _is_starlette(app) -> bool:
    return "starlette.applications.Starlette" in _classes(app)


def _is_flask(app) -> bool:
    return "flask.app.Flask" in _classes(app) or "flask.sansio.app.App" in _classes(app)


def _is_django(app) -> bool:
    return bool({"django.core.handlers.wsgi.WSGIHandler",
                 "django.core.handlers.asgi.ASGIHandler"} & _classes(app))


def _looks_async(app) -> bool:
    call = app if inspect.isfunction(app) or inspect.ismethod(app) else getattr(app, "__call__", None)
    return inspect.iscoroutinefunction(call)


def django_hidden() -> str:
    """Why a Django app shows no onion, with the middleware it runs inside."""
    try:
        from django.conf import settings

        names = [name.rsplit(".", 1)[-1] for name in settings.MIDDLEWARE]
    except Exception:  # settings not configured: say so without the list
        names = []
    listed = f" ({', '.join(names)})" if names else ""
    return ("Django hides its middleware from the server: its middleware" + listed +
            " are not ASGI or WSGI middleware but functions of HttpRequest -> HttpResponse, "
            "chained inside one call of the handler through a private attribute "
            "(_middleware_chain) that Django offers no public way to reach; only the handler's "
            "own messages can be seen (the server and app lanes).")


def summary(onion: MiddlewareOnion | None) -> dict[str, Any]:
    """What a trace file records about the onion: its layers and what is hidden."""
    if onion is None:
        return {}
    return {"kind": onion.kind, "layers": onion.lanes, "hidden": onion.hidden}
