"""HTTP/1.1 for the ASGI server: an asyncio transport around h11, and one cycle per request.

Two classes, read them in this order:

- `HTTPProtocol` is the *transport shell*. It owns one TCP connection as an
  `asyncio.Protocol`: the event loop calls `data_received(bytes)`, we feed the bytes to h11
  and act on the events h11 gives back. It schedules one `RequestResponseCycle` per request,
  answers pipelined requests in order, keeps the connection alive between requests, and
  applies back-pressure in both directions.
- `RequestResponseCycle` is the *ASGI side* of one request (ASGI www spec, "HTTP"): it owns
  the `receive` and `send` callables the app gets, and the response state machine:
  not started -> started -> complete, or the client left.

h11 does all the parsing and framing (RFC 9112): we never read a header by hand.
"""

from __future__ import annotations

import asyncio
import logging

import h11

from ..http11 import default_headers, is_websocket_upgrade, new_h11_connection, reason_phrase
from ..http11 import check_status, event_name, origin_form, refuse_request, response_head, send_error
from ..http11 import status_for
from ..trace import describe_event, preview
from .scope import build_http_scope

logger = logging.getLogger("asgi_lab.error")
access_logger = logging.getLogger("asgi_lab.access")


class ClientDisconnected(OSError):
    """Raised by `send()` once the client has gone. ASGI www spec 2.4, "Disconnected Client -
    send exception": "If send() is called on a closed connection the server should raise a
    server-specific subclass of OSError. This is not guaranteed, however, especially on older
    ASGI server implementations (it was introduced in spec version 2.4)." Should, not must: a
    server older than 2.4 may drop the message silently, so a portable app listens for
    `http.disconnect` on `receive()`."""


