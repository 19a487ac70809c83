"""make_engine: SQLite settings for every connection, and the bulk writer's tuning."""

from __future__ import annotations

from gateway.store.engine import make_engine


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
