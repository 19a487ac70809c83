"""The study side of matching, pre-computed: one compact row per ResearchStudy (schema.match_studies, migration 9).

This module knows tables and SQL only; what goes into a row (the study's extracted criteria, its recruiting
sites' positions, its status) is decided by gateway.matching.studies, which registers a write hook so that every
transaction writing a ResearchStudy, its eligibility Group or a site Location rebuilds the study's row before it
commits. A process builds its StudyIndex from these rows (one streamed SELECT) and refreshes it by reading the rows
rebuilt since the last one it saw (``seq``), instead of re-extracting every study from FHIR JSON.

- ``match_studies``: study id, the ResearchStudy version and status, the change-feed position the row was built
  at (``seq``, indexed), the extraction format, and ``doc`` (criteria.criteria_doc; NULL: the study was deleted,
  a tombstone, so that a refresh sees the removal by ``seq`` like any other change);
- ``match_study_refs``: which Group / Location each study refers to, so that a write of either finds its studies.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import orjson
from sqlalchemy import delete, insert, select

from gateway.store import derived
from gateway.store import schema as s

S, R = s.match_studies, s.match_study_refs
CURSOR = "matching:studies-seq"  # counters row: every study change up to this sequence number is in the rows


@dataclass(frozen=True, slots=True)
class StudyRow:
    study_id: str
    version: int
    status: str
    doc: str | None  # None: a tombstone (the study is deleted)
    refs: tuple[tuple[str, str], ...] = ()  # (Group | Location, id) the study refers to
    index_keys: str | None = None  # criteria.index_keys_doc: what the index files the study under
    healthy: bool = False


def _chunks(items: list, n: int = 500):
    for i in range(0, len(items), n):
        yield items[i:i + n]


def read_current(conn, refs: Iterable[tuple[str, str]]) -> dict[tuple[str, str], tuple[int, dict]]:
    """(type, id) -> (version, resource JSON) of the current, not deleted, resources among ``refs``."""
    r = s.resources
    by_type: dict[str, list[str]] = {}
    for t, i in dict.fromkeys(refs):
        by_type.setdefault(t, []).append(i)
    out: dict[tuple[str, str], tuple[int, dict]] = {}
    for t, ids in by_type.items():
        for part in _chunks(ids):
            for rid, version, content in conn.execute(select(r.c.id, r.c.version, r.c.content).where(
                    r.c.type == t, r.c.id.in_(part), r.c.deleted.is_(False))):
                if content:
                    out[(t, rid)] = (version, orjson.loads(content))
    return out


def studies_referring_to(conn, refs: Iterable[tuple[str, str]]) -> set[str]:
    """The studies whose stored row refers to any of these (Group | Location, id)."""
    by_type: dict[str, list[str]] = {}
    for t, i in dict.fromkeys(refs):
        by_type.setdefault(t, []).append(i)
    out: set[str] = set()
    for t, ids in by_type.items():
        for part in _chunks(ids):
            out.update(conn.execute(select(R.c.study_id).where(R.c.type == t, R.c.id.in_(part))).scalars())
    return out


def replace_studies(conn, rows: list[StudyRow], seq: int, fmt: int) -> None:
    """The rows of these studies become ``rows`` (a tombstone for a deleted study), built at ``seq``: a few bulk
    statements whatever the number of studies."""
    ids = sorted({r.study_id for r in rows})
    for part in _chunks(ids):
        conn.execute(delete(R).where(R.c.study_id.in_(part)))
        conn.execute(delete(S).where(S.c.study_id.in_(part)))
    if not rows:
        return
    conn.execute(insert(S), [dict(study_id=r.study_id, version=r.version, status=r.status, seq=seq, format=fmt,
                                  doc=r.doc, index_keys=r.index_keys, healthy=r.healthy) for r in rows])
    refs = sorted({(t, i, r.study_id) for r in rows for t, i in r.refs})
    if refs:
        conn.execute(insert(R), [dict(type=t, id=i, study_id=sid) for t, i, sid in refs])


def rows_since(conn, seq: int, chunk: int = 2000) -> Iterator[tuple]:
    """(study id, version, seq, format, doc, index keys, healthy) of every row built after ``seq``, tombstones
    included, streamed (the whole table when ``seq`` is 0: the start of a process)."""
    stmt = select(S.c.study_id, S.c.version, S.c.seq, S.c.format, S.c.doc, S.c.index_keys, S.c.healthy)
    if seq:
        stmt = stmt.where(S.c.seq > seq)
    if conn.dialect.name in _PLAIN_ROWS:
        yield from _plain_rows(conn, stmt, chunk)
        return
    result = conn.execution_options(stream_results=True, yield_per=chunk).execute(stmt)
    for part in result.partitions(chunk):
        yield from part


# sqlite3: the rows are read from the driver's cursor as plain tuples (healthy made bool, as the Boolean type gives),
# without building a SQLAlchemy Row for each of the tens of thousands of studies a process reads at its start.
# (PostgreSQL keeps SQLAlchemy's server-side stream: a psycopg ServerCursor of our own left a ResourceWarning in the
# PostgreSQL tests, not yet understood.)
_PLAIN_ROWS = {"sqlite"}


def _plain_rows(conn, stmt, chunk: int) -> Iterator[tuple]:
    compiled = stmt.compile(dialect=conn.dialect)
    params = compiled.params
    if compiled.positional:
        params = tuple(params[k] for k in compiled.positiontup)
    cur = conn.connection.dbapi_connection.cursor()
    try:
        cur.execute(str(compiled), params)
        while part := cur.fetchmany(chunk):
            for sid, version, seq, fmt, doc, keys, healthy in part:
                yield sid, version, seq, fmt, doc, keys, bool(healthy)
    finally:
        cur.close()


def all_hierarchies(conn, rtype: str = "ResearchStudy") -> Iterator[list[dict]]:
    """Every registry hierarchy kept for ``rtype`` (Tx.set_hierarchy), oldest write first, streamed."""
    h = s.registry_hierarchy
    stmt = select(h.c.entries).where(h.c.res_type == rtype).order_by(h.c.updated_at, h.c.res_id)
    result = conn.execution_options(stream_results=True, yield_per=2000).execute(stmt)
    for part in result.partitions(2000):
        for (entries,) in part:
            yield orjson.loads(entries)


def hierarchies_of(conn, ids: Iterable[str], rtype: str = "ResearchStudy") -> list[list[dict]]:
    """The registry hierarchies kept for these resources, oldest write first (inside a write transaction)."""
    h = s.registry_hierarchy
    rows: list = []
    for part in _chunks(sorted(set(ids))):
        rows.extend(conn.execute(select(h.c.res_id, h.c.entries, h.c.updated_at).where(
            h.c.res_type == rtype, h.c.res_id.in_(part))).all())
    return [orjson.loads(r[1]) for r in sorted(rows, key=lambda r: (r[2], r[0]))]


def content_at(conn, rtype: str, rid: str, version: int | None) -> str | None:
    """The JSON text of ``rtype/rid``: its current content when ``version`` is None or current, else that version
    from the history (a study changed since the index was refreshed); None when there is none."""
    r = s.resources
    row = conn.execute(select(r.c.pk, r.c.version, r.c.deleted, r.c.content).where(
        r.c.type == rtype, r.c.id == rid)).first()
    if row is None:
        return None
    if version is None or row.version == version:
        return None if row.deleted else row.content
    v = s.resource_versions
    return conn.execute(select(v.c.content).where(v.c.res_pk == row.pk, v.c.version == version)).scalar()


def row_seqs(conn, ids: list[str]) -> dict[str, int]:
    """study id -> the ``seq`` of its stored row, for those of ``ids`` that have one."""
    out: dict[str, int] = {}
    for part in _chunks(sorted(set(ids))):
        out.update(conn.execute(select(S.c.study_id, S.c.seq).where(S.c.study_id.in_(part))).all())
    return out


# -- the cursor of the catch-up -----------------------------------------------------------------------------
def cursor(conn) -> int:
    return derived.cursor(conn, CURSOR)


def advance_cursor(conn, seq: int) -> None:
    """Every study change up to ``seq`` is in the rows."""
    derived.advance_cursor(conn, CURSOR, seq)


gap = derived.gap
changes_after = derived.changes_after
