"""store.bulk.insert_rows: many rows in a few statements, the same answers on SQLite and PostgreSQL."""

from __future__ import annotations

import pytest
from sqlalchemy.exc import IntegrityError

from gateway.store import bulk
from gateway.store import schema as s


def _rows(persons, study="s1", kind="alert"):
    return [{"study_id": study, "person": p, "kind": kind, "at": "2026-12-05T00:00:00Z"} for p in persons]


def test_conflicting_rows_add_nothing_and_only_the_added_are_returned(store, monkeypatch):
    monkeypatch.setattr(bulk, "PG_ROWS", 3)  # several statements on PostgreSQL too
    monkeypatch.setattr(bulk, "SQLITE_ROWS", 3)
    with store.write() as tx:
        first = bulk.insert_rows(tx.conn, s.match_notices, _rows(["a", "b", "c", "d"]),
                                 conflict=["study_id", "person", "kind"], returning="person")
    assert sorted(first) == ["a", "b", "c", "d"]
    with store.write() as tx:
        again = bulk.insert_rows(tx.conn, s.match_notices, _rows(["c", "d", "e", "f", "g"]),
                                 conflict=["study_id", "person", "kind"], returning="person")
    assert sorted(again) == ["e", "f", "g"], "c and d were there: they add nothing and are not returned"
    with store.engine.connect() as conn:
        stored = conn.execute(s.match_notices.select().order_by(s.match_notices.c.person)).mappings().all()
    assert [r["person"] for r in stored] == list("abcdefg")
    assert {r["at"] for r in stored} == {"2026-12-05T00:00:00Z"}


def test_without_a_conflict_key_a_duplicate_is_an_error_and_nothing_of_it_is_kept(store):
    with pytest.raises(IntegrityError), store.write() as tx:
        bulk.insert_rows(tx.conn, s.match_notices, _rows(["x", "y", "x"]))
    with store.engine.connect() as conn:
        assert conn.execute(s.match_notices.select()).all() == []


def test_nulls_numbers_and_booleans_keep_their_types(store):
    rows = [{"kind": "k", "destination": "d", "resource_type": None, "resource_id": None, "resource_version": v,
             "dedupe_key": f"key-{v}", "payload": "{}", "state": "pending", "attempts": 0, "max_attempts": 8,
             "next_attempt_at": "t", "created_at": "t", "updated_at": "t"} for v in (None, 3)]
    with store.write() as tx:
        bulk.insert_rows(tx.conn, s.outbox, rows, conflict=["dedupe_key"])
        bulk.insert_rows(tx.conn, s.outbox, rows, conflict=["dedupe_key"])
    with store.engine.connect() as conn:
        got = conn.execute(s.outbox.select().order_by(s.outbox.c.dedupe_key)).mappings().all()
    assert [(r["dedupe_key"], r["resource_version"], r["resource_type"]) for r in got] == \
        [("key-3", 3, None), ("key-None", None, None)]


def test_text_with_quotes_backslashes_and_non_ascii_is_stored_as_given(store):
    """The rows travel as one JSON document on PostgreSQL: escapes must come back unchanged."""
    odd = ['a "quoted" name', "back\\slash", "Siân Ó'Brien", "tab\tand\nnewline", "{\"json\": [1]}", "emoji 🧬"]
    with store.write() as tx:
        bulk.insert_rows(tx.conn, s.match_notices, _rows(odd))
    with store.engine.connect() as conn:
        got = conn.execute(s.match_notices.select()).mappings().all()
    assert sorted(r["person"] for r in got) == sorted(odd)


def test_increment_adds_to_the_rows_that_exist_and_returns_their_new_values(store, monkeypatch):
    monkeypatch.setattr(bulk, "PG_ROWS", 2)  # several statements on PostgreSQL too
    st = s.subscription_state
    with store.write() as tx:
        tx.conn.execute(st.insert(), [{"subscription_id": sid, "topic": "t", "status": "active", "updated_at": "t",
                                       "events_since_start": n} for sid, n in (("a", 0), ("b", 5), ("c", 1))])
        got = bulk.increment(tx.conn, st, "subscription_id", "events_since_start", {"b": 2, "a": 1, "zz": 4, "c": 1})
    assert got == {"a": 1, "b": 7, "c": 2}, "zz has no row: not returned"
    with store.engine.connect() as conn:
        stored = dict(conn.execute(st.select().with_only_columns(st.c.subscription_id, st.c.events_since_start)).all())
    assert stored == {"a": 1, "b": 7, "c": 2}
