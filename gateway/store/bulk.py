"""Many rows into one table in a few statements, for the automatic flows' writes (a broad study's alerts write tens
of thousands of notices, events and jobs at once).

>>> insert_rows(conn, s.match_notices, rows, conflict=["study_id", "person", "kind"], returning="person")
['nhs:9434765919', ...]   # the rows this call added; a row whose key was there adds nothing

PostgreSQL gets one ``INSERT ... SELECT * FROM unnest(...)`` per 20,000 rows, each column passed as one array
parameter: the driver sends a few arrays instead of binding every value of a multi-row VALUES list, which at
36,000 rows took seconds in Python. SQLite, whose statements are calls into the same process, keeps SQLAlchemy's
multi-row INSERT.
"""

from __future__ import annotations

from sqlalchemy import Connection, Table
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

PG_ROWS = 20_000  # rows per PostgreSQL statement (its arrays are sent whole)
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
        return _unnest(conn, table, columns, rows, conflict, returning)
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


def _unnest(conn: Connection, table: Table, columns: list[str], rows: list[dict], conflict: list[str] | None,
            returning: str | None) -> list:
    dialect = conn.dialect
    arrays = ", ".join(f"%(c{k})s::{table.c[name].type.compile(dialect=dialect)}[]"
                       for k, name in enumerate(columns))
    sql = f"INSERT INTO {table.name} ({', '.join(columns)}) SELECT * FROM unnest({arrays})"
    if conflict is not None:
        sql += f" ON CONFLICT ({', '.join(conflict)}) DO NOTHING"
    if returning is not None:
        sql += f" RETURNING {returning}"
    out: list = []
    for i in range(0, len(rows), PG_ROWS):
        part = rows[i:i + PG_ROWS]
        params = {f"c{k}": [r[name] for r in part] for k, name in enumerate(columns)}
        result = conn.exec_driver_sql(sql, params)
        if returning is not None:
            out.extend(result.scalars())
    return out
