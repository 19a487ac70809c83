"""The store's bulk inserts: many rows in one transaction (PostgreSQL: one COPY a table from COPY_FROM_ROWS rows,
SQLite: executemany) store the same rows and index rows as one at a time, and a duplicate key is still an
IntegrityError that rolls the whole transaction back (SQLite and PostgreSQL)."""

from __future__ import annotations

import pytest
from sqlalchemy.exc import IntegrityError

from gateway.fhir.search import parse_search
from gateway.store import repo
from tests.store.helpers import table_counts

SYS = "https://sponsor.example.org/sites"


def _loc(i: int) -> dict:
    return {"resourceType": "Location", "name": f"Site {i}", "identifier": [{"system": SYS, "value": f"S{i}"}],
            "address": {"city": "Leeds", "postalCode": "LS6 3HE"}, "status": "active"}


@pytest.fixture
def copies(monkeypatch) -> list[str]:
    """The tables filled by COPY (PostgreSQL only)."""
    seen: list[str] = []
    real = repo._copy_rows

    def spy(conn, table, columns, rows):
        seen.append(table)
        return real(conn, table, columns, rows)

    monkeypatch.setattr(repo, "_copy_rows", spy)
    return seen


def test_a_bulk_transaction_stores_every_row_and_index_row(store, copies):
    n = 3 * repo.COPY_FROM_ROWS
    before = table_counts(store)
    with store.write() as tx:
        for i in range(n):
            tx.create(_loc(i), f"bulk-{i}")
    after = table_counts(store)
    for table in ("resources", "resource_versions", "changes"):
        assert after[table] == before[table] + n, table
    assert after["counter:changes"] == before["counter:changes"] + n
    assert after["idx_token"] - before["idx_token"] >= n  # the identifiers, at least
    for i in (0, n // 2, n - 1):
        assert store.search_ids(parse_search("Location", [("identifier", f"{SYS}|S{i}")])) == [f"bulk-{i}"]
        assert store.read("Location", f"bulk-{i}").resource()["name"] == f"Site {i}"
    assert store.search_ids(parse_search("Location", [("address-city", "Leeds"), ("_count", "1000")])) \
        .__len__() == n
    changes = store.changes_since(before["counter:changes"], limit=n + 1)
    assert [c["id"] for c in changes] == [f"bulk-{i}" for i in range(n)]
    assert [c["seq"] for c in changes] == list(range(before["counter:changes"] + 1, after["counter:changes"] + 1))
    if store.engine.dialect.name == "postgresql":
        assert {"resources", "resource_versions", "changes", "idx_token"} <= set(copies)
    else:
        assert copies == []


def test_a_duplicate_key_in_a_bulk_insert_is_an_integrity_error_and_nothing_is_kept(store):
    before = table_counts(store)
    with pytest.raises(IntegrityError), store.write() as tx:
        for i in range(2 * repo.COPY_FROM_ROWS):
            tx.create(_loc(i), f"dup-{i % repo.COPY_FROM_ROWS}")  # every id twice: one bulk insert at commit
    assert table_counts(store) == before
    with store.write() as tx:  # the store is usable afterwards
        tx.create(_loc(1), "after")
    assert store.read("Location", "after").version == 1


def test_small_writes_take_the_statement_path(store, copies):
    with store.write() as tx:
        tx.create(_loc(1), "one")
    assert copies == []
    assert store.search_ids(parse_search("Location", [("identifier", f"{SYS}|S1")])) == ["one"]
