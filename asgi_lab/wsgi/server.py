"""The WSGI server: listen, hand connections to threads, shut down gracefully.

    server = WSGIServer(app, Config(port=0))
    server.start()          # returns once listening; server.url is ready
    ...
    server.shutdown()       # stop accepting, let requests in flight finish, close the rest

A WSGI app is a blocking function call, so every request in progress needs a thread of its
own. Which threads, and who does what:

- The **acceptor** ("wsgi-acceptor"): one thread with a selector (epoll, kqueue...). It accepts
  new connections and puts each on the *ready queue* (its request is usually there already),
  and it watches every *idle* connection: a keep-alive connection between two requests, a new
  one that has not sent a byte yet, a slow client still sending its request head. When bytes
  arrive on one, that connection goes on the ready queue too. The acceptor also closes the
  connections that stay idle, or dribble their head, for too long (`Config` timeouts).
- The **workers** ("wsgi-worker-1" ... "wsgi-worker-N", N = `config.threads`): each takes a
  ready connection from the queue, reads the request and runs the app, blocking, until the
  response is sent (see `connection.py`); then gives the connection back to the acceptor
  and takes the next one. When all N workers are busy, ready connections wait in the queue:
  a bounded pool, like gunicorn's gthread worker or waitress. A worker that finds the queue
  empty asks the acceptor's selector itself, without waiting, for connections whose request
  has arrived (`_find_ready`); while a worker is awake, the acceptor leaves the selector to
  the workers (see `_run_acceptor`). The queue and the workers live in `pool.py`, which also
  decides how many workers are awake: as few as keep the GIL busy.
- With `threads=0` there is no pool: each connection gets a thread of its own ("wsgi-conn-17")
  that blocks on its socket from accept to close, the classic threaded server
  (`socketserver.ThreadingMixIn`). Simple, and one thread per open connection, idle or not.

Keep-alive and the pool. A worker is held exactly while a request is being handled. That
includes a Server-Sent Events stream or a long-poll, which hold their worker for as long as
they last (the lab's point: ten SSE clients on eight workers leave two of them waiting).
It does not include a keep-alive connection sitting idle between requests, or a client
slowly sending its headers: those wait in the acceptor's selector and cost a file
descriptor, not a thread. Otherwise eight idle browsers would starve an eight-thread pool,
as happens in a pool whose workers keep their connection until the client leaves; gunicorn's
gthread worker avoids it exactly this way, waitress with one I/O thread for all sockets. The
price, a hand-off between threads per request (acceptor -> queue -> worker -> selector), is
paid only when the pool is idle: under load, the worker that gives a connection back to the
selector is the one that finds the next ready one there.

Slow readers. A request is only handed to a worker once its head and the start of its body
have arrived (`Connection.early_body_arrived`), so a slow sender holds a socket, not a
thread. The other way round: a worker whose *finished* response (the app has returned, the
bytes are in memory) the client is slow to take does not wait for it. It hands the rest to
the acceptor (`Connection.hand_over`), whose selector then watches that socket for room to
write; the acceptor writes what the kernel takes each time and, once all is sent, closes the
connection or watches it for its next request, as a worker would have. Memory for this is
bounded (`Config.wsgi_write_behind_bytes`); a response that does not fit keeps its worker.
A streaming response (a generator, SSE) is not finished while it streams: it keeps its
worker, which waits on a client that does not read for at most `wsgi_timeout_write`.

Giving a connection back. The acceptor sleeps in `select()` while a worker adds a socket to
its selector. With epoll (Linux) and kqueue (macOS, BSD) that is all it takes: the set of
watched sockets lives in the kernel, and a `select()` already waiting sees the new socket. With
plain select() or poll() (Windows), the set is fixed when the call starts, so the worker also
wakes the acceptor by writing one byte to a socket pair the selector watches: the "self-pipe
trick", the one asyncio uses for `call_soon_threadsafe`. A lock keeps the selector's own
Python-side bookkeeping consistent between threads. On Linux the selector is epoll with
one-shot registrations, so a hand-off costs one system call instead of two: see
`watchlist.py`.
"""

