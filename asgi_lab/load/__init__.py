"""Load generators: many concurrent clients, from a process of their own.

A load generator must never run inside the server's process: it would share the server's
event loop (or, on the standard GIL build of CPython, its GIL; a free-threaded 3.13t/3.14t
build removes that one, not the first) and measure itself. The experiment runner starts these modules with
`python -m asgi_lab.load.sse ...` / `longpoll` / `ws`.

Each client is an `asyncio.Protocol` with an `h11.Connection(h11.CLIENT)` (a wsproto one for
WebSocket): no task and no
stream objects per client, so one process holds thousands of them. h11 parses the responses
(we never parse HTTP by hand); the SSE lines inside the body are split here, they are text.

`clients.py` holds what the SSE, long-polling and WebSocket generators share (the ramp, the
hold, the leave, merging processes' results, the command line), `process.py` starts them,
`http.py` is the plain request/response generator and `wrk.py` runs wrk. This module holds
the open-files limit and the statistics.
"""

from __future__ import annotations

import math
import resource

FDS_PER_PROCESS = 64
"""File descriptors a Python process uses besides its sockets (stdio, pipes, the selector)."""


class TooManyClients(RuntimeError):
    """This process cannot open that many sockets: the open-files limit is too low."""


SPLIT_ADVICE = "Split the clients over more load processes (--load-processes), or raise"
SERVER_ADVICE = "The server needs one per client, in one process: raise"


def plan_open_files(needed: int, soft: int, hard: int, advice: str = SPLIT_ADVICE) -> int:
    """The soft RLIMIT_NOFILE to ask for so that `needed` descriptors fit, or TooManyClients.

    A process may raise its soft limit up to the hard limit, but not beyond (only root can
    raise the hard limit). RLIM_INFINITY counts as no limit.
    """
    if hard != resource.RLIM_INFINITY and needed > hard:
        raise TooManyClients(
            f"{needed} file descriptors are needed but this process may open at most {hard} "
            f"(hard RLIMIT_NOFILE). {advice} the hard limit (e.g. `ulimit -Hn {needed}` as "
            f"root, or `nofile` in /etc/security/limits.conf).")
    if soft == resource.RLIM_INFINITY or soft >= needed:
        return soft
    return hard  # as far as allowed: the server (our child, if we start it) inherits it too


def raise_open_files_limit(clients: int, advice: str = SPLIT_ADVICE) -> int:
    """Make room for `clients` sockets in this process; returns the soft limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = plan_open_files(clients + FDS_PER_PROCESS, soft, hard, advice)
    if wanted != soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
    return wanted


def percentile(values, q: float) -> float | None:
    """The q-th percentile (0-100) of `values`, nearest-rank on sorted data; None if empty."""
    data = sorted(values)
    if not data:
        return None
    rank = max(1, math.ceil(q / 100 * len(data)))
    return data[min(rank, len(data)) - 1]
