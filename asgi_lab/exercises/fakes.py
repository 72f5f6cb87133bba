"""Stand-ins the exercises hand to students: things a real app would open at startup."""

from __future__ import annotations

import asyncio
import time


class FakeDatabase:
    """A database connection pool, minus the database: `await db.connect()` at startup,
    `await db.close()` at shutdown. It remembers when each happened, so a check can tell
    whether the app opened it before serving and closed it after the last request."""

    def __init__(self) -> None:
        self.open = False
        self.opened_at: float | None = None
        self.closed_at: float | None = None

    async def connect(self) -> "FakeDatabase":
        await asyncio.sleep(0.01)  # a real pool takes a moment to connect
        self.open, self.opened_at = True, time.monotonic()
        return self

    async def close(self) -> None:
        await asyncio.sleep(0)
        self.open, self.closed_at = False, time.monotonic()

    def __repr__(self) -> str:
        return f"<FakeDatabase {'open' if self.open else 'closed'}>"
