"""Small helpers for store tests: row counts of every table, and walking references."""

from __future__ import annotations

from collections.abc import Iterator

from sqlalchemy import func, select

from gateway.store import schema
from gateway.store.repo import Store


def table_counts(store: Store) -> dict[str, int]:
    """Row count of every table the gateway owns, plus the change-feed counter value."""
    out = {}
    with store.engine.connect() as conn:
        for table in schema.metadata.sorted_tables:
            out[table.name] = conn.execute(select(func.count()).select_from(table)).scalar_one()
        out["counter:changes"] = conn.execute(select(schema.counters.c.value).where(
            schema.counters.c.name == "changes")).scalar_one()
    return out


def references(node: object) -> Iterator[str]:
    """Every Reference.reference string inside a resource."""
    if isinstance(node, dict):
        for k, v in node.items():
            if k == "reference" and isinstance(v, str):
                yield v
            else:
                yield from references(v)
    elif isinstance(node, list):
        for x in node:
            yield from references(x)
