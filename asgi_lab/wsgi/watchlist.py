"""The acceptor's watch list: the sockets its selector waits on, and what each one is.

The acceptor (see `server.py`) waits on the listening socket, its wake-up pipe and every
idle connection; and for room to write, on a connection whose finished response was handed
over to it (`Connection.hand_over`): `watch(connection, writing=True)`, reported the same
way. An idle connection must be reported *once* when its next request arrives,
then left alone while a worker answers it, then watched again when the worker gives it back.
The acceptor may also take back an idle connection that was not reported (`unwatch`: the idle
sweep, shutdown). Two ways to get that, behind the same methods:

- `PortableWatchList` (any platform, `selectors`): register the connection when it goes
  idle, unregister it as soon as it is reported. Two system calls per request
  (epoll_ctl ADD and DEL on Linux), and Python bookkeeping for both.
- `OneShotWatchList` (Linux): epoll's EPOLLONESHOT flag. A connection is registered once;
  after reporting it, the kernel disarms it by itself, and the worker that gives it back
  re-arms it: one system call per request (epoll_ctl MOD). If the next request arrived
  while a worker was busy with this one (pipelining), re-arming reports it at once.
  A closed socket leaves the kernel's epoll set by itself; `forget()` drops our note of it.
  A connection taken back while still armed must be unregistered, or epoll would report it
  later, to a second worker.

All methods are called with the server's selector lock held, except `select()` (see
`server.py`, "Giving a connection back").
"""

from __future__ import annotations

import select
import selectors

# Selectors whose watched set is kept by the kernel, so registering from another thread works
# while select() waits (see server.py).
_KERNEL_SELECTORS = tuple(getattr(selectors, name) for name in ("EpollSelector", "KqueueSelector",
                                                                "DevpollSelector") if hasattr(selectors, name))


class PortableWatchList:
    """Idle connections in a `selectors` selector, registered only while idle."""

    def __init__(self) -> None:
        self.selector = selectors.DefaultSelector()
        # With select() or poll() the watched set is fixed when the call starts: whoever
        # registers a socket from another thread must wake the acceptor (server.py).
        self.wake_needed = not isinstance(self.selector, _KERNEL_SELECTORS)

    def add(self, sock, data) -> None:
        """Watch a socket of the server's own (the listener, the wake-up pipe)."""
        self.selector.register(sock, selectors.EVENT_READ, data)

    def remove(self, sock) -> None:
        self.selector.unregister(sock)

    def watch(self, connection, writing: bool = False) -> None:
        """The connection is idle: report it when it has bytes to read (`writing`: room to write)."""
        events = selectors.EVENT_WRITE if writing else selectors.EVENT_READ
        self.selector.register(connection.sock, events, connection)

    def reported(self, connection) -> None:
        """select() just reported it: stop watching it while a worker answers it."""
        self.selector.unregister(connection.sock)

    def unwatch(self, connection) -> None:
        """Stop watching it, though it was not reported (the idle sweep, shutdown)."""
        self.selector.unregister(connection.sock)

    def forget(self, connection) -> None:
        """It closed. Never watched at that moment, so there is nothing to do."""

    def select(self, timeout: float) -> list:
        """Wait up to `timeout` seconds; the data of every socket ready to read."""
        return [key.data for key, _ in self.selector.select(timeout)]

    def close(self) -> None:
        self.selector.close()


class OneShotWatchList:
    """Linux: every socket registered once in an epoll; connections with EPOLLONESHOT."""

    if hasattr(select, "EPOLLONESHOT"):
        READ = select.EPOLLIN | select.EPOLLONESHOT    # an idle connection: its next request
        WRITE = select.EPOLLOUT | select.EPOLLONESHOT  # a handed-over response: room to write

    wake_needed = False  # epoll's set lives in the kernel

    def __init__(self) -> None:
        self.epoll = select.epoll()
        self.data: dict[int, object] = {}  # file descriptor -> what it is (a Connection...)

    def add(self, sock, data) -> None:
        self.data[sock.fileno()] = data
        self.epoll.register(sock.fileno(), select.EPOLLIN)

    def remove(self, sock) -> None:
        self.epoll.unregister(sock.fileno())
        del self.data[sock.fileno()]

    def watch(self, connection, writing: bool = False) -> None:
        fd = connection.fd
        events = self.WRITE if writing else self.READ
        if self.data.get(fd) is connection:  # registered before: re-arm it
            self.epoll.modify(fd, events)
        else:  # first time idle, or after unwatch() (an fd number may be reused: overwrite)
            # Note it first: the acceptor's poll() runs without the lock and may report the
            # socket the instant it is registered.
            self.data[fd] = connection
            self.epoll.register(fd, events)

    def reported(self, connection) -> None:
        """Nothing to do: having reported it, the kernel disarmed it (EPOLLONESHOT)."""

    def unwatch(self, connection) -> None:
        """Still armed: take it out of the epoll set, so that bytes arriving now are not
        reported to a second worker. Its next `watch()` registers it again."""
        self.epoll.unregister(connection.fd)
        del self.data[connection.fd]

    def forget(self, connection) -> None:
        if self.data.get(connection.fd) is connection:  # not a newer connection on that number
            del self.data[connection.fd]

    def select(self, timeout: float) -> list:
        found = []
        for fd, _ in self.epoll.poll(timeout):
            data = self.data.get(fd)
            if data is not None:
                found.append(data)
        return found

    def close(self) -> None:
        self.epoll.close()


def new_watch_list() -> PortableWatchList | OneShotWatchList:
    """The one-shot list where the platform has it (Linux), the portable one elsewhere."""
    if hasattr(select, "epoll") and hasattr(select, "EPOLLONESHOT"):
        return OneShotWatchList()
    return PortableWatchList()
