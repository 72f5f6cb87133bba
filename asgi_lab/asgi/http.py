"""HTTP/1.1 for the ASGI server: the asyncio shell around the connection core.

Two classes, read them in this order:

- `HTTPProtocol` is the *transport shell*. It owns one TCP connection as an
  `asyncio.Protocol`: the event loop calls `data_received(bytes)`, we hand the bytes to the
  sans-IO connection core (`core.py`: h11 and every HTTP/1.1 rule both servers share) and act
  on the events it gives back. It schedules one `RequestResponseCycle` per request, answers
  pipelined requests in order, and applies back-pressure in both directions.
- `RequestResponseCycle` is the *ASGI side* of one request (ASGI www spec, "HTTP"): it owns
  the `receive` and `send` callables the app gets; `Inbound` says how far the request has
  come, the core's `ResponseState` how far the response has.

Where the WSGI shell (`wsgi/connection.py`) blocks, this one awaits: the body is *pushed* into
`receive()` as it arrives, and `send()` waits only while the socket's buffer is full.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket

import h11

import enum

from ..core import (COMPLETE, FIRST_REQUEST_WAIT, NEED_DATA, NOT_STARTED, ClientDisconnected,
                    ConnectionCore, Refused, ResponseState, Wait, address, advance)
from ..http11 import bytes_waiting, check_status, is_websocket_upgrade, no_delay, reason_phrase
from .scope import build_http_scope

logger = logging.getLogger("asgi_lab.error")


class Inbound(enum.Enum):
    """How far the request's side of a cycle has come, as `receive()` hands it to the app
    (ASGI www spec, "Request - receive event" and "Disconnect - receive event"):

        RECEIVING --EndOfMessage--> RECEIVED --the last http.request--> DELIVERED
        any of them --http.disconnect returned--> DISCONNECT
    """

    RECEIVING = "receiving"    # more request body to come (`more_body` is True)
    RECEIVED = "received"      # all of it is here; the app has not had the last piece yet
    DELIVERED = "delivered"    # the app has had the last http.request message
    DISCONNECT = "disconnect"  # receive() has returned http.disconnect


RECEIVING, RECEIVED, DELIVERED, DISCONNECT = Inbound

INBOUND = {
    RECEIVING: (RECEIVED, DISCONNECT),
    RECEIVED: (DELIVERED, DISCONNECT),
    DELIVERED: (DISCONNECT,),
    DISCONNECT: (DISCONNECT,),
}
"""The transitions `Inbound` allows; any other raises `core.IllegalTransition`."""


class HTTPProtocol(asyncio.Protocol):
    """One client connection: bytes in from the socket, core events out, one cycle per request."""

    # Thousands of these live at once (one per open connection): fixed slots instead of a
    # per-object __dict__ save about 60 bytes each, and list the whole state in one place.
    __slots__ = ("server", "app", "config", "tracer", "loop", "core", "conn", "transport", "cycle",
                 "id", "client", "server_addr", "reading_paused", "writing_paused", "drain_waiter")

    def __init__(self, server) -> None:
        self.server = server            # the shared Server: app, config, tracer, connections
        self.app = server.app
        self.config = server.config
        self.tracer = server.tracer
        self.loop = server.loop
        self.core: ConnectionCore | None = None  # made in connection_made, once the peer is known
        self.conn: h11.Connection | None = None  # the core's, for the WebSocket upgrade
        self.transport: asyncio.Transport | None = None
        self.cycle: RequestResponseCycle | None = None
        self.id = 0
        self.client = self.server_addr = None
        # Back-pressure, both ways.
        self.reading_paused = False
        self.writing_paused = False
        self.drain_waiter: asyncio.Future | None = None

    # -- asyncio.Protocol callbacks -------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:
        self.transport = transport
        sock = transport.get_extra_info("socket")
        if sock is not None:
            no_delay(sock)  # asyncio would not: see http11.no_delay
        self.id = self.server.new_connection_id()
        self.client = address(transport.get_extra_info("peername"))
        self.server_addr = address(transport.get_extra_info("sockname"))
        self.core = ConnectionCore(self.config, self.server.heads, self.tracer, self.id, self.client,
                                   self.server.clock)
        self.conn = self.core.conn
        self.server.connections.add(self)
        if self.tracer is not None:
            self.tracer.emit(self.id, "socket", "connection_made",
                             {"client": self.client, "server": self.server_addr})

    def connection_lost(self, exc: Exception | None) -> None:
        self.server.connections.discard(self)
        if self.tracer is not None:
            self.tracer.emit(self.id, "socket", "connection_lost", {"error": repr(exc) if exc else None})
        if self.cycle is not None:
            self.cycle.client_disconnected()
        self.resume_writing()  # wake a send() waiting on the buffer, so it can raise

    def data_received(self, data: bytes) -> None:
        self.core.receive_data(data)
        self.handle_events()

    def eof_received(self) -> bool:
        """The client closed its sending side. Finish what it asked for, then close."""
        self.core.receive_data(b"")
        self.handle_events()
        # Keep the transport open so a response in flight can still be written. (Not over
        # TLS: asyncio's TLS transport closes after the client's EOF whatever we answer, and
        # warns if we ask otherwise.)
        return self.server.ssl_context is None

    def pause_writing(self) -> None:
        """The transport's write buffer is above its high-water mark: make send() wait."""
        self.writing_paused = True

    def resume_writing(self) -> None:
        self.writing_paused = False
        if self.drain_waiter is not None and not self.drain_waiter.done():
            self.drain_waiter.set_result(None)

    async def drain(self) -> None:
        """Wait until the socket's write buffer has room again (or the client is gone)."""
        if self.writing_paused and not self.transport.is_closing():
            self.drain_waiter = self.loop.create_future()
            await self.drain_waiter

    # -- the core's events ----------------------------------------------------------------

    def handle_events(self) -> None:
        """Take every complete event the core can give from the bytes received so far."""
        core = self.core
        while True:
            event = core.next_event()
            event_type = type(event)
            if event is NEED_DATA:
                return  # wait for data_received() to bring more bytes
            elif event is h11.PAUSED:
                # The request is complete and we are still answering it. If the client has
                # already sent more (a pipelined request), stop reading until this response is
                # done, then pick it up: requests are answered in order. (Not pausing when
                # nothing is buffered saves two epoll calls per request.)
                if core.request_buffered:
                    self.pause_reading()
                return
            elif event_type is h11.Request:
                if is_websocket_upgrade(event) and self.server.websocket_handler is not None:
                    self.server.websocket_handler(self, event)
                    return
                self.start_cycle(event)
                if self.cycle is None:
                    return  # the app failed at once: the connection is closing
            elif event_type is h11.Data:
                self.cycle.body_received(event.data)
            elif event_type is h11.EndOfMessage:
                self.cycle.body_complete()
            elif event_type is Refused:
                self.reject(event.status, event.reason)
                return
            else:  # ConnectionClosed: the client will send nothing more (it closed, or half-closed)
                if self.cycle is None or core.state is COMPLETE:
                    self.transport.close()
                else:
                    self.cycle.client_stopped_sending()
                return

    def start_cycle(self, request: h11.Request) -> None:
        """A request head arrived and passed the core's checks: build the scope and run the
        app on it as a new task."""
        scope = build_http_scope(
            request,
            "1.0" if request.http_version == b"1.0" else "1.1",  # 1.2 is read as 1.1 (RFC 9110 §2.5)
            self.client,
            self.server_addr,
            self.config.root_path,
            self.server.scheme,  # "https" over TLS
            self.server.state,
        )
        self.cycle = cycle = RequestResponseCycle(self, scope)
        # The app's own coroutine is the task, and `app_finished` cleans up when it ends: no
        # wrapper coroutine around it, because a suspended wrapper would live as long as the
        # request does, about 0.2 KB more for each of thousands of waiting SSE clients.
        try:
            self.server.run_app(self.app(scope, cycle.receive, cycle.send), cycle.app_finished)
        except Exception as exc:  # the app raised at once, or did not return a coroutine
            logger.error("Exception in ASGI application", exc_info=exc)
            cycle.fail()

    def reject(self, status: int, reason: str = "") -> None:
        """Answer a request the app never sees (malformed, too large, too slow) and close."""
        self.transport.write(self.core.refuse(status, reason))
        self.transport.close()
        if self.cycle is not None:
            self.cycle.client_disconnected()  # the app's request is dead too: receive/send say so

    def response_complete(self) -> None:
        """The cycle sent its last byte: close, or get ready for the next request."""
        self.cycle = None
        if not self.core.cycle_done() or self.transport.is_closing():
            self.transport.close()
            return
        self.resume_reading()
        if self.core.head_bytes:
            self.handle_events()  # a pipelined request is already waiting in h11's buffer

    # -- small helpers used by the cycle ----------------------------------------------------

    def pause_reading(self) -> None:
        if not self.reading_paused:
            self.reading_paused = True
            self.transport.pause_reading()

    def resume_reading(self) -> None:
        if self.reading_paused:
            self.reading_paused = False
            self.transport.resume_reading()

    def check_timeouts(self, now: float) -> None:
        """Called by the server's housekeeping tick: close a connection past its deadline
        (`ConnectionCore.time_left`: idle, slow head, silent body), with a 408 for a body."""
        core = self.core
        if core.past_deadline(now):
            self.transport.write(core.expired())
            self.transport.close()
            if self.cycle is not None:
                self.cycle.client_disconnected()

    def shutdown(self) -> None:
        """Graceful shutdown: close if idle; otherwise let the response in flight finish (a
        download completes), then close. An app waiting in `receive()` after its request body
        (a long-poll, an SSE stream watching for the client to leave) gets `http.disconnect`
        now, the one way the ASGI spec gives to say "stop": such responses end at once."""
        self.core.keep_alive = False
        if self.cycle is not None:
            self.cycle.server_going_away()
        elif self.core.first_request_pending():  # its request may be on its way: wait a moment
            self.loop.call_later(FIRST_REQUEST_WAIT, self.close_if_idle)
        else:
            self.close_if_idle()

    def close_if_idle(self) -> None:
        """Shutting down: close the connection unless a request is being answered on it, or
        has just arrived: its bytes are in the socket, and the loop, which shuts down on its
        own turn, has not read them yet. Read at the loop's next turn, that request is answered
        with `Connection: close` (the core's `keep_alive` is off), and the connection closes;
        closing it now would reset it (`http11.bytes_waiting`). If the request never completes,
        the grace period ends it."""
        if self.cycle is not None or self.transport.is_closing():
            return
        if self.has_bytes_waiting():
            return
        if self.server.ssl_context is not None and not self.transport.get_write_buffer_size():
            # Over TLS, close() would also wait for the client's own close_notify (up to
            # asyncio's 30 s), which an idle pooled client, not reading, never sends; and
            # nothing of ours is left to send: so cut it now.
            self.transport.abort()
        else:
            self.transport.close()

    def has_bytes_waiting(self) -> bool:
        """Has the client sent bytes the loop has not read yet? (`http11.bytes_waiting`, peeked
        through a duplicate of the descriptor: the socket asyncio lends out has no recv().)
        The WSGI connection's method of the same name asks its own socket."""
        lent = self.transport.get_extra_info("socket")
        if lent is None:
            return False
        with socket.socket(fileno=os.dup(lent.fileno())) as sock:
            return bytes_waiting(sock)


