"""The primer: a blocking server, a thread per connection and an event loop, from the ground up.

Before the lab's real servers, notebook `00a-from-the-ground-up.ipynb` builds tiny ones from
`socket` and `selectors` and serves the same request with each, to show what a thread and an
event loop are. Read the modules in this order:

- `exchange.py`: the one request they all answer (`GET /?ms=300`: "work" 300 ms), with h11;
- `server.py`: what they share: a loopback listener, a record of whom they served, a stop;
- `blocking.py`: `BlockingServer` (one client at a time) and `ThreadedServer` (a thread each);
- `loop.py`: `Loop`, an event loop of generator tasks over a selector, with timers;
- `loop_server.py`: `LoopServer`, the blocking server's steps as tasks on that loop;
- `coroutines.py`: `CoroutineServer`, the same tasks as `async def` coroutines;
- `clients.py`: `measure()`, many clients at once and when each got its answer;
- `timeline.py`: a figure of who waited and who was served, when.
"""

from .blocking import BlockingServer, ThreadedServer
from .clients import Run, Visit, measure
from .coroutines import CoroutineServer
from .loop import Loop
from .loop_server import LoopServer

__all__ = ["BlockingServer", "ThreadedServer", "LoopServer", "CoroutineServer", "Loop",
           "measure", "Run", "Visit"]
