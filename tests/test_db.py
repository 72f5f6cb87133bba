"""The course's demo database (asgi_lab/db): the shop made on first use, the report through
the blocking and the async SQLite drivers, the calibration, the URL that selects it."""

from __future__ import annotations

import asyncio
import sqlite3

import pytest

from asgi_lab import db
from asgi_lab.db import shop


def test_the_shop_is_made_once_whole_and_the_report_finds_ada(tmp_path):
    path = tmp_path / "shop.sqlite3"
    assert db.ensure_shop(str(path)) == str(path) and path.exists()
    assert not list(tmp_path.glob("*.partial"))  # made aside, then renamed into place
    conn = db.connect(str(path))
    counts = [conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
              for table in ("regions", "customers", "products", "orders")]
    assert counts == [shop.REGIONS, shop.CUSTOMERS, shop.PRODUCTS, shop.ORDERS]
    name, region, orders, spent = db.report(conn, 1000)
    assert (name, orders) == (shop.TOP_CUSTOMER, 20) and spent > 0
    assert db.report(conn, shop.ORDERS + 1000) == db.report(conn, 1000)  # two passes: ends the same
    conn.close()


def test_the_async_driver_gives_the_same_answer():
    async def main():
        async with db.async_connection() as conn:
            return await db.report_async(conn, 5000)

    conn = db.connect()
    try:
        assert asyncio.run(main()) == db.report(conn, 5000)
    finally:
        conn.close()


def test_rows_for_grows_with_the_time_asked():
    assert db.rows_per_ms() > 0
    assert db.rows_for(100) == pytest.approx(10 * db.rows_for(10), rel=0.01)
    assert db.rows_for(0) == 1


def test_the_url_picks_the_database(monkeypatch, tmp_path):
    monkeypatch.delenv(db.ENV, raising=False)
    assert db.database_url() == str(shop.default_sqlite_path()) and db.kind() == "sqlite"
    monkeypatch.setenv(db.ENV, "postgresql://u@/shop?host=/tmp")
    assert db.kind() == "postgresql"
    assert shop.sqlite_path(f"sqlite:///{tmp_path}/x.db") == tmp_path / "x.db"


def test_connect_counts_and_close_all_closes():
    before = shop.opened
    conn = db.thread_connection()
    assert db.thread_connection() is conn and shop.opened <= before + 1
    db.close_all()
    with pytest.raises(sqlite3.ProgrammingError):
        conn.execute("SELECT 1")


def test_a_thread_reconnects_after_close_all():
    import threading

    seen = []
    worker = threading.Thread(target=lambda: seen.append(db.thread_connection()))
    worker.start(), worker.join()
    db.close_all()
    assert db.report(db.thread_connection(), 1000)[0] == shop.TOP_CUSTOMER
    db.close_all()