class RequestResponseCycle:
    """One request and its response, as the ASGI app sees them (ASGI www spec, "HTTP").

    The app gets `receive` and `send`. This class checks that the app's messages come in
    the order the spec requires, and hands them to the core, which makes h11 events of them.
    """

    __slots__ = ("protocol", "core", "scope", "tracer", "body", "inbound", "input_closed", "waiter",
                 "disconnected", "going_away")

    def __init__(self, protocol: HTTPProtocol, scope: dict) -> None:
        self.protocol = protocol
        self.core = protocol.core
        self.scope = scope
        self.tracer = protocol.tracer
        # Request body, pushed in by the protocol, taken out by receive().
        self.body = bytearray()
        self.inbound = RECEIVING  # see `Inbound`
        self.input_closed = False  # the client sent EOF (see client_stopped_sending)
        self.waiter: asyncio.Future | None = None
        self.disconnected = False
        self.going_away = False  # the server shuts down: receive() after the body says disconnect

    @property
    def state(self) -> ResponseState:
        """The response's state (the core's), and COMPLETE once the connection has moved on
        to its next request (the app's task may end after that)."""
        return self.core.state if self.protocol.cycle is self else COMPLETE

    # -- called by the protocol --------------------------------------------------------------

    def body_received(self, data: bytes) -> None:
        self.body += data
        if len(self.body) > self.protocol.config.read_high_water:
            self.protocol.pause_reading()  # back-pressure: the app is not keeping up
        self.wake()

    def body_complete(self) -> None:
        self.inbound = advance(self.inbound, RECEIVED, INBOUND)
        self.wake()

    def client_disconnected(self) -> None:
        self.disconnected = True
        self.wake()

    def client_stopped_sending(self) -> None:
        """EOF from the client while we answer. Most clients that do this have gone (a browser
        tab closed, a long-poll abandoned), so a waiting receive() gets http.disconnect now,
        not at the next failed write. The response may still be written: a client that only
        half-closed its socket (`shutdown(SHUT_WR)`) still gets it."""
        self.input_closed = True
        self.wake()

    def server_going_away(self) -> None:
        self.going_away = True
        self.wake()

    def wake(self) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(None)

    # -- the app ---------------------------------------------------------------------------------

    def app_finished(self, task: asyncio.Task) -> None:
        """The app's task ended, however it ended: log a failure, and never leave the
        response half-done (www spec: the app must finish its response before returning)."""
        self.protocol.server.tasks.discard(task)
        exc = None if task.cancelled() else task.exception()
        state = self.core.state if self.protocol.cycle is self else COMPLETE  # = self.state, inlined
        if exc is not None and not self.disconnected:  # after a disconnect, a failing send() is expected
            logger.error("Exception in ASGI application", exc_info=exc)
        elif exc is None and state is not COMPLETE:
            what = ("was cancelled" if task.cancelled() else "returned",
                    "starting" if state is NOT_STARTED else "completing")
            if self.disconnected or self.inbound is DISCONNECT:
                # The client left (and the app was told, or its send() failed): returning is
                # exactly what the spec asks of the app then. Nothing went wrong.
                logger.debug("ASGI app %s without %s its response: the client had left", *what)
            else:
                logger.error("ASGI app %s without %s its response", *what)
        self.fail()

    def fail(self) -> None:
        """The app broke: 500 if nothing has been written yet, otherwise cut the connection
        (never pretend an unfinished response was complete)."""
        transport = self.protocol.transport
        if self.protocol.cycle is not self or self.core.state is COMPLETE or transport.is_closing():
            return
        if not (self.disconnected or self.inbound is DISCONNECT):  # else a 500 would be for nobody
            transport.write(self.core.refuse(500))
        transport.close()

    async def receive(self) -> dict:
        """ASGI www spec, "Request - receive event" and "Disconnect - receive event"."""
        core = self.core
        protocol = self.protocol
        inbound = self.inbound
        if inbound is RECEIVING:
            # RFC 9110 §10.1.1: a client may wait for our go-ahead before sending its body. We
            # give it only now, when the app first asks for the body.
            protocol.transport.write(core.go_ahead())
        if not self.disconnected and self.state is not COMPLETE and not self.body \
                and (inbound is RECEIVING
                     or inbound is DELIVERED and not (self.input_closed or self.going_away)):
            # Nothing to hand over yet: wait for more body, or (all of it delivered) for the
            # client to leave or the response to complete.
            if inbound is RECEIVING:
                protocol.resume_reading()
                core.waiting_for(Wait.BODY)  # a body that goes silent gets 408 (see the core)
            self.waiter = protocol.loop.create_future()
            await self.waiter
            self.waiter = None
            if core.wait is Wait.BODY:
                core.waiting_for(Wait.APP)
        inbound = self.inbound  # again: it may have changed while we waited
        if self.disconnected or self.state is COMPLETE or inbound is DELIVERED or inbound is DISCONNECT:
            message = {"type": "http.disconnect"}
            self.inbound = advance(inbound, DISCONNECT, INBOUND)
        else:
            more_body = inbound is RECEIVING
            message = {"type": "http.request", "body": bytes(self.body), "more_body": more_body}
            self.body.clear()
            if not more_body:
                self.inbound = advance(inbound, DELIVERED, INBOUND)
            protocol.resume_reading()
        if self.tracer is not None:
            self.tracer.emit(protocol.id, "asgi", "receive", message)
        return message

    async def send(self, message: dict) -> None:
        """ASGI www spec, "Response Start - send event" and "Response Body - send event"."""
        protocol = self.protocol
        core = self.core
        if self.tracer is not None:
            self.tracer.emit(protocol.id, "asgi", "send", message)
        if self.disconnected or protocol.transport.is_closing():
            # is_closing(): the socket already failed. connection_lost (which sets
            # `disconnected`) runs only when the loop gets control, and an app that streams
            # without ever waiting would otherwise keep writing into a dead transport.
            self.disconnected = True
            raise ClientDisconnected(f"client {protocol.client} disconnected")
        if protocol.writing_paused:
            await protocol.drain()  # back-pressure: the client is not reading fast enough
            if self.disconnected:
                raise ClientDisconnected(f"client {protocol.client} disconnected")

        message_type = message["type"]
        state = self.core.state if self.protocol.cycle is self else COMPLETE  # = self.state, inlined
        if state is NOT_STARTED:
            if message_type != "http.response.start":
                raise RuntimeError(f"Expected 'http.response.start', but got {message_type!r}: "
                                   "an app must start its response before sending the body")
            status = message["status"]
            if type(status) is not int:  # checked before the cache, where 200.0 == 200 as a key
                raise TypeError(f"http.response.start 'status' must be an int like 200 "
                                f"(ASGI www spec, Response Start), not {status!r}")
            headers = message.get("headers", ())
            # Built now so that a bad status or header fails here, while a 500 is still
            # possible. It is written with the first body chunk: one write for small responses.
            heads = core.heads
            core.start(heads.head((status, tuple(headers)), _h11_response, status, headers, heads))
        elif state is not COMPLETE:
            if message_type != "http.response.body":
                raise RuntimeError(f"Expected 'http.response.body', but got {message_type!r}")
            more_body = message.get("more_body", False)
            protocol.transport.write(core.respond(message.get("body", b""), not more_body))
            if not more_body:
                self.wake()  # a receive() waiting for a disconnect gets one now
                protocol.response_complete()
        else:
            raise RuntimeError(f"Unexpected ASGI message {message_type!r} after the response completed")


def _h11_response(status: int, headers, heads) -> h11.Response:
    """An app's http.response.start as an h11.Response, with the server's default headers
    first. A code outside 200-599 is refused here (`check_status`); the reason phrase is ours.

    ASGI www spec, "Response Start": "You may send a `Transfer-Encoding` header in this
    message, but the server must ignore it." Framing is h11's: Content-Length if the app gave
    one, otherwise chunked (HTTP/1.1) or until the connection closes (HTTP/1.0)."""
    check_status(status)
    headers = [(name, value) for name, value in headers if name.lower() != b"transfer-encoding"]
    return h11.Response(status_code=status, headers=heads.default_headers() + headers,
                        reason=reason_phrase(status))
