"""Stand-ins the exercises hand to students (the database is a real one: `asgi_lab.db`)."""

from __future__ import annotations

import asyncio
import itertools
import threading


_loop_numbers = itertools.count(1)
PRICES = {"tea": "3.20 EUR", "coffee": "2.80 EUR", "cake": "4.50 EUR"}


class PriceService:
    """An async client for a price service, minus the network: `await prices.fetch("tea")`
    takes 0.2 s and returns "tea: 3.20 EUR"; an unknown item raises LookupError.

    Like a real async client (an aiohttp session, an asyncpg pool) it belongs to the event loop
    it first ran on: awaited from another loop it raises RuntimeError. It also writes down
    which loops and threads ran it, and how many fetches overlapped, for the bridge check."""

    def __init__(self, delay: float = 0.2) -> None:
        self.delay = delay
        self.reset()

    def reset(self) -> None:
        """Forget the loop it belongs to and everything it counted (each check starts here)."""
        self.loop: asyncio.AbstractEventLoop | None = None
        self.loops: set[int] = set()
        self.threads: set[int] = set()
        self.calls = 0
        self.in_flight = 0
        self.most_in_flight = 0

    async def fetch(self, item: str) -> str:
        loop = asyncio.get_running_loop()
        if not hasattr(loop, "price_service_number"):  # id(loop) may be reused once a loop is gone
            loop.price_service_number = next(_loop_numbers)
        self.loops.add(loop.price_service_number)
        self.threads.add(threading.get_ident())
        if self.loop is None:
            self.loop = loop
        elif loop is not self.loop:
            raise RuntimeError("this PriceService belongs to another event loop (the one it "
                               "first ran on); like an aiohttp session or an asyncpg pool, it "
                               "cannot be awaited from a second loop")
        self.calls += 1
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            await asyncio.sleep(self.delay)  # the network round trip
        finally:
            self.in_flight -= 1
        if item not in PRICES:
            raise LookupError(f"no price for {item!r}")
        return f"{item}: {PRICES[item]}"


prices = PriceService()
"""The one price service of the bridge exercise (stretch 11)."""
