"""Many rows into one table in a few statements, for the automatic flows' writes (a broad study's alerts write tens
of thousands of notices, events and jobs at once).

>>> insert_rows(conn, s.match_notices, rows, conflict=["study_id", "person", "kind"], returning="person")
['nhs:9434765919', ...]   # the rows this call added; a row whose key was there adds nothing

PostgreSQL gets one ``INSERT ... SELECT ... FROM json_to_recordset(...)`` per 20,000 rows, the rows passed as one
JSON parameter (orjson writes it, PostgreSQL reads it, both in C): at 36,000 rows a multi-row VALUES list took
seconds in Python, and one array parameter per column (``unnest``) still twice as long as the JSON, spent in the
driver's array adaptation. SQLite, whose statements are calls into the same process, keeps SQLAlchemy's multi-row
INSERT.
"""

from __future__ import annotations

import orjson
from sqlalchemy import Connection, Table, update
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

PG_ROWS = 20_000  # rows per PostgreSQL statement (one JSON document each)
SQLITE_ROWS = 1000  # rows per SQLite statement (below its bound-parameter limit for these tables)


def insert_rows(conn: Connection, table: Table, rows: list[dict], *, conflict: list[str] | None = None,
                returning: str | None = None) -> list:
    """Insert ``rows`` (dicts of column -> value; every row the same columns) in the caller's transaction.

    ``conflict``: the unique key whose existing rows make a row add nothing (ON CONFLICT DO NOTHING); without
    it a duplicate is an IntegrityError, as from any INSERT. ``returning``: a column whose values of the rows
    actually added are returned (in no particular order); else an empty list.
    """
    if not rows:
        return []
    columns = list(rows[0])
    if conn.dialect.name == "postgresql":
        return _from_json(conn, table, columns, rows, conflict, returning)
    stmt = sqlite_insert(table)
    if conflict is not None:
        stmt = stmt.on_conflict_do_nothing(index_elements=conflict)
    if returning is not None:
        stmt = stmt.returning(table.c[returning])
    out: list = []
    for i in range(0, len(rows), SQLITE_ROWS):
        result = conn.execute(stmt, rows[i:i + SQLITE_ROWS])
        if returning is not None:
            out.extend(result.scalars())
    return out


def _from_json(conn: Connection, table: Table, columns: list[str], rows: list[dict], conflict: list[str] | None,
               returning: str | None) -> list:
    dialect = conn.dialect
    spec = ", ".join(f"{name} {table.c[name].type.compile(dialect=dialect)}" for name in columns)
    names = ", ".join(columns)
    sql = f"INSERT INTO {table.name} ({names}) SELECT {names} FROM json_to_recordset(%(rows)s::json) AS x({spec})"
    if conflict is not None:
        sql += f" ON CONFLICT ({', '.join(conflict)}) DO NOTHING"
    if returning is not None:
        sql += f" RETURNING {returning}"
    out: list = []
    for i in range(0, len(rows), PG_ROWS):
        result = conn.exec_driver_sql(sql, {"rows": orjson.dumps(rows[i:i + PG_ROWS]).decode()})
        if returning is not None:
            out.extend(result.scalars())
    return out


def increment(conn: Connection, table: Table, key: str, column: str, amounts: dict[str, int]) -> dict[str, int]:
    """``column += amounts[k]`` for the rows whose ``key`` is ``k``, in the caller's transaction; returns key -> the
    new value, for the rows that exist. The rows are locked in key order (concurrent callers never deadlock on
    each other): on PostgreSQL one ``SELECT ... ORDER BY ... FOR UPDATE`` and one ``UPDATE ... FROM
    json_to_recordset`` per 20,000 keys; elsewhere one UPDATE per 500 keys and amount.

    >>> increment(conn, s.subscription_state, "subscription_id", "events_since_start", {"sub1": 2, "sub2": 1})
    {'sub1': 7, 'sub2': 1}
    """
    keys = sorted(amounts)
    out: dict[str, int] = {}
    k_col, v_col = table.c[key], table.c[column]
    if conn.dialect.name == "postgresql":
        k_type = k_col.type.compile(dialect=conn.dialect)
        lock = (f"SELECT {key} FROM {table.name} WHERE {key} = ANY(%(keys)s::{k_type}[]) ORDER BY {key} "
                f"FOR UPDATE")
        sql = (f"UPDATE {table.name} AS t SET {column} = t.{column} + x.n FROM json_to_recordset(%(rows)s::json) "
               f"AS x(k {k_type}, n integer) WHERE t.{key} = x.k RETURNING t.{key}, t.{column}")
        for i in range(0, len(keys), PG_ROWS):
            part = keys[i:i + PG_ROWS]
            conn.exec_driver_sql(lock, {"keys": part})
            rows = orjson.dumps([{"k": k, "n": amounts[k]} for k in part]).decode()
            out.update(conn.exec_driver_sql(sql, {"rows": rows}).all())
        return out
    by_amount: dict[int, list[str]] = {}
    for k in keys:
        by_amount.setdefault(amounts[k], []).append(k)
    for n, part_keys in sorted(by_amount.items()):
        for i in range(0, len(part_keys), 500):
            part = part_keys[i:i + 500]
            out.update(conn.execute(update(table).where(k_col.in_(part)).values({column: v_col + n})
                                    .returning(k_col, v_col)).all())
    return out
