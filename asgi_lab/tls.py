"""TLS for both servers: the stdlib `ssl` module does the cryptography; this module builds the
server's `ssl.SSLContext` once, from the certificate and key files in `Config`.

    python -m asgi_lab asgi app:app --ssl-certfile cert.pem --ssl-keyfile key.pem

Where each server does the handshake (RFC 8446 for TLS 1.3, RFC 5246 for TLS 1.2), before a
single byte of HTTP flows:

- ASGI (`asgi/server.py`): asyncio does it, `loop.create_server(..., ssl=context)`. Our
  `HTTPProtocol` is told `connection_made` only once the handshake is over, and then reads and
  writes plaintext as over TCP. A handshake that takes longer than `timeout_request_header` is
  aborted by asyncio (`ssl_handshake_timeout`).
- WSGI (`wsgi/tls.py`): the acceptor only wraps the accepted socket (no I/O); the handshake is
  made by a worker, one non-blocking step each time the client's bytes arrive, so a client
  that never finishes it holds a socket, not a thread, until the head deadline closes it.

The scheme follows: `https` in the ASGI HTTP scope (`wss` in a WebSocket scope), `https` as
PEP 3333's `wsgi.url_scheme`, and in `server.url`.

A client that fails the handshake (one that speaks plain HTTP to the TLS port, or does not
trust our certificate) costs one INFO line and its connection, never the server: see
`handshake_failure`.
"""

from __future__ import annotations

import logging
import ssl

logger = logging.getLogger("asgi_lab.error")

ALPN = ["http/1.1"]
"""RFC 7301: what we offer a client that asks which protocol to speak inside TLS. HTTP/1.1
only: a client that asked for h2 falls back to HTTP/1.1 as it would with no ALPN at all."""


def server_ssl_context(config) -> ssl.SSLContext | None:
    """The server's context from `config.ssl_certfile` (the certificate chain, PEM),
    `config.ssl_keyfile` (its private key; None: the key is in the certificate file) and
    `config.ssl_keyfile_password` (for an encrypted key); None when TLS is off.

    TLS 1.2 is the oldest version accepted (RFC 8996 deprecates 1.0 and 1.1); the stdlib's
    server defaults choose the ciphers. Raises OSError (a file is missing), `ssl.SSLError` (not
    a certificate, a key that does not match it, a wrong password) or ValueError (a key
    without a certificate): the command line turns each into one ERROR line."""
    if not config.ssl_certfile:
        if config.ssl_keyfile:
            raise ValueError("--ssl-keyfile needs --ssl-certfile (the certificate it belongs to)")
        return None
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.set_alpn_protocols(ALPN)
    context.load_cert_chain(config.ssl_certfile, config.ssl_keyfile or None,
                            config.ssl_keyfile_password or None)
    # asyncio makes each handshake on an `SSLObject` that this context creates: a subclass of
    # ours is the one place where the ASGI server hears that a handshake failed.
    context.sslobject_class = _LoggedHandshake
    return context


def handshake_failure(exc: Exception) -> tuple[int, str]:
    """(log level, words) for a failed handshake. INFO for a client that spoke but not TLS we
    accept; DEBUG for one that left or went silent (port scanners, health checks, a load
    balancer's TCP probe), which would otherwise fill the log."""
    if isinstance(exc, ssl.SSLError):
        reason = exc.reason or str(exc)
        if reason == "HTTP_REQUEST":
            return logging.INFO, "the client spoke plain HTTP to the TLS port (http:// for https://?)"
        if "UNKNOWN_CA" in reason or "BAD_CERTIFICATE" in reason or "CERTIFICATE_UNKNOWN" in reason:
            return logging.INFO, f"the client does not trust our certificate ({reason})"
        return logging.INFO, reason
    return logging.DEBUG, f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


class _LoggedHandshake(ssl.SSLObject):
    """The ASGI server's handshakes (asyncio calls `do_handshake` until it completes): a
    failure is logged in one line (asyncio itself says nothing unless its debug mode is on),
    then raised on to asyncio, which closes the connection. The peer's address is not known
    here; asyncio's own handshake timeout is not seen here either."""

    def do_handshake(self) -> None:
        try:
            super().do_handshake()
        except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
            raise  # not a failure: the handshake waits for the network
        except ssl.SSLError as exc:
            level, words = handshake_failure(exc)
            logger.log(level, "TLS handshake failed: %s", words)
            raise