from __future__ import annotations

import itertools
import logging
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable

from ..config import Config
from ..core import FIRST_REQUEST_WAIT, ResponseHeads, address, tick_interval, url
from ..http11 import MSG_DONTWAIT, bind_socket
from ..tls import server_ssl_context
from ..unix_socket import remove_socket_file
from .connection import Connection
from .pool import WorkerPool
from .watchlist import new_watch_list

logger = logging.getLogger("asgi_lab.error")

ACCEPT_RETRY_DELAY = 1.0
"""Seconds to stop accepting after accept() fails for lack of resources (as asyncio does)."""

_ACCEPT = "accept"  # what the selector reports: the listening socket,
_WAKE = "wake"      # the self-pipe, or (any other value) an idle Connection


class WSGIServer:
    """A threaded WSGI (PEP 3333) server for HTTP/1.1.

    Also the state every connection shares: `app`, `config`, `tracer`, `address`, and the
    set of open `connections`.
    """

    def __init__(self, app, config: Config | None = None, tracer=None) -> None:
        self.app = app
        self.config = config or Config()
        self.tracer = tracer
        self.heads = ResponseHeads()  # the `date` header and the cache of checked response heads
        self.address: tuple[str, int | None] | None = None  # (path, None) on a Unix socket
        # TLS (tls.py): each accepted socket is wrapped, and a worker makes the handshake.
        self.ssl_context = server_ssl_context(self.config)
        self.scheme = "http"
        self._connection_class = Connection
        if self.ssl_context is not None:
            from .tls import TLSConnection

            self.scheme = "https"
            self._connection_class = TLSConnection
        self.connections: set[Connection] = set()
        self._ids = itertools.count(1)
        self._listener: socket.socket | None = None
        self._selector = None                            # a watch list (see watchlist.py)
        self._idle: set[Connection] = set()              # watched by the acceptor's selector
        self._selector_lock = threading.Lock()           # guards the selector, _idle, _unsent_bytes
        self._unsent_bytes = 0                           # handed-over response bytes (see below)
        self._pool: WorkerPool | None = None              # threads > 0: the workers, the ready queue
        self._wake_r = self._wake_w = None
        self._acceptor: threading.Thread | None = None
        self._connection_threads: set[threading.Thread] = set()  # threads=0 only
        self._accept_paused_until: float | None = None  # out of file descriptors: see _accept
        self._stopping = False
        self._first_requests_until = 0.0                 # see _close_idle_connections
        self._stopped = False
        self._force_exit = False
        self._stop_requested = threading.Event()         # see request_shutdown
        self._shutdown_done = threading.Event()          # see wait_stopped

    @property
    def url(self) -> str:
        return url(self.address, self.scheme)

    def __enter__(self) -> "WSGIServer":
        if self.address is None:
            self.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self.shutdown()

    def stats(self) -> dict:
        """What the threads are doing right now: for notebooks that watch a pool fill up."""
        connections = list(self.connections)
        busy = sum(1 for connection in connections if connection.cycle is not None)
        return {
            "threads": self.config.threads or len(self._connection_threads),
            "busy": busy,                      # threads inside a request (the app, or writing)
            "queued": self._pool.queued if self._pool else 0,  # ready, waiting for a worker
            "connections": len(connections),   # open connections, idle ones included
        }

    def worker_threads(self) -> list[threading.Thread]:
        """The threads that run the app (a snapshot): the pool's workers, or with `threads=0`
        one per open connection."""
        return (self._pool.threads if self._pool else []) + list(self._connection_threads)

    def idle_connections(self) -> list[Connection]:
        """The connections resting in the acceptor's selector, between requests (a snapshot)."""
        with self._selector_lock:
            return list(self._idle)

    # -- start ---------------------------------------------------------------------------------

    def start(self, sock: socket.socket | None = None) -> None:
        """Bind, start the acceptor and the workers; returns once listening."""
        self._listener = sock or bind_socket(self.config)
        self._listener.setblocking(False)
        self.address = address(self._listener.getsockname())
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._selector = new_watch_list()
        self._selector.add(self._listener, _ACCEPT)
        self._selector.add(self._wake_r, _WAKE)
        if self.config.threads:
            self._pool = WorkerPool(self.config.threads, self._serve_ready, self._find_ready)
            self._pool.start()
        self._acceptor = threading.Thread(target=self._run_acceptor, name="wsgi-acceptor", daemon=True)
        self._acceptor.start()
        logger.debug("asgi_lab WSGI server listening on %s", self.url)

    # -- the acceptor thread ---------------------------------------------------------------------

    def _run_acceptor(self) -> None:
        """Accept, watch idle connections, hand ready ones on, close expired ones; until shutdown.

        While a worker is awake, the acceptor leaves the watch list to the workers: a worker
        that runs out of work looks at it itself (`_find_ready`, called by `pool.py`), with no
        hand-off between threads. Were the acceptor waiting in select() meanwhile, every
        request arriving would wake it, and it would take the GIL from a worker to pass on a
        connection that worker was about to find anyway. So it waits for the last worker to
        fall asleep (or for its next look at the pool, or its next sweep), and only then
        waits for sockets. Unless every awake worker is stuck in a long request (an SSE
        stream...) and none sleeps: then nobody else looks, and the acceptor selects and
        queues what arrives, as before."""
        selector = self._selector
        pool = self._pool
        config = self.config
        tick = tick_interval(config)
        next_check = time.monotonic() + tick
        timeout = tick
        try:
            while not self._stopping:
                if pool is not None and pool.looking:
                    pool.all_asleep.wait(timeout)
                else:
                    for connection in self._find_ready(timeout):
                        pool.put(connection)  # a worker's turn
                now = time.monotonic()
                if self._accept_paused_until is not None and now >= self._accept_paused_until:
                    self._accept_paused_until = None
                    with self._selector_lock:
                        selector.add(self._listener, _ACCEPT)
                if now >= next_check:
                    self.check_deadlines(now)
                    next_check = now + tick
                look_again = pool.look(now) if pool else None  # see pool.py
                timeout = tick if look_again is None else min(look_again, tick)
        except BaseException as exc:  # never expected; log it rather than die silently
            logger.critical("The WSGI acceptor thread failed", exc_info=exc)
        finally:
            # Shutting down: stop listening, and close every idle connection.
            if self._accept_paused_until is None:
                with self._selector_lock:
                    selector.remove(self._listener)
            self._listener.close()
            self._close_idle_connections()

    def _find_ready(self, timeout: float = 0) -> list[Connection]:
        """(the acceptor, or a worker with nothing to do) The connections whose next request
        has arrived, from the watch list: without waiting (`timeout` 0: a worker), or for up
        to `timeout` seconds (the acceptor, while every worker sleeps). On the way, accept new
        connections, and write handed-over responses whose socket has room."""
        ready: list[Connection] = []
        if self._stopping:
            return ready
        for what in self._selector.select(timeout):
            if what is _ACCEPT:
                self._accept(ready)
            elif what is _WAKE:
                self._drain_wake_ups()
            elif self._reported(what):
                if what.unsent is None:  # an idle connection has bytes to read
                    ready.append(what)
                elif self._write_unsent(what):  # a handed-over response had room: all sent
                    ready.append(what)          # and a pipelined request waits
        return ready

    def _accept(self, ready: list[Connection]) -> None:
        """Accept new connections: into `ready` for a pool worker, or a thread each."""
        for _ in range(64):  # a burst of new connections, but let the others have a turn
            try:
                sock, client = self._listener.accept()
            except BlockingIOError:
                return
            except OSError as exc:
                if self._stopping:  # the acceptor closed the listener meanwhile
                    return
                # Out of file descriptors (or memory). The listening socket stays readable, so
                # trying again at once would spin: stop accepting for a moment. New clients
                # wait in the kernel's listen backlog meanwhile.
                with self._selector_lock:
                    if self._accept_paused_until is not None:  # another thread did, just now
                        return
                    self._selector.remove(self._listener)
                    self._accept_paused_until = time.monotonic() + ACCEPT_RETRY_DELAY
                logger.error("accept() failed (%s); not accepting for %g s", exc, ACCEPT_RETRY_DELAY)
                return
            if sys.platform != "linux":  # elsewhere it inherits the listener's non-blocking mode
                sock.setblocking(True)
            connection = self._connection_class(self, sock, address(client), next(self._ids))
            self.connections.add(connection)
            if self.config.threads:
                if MSG_DONTWAIT:
                    # Straight to a worker: a client sends its request right after connecting,
                    # so it is usually there already. If not, the worker's non-blocking read
                    # finds nothing and gives the connection back to the selector.
                    ready.append(connection)
                else:
                    self._watch(connection)
            else:
                thread = threading.Thread(target=self._serve_connection, args=(connection,),
                                          name=f"wsgi-conn-{connection.id}", daemon=True)
                self._connection_threads.add(thread)
                thread.start()

    def _watch(self, connection: Connection) -> None:
        """(any thread) Wait for the connection's next bytes in the acceptor's selector; or,
        if a response was handed over to the acceptor, for room to write it."""
        with self._selector_lock:
            self._selector.watch(connection, connection.unsent is not None)
            self._idle.add(connection)
        if self._selector.wake_needed:
            self._wake()

    def _reported(self, connection: Connection) -> bool:
        """select() reported the connection: it is this thread's now. False if another
        thread took it first (the acceptor's sweep, or shutdown: see `_unwatch`)."""
        with self._selector_lock:
            if connection not in self._idle:
                return False
            self._selector.reported(connection)
            self._idle.discard(connection)
            return True

    def _unwatch(self, connection: Connection) -> bool:
        """Take back an idle connection select() has not reported (idle sweep, shutdown).
        False if a worker's select() has just reported it, and that worker took it."""
        with self._selector_lock:
            if connection not in self._idle:
                return False
            self._selector.unwatch(connection)
            self._idle.discard(connection)
            return True

    def _drain_wake_ups(self) -> None:
        try:
            while self._wake_r.recv(4096):
                pass
        except BlockingIOError:
            pass

    def check_deadlines(self, now: float | None = None) -> None:
        """(the acceptor thread, at every tick) One sweep of the idle connections' deadlines: close
        those idle for too long, too slow with their head or body, or not taking a
        handed-over response. Public, so a test that holds the acceptor (see
        tests/test_wsgi_idle_race.py) can sweep when it chooses, and pass a later `now`
        (`time.monotonic()` seconds) instead of waiting for it.

        A connection can expire in the very moment its next request arrives: after select()
        looked at it, before this sweep. Closing a socket with unread bytes makes the kernel
        send a reset, and the client loses a request it had already sent. So the core's one
        "overdue" rule applies (`ConnectionCore.past_deadline`, the same as in the ASGI
        server): a connection is closed at the second sweep that finds it past its deadline,
        and the select() calls in between hand a request that arrived to a worker. A window
        of microseconds remains, between the last select() and the sweep: a request arriving
        there meets a closed connection. No server can close that window (the client decides
        alone when to reuse a connection); RFC 9112 §9.3.1 lets a client retry an idempotent
        request on a new connection when that happens (browsers do).
        """
        if now is None:
            now = time.monotonic()
        with self._selector_lock:
            expired = [connection for connection in self._idle if connection.core.past_deadline(now)]
        for connection in expired:
            if self._unwatch(connection):
                connection.close_idle()

    def _close_idle_connections(self, answer_waiting: bool = True) -> None:
        """Shutting down: close the idle connections. One whose next request has just arrived
        (bytes unread in its socket) goes to a worker first, which answers it and then closes:
        closing it unread would reset it and lose a request the client had already sent. One
        that has sent no request yet is left for `FIRST_REQUEST_WAIT` after shutdown began
        (`shutdown()` calls this again every 20 ms): its first request may be on its way."""
        with self._selector_lock:
            idle = list(self._idle)
        for connection in idle:
            if connection.unsent is None and connection.core.first_request_pending() \
                    and answer_waiting and not self._force_exit \
                    and time.monotonic() < self._first_requests_until \
                    and not connection.has_bytes_waiting():
                continue  # connected before we stopped listening: its request may be on its way
            if not self._unwatch(connection):
                continue  # a worker took it
            if connection.unsent is not None and answer_waiting and not self._force_exit:
                connection.keep_alive = False
                self._pool.put(connection)  # a worker writes the rest (`finish_unsent`)
            elif answer_waiting and self._pool and not self._force_exit \
                    and connection.has_bytes_waiting():
                connection.keep_alive = False
                self._pool.put(connection)
            else:
                connection.close()

    # -- handed-over responses (the acceptor writes them) --------------------------------------

    def reserve_unsent(self, size: int) -> bool:
        """(worker) May `size` more bytes of a finished response wait for the acceptor to
        write them (`Connection.hand_over`)? Only with a pool (a thread per connection has
        nothing to free), and at most `config.wsgi_write_behind_bytes` over all connections."""
        if self._pool is None or self._stopping:
            return False
        with self._selector_lock:
            if self._unsent_bytes + size > self.config.wsgi_write_behind_bytes:
                return False
            self._unsent_bytes += size
        return True

    def release_unsent(self, size: int) -> None:
        """Bytes reserved by `reserve_unsent` were sent, or dropped with their connection."""
        with self._selector_lock:
            self._unsent_bytes -= size

    def _write_unsent(self, connection: Connection) -> bool:
        """(`_find_ready`) A connection whose finished response was handed over has room in
        its socket: write what the kernel takes, never waiting. Once all is sent, the
        connection goes on as after any response: closed, or back to waiting for its next
        request; or, if a pipelined request was already read, True: it needs a worker (its
        request is answered in order, after this response)."""
        if not connection.write_unsent():
            if not connection.closed:
                self._watch(connection)  # more to write: wait for room again
        elif not connection.keep_alive or self._stopping:
            connection.close()
        elif connection.request_buffered:
            return True
        else:
            self._watch(connection)
        return False

    # -- the worker threads ---------------------------------------------------------------------

    def _serve_ready(self, connection: Connection) -> None:
        """(a pool worker) Answer what the connection sent, then give it back if still open."""
        try:
            if connection.unsent is not None:  # shutting down (see _close_idle_connections)
                connection.finish_unsent()
            elif connection.serve_ready():
                self._give_back(connection)
        except BaseException as exc:  # a bug of ours: lose the connection, not the worker
            logger.critical("Internal error on connection %s", connection.id, exc_info=exc)
            connection.close()

    def _give_back(self, connection: Connection) -> None:
        """(worker thread) The connection is idle again: back to the acceptor's selector.
        Shutting down, it goes there too: `_close_idle_connections` decides (a new connection
        whose first request has not arrived yet is given `FIRST_REQUEST_WAIT` for it)."""
        self._watch(connection)

    def _serve_connection(self, connection: Connection) -> None:
        """threads=0: this thread serves this one connection until it closes."""
        try:
            connection.serve_forever()
        except BaseException as exc:
            logger.critical("Internal error on connection %s", connection.id, exc_info=exc)
            connection.close()
        finally:
            self._connection_threads.discard(threading.current_thread())

    def connection_closed(self, connection: Connection) -> None:
        """Called by a connection when it closes."""
        self.connections.discard(connection)
        if self._selector is not None:
            with self._selector_lock:
                self._selector.forget(connection)

    # -- stop ----------------------------------------------------------------------------------

    def shutdown(self, timeout: float | None = None) -> None:
        """Graceful shutdown, in the order a client would want it:

        1. stop accepting new connections, and close idle keep-alive connections;
        2. let requests in flight finish (each connection then closes), for at most
           `timeout_graceful_shutdown` seconds (or `timeout`, if smaller);
        3. cut the connections still open: a thread blocked writing to one, or reading its
           body, wakes up with an error, and the app's iterable gets its `close()`;
        4. stop the worker threads.

        There is no way to tell a WSGI app "the server is going away" (an ASGI app gets
        `http.disconnect`): a streaming response just fails at its next write.
        """
        if self.address is None or self._stopped:
            return
        self._stopped = True
        started = time.monotonic()
        grace = self.config.timeout_graceful_shutdown
        if timeout is not None:
            grace = min(grace, timeout)
        deadline = started + grace

        self._first_requests_until = started + FIRST_REQUEST_WAIT  # see _close_idle_connections
        self._stopping = True                          # 1.
        self._wake()
        if self._pool:
            self._pool.all_asleep.set()  # the acceptor may be waiting there, not in select()
        self._acceptor.join(5.0)
        remove_socket_file(self.config.uds)  # ours, if we listened on a Unix socket
        if self._pool:
            self._pool.hurry()  # nobody calls look() any more: no waiting in the queue
        for connection in list(self.connections):
            connection.shutdown()  # close after its response; wake an idle one's thread
        patient = True

        while self.connections and not self._force_exit:   # 2.
            self._close_idle_connections()  # any given back after the acceptor stopped
            now = time.monotonic()
            if patient and now >= self._first_requests_until:
                patient = False  # no first request came: wake those threads too (threads=0)
                for connection in list(self.connections):
                    connection.shutdown(patient=False)
            if now >= deadline:
                break
            time.sleep(0.02)

        left = list(self.connections)                       # 3.
        if left:
            logger.info("Closing %d connection(s) still busy after the grace period", len(left))
        for connection in left:
            connection.abort()

        if self._pool:                                      # 4.
            self._pool.stop()
        # Within the grace period (a stuck app's daemon thread is left behind, not waited for).
        join_until = time.monotonic() + 0.05 if self._force_exit else max(deadline, time.monotonic() + 0.05)
        threads = self.worker_threads()
        for thread in threads:
            thread.join(max(join_until - time.monotonic(), 0))
        stuck = [thread.name for thread in threads if thread.is_alive()]
        if stuck:  # an app that never returns (and never writes): daemon threads, left behind
            logger.warning("%d thread(s) still inside the app after shutdown: %s",
                           len(stuck), ", ".join(stuck))
        self._close_idle_connections(answer_waiting=False)  # no worker is left to answer
        self._selector.close()
        self._wake_r.close()
        self._wake_w.close()
        self.address = None
        self._shutdown_done.set()
        logger.info("asgi_lab WSGI server stopped")

    def _wake(self) -> None:
        """Wake the acceptor from select() (the self-pipe trick)."""
        try:
            self._wake_w.send(b"\0")
        except OSError:  # the pipe is full (the acceptor will wake anyway) or closed
            pass

    def serve(self, sock: socket.socket | None = None) -> None:
        """Start (unless `start()` already ran), serve until `request_shutdown()`, then shut
        down gracefully. Blocks the calling thread for the server's whole life."""
        if self.address is None:
            self.start(sock)
        while not self._stop_requested.wait(0.1):  # a timeout, so signal handlers get to run
            pass
        self.shutdown()

    def request_shutdown(self) -> None:
        """(any thread, or a signal handler) Ask `serve()` to shut down gracefully. A second
        request cuts the grace period short: every connection is cut at once."""
        if self._stop_requested.is_set():
            self._force_exit = True  # shutdown() stops waiting and cuts every connection
        self._stop_requested.set()

    def wait_stopped(self, timeout: float | None = None) -> bool:
        """Block until `shutdown()` has finished; False if `timeout` passed first."""
        return self._shutdown_done.wait(timeout)

    def serve_until_signal(self, ready: Callable[[], None] | None = None) -> int:
        """For the command line's main thread, after `start()`: serve until SIGINT or SIGTERM,
        then shut down gracefully. A second signal cuts the grace period short. Returns the
        process exit code.

        `ready()`, if given, is called once the handlers are installed: the CLI prints its
        "serving on ..." line there, so whoever waits for that line may send a signal at once.
        Never call this in a notebook: signal handlers belong to a script's main thread.
        """
        received: list[int] = []

        def on_signal(signum, frame) -> None:
            received.append(signum)
            if len(received) == 1:
                logger.info("Shutting down (%s); press CTRL+C again to force",
                            signal.Signals(signum).name)
            self.request_shutdown()

        previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            if ready is not None:
                ready()
            self.serve()
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        return 0
