"""Behind a reverse proxy: who the client really is, and which scheme it used.

A proxy (nginx, a load balancer) opens its own connection to the server, so the server's
peer is the proxy, and the scheme is whatever the proxy spoke to us (often plain `http`
behind a TLS-terminating proxy). The proxy writes what it saw into request headers:

- `Forwarded` (RFC 7239), the standard: `Forwarded: for=192.0.2.60;proto=https;by=203.0.113.43`.
  Each proxy on the way *appends* an element (§4), so the right-most element was written by
  the proxy nearest to us. `for` names the node that made the request to that proxy (§5.2,
  an IP address, `"[IPv6]:port"`, `unknown` or an obfuscated `_name`, §6); `proto` the
  scheme that node used (§5.4).
- `X-Forwarded-For: client, proxy1, proxy2` and `X-Forwarded-Proto: https`, the older,
  unstandardised pair every proxy still sends (RFC 7239 §1 describes them as the reason the
  standard exists).

Anyone can send these headers, so they are believed only when the peer itself is a proxy we
trust (RFC 7239 §8.1: the header can be forged by any client): `trusted` is a list of
addresses or networks (`127.0.0.1`, `10.0.0.0/8`, `*` for any). The walk starts at the right
(the element our peer wrote) and moves left past every address that is itself a trusted
proxy; the first one that is not is the client. If `Forwarded` is present it wins, and the
`X-Forwarded-*` pair is ignored.

A peer on a Unix socket (`--uds`, `unix_socket.py`) is always trusted, as gunicorn does (uvicorn
trusts it only with `*`): it has no address to list, and it can only be a process on this
machine that the socket file's permissions let in, which is the proxy in front of us (nginx's
`proxy_pass http://unix:...`). A server that must not believe such a peer leaves
`--proxy-headers` off. The servers mark the peer: ASGI `scope["server"] == (path, None)`,
WSGI `REMOTE_ADDR == ""`.

Two middlewares, one rule (`resolve()`), applied by the command line with `--proxy-headers`:

- `ProxyHeadersMiddleware` (ASGI): rewrites `scope["client"]` and `scope["scheme"]`
  (`https` -> `wss` for a WebSocket scope); ASGI HTTP spec, Connection Scope.
- `WSGIProxyHeadersMiddleware`: rewrites `REMOTE_ADDR` and `wsgi.url_scheme` (PEP 3333,
  environ Variables; `REMOTE_PORT` too when the proxy gave a port).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

Network = ipaddress.IPv4Network | ipaddress.IPv6Network

DEFAULT_TRUSTED = "127.0.0.1"
SCHEMES = {"http", "https", "ws", "wss"}


class TrustedProxies:
    """The peers whose forwarding headers we believe: addresses, networks, or `*`."""

    def __init__(self, trusted: str | Iterable[str] = DEFAULT_TRUSTED) -> None:
        items = trusted.split(",") if isinstance(trusted, str) else list(trusted)
        items = [item.strip() for item in items if item.strip()]
        self.everyone = "*" in items
        self.networks: list[Network] = [ipaddress.ip_network(item, strict=False)
                                         for item in items if item != "*"]

    def __contains__(self, host: str | None) -> bool:
        if self.everyone:
            return True
        if not host:
            return False
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            return False  # "unknown", an obfuscated name: not an address we listed
        return any(address in network for network in self.networks)

    def __repr__(self) -> str:
        return "TrustedProxies(*)" if self.everyone else \
            f"TrustedProxies({', '.join(map(str, self.networks))})"


# -- RFC 7239 parsing ------------------------------------------------------------------------------

def parse_forwarded(value: str) -> list[dict[str, str]]:
    """`Forwarded` field value -> one dict per forwarded-element, left to right (RFC 7239 §4:
    `Forwarded = 1#forwarded-element`, `forwarded-element = [pair] *( ";" [pair] )`,
    `pair = token "=" value`, `value = token / quoted-string`). Names are lower-cased
    (case-insensitive, §4); a quoted-string loses its quotes and backslash escapes."""
    elements: list[dict[str, str]] = []
    element: dict[str, str] = {}
    i, n = 0, len(value)
    while i < n:
        char = value[i]
        if char in " \t;":
            i += 1
            continue
        if char == ",":
            elements.append(element)
            element = {}
            i += 1
            continue
        equals = value.find("=", i)
        if equals < 0:
            break  # a name without a value: malformed, ignore the rest
        name = value[i:equals].strip().lower()
        i = equals + 1
        if i < n and value[i] == '"':
            i += 1
            chars = []
            while i < n and value[i] != '"':
                if value[i] == "\\" and i + 1 < n:
                    i += 1
                chars.append(value[i])
                i += 1
            i += 1  # the closing quote
            text = "".join(chars)
        else:
            end = i
            while end < n and value[end] not in ",;":
                end += 1
            text = value[i:end].strip()
            i = end
        element[name] = text
    elements.append(element)
    return [e for e in elements if e]


def parse_node(node: str) -> tuple[str, int]:
    """A node (RFC 7239 §6) -> (host, port). `192.0.2.43:47011`, `[2001:db8::17]:4711`,
    `unknown`, `_hidden`; port 0 when absent or obfuscated."""
    node = node.strip()
    host, port = node, ""
    if node.startswith("["):
        end = node.find("]")
        host, rest = node[1:end], node[end + 1:]
        port = rest[1:] if rest.startswith(":") else ""
    elif node.count(":") == 1:
        host, port = node.split(":")
    return host, int(port) if port.isdigit() else 0


def _walk(hops: list[tuple[str, int]], trusted: TrustedProxies) -> int:
    """Index of the client in `hops` (left to right): from the right, the first hop that is
    not a trusted proxy; the left-most if every one is."""
    for index in range(len(hops) - 1, -1, -1):
        if hops[index][0] not in trusted:
            return index
    return 0


def resolve(headers: dict[str, str], peer: str | None, trusted: TrustedProxies,
            unix_socket: bool = False) -> tuple[tuple[str, int] | None, str | None]:
    """(client, scheme) the forwarding headers give, each None where they say nothing, or
    (None, None) if the peer is not trusted (a peer on a Unix socket always is). `headers`:
    lower-case names, values joined with ", " when a field came more than once (RFC 9110 §5.3)."""
    if not unix_socket and peer not in trusted:
        return None, None
    forwarded = headers.get("forwarded")
    if forwarded is not None:
        elements = [e for e in parse_forwarded(forwarded) if "for" in e]
        if not elements:
            return None, None
        hops = [parse_node(e["for"]) for e in elements]
        index = _walk(hops, trusted)
        proto = elements[index].get("proto", "").lower()
        return hops[index], proto if proto in SCHEMES else None
    client = scheme = None
    forwarded_for = headers.get("x-forwarded-for")
    if forwarded_for:
        hops = [(host.strip(), 0) for host in forwarded_for.split(",") if host.strip()]
        if hops:
            client = hops[_walk(hops, trusted)]
    forwarded_proto = headers.get("x-forwarded-proto")
    if forwarded_proto:
        proto = forwarded_proto.split(",")[-1].strip().lower()  # the nearest proxy's
        scheme = proto if proto in SCHEMES else None
    return client, scheme


# -- the two middlewares ----------------------------------------------------------------------------

class ProxyHeadersMiddleware:
    """ASGI: believe `Forwarded` / `X-Forwarded-*` from a trusted peer (see the module doc)."""

    def __init__(self, app, trusted: str | Iterable[str] = DEFAULT_TRUSTED) -> None:
        self.app = app
        self.trusted = TrustedProxies(trusted)

    async def __call__(self, scope, receive, send):
        if scope["type"] in ("http", "websocket"):
            peer = scope.get("client")
            headers: dict[str, str] = {}
            for name, value in scope["headers"]:
                name = name.decode("latin-1").lower()
                if name in ("forwarded", "x-forwarded-for", "x-forwarded-proto"):
                    value = value.decode("latin-1")
                    headers[name] = f"{headers[name]}, {value}" if name in headers else value
            if headers:
                server = scope.get("server")
                unix_socket = server is not None and server[1] is None  # (path, None)
                client, scheme = resolve(headers, peer[0] if peer else None, self.trusted,
                                         unix_socket)
                if client is not None or scheme is not None:
                    scope = dict(scope)
                    if client is not None:
                        scope["client"] = client
                    if scheme is not None:
                        if scope["type"] == "websocket":
                            scheme = {"http": "ws", "https": "wss"}.get(scheme, scheme)
                        else:
                            scheme = {"ws": "http", "wss": "https"}.get(scheme, scheme)
                        scope["scheme"] = scheme
        return await self.app(scope, receive, send)


class WSGIProxyHeadersMiddleware:
    """WSGI: the same rule, on `REMOTE_ADDR` (and `REMOTE_PORT`) and `wsgi.url_scheme`."""

    def __init__(self, app, trusted: str | Iterable[str] = DEFAULT_TRUSTED) -> None:
        self.app = app
        self.trusted = TrustedProxies(trusted)

    def __call__(self, environ, start_response):
        headers = {name: environ[key] for name, key in (
            ("forwarded", "HTTP_FORWARDED"), ("x-forwarded-for", "HTTP_X_FORWARDED_FOR"),
            ("x-forwarded-proto", "HTTP_X_FORWARDED_PROTO")) if key in environ}
        if headers:
            peer = environ.get("REMOTE_ADDR")
            client, scheme = resolve(headers, peer, self.trusted, unix_socket=peer == "")
            if client is not None:
                environ["REMOTE_ADDR"] = client[0]
                if client[1]:
                    environ["REMOTE_PORT"] = str(client[1])
            if scheme is not None:
                environ["wsgi.url_scheme"] = {"ws": "http", "wss": "https"}.get(scheme, scheme)
        return self.app(environ, start_response)
