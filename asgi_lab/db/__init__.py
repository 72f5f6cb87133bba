"""A real database for the course: a small shop, in SQLite by default, in PostgreSQL when
`ASGI_LAB_DB` (or a `--db` option) holds a `postgresql://` URL.

- `shop.py`: the tables, the demo data (created on first use), the report query and how to
  run it through a blocking driver (`sqlite3`, `psycopg`) or an async one (`aiosqlite`,
  `psycopg.AsyncConnection`).
- `cluster.py`: a throwaway PostgreSQL cluster in a temporary directory (`initdb`,
  `pg_ctl`), for the tests and for a class without a database server.
"""

from .shop import (ENV, async_connection, close_all, connect, connect_async, database_url, describe, ensure_shop,
                   kind, report, report_async, rows_for, rows_per_ms, thread_connection,
                   time_report)

__all__ = ["ENV", "async_connection", "close_all", "connect", "connect_async", "database_url", "describe",
           "ensure_shop", "kind", "report", "report_async", "rows_for", "rows_per_ms",
           "thread_connection", "time_report"]