class HTTPProtocol(asyncio.Protocol):
    """One client connection: bytes in from the socket, h11 events out, one cycle per request."""

    # Thousands of these live at once (one per open connection): fixed slots instead of a
    # per-object __dict__ save about 60 bytes each, and list the whole state in one place.
    __slots__ = ("server", "app", "config", "tracer", "loop", "conn", "transport", "cycle", "id",
                 "client", "server_addr", "reading_paused", "writing_paused", "drain_waiter",
                 "waiting_since", "head_bytes", "overdue", "keep_alive")

    def __init__(self, server) -> None:
        self.server = server            # the shared ServerState: app, config, tracer, connections
        self.app = server.app
        self.config = server.config
        self.tracer = server.tracer
        self.loop = server.loop
        self.conn = new_h11_connection(self.config)
        self.transport: asyncio.Transport | None = None
        self.cycle: RequestResponseCycle | None = None
        self.id = 0
        self.client = self.server_addr = None
        # Back-pressure, both ways.
        self.reading_paused = False
        self.writing_paused = False
        self.drain_waiter: asyncio.Future | None = None
        # Timeouts are checked by the server's housekeeping tick (see `check_timeouts`):
        # `waiting_since` is when we started waiting for the next request head (None while a
        # request is being handled), `head_bytes` how many bytes of that head have arrived.
        self.waiting_since: float | None = None
        self.head_bytes = 0
        self.overdue = False  # a tick found this wait over its timeout (see check_timeouts)
        self.keep_alive = True

    # -- asyncio.Protocol callbacks -------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:
        self.transport = transport
        self.id = self.server.new_connection_id()
        self.client = _address(transport.get_extra_info("peername"))
        self.server_addr = _address(transport.get_extra_info("sockname"))
        self.waiting_since = self.loop.time()
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
        if self.tracer is not None:
            self.tracer.emit(self.id, "socket", "bytes_in", {"bytes": preview(data), "size": len(data)})
        if self.cycle is None:
            self.head_bytes += len(data)
        self.conn.receive_data(data)
        self.handle_events()

    def eof_received(self) -> bool:
        """The client closed its sending side. Finish what it asked for, then close."""
        self.conn.receive_data(b"")
        self.handle_events()
        return True  # keep the transport open so a response in flight can still be written

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

    # -- h11 events -------------------------------------------------------------------------

    def handle_events(self) -> None:
        """Take every complete event h11 can give us from the bytes received so far."""
        while True:
            if self.conn.their_state is h11.MUST_CLOSE:
                return  # its last request is complete ("Connection: close", HTTP/1.0): ignore the rest
            try:
                event = self.conn.next_event()
            except h11.RemoteProtocolError as exc:
                self.reject(status_for(exc), f"malformed request: {exc}")
                return
            if self.tracer is not None and event is not h11.NEED_DATA:
                self.tracer.emit(self.id, "h11", event_name(event), describe_event(event))

            event_type = type(event)
            if event is h11.NEED_DATA:
                return  # wait for data_received() to bring more bytes
            elif event is h11.PAUSED:
                # The request is complete and we are still answering it. If the client has
                # already sent more (a pipelined request), stop reading until this response is
                # done, then pick it up: requests are answered in order. (Not pausing when
                # nothing is buffered saves two epoll calls per request.)
                if self.conn.trailing_data[0]:
                    self.pause_reading()
                return
            elif event_type is h11.Request:
                refusal = refuse_request(event, self.head_bytes, self.config)
                if refusal is not None:
                    self.reject(*refusal)
                    return
                request = origin_form(event)
                if is_websocket_upgrade(request) and self.server.websocket_handler is not None:
                    self.server.websocket_handler(self, request)
                    return
                self.start_cycle(request)
                if self.cycle is None:
                    return  # rejected before the app saw it (413): the connection is closing
            elif event_type is h11.Data:
                self.cycle.body_received(event.data)
            elif event_type is h11.EndOfMessage:
                self.cycle.body_complete()
            elif event_type is h11.ConnectionClosed:
                # The client will send nothing more (it closed, or half-closed, its socket).
                if self.cycle is None or self.cycle.response_complete:
                    self.transport.close()
                else:
                    self.cycle.client_stopped_sending()
                return

    def start_cycle(self, request: h11.Request) -> None:
        """A request head arrived and passed `refuse_request`: build the scope and run the app
        on it as a new task."""
        self.waiting_since = None
        self.head_bytes = 0
        scope = build_http_scope(
            request,
            "1.0" if request.http_version == b"1.0" else "1.1",  # 1.2 is read as 1.1 (RFC 9110 §2.5)
            self.client,
            self.server_addr,
            self.config.root_path,
            state=self.server.state,
        )
        self.cycle = cycle = RequestResponseCycle(self, scope)
        # The app's own coroutine is the task, and `app_finished` cleans up when it ends: no
        # wrapper coroutine around it, because a suspended wrapper would live as long as the
        # request does, about 0.2 KB more for each of thousands of waiting SSE clients.
        try:
            task = self.loop.create_task(self.app(scope, cycle.receive, cycle.send))
        except Exception as exc:  # the app raised at once, or did not return a coroutine
            logger.error("Exception in ASGI application", exc_info=exc)
            cycle.fail()
            return
        task.add_done_callback(cycle.app_finished)
        self.server.tasks.add(task)  # asyncio keeps only a weak reference to tasks

    def reject(self, status: int, reason: str = "") -> None:
        """Answer a request the app never sees (malformed, too large) and close."""
        if reason:
            logger.info("Connection %s from %s: %s", self.id, self.client, reason)
        self.write(send_error(self.conn, status))
        self.transport.close()
        if self.cycle is not None:
            self.cycle.client_disconnected()  # the app's request is dead too: receive/send say so

    def response_complete(self) -> None:
        """The cycle sent its last byte: close, or get ready for the next request."""
        self.cycle = None
        if self.conn.our_state is h11.MUST_CLOSE or not self.keep_alive or self.transport.is_closing():
            self.transport.close()
            return
        if self.conn.their_state is not h11.DONE:
            # The app answered without reading the whole request body. Rather than read and
            # discard an unknown amount, close: the client will see Connection: close.
            self.transport.close()
            return
        self.conn.start_next_cycle()
        self.waiting_since = self.loop.time()
        self.overdue = False
        self.head_bytes = len(self.conn.trailing_data[0])
        self.resume_reading()
        if self.head_bytes:
            self.handle_events()  # a pipelined request is already waiting in h11's buffer

    # -- small helpers used by the cycle ----------------------------------------------------

    def write(self, data: bytes) -> None:
        if data:
            if self.tracer is not None:
                self.tracer.emit(self.id, "socket", "bytes_out", {"bytes": preview(data), "size": len(data)})
            self.transport.write(data)

    def pause_reading(self) -> None:
        if not self.reading_paused:
            self.reading_paused = True
            self.transport.pause_reading()

    def resume_reading(self) -> None:
        if self.reading_paused:
            self.reading_paused = False
            self.transport.resume_reading()

    def check_timeouts(self, now: float) -> None:
        """Called by the server's housekeeping tick: drop idle and too-slow clients.

        A connection that never sends a byte, or idles between requests, is closed after
        `timeout_keep_alive`; one that started a request head but has not finished it after
        `timeout_request_header` is closed too (a slow-headers attack). A request body that
        stops arriving while the app waits for it gets 408 after `timeout_request_header`
        of silence (as in the WSGI server), so a stalled upload cannot hold its task forever.
        """
        if self.waiting_since is None:
            cycle = self.cycle
            if cycle is not None and cycle.more_body and cycle.waiter is not None:
                if cycle.body_size != cycle.body_seen:  # progress since the last tick
                    cycle.body_seen, cycle.body_seen_at = cycle.body_size, now
                elif now - cycle.body_seen_at > self.config.timeout_request_header:
                    self.reject(408, "request body too slow")
            return
        idle = self.head_bytes == 0
        limit = self.config.timeout_keep_alive if idle else self.config.timeout_request_header
        if now - self.waiting_since <= limit:
            return
        if not self.overdue:
            # Close at the next tick, not this one. The loop reads every socket between two
            # ticks, so a request that arrived while the whole server was stalled (a paused
            # VM, swapping) is read and answered first: closing a socket with unread bytes
            # makes the kernel reset the connection, and the client loses that request.
            self.overdue = True
            return
        self.close_idle("idle" if idle else "request head too slow")

    def close_idle(self, why: str) -> None:
        if self.tracer is not None:
            self.tracer.emit(self.id, "server", "timeout", {"reason": why})
        self.transport.close()

    def shutdown(self) -> None:
        """Graceful shutdown: close if idle; otherwise finish this response, then close, and
        tell a streaming app (response under way) that the client is going away."""
        self.keep_alive = False
        if self.cycle is None:
            self.transport.close()
        elif self.cycle.response_started:
            self.cycle.client_disconnected()


