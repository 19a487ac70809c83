"""make_engine: SQLite settings for every connection, and the bulk writer's tuning."""

from __future__ import annotations

import threading
import time

import pytest

from gateway.store.engine import background_checkpoints, make_engine
from tests.conftest import PG_URL


def _pragmas(engine) -> dict[str, object]:
    with engine.connect() as conn:
        return {name: conn.exec_driver_sql(f"PRAGMA {name}").scalar()
                for name in ("journal_mode", "synchronous", "cache_size", "wal_autocheckpoint")}


def test_a_bulk_engine_keeps_more_pages_and_checkpoints_less_often(tmp_path):
    plain = make_engine(f"sqlite:///{tmp_path / 'a.sqlite3'}")
    bulk = make_engine(f"sqlite:///{tmp_path / 'b.sqlite3'}", bulk=True)
    try:
        a, b = _pragmas(plain), _pragmas(bulk)
    finally:
        plain.dispose()
        bulk.dispose()
    # both keep the durability settings: WAL, synchronous NORMAL (1)
    assert a["journal_mode"] == b["journal_mode"] == "wal" and a["synchronous"] == b["synchronous"] == 1
    assert (a["cache_size"], a["wal_autocheckpoint"]) == (-2000, 1000)  # SQLite's defaults
    assert (b["cache_size"], b["wal_autocheckpoint"]) == (-65536, 16384)  # 64 MiB of pages, 64 MiB of WAL


def test_background_checkpoints_copy_the_wal_into_the_database_while_a_bulk_writer_runs(tmp_path):
    path = tmp_path / "bulk.sqlite3"
    engine = make_engine(f"sqlite:///{path}", bulk=True)  # no automatic checkpoint before 64 MiB of WAL
    try:
        with engine.begin() as conn:
            conn.exec_driver_sql("CREATE TABLE t (x TEXT)")
        with background_checkpoints(engine, every=0.02):
            assert any(t.name == "sqlite-checkpoints" for t in threading.enumerate())
            before = path.stat().st_size
            with engine.begin() as conn:
                conn.exec_driver_sql("INSERT INTO t VALUES (?)", [("x" * 2000,) for _ in range(500)])
            deadline = time.monotonic() + 10
            while path.stat().st_size <= before + 500 * 2000 and time.monotonic() < deadline:
                time.sleep(0.02)  # the thread may first copy the CREATE TABLE's pages, then the rows'
            assert path.stat().st_size > before + 500 * 2000  # the rows' pages reached the database file
        assert not any(t.name == "sqlite-checkpoints" for t in threading.enumerate())
        with engine.connect() as conn:
            assert conn.exec_driver_sql("SELECT count(*) FROM t").scalar() == 500
    finally:
        engine.dispose()


@pytest.mark.skipif(not PG_URL, reason="PostgreSQL only (GATEWAY_TEST_DATABASE_URL)")
def test_background_checkpoints_do_nothing_on_postgresql():
    engine = make_engine(PG_URL)
    try:
        with background_checkpoints(engine):
            assert not any(t.name == "sqlite-checkpoints" for t in threading.enumerate())
    finally:
        engine.dispose()
