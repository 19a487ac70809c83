"""Engine creation: one URL for SQLite and PostgreSQL.

SQLite: WAL, a busy timeout, and ``BEGIN IMMEDIATE`` for write transactions so that concurrent
writers queue instead of failing on lock upgrade (this is also what makes conditional create
safe on SQLite: one writer at a time runs search-then-insert).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url

WRITE_OPTION = "gateway_write"

# A bulk writer (``gateway import``) on SQLite: a 64 MiB page cache per connection instead of 2 MiB, so index pages
# stay in memory across transactions, and a WAL checkpoint every 64 MiB instead of every 4 MiB. An import
# transaction writes several MiB, so by default each commit ran a checkpoint and waited for its fsync; together
# these took a quarter of the storing process's wall-clock time.
BULK_SQLITE_PRAGMAS = ("cache_size=-65536", "wal_autocheckpoint=16384")


def make_engine(url: str, echo: bool = False, *, bulk: bool = False, read_only: bool = False) -> Engine:
    """An engine for ``url``; ``bulk``: tuned for one process writing a lot (SQLite: BULK_SQLITE_PRAGMAS);
    ``read_only``: every session refuses writes (the read engine of ``GATEWAY_READ_DATABASE_URL``, so a read
    routed to it by mistake fails loudly even when the URL names a primary)."""
    u = make_url(url)
    if u.get_backend_name() == "sqlite":
        if u.database and u.database != ":memory:":
            Path(u.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, echo=echo, connect_args={"timeout": 30, "check_same_thread": False},
                               pool_size=10, max_overflow=20)

        @event.listens_for(engine, "connect")
        def _on_connect(dbapi_conn, _record):
            dbapi_conn.isolation_level = None  # we issue BEGIN ourselves
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.execute("PRAGMA foreign_keys=ON")
            for pragma in BULK_SQLITE_PRAGMAS if bulk else ():
                cur.execute(f"PRAGMA {pragma}")
            if read_only:
                cur.execute("PRAGMA query_only=ON")
            cur.close()

        @event.listens_for(engine, "begin")
        def _on_begin(conn):
            write = conn.get_execution_options().get(WRITE_OPTION)
            conn.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")

        return engine
    # psycopg prepares a statement run five times, and after five more PostgreSQL may switch it to a generic
    # plan, made without the parameters' values: for the candidate walks (keyset `person > $1`, a code list)
    # that plan read every chunk's people anew, 300-400 ms instead of 80 ms a chunk at 1,000,000 people.
    # Custom plans keep the values in view; the statements stay prepared (no parsing), only re-planned.
    options = ["-c plan_cache_mode=force_custom_plan"]
    # A standby refuses writes by itself; the session default also covers a read URL that names a primary.
    if read_only:
        options.append("-c default_transaction_read_only=on")
    args = {"options": " ".join(options)}
    return create_engine(url, echo=echo, pool_size=10, max_overflow=20, pool_pre_ping=True, connect_args=args)


@contextmanager
def background_checkpoints(engine: Engine, every: float = 0.25) -> Iterator[None]:
    """While the block runs, a thread runs SQLite's WAL checkpoints (PASSIVE: never blocking a writer) every
    ``every`` seconds, so that the writing thread's commits seldom find a checkpoint to run and wait for its
    fsync. Checkpointing is I/O, during which the thread holds no GIL. Nothing on PostgreSQL or in memory.

    ``with background_checkpoints(engine): bulk_import()``
    """
    if engine.dialect.name != "sqlite" or engine.url.database in (None, "", ":memory:"):
        yield
        return
    stop = threading.Event()
    # The driver's connection (autocommit, see make_engine): a checkpoint inside a read transaction could not
    # copy pages beyond that transaction's snapshot.
    raw = engine.raw_connection()

    def run() -> None:
        cursor = raw.cursor()
        while not stop.wait(every):
            cursor.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
        cursor.close()

    thread = threading.Thread(target=run, name="sqlite-checkpoints", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
        raw.close()


def is_postgres(engine: Engine) -> bool:
    return engine.dialect.name == "postgresql"