class RequestResponseCycle:
    """One request and its response, as the ASGI app sees them (ASGI www spec, "HTTP").

    The app gets `receive` and `send`. This class checks that the app's messages come in
    the order the spec requires, and turns them into h11 events.
    """

    __slots__ = ("protocol", "conn", "scope", "tracer", "body", "more_body", "body_delivered",
                 "input_closed", "body_size", "body_seen", "body_seen_at", "waiter",
                 "response_started", "response_complete", "disconnected", "disconnect_delivered",
                 "pending_start", "head_only", "status")

    def __init__(self, protocol: HTTPProtocol, scope: dict) -> None:
        self.protocol = protocol
        self.conn = protocol.conn
        self.scope = scope
        self.tracer = protocol.tracer
        # Request body, filled by the protocol, emptied by receive().
        self.body = bytearray()
        self.more_body = True
        self.body_delivered = False  # the app has had the last http.request message
        self.input_closed = False  # the client sent EOF (see client_stopped_sending)
        self.body_size = 0
        self.body_seen, self.body_seen_at = -1, 0.0  # for the stalled-body timeout
        self.waiter: asyncio.Future | None = None
        # Response state machine: not started -> started -> complete; or disconnected.
        self.response_started = False
        self.response_complete = False
        self.disconnected = False
        self.disconnect_delivered = False  # receive() has returned http.disconnect to the app
        self.pending_start: h11.Response | None = None
        self.head_only = scope["method"] == "HEAD"
        self.status = 0

    # -- called by the protocol --------------------------------------------------------------

    def body_received(self, data: bytes) -> None:
        self.body += data
        self.body_size += len(data)
        limit = self.protocol.config.max_body_bytes
        if limit is not None and self.body_size > limit:  # a chunked body that grew too big
            self.protocol.reject(413, "request body over the limit")
            self.client_disconnected()
            return
        if len(self.body) > self.protocol.config.read_high_water:
            self.protocol.pause_reading()  # back-pressure: the app is not keeping up
        self.wake()

    def body_complete(self) -> None:
        self.more_body = False
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

    def wake(self) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(None)

    # -- the app ---------------------------------------------------------------------------------

    def app_finished(self, task: asyncio.Task) -> None:
        """The app's task ended, however it ended: log a failure, and never leave the
        response half-done (www spec: the app must finish its response before returning)."""
        self.protocol.server.tasks.discard(task)
        exc = None if task.cancelled() else task.exception()
        if exc is not None and not self.disconnected:  # after a disconnect, a failing send() is expected
            logger.error("Exception in ASGI application", exc_info=exc)
        elif exc is None and not self.response_complete:
            what = ("was cancelled" if task.cancelled() else "returned",
                    "completing" if self.response_started else "starting")
            if self.disconnected or self.disconnect_delivered:
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
        if self.response_complete or transport.is_closing():
            return
        gone = self.disconnected or self.disconnect_delivered  # a 500 would be for nobody
        if not gone and (self.pending_start is not None or not self.response_started):
            self.response_started = self.response_complete = True
            self.protocol.write(send_error(self.conn, 500))
        transport.close()

    async def receive(self) -> dict:
        """ASGI www spec, "Request - receive event" and "Disconnect - receive event"."""
        if self.conn.they_are_waiting_for_100_continue and not self.response_started:
            # RFC 9110 §10.1.1: the client waits for our go-ahead before sending its body. We
            # give it only now, when the app first asks for the body.
            go_ahead = h11.InformationalResponse(status_code=100, headers=[], reason=b"Continue")
            self.protocol.write(self.conn.send(go_ahead))
        if not self.disconnected and not self.response_complete and not self.body \
                and (self.more_body or self.body_delivered and not self.input_closed):
            # Nothing to hand over yet: wait for more body, or (all of it delivered) for the
            # client to leave or the response to complete.
            if self.more_body:
                self.protocol.resume_reading()
            self.waiter = self.protocol.loop.create_future()
            await self.waiter
            self.waiter = None
        if self.disconnected or self.response_complete or self.body_delivered:
            message = {"type": "http.disconnect"}
            self.disconnect_delivered = True
        else:
            message = {"type": "http.request", "body": bytes(self.body), "more_body": self.more_body}
            self.body.clear()
            self.body_delivered = not self.more_body
            self.protocol.resume_reading()
        if self.tracer is not None:
            self.tracer.emit(self.protocol.id, "asgi", "receive", message)
        return message

    async def send(self, message: dict) -> None:
        """ASGI www spec, "Response Start - send event" and "Response Body - send event"."""
        protocol = self.protocol
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
        if not self.response_started:
            if message_type != "http.response.start":
                raise RuntimeError(f"Expected 'http.response.start', but got {message_type!r}: "
                                   "an app must start its response before sending the body")
            status = message["status"]
            if type(status) is not int:  # checked before the cache, where 200.0 == 200 as a key
                raise TypeError(f"http.response.start 'status' must be an int like 200 "
                                f"(ASGI www spec, Response Start), not {status!r}")
            self.status = status
            headers = message.get("headers", ())
            # Built now so that a bad status or header fails here, while a 500 is still
            # possible. It is written with the first body chunk: one write for small responses.
            self.pending_start = response_head((status, tuple(headers)), _h11_response, status, headers)
            self.response_started = True
            if protocol.config.access_log:
                self.log_access()
        elif not self.response_complete:
            if message_type != "http.response.body":
                raise RuntimeError(f"Expected 'http.response.body', but got {message_type!r}")
            body = message.get("body", b"")
            more_body = message.get("more_body", False)
            chunks = []
            if self.pending_start is not None:
                chunks.append(self.conn.send(self.pending_start))
                self.pending_start = None
            if body and not self.head_only:
                chunks.append(self.conn.send(h11.Data(data=body)))
            if not more_body:
                chunks.append(self.conn.send(h11.EndOfMessage()))
                self.response_complete = True
            protocol.write(b"".join(chunks))
            if self.response_complete:
                self.wake()  # a receive() waiting for a disconnect gets one now
                protocol.response_complete()
        else:
            raise RuntimeError(f"Unexpected ASGI message {message_type!r} after the response completed")

    def log_access(self) -> None:
        if access_logger.isEnabledFor(logging.INFO):
            scope = self.scope
            client = scope["client"]
            access_logger.info('%s:%s - "%s %s HTTP/%s" %d', client[0] if client else "-",
                               client[1] if client else "-", scope["method"], scope["path"],
                               scope["http_version"], self.status)


def _h11_response(status: int, headers) -> h11.Response:
    """An app's http.response.start as an h11.Response, with our default headers first.
    A code outside 200-599 is refused here (`check_status`); the reason phrase is ours.

    ASGI www spec, "Response Start": "You may send a `Transfer-Encoding` header in this
    message, but the server must ignore it." Framing is h11's: Content-Length if the app gave
    one, otherwise chunked (HTTP/1.1) or until the connection closes (HTTP/1.0)."""
    check_status(status)
    headers = [(name, value) for name, value in headers if name.lower() != b"transfer-encoding"]
    return h11.Response(status_code=status, headers=default_headers() + headers,
                        reason=reason_phrase(status))


def _address(sockname) -> tuple[str, int] | None:
    """(host, port) from a socket address; None for a Unix socket or an unknown peer."""
    if isinstance(sockname, tuple) and len(sockname) == 2:
        return sockname  # IPv4: already (host, port); shared, not copied, per connection
    if isinstance(sockname, tuple) and len(sockname) > 2:
        return (str(sockname[0]), int(sockname[1]))  # IPv6: (host, port, flowinfo, scope_id)
    return None
