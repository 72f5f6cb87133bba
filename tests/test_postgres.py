"""The database demo on PostgreSQL: one throwaway cluster for the session (initdb and pg_ctl in
a temporary directory, a Unix socket only), the same shop and report as in SQLite, and the
blocking-loop experiment through psycopg: a sync connection in the coroutine, then
asyncio.to_thread, a thread pool, and psycopg.AsyncConnection.

Skipped, with the reason, only where PostgreSQL's server tools are not installed (CI installs
Debian's `postgresql`)."""

from __future__ import annotations

import asyncio

import pytest

from asgi_lab import db
from asgi_lab.apps import pitfalls
from asgi_lab.db.cluster import ClusterUnavailable, TemporaryCluster
from asgi_lab.experiments import blocking_loop


@pytest.fixture(scope="module")
def postgres_url():
    try:
        cluster = TemporaryCluster()
        url = cluster.start()
    except ClusterUnavailable as why:
        pytest.skip(f"no PostgreSQL here: {why}")
    try:
        db.ensure_shop(url)
        yield url
    finally:
        db.close_all()
        cluster.stop()


@pytest.fixture
def on_postgres(postgres_url, monkeypatch):
    monkeypatch.setenv(db.ENV, postgres_url)
    return postgres_url


def test_the_same_shop_gives_the_same_report_as_sqlite(postgres_url):
    assert db.kind(postgres_url) == "postgresql" and db.describe(postgres_url).startswith("PostgreSQL")
    sqlite = db.connect()
    try:
        with db.connect(postgres_url) as conn:
            for rows in (1000, 77_777):
                assert db.report(conn, rows) == db.report(sqlite, rows)
    finally:
        sqlite.close()

    async def main():
        async with db.async_connection(postgres_url) as conn:
            return await db.report_async(conn, 1000)

    assert asyncio.run(main())[0] == "Ada Lovelace"
    db.ensure_shop(postgres_url)  # a second time: nothing to do


def test_psycopg_blocks_the_loop_and_the_fixes_do_not(on_postgres):
    pitfalls.warm_up_database()
    runs = blocking_loop.sweep(pitfalls.DB_VARIANTS, work_ms=(60,), concurrency=3)
    assert all(run.statuses == [200] * 4 for run in runs)
    by_name = {run.variant: run for run in runs}
    blocked = by_name["blocking driver"]
    assert blocked.loop_lag > 0.05 and blocked.probe_latency > 0.05
    for fix in ("asyncio.to_thread", "thread pool", "async driver"):
        assert by_name[fix].loop_lag < blocked.loop_lag / 2, fix


def test_the_experiment_takes_the_database_from_the_command_line(postgres_url, monkeypatch,
                                                                 capsys):
    monkeypatch.setenv(db.ENV, str(db.shop.default_sqlite_path()))  # --db replaces it; undone after
    blocking_loop.main(["--db", postgres_url, "--work-ms", "0", "20", "--rounds", "1",
                        "--concurrency", "2"])
    out = capsys.readouterr().out
    assert out.startswith("database: PostgreSQL") and "async driver" in out
