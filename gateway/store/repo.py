"""Versioned resource store: create/read/vread/update/delete/history/search, transactions, change feed.

All writes go through ``Store.write()``, a context manager giving a ``Tx`` that runs in one database
transaction. Index rows, versions and change-feed rows are buffered and flushed in bulk before
any search inside the transaction and at commit, which keeps 100-entry Bundles cheap.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import zlib
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field

import orjson
from sqlalchemy import (
    Connection,
    Engine,
    String,
    and_,
    bindparam,
    delete,
    func,
    insert,
    literal,
    literal_column,
    or_,
    select,
    text,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError

from gateway.fhir.conventions import normalise_ctgov_system
from gateway.fhir.errors import Conflict, Gone, NotFound, PreconditionFailed
from gateway.fhir.search import Criterion, SearchQuery, parse_date, parse_token
from gateway.fhir.search_params import date_range, index_rows, normalise_reference, normalise_string
from gateway.store import fulltext
from gateway.store import schema as s
from gateway.store.clock import now_iso
from gateway.store.engine import WRITE_OPTION, is_postgres


@dataclass
class Stored:
    """One stored version of a resource (content is the JSON text; None for a tombstone)."""

    type: str
    id: str
    version: int
    last_updated: str
    deleted: bool
    content: str | None
    pk: int = 0
    method: str | None = None
    content_hash: str | None = None

    @property
    def etag(self) -> str:
        return f'W/"{self.version}"'

    def resource(self) -> dict:
        return orjson.loads(self.content) if self.content else {}


@dataclass
class WriteResult:
    outcome: str  # created | updated | unchanged | deleted | not-found (delete of nothing)
    stored: Stored

    @property
    def created(self) -> bool:
        return self.outcome == "created"


def content_hash(resource: dict) -> str:
    """Hash of the content that matters for 'has it changed': everything but the server's meta."""
    meta = resource.get("meta")
    if isinstance(meta, dict) and ("versionId" in meta or "lastUpdated" in meta):
        rest = {k: v for k, v in meta.items() if k not in ("versionId", "lastUpdated")}
        resource = {**resource, "meta": rest} if rest else {k: v for k, v in resource.items() if k != "meta"}
    return hashlib.sha256(orjson.dumps(resource, option=orjson.OPT_SORT_KEYS)).hexdigest()


def _with_meta(resource: dict, version: int, last_updated: str) -> dict:
    meta = dict(resource.get("meta") or {})
    meta["versionId"] = str(version)
    meta["lastUpdated"] = last_updated
    out = {"resourceType": resource["resourceType"], "id": resource["id"], "meta": meta}
    out.update((k, v) for k, v in resource.items() if k not in out)
    return out


# Statements built once and executed with parameters: building ``insert().values(...)`` per row made
# SQLAlchemy compute a fresh cache key for every write (a third of the store's time in a 100-entry Bundle).
_INSERT_RESOURCE = insert(s.resources).returning(s.resources.c.pk)
_UPDATE_RESOURCE = update(s.resources).where(s.resources.c.pk == bindparam("b_pk"))
_SELECT_CURRENT = select(s.resources).where(s.resources.c.type == bindparam("b_type"),
                                            s.resources.c.id == bindparam("b_id"))
_SELECT_CURRENT_FOR_UPDATE = _SELECT_CURRENT.with_for_update()
_ADVANCE_CHANGES = (update(s.counters).where(s.counters.c.name == "changes")
                    .values(value=s.counters.c.value + bindparam("b_n")).returning(s.counters.c.value))


@functools.cache
def _find_tokens_sql(dialect: str, n: int) -> str:
    """Current resources with a token index row (param = ?, code IN n values), for Tx.find_tokens."""
    mark = "?" if dialect == "sqlite" else "%s"
    sql = ("SELECT t.system, t.code, r.pk, r.type, r.id, r.version, r.last_updated, r.deleted, r.content_hash, "
           f"r.content FROM idx_token t JOIN resources r ON r.pk = t.res_pk WHERE t.param = {mark} "
           f"AND t.code IN ({', '.join([mark] * n)}) AND r.deleted = {'0' if dialect == 'sqlite' else 'false'}")
    return sql if dialect == "sqlite" else sql + " FOR UPDATE OF r"


_SELECT_BY_PK = select(s.resources).where(s.resources.c.pk.in_(bindparam("b_pks", expanding=True)))
_SELECT_BY_PK_FOR_UPDATE = _SELECT_BY_PK.with_for_update()


def _lock_id(key: str) -> int:
    return zlib.crc32(key.encode()) - 2**31


@functools.cache
def _upsert_hierarchy(dialect: str):
    """INSERT a registry_hierarchy row, or replace its entries when they differ (unchanged: nothing written)."""
    table = s.registry_hierarchy
    stmt = (postgresql.insert if dialect == "postgresql" else sqlite.insert)(table)
    return stmt.on_conflict_do_update(
        index_elements=[table.c.res_type, table.c.res_id],
        set_={"entries": stmt.excluded.entries, "updated_at": stmt.excluded.updated_at},
        where=table.c.entries != stmt.excluded.entries)


@dataclass
class _Pending:
    resources: list[dict] = field(default_factory=list)  # new rows with server-assigned pk (fresh ids)
    versions: list[dict] = field(default_factory=list)
    # index table -> rows as tuples in column order: (res_pk, param, ...)
    index: dict[str, list[tuple]] = field(default_factory=lambda: {k: [] for k in _ALL_INDEX_TABLES})
    changes: list[dict] = field(default_factory=list)
    clear_index: list[int] = field(default_factory=list)
    resource_keys: set[tuple[str, str]] = field(default_factory=set)  # (type, id) of ``resources``
    indexed_pks: set[int] = field(default_factory=set)  # pks with index rows in ``index``
    # (param, system, code) -> pks, for the token rows in ``index``: lets find_tokens see buffered writes
    tokens: dict[tuple[str, str | None, str], set[int]] = field(default_factory=dict)
    # 'Group/<id>' of Groups written or deleted: the search rows of the studies enrolling them are rewritten at flush
    # (a study's full-text row holds its eligibility Group's text, gateway.store.fulltext)
    groups: set[str] = field(default_factory=set)
    # ResearchStudy pks and 'Location/<id>' written or deleted: their studies' search_sites rows are rewritten at
    # flush (gateway.store.fulltext.refresh_sites)
    site_studies: set[int] = field(default_factory=set)
    site_locations: set[str] = field(default_factory=set)

    def add_index_row(self, kind: str, row: tuple) -> None:
        self.index[kind].append(row)
        if kind == "token":
            self.tokens.setdefault(row[1:], set()).add(row[0])

    def drop_index_rows(self, pk: int) -> None:
        """A later version in the same transaction replaces the index rows buffered for ``pk``."""
        if pk in self.indexed_pks:
            for kind, rows in self.index.items():
                self.index[kind] = [r for r in rows if r[0] != pk]
            for pks in self.tokens.values():
                pks.discard(pk)
            self.indexed_pks.discard(pk)

    def empty(self) -> bool:
        return not (self.resources or self.versions or self.changes or self.clear_index)

    def copy(self) -> _Pending:
        """A snapshot to return to when a savepoint rolls back. Cheap, as it is taken for every savepoint:
        rows are shared (they are not changed in place, except a change row's ``seq``, which every flush
        assigns afresh) and ``tokens`` is left out: ``restored`` rebuilds it, and rollbacks are rare."""
        return _Pending(list(self.resources), list(self.versions), {k: list(v) for k, v in self.index.items()},
                        list(self.changes), list(self.clear_index), set(self.resource_keys), set(self.indexed_pks),
                        groups=set(self.groups), site_studies=set(self.site_studies),
                        site_locations=set(self.site_locations))

    def restored(self) -> _Pending:
        """This snapshot made current again."""
        for row in self.index["token"]:
            self.tokens.setdefault(row[1:], set()).add(row[0])
        return self


class Tx:
    """Operations inside one database transaction. Obtain with ``store.write()``."""

    def __init__(self, store: Store, conn):
        self.store = store
        self.conn = conn
        self.pending = _Pending()
        self.now = now_iso()
        self._pg = is_postgres(store.engine)
        self._next_pk: int | None = None  # SQLite: last pk handed out in this transaction
        self._pk_block: list[int] = []  # PostgreSQL: sequence values fetched ahead
        self._savepoints = 0  # depth of nested savepoints (their names)
        self.touched: list[tuple[str, str]] = []  # (type, id) written, for the store's write hooks
        self.last_seq = 0  # the highest change-feed sequence number this transaction wrote
        self.first_seq = 0  # the lowest

    def _allocate_pk(self) -> int:
        """A primary key for a new resources row, so the row can join one bulk insert at flush.

        SQLite: write transactions are exclusive (BEGIN IMMEDIATE), so MAX(pk)+1 onwards is ours.
        PostgreSQL: values from the column's own sequence, 100 per round trip (unused ones are just gaps).
        """
        if self._pg:
            if not self._pk_block:
                self._pk_block = list(self.conn.execute(text(
                    "SELECT nextval(pg_get_serial_sequence('resources', 'pk')) FROM generate_series(1, 100)"
                )).scalars())
                self._pk_block.sort(reverse=True)
            return self._pk_block.pop()
        if self._next_pk is None:
            self._next_pk = self.conn.execute(select(func.max(s.resources.c.pk))).scalar() or 0
        self._next_pk += 1
        return self._next_pk

    # -- locking -----------------------------------------------------------------------------
    def lock(self, key: str) -> None:
        """Serialise transactions that share ``key`` (conditional create/update search keys).

        PostgreSQL: a transaction-scoped advisory lock. SQLite: write transactions already run one
        at a time (BEGIN IMMEDIATE), so nothing more is needed.
        """
        if self._pg:
            self.conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _lock_id(key)})

    # -- reads inside the transaction ----------------------------------------------------------
    def current(self, rtype: str, rid: str) -> Stored | None:
        # The resources table is written at once (except rows with fresh ids, buffered): only those need a
        # flush before this read. Versions, index and change rows stay buffered, so a Bundle's writes batch.
        if (rtype, rid) in self.pending.resource_keys:
            self.flush()
        stmt = _SELECT_CURRENT_FOR_UPDATE if self._pg else _SELECT_CURRENT
        row = self.conn.execute(stmt, {"b_type": rtype, "b_id": rid}).mappings().first()
        return _stored(row) if row else None

    def search_ids(self, query: SearchQuery) -> list[str]:
        self.flush()
        return self.store.search_ids(query, conn=self.conn, limit=3)

    def find_tokens(self, param: str, pairs: Iterable[tuple[str, str]]) -> dict[tuple[str, str], list[Stored]]:
        """Current resources by token, many keys in one query: the batched form of a conditional
        'identifier=system|value' search.

        ``find_tokens('Location:identifier', [('https://x', 'A1')])`` -> {('https://x', 'A1'): [Stored(...)]}
        (each list in pk order, like ``search_ids``; keys that match nothing are absent). On PostgreSQL the rows
        found are locked FOR UPDATE, as ``current`` locks them, so they can be updated without a re-read.
        """
        want = {(normalise_ctgov_system(sys_), code[:255]) for sys_, code in pairs}
        if not want:
            return {}
        p = self.pending
        # Rows written in this transaction but still buffered are seen here without a flush, so that many
        # records in one transaction batch their writes: their index rows replace the stored ones.
        stale = p.indexed_pks.union(p.clear_index) if p.clear_index else p.indexed_pks
        out: dict[tuple[str, str], dict[int, Stored]] = {}
        codes = sorted({code for _, code in want})
        cursor = self.conn.connection.cursor()
        for i in range(0, len(codes), 500):
            part = codes[i:i + 500]
            # The driver's cursor: this runs for every record of an import, and SQLAlchemy's handling of an
            # expanding IN and of the result cost ten times the query itself.
            cursor.execute(_find_tokens_sql(self.conn.dialect.name, len(part)), (param, *part))
            for row in cursor.fetchall():
                key = (row[0], row[1])
                if key in want and row[2] not in stale:
                    out.setdefault(key, {})[row[2]] = Stored(row[3], row[4], row[5], row[6], bool(row[7]),
                                                             row[9], row[2], content_hash=row[8])
        buffered = {key: p.tokens[(param, *key)] for key in want if p.tokens.get((param, *key))}
        if buffered:
            new_rows = {r["pk"]: r for r in p.resources}
            pks = {pk for found in buffered.values() for pk in found}
            stored = {pk: _stored(new_rows[pk]) for pk in pks if pk in new_rows}
            rest = sorted(pks - stored.keys())
            if rest:
                stmt = _SELECT_BY_PK_FOR_UPDATE if self._pg else _SELECT_BY_PK
                for row in self.conn.execute(stmt, {"b_pks": rest}).mappings():
                    stored[row["pk"]] = _stored(row)
            for key, found in buffered.items():
                for pk in found:
                    if pk in stored and not stored[pk].deleted:
                        out.setdefault(key, {})[pk] = stored[pk]
        return {key: [found[pk] for pk in sorted(found)] for key, found in out.items()}

    @contextmanager
    def savepoint(self) -> Iterator[None]:
        """A nested transaction: an exception inside undoes its writes (and only its writes) and propagates.

        Lets many independent units (ingest records) share one database transaction, and so one commit,
        while a failing unit still stores nothing. Buffered (unflushed) rows from before the savepoint survive
        a rollback and none from inside it do.
        """
        snapshot = self.pending.copy()
        # Plain SQL on the driver's cursor: this runs for every ingested record, and SQLAlchemy's nested
        # transaction objects cost more than the statements (the outer transaction stays SQLAlchemy's).
        cursor = self.conn.connection.cursor()
        self._savepoints += 1
        name = f"gw_sp_{self._savepoints}"
        cursor.execute(f"SAVEPOINT {name}")
        try:
            yield
        except BaseException:
            # Rows buffered before the savepoint may have been flushed inside it (and so rolled back with it):
            # the snapshot buffers them again.
            self.pending = snapshot.restored()
            cursor.execute(f"ROLLBACK TO SAVEPOINT {name}")
            cursor.execute(f"RELEASE SAVEPOINT {name}")
            raise
        finally:
            self._savepoints -= 1
        cursor.execute(f"RELEASE SAVEPOINT {name}")

    # -- writes --------------------------------------------------------------------------------
    def put(self, resource: dict, *, if_match: str | None = None, method: str = "PUT",
            current: Stored | None = None, fetched: bool = False, fresh_id: bool = False) -> WriteResult:
        """Create or update ``resource`` (which carries its id). No-op when the content is unchanged.

        ``fresh_id``: the id was just generated by the server (a uuid4), so no concurrent request can
        be creating it and the PostgreSQL savepoint that turns a duplicate into 409 is not needed.
        """
        rtype, rid = resource["resourceType"], resource["id"]
        cur = current if fetched else self.current(rtype, rid)
        if if_match is not None:
            _check_if_match(if_match, cur, rtype, rid)
        chash = content_hash(resource)
        if cur is not None and not cur.deleted and cur.content_hash == chash:
            return WriteResult("unchanged", cur)
        version = (cur.version + 1) if cur else 1
        body = _with_meta(resource, version, self.now)
        content = orjson.dumps(body).decode()
        values = dict(version=version, last_updated=self.now, deleted=False, content_hash=chash, content=content)
        if cur is None and fresh_id:
            # A server-generated id cannot collide: the row joins the bulk insert at the next flush.
            pk = self._allocate_pk()
            self.pending.resources.append({"pk": pk, "type": rtype, "id": rid, **values})
            self.pending.resource_keys.add((rtype, rid))
            outcome = "created"
        elif cur is None:
            self.flush()  # rows with allocated pks first, so this insert's own pk lies above them
            try:
                with self.conn.begin_nested() if self._pg else _null():
                    pk = self.conn.execute(_INSERT_RESOURCE, {"type": rtype, "id": rid, **values}).scalar_one()
            except IntegrityError:
                raise Conflict(f"{rtype}/{rid} was created by a concurrent request; retry",
                               f"{rtype}.id") from None
            if self._next_pk is not None:
                self._next_pk = max(self._next_pk, pk)
            outcome = "created"
        else:
            pk = cur.pk
            if (rtype, rid) in self.pending.resource_keys:
                self.flush()  # its row is still buffered for insert (``cur`` came from find_tokens)
            self.conn.execute(_UPDATE_RESOURCE, {"b_pk": pk, **values})
            self.pending.clear_index.append(pk)
            self.pending.drop_index_rows(pk)
            outcome = "created" if cur.deleted else "updated"
        self._record(pk, rtype, rid, version, method, False, content, "create" if outcome == "created" else "update")
        add = self.pending.add_index_row
        for kind, rows in index_rows(body).items():
            for row in rows:
                add(kind, _index_row(kind, pk, row))
        if rtype in fulltext.INDEXED_TYPES:  # the full-text / place rows (gateway.store.fulltext)
            for kind, row in fulltext.search_rows(body):
                add(kind, (pk, *row))
            if rtype == "Group":
                self.pending.groups.add(f"Group/{rid}")
        self._sites_touched(rtype, rid, pk)
        self.pending.indexed_pks.add(pk)
        return WriteResult(outcome, Stored(rtype, rid, version, self.now, False, content, pk))

    def set_hierarchy(self, rtype: str, rid: str, entries: list[dict]) -> None:
        """Keep the concept hierarchy a registry record carries with the resource it was stored as
        (``schema.registry_hierarchy``; read back by ``Store.hierarchies``).

        ``tx.set_hierarchy("ResearchStudy", "7f3c...", [{"system": MESH, "code": "D000001943", "display":
        "Breast Neoplasms", "ancestors": ["D000009371", ...]}, ...])``
        """
        self.conn.execute(_upsert_hierarchy(self.conn.dialect.name), {
            "res_type": rtype, "res_id": rid, "updated_at": self.now,
            "entries": orjson.dumps(entries, option=orjson.OPT_SORT_KEYS).decode()})

    def create(self, resource: dict, new_id: str) -> WriteResult:
        """Create ``resource`` under ``new_id``, a server-generated uuid4 (a client's id goes through put)."""
        body = {**resource, "id": new_id}
        return self.put(body, method="POST", current=None, fetched=True, fresh_id=True)

    def delete(self, rtype: str, rid: str, *, if_match: str | None = None) -> WriteResult:
        cur = self.current(rtype, rid)
        if if_match is not None:
            _check_if_match(if_match, cur, rtype, rid)
        if cur is None or cur.deleted:
            return WriteResult("not-found", cur or Stored(rtype, rid, 0, self.now, True, None))
        version = cur.version + 1
        self.conn.execute(_UPDATE_RESOURCE, {"b_pk": cur.pk, "version": version, "last_updated": self.now,
                                             "deleted": True, "content": None, "content_hash": None})
        self.pending.clear_index.append(cur.pk)
        self.pending.drop_index_rows(cur.pk)
        if rtype == "Group":
            self.pending.groups.add(f"Group/{rid}")
        self._sites_touched(rtype, rid, cur.pk)
        self._record(cur.pk, rtype, rid, version, "DELETE", True, None, "delete")
        return WriteResult("deleted", Stored(rtype, rid, version, self.now, True, None, cur.pk))

    def _record(self, pk, rtype, rid, version, method, deleted, content, op) -> None:
        self.pending.versions.append(dict(res_pk=pk, version=version, type=rtype, id=rid,
                                          last_updated=self.now, method=method, deleted=deleted,
                                          content=content))
        self.pending.changes.append(dict(res_pk=pk, type=rtype, id=rid, version=version, op=op, at=self.now))
        self.touched.append((rtype, rid))

    def _sites_touched(self, rtype: str, rid: str, pk: int) -> None:
        if rtype == "ResearchStudy":
            self.pending.site_studies.add(pk)
        elif rtype == "Location":
            self.pending.site_locations.add(f"Location/{rid}")

    def flush(self) -> None:
        p = self.pending
        if p.empty():
            return
        c = self.conn
        if p.resources:
            _bulk_insert(c, s.resources, p.resources)
        if p.clear_index:
            for tbl in _ALL_INDEX_TABLES.values():
                c.execute(delete(tbl).where(tbl.c.res_pk.in_(p.clear_index)))
        if p.versions:
            _bulk_insert(c, s.resource_versions, p.versions)
        for kind, rows in p.index.items():
            if rows and kind != "text":
                _bulk_insert_tuples(c, _ALL_INDEX_TABLES[kind], rows)
        if p.index["text"]:  # a study's row with its eligibility Groups' text (read through the rows just written)
            _bulk_insert_tuples(c, s.search_text, fulltext.with_eligibility(c, p.index["text"]))
            fulltext.add_words(c, {w for row in p.index["text"] for w in fulltext.words_of(row[1:])})
        if p.groups:  # Groups changed: the rows of the studies stored before that enrol them
            fulltext.refresh_eligibility(c, p.groups, skip={row[0] for row in p.index["text"]})
        if p.site_studies or p.site_locations:  # after the index rows they are read from
            fulltext.refresh_sites(c, p.site_studies, p.site_locations)
        if p.changes:
            # The counter row is locked until commit, so sequence numbers follow commit order.
            n = len(p.changes)
            last = c.execute(_ADVANCE_CHANGES, {"b_n": n}).scalar_one()
            for i, ch in enumerate(p.changes):
                ch["seq"] = last - n + 1 + i
            self.last_seq = last
            self.first_seq = self.first_seq or last - n + 1
            _bulk_insert(c, s.changes, p.changes)
        self.pending = _Pending()


@contextmanager
def _null():
    yield


_BULK_SQL: dict[tuple[str, str], tuple[str, tuple[str, ...] | None]] = {}
_ALL_INDEX_TABLES = {**s.INDEX_TABLES, **s.SEARCH_TABLES}
# From this many rows a PostgreSQL bulk insert is one COPY instead of the driver's executemany, which sends each
# row as a statement of its own (psycopg's pipeline): in a bulk load (500 people a transaction, ~150,000 rows) the
# per-row statements were the largest cost of the storing process. Below it a statement a row is as quick.
COPY_FROM_ROWS = 32


def _bulk_insert(conn, table, rows: list[dict]) -> None:
    """INSERT many rows (dicts holding every column) with the driver's executemany, or COPY (PostgreSQL).

    The statement is compiled once per dialect and table; rows go to the driver as they are, skipping
    SQLAlchemy's per-row parameter processing (the columns are plain strings, integers and booleans).
    """
    if len(rows) >= COPY_FROM_ROWS and conn.dialect.name == "postgresql":
        columns = tuple(rows[0])
        _copy_rows(conn, table.name, columns, [tuple(r[k] for k in columns) for r in rows])
        return
    key = (conn.dialect.name, table.name)
    if key not in _BULK_SQL:
        compiled = insert(table).compile(dialect=conn.dialect)
        order = tuple(compiled.positiontup) if compiled.positional else None
        _BULK_SQL[key] = (str(compiled), order)
    sql, order = _BULK_SQL[key]
    if order is None:
        conn.exec_driver_sql(sql, rows)
    else:
        conn.exec_driver_sql(sql, [tuple(r[k] for k in order) for r in rows])


@functools.cache
def _insert_sql(dialect: str, table: str, columns: tuple[str, ...]) -> str:
    mark = "?" if dialect == "sqlite" else "%s"
    return f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({', '.join([mark] * len(columns))})"


def _bulk_insert_tuples(conn, table, rows: list[tuple]) -> None:
    """INSERT many rows given as tuples in the table's column order: no per-row conversion at all (index
    rows are most of the rows a write makes)."""
    columns = tuple(c.name for c in table.columns)
    if len(rows) >= COPY_FROM_ROWS and conn.dialect.name == "postgresql":
        _copy_rows(conn, table.name, columns, rows)
        return
    conn.exec_driver_sql(_insert_sql(conn.dialect.name, table.name, columns), rows)


def _copy_rows(conn, table: str, columns: tuple[str, ...], rows: list[tuple]) -> None:
    """PostgreSQL: ``rows`` into ``table`` with one ``COPY ... FROM STDIN`` in the connection's transaction.

    Errors come back as SQLAlchemy's (a duplicate key is an ``IntegrityError``), as from any other statement.
    """
    sql = f"COPY {table} ({', '.join(columns)}) FROM STDIN"
    cursor = conn.connection.cursor()
    try:
        with cursor.copy(sql) as copy:
            for row in rows:
                copy.write_row(row)
    except conn.dialect.dbapi.Error as e:
        raise DBAPIError.instance(sql, None, e, conn.dialect.dbapi.Error) from e
    finally:
        cursor.close()


def _check_if_match(if_match: str, cur: Stored | None, rtype: str, rid: str) -> None:
    want = if_match.strip()
    if want.startswith("W/"):
        want = want[2:]
    want = want.strip('"')
    have = str(cur.version) if cur and not cur.deleted else None
    if have != want:
        current = f'W/"{have}"' if have else "none"
        raise PreconditionFailed(f"If-Match {if_match} does not match the current version of {rtype}/{rid} "
                                 f"({current})", f"{rtype}.meta.versionId")


def _index_row(kind: str, pk: int, row: tuple) -> tuple:
    """An index_rows() row -> a row of its index table, in column order (res_pk, param, ...)."""
    if kind == "token":
        return (pk, row[0], row[1], row[2][:255])
    if kind == "reference":
        return (pk, row[0], row[1][:255])
    if kind == "date":
        return (pk, row[0], row[1], row[2])
    return (pk, row[0], row[1][:512])


def _stored(row) -> Stored:
    return Stored(row["type"], row["id"], row["version"], row["last_updated"], bool(row["deleted"]),
                  row["content"], row["pk"], content_hash=row["content_hash"])


# Whether the reads of the current request may be served by the read engine (``Store.replica_reads``). A context
# variable, so a thread (or a task) running another request, or the worker, keeps reading from the primary.
_REPLICA_READS: ContextVar[bool] = ContextVar("gateway_replica_reads", default=False)
log = logging.getLogger(__name__)


class Store:
    """The resource store over one SQLAlchemy engine, and optionally a read engine (a streaming replica).

    Every read goes to the primary ``engine`` unless the caller opted in with ``replica_reads()`` (the API does
    for GET searches and reads, ``$match`` and ``$candidates``); writes, and every read inside ``write()``, always
    go to the primary. A replica lags the primary by its replay lag: see docs/deployment.md.
    """

    def __init__(self, engine: Engine, read_engine: Engine | None = None):
        self.engine = engine
        self.read_engine = read_engine
        self._write_engine = engine.execution_options(**{WRITE_OPTION: True})
        # name -> hook(tx, [(type, id) written]), run before commit in the same transaction: layers above the
        # store keep derived rows current with it (gateway.store.profiles: the patient side of matching)
        self.write_hooks: dict[str, Callable[[Tx, list[tuple[str, str]]], None]] = {}

    @contextmanager
    def write(self) -> Iterator[Tx]:
        token = _REPLICA_READS.set(False)  # a read inside a write transaction must see the primary
        try:
            with self._write_engine.begin() as conn:
                tx = Tx(self, conn)
                yield tx
                tx.flush()
                if tx.touched and self.write_hooks:
                    touched = list(dict.fromkeys(tx.touched))
                    for hook in list(self.write_hooks.values()):
                        hook(tx, touched)
                    tx.flush()
        finally:
            _REPLICA_READS.reset(token)

    @contextmanager
    def replica_reads(self, enabled: bool = True) -> Iterator[None]:
        """Within the block, this context's reads may come from the read engine (when one is configured).

        ``with store.replica_reads(): store.search(q)`` -- for reads that may be as old as the replica's lag.
        """
        token = _REPLICA_READS.set(enabled)
        try:
            yield
        finally:
            _REPLICA_READS.reset(token)

    @property
    def reader(self) -> Engine:
        """The engine this context reads from: the read engine inside ``replica_reads()``, else the primary."""
        return self.read_engine if self.read_engine is not None and _REPLICA_READS.get() else self.engine

    @contextmanager
    def read_connection(self) -> Iterator[Connection]:
        """A connection for reads (``reader``). A replica that cannot be reached falls back to the primary, which
        is never behind it, so reads keep working while the replica is down (logged; no request data)."""
        engine = self.reader
        try:
            conn = engine.connect()
        except OperationalError:
            if engine is self.engine:
                raise
            log.warning("the read database (GATEWAY_READ_DATABASE_URL) cannot be reached; reading from the primary")
            conn = self.engine.connect()
        with conn:
            yield conn

    # -- reads ---------------------------------------------------------------------------------
    def read(self, rtype: str, rid: str) -> Stored:
        """Current version; NotFound if never stored, Gone if deleted."""
        with self.read_connection() as conn:
            row = conn.execute(select(s.resources).where(s.resources.c.type == rtype, s.resources.c.id == rid)
                               ).mappings().first()
        if row is None:
            raise NotFound(f"{rtype}/{rid} is not known", f"{rtype}.id")
        st = _stored(row)
        if st.deleted:
            raise Gone(f"{rtype}/{rid} was deleted (version {st.version})", f"{rtype}.id")
        return st

    def read_many(self, refs: list[tuple[str, str]]) -> list[Stored]:
        """Current, non-deleted versions for (type, id) pairs; missing ones are skipped."""
        if not refs:
            return []
        by_type: dict[str, set[str]] = {}
        for t, i in refs:
            by_type.setdefault(t, set()).add(i)
        # One IN list per type: an OR of (type, id) pairs is planned and run pair by pair (a broad study's
        # proposals read hundreds of Patients at once).
        conds = [and_(s.resources.c.type == t, s.resources.c.id.in_(sorted(ids))) for t, ids in by_type.items()]
        with self.read_connection() as conn:
            rows = conn.execute(select(s.resources).where(or_(*conds), s.resources.c.deleted.is_(False))
                                ).mappings().all()
        return [_stored(r) for r in rows]

    def vread(self, rtype: str, rid: str, version: int) -> Stored:
        v = s.resource_versions
        with self.read_connection() as conn:
            row = conn.execute(select(v).where(v.c.type == rtype, v.c.id == rid, v.c.version == version)
                               ).mappings().first()
        if row is None:
            raise NotFound(f"{rtype}/{rid} has no version {version}", f"{rtype}.meta.versionId")
        st = Stored(row["type"], row["id"], row["version"], row["last_updated"], bool(row["deleted"]),
                    row["content"], row["res_pk"], row["method"])
        if st.deleted:
            raise Gone(f"{rtype}/{rid} version {version} is a deletion", f"{rtype}.meta.versionId")
        return st

    def history(self, rtype: str | None = None, rid: str | None = None, *, count: int = 20, offset: int = 0,
                since: str | None = None) -> tuple[int, list[Stored]]:
        v = s.resource_versions
        conds = []
        if rtype:
            conds.append(v.c.type == rtype)
        if rid:
            conds.append(v.c.id == rid)
        if since:
            conds.append(v.c.last_updated >= since)
        with self.read_connection() as conn:
            if rid:
                exists = conn.execute(select(s.resources.c.pk).where(s.resources.c.type == rtype,
                                                                     s.resources.c.id == rid)).first()
                if exists is None:
                    raise NotFound(f"{rtype}/{rid} is not known", f"{rtype}.id")
            total = conn.execute(select(func.count()).select_from(v).where(*conds)).scalar_one()
            rows = conn.execute(select(v).where(*conds).order_by(v.c.last_updated.desc(), v.c.version.desc())
                                .limit(count).offset(offset)).mappings().all()
        return total, [Stored(r["type"], r["id"], r["version"], r["last_updated"], bool(r["deleted"]),
                              r["content"], r["res_pk"], r["method"]) for r in rows]

    def hierarchies(self, rtype: str, ids: Iterable[str]) -> list[tuple[str, list[dict]]]:
        """(id, entries) of the registry hierarchies kept for these resources (``Tx.set_hierarchy``), oldest
        write first; resources without one are left out."""
        h = s.registry_hierarchy
        ids = sorted(set(ids))
        rows: list = []
        with self.read_connection() as conn:
            for i in range(0, len(ids), 500):
                rows.extend(conn.execute(select(h.c.res_id, h.c.entries, h.c.updated_at).where(
                    h.c.res_type == rtype, h.c.res_id.in_(ids[i:i + 500]))).all())
        return [(r[0], orjson.loads(r[1])) for r in sorted(rows, key=lambda r: (r[2], r[0]))]

    def changes_since(self, seq: int, limit: int = 1000, types: tuple[str, ...] = ()) -> list[dict]:
        """The change feed: committed changes with ``seq`` > the given one, in commit order."""
        c = s.changes
        stmt = select(c).where(c.c.seq > seq)
        if types:
            stmt = stmt.where(c.c.type.in_(types))
        with self.read_connection() as conn:
            return [dict(r) for r in conn.execute(stmt.order_by(c.c.seq).limit(limit)).mappings()]

    # -- search --------------------------------------------------------------------------------
    def _where(self, query: SearchQuery) -> list:
        r = s.resources
        conds = [r.c.deleted.is_(False)]
        # An index criterion's param key ('Location:identifier') already implies the type. Adding type = ? as
        # well makes SQLite drive the query from the type index and scan every resource of the type (cost
        # grew with the table: an import got slower with each study); without it, it looks up the index rows.
        if query.resource_type and all(c.name in ("_id", "_lastUpdated") for c in query.criteria):
            conds.append(r.c.type == query.resource_type)
        for crit in query.criteria:
            conds.append(self._criterion(query.resource_type, crit))
        return conds

    @staticmethod
    def _criterion(rtype: str | None, crit: Criterion, r=s.resources):
        """One criterion as a condition on ``r`` (the resources table, or an alias of it for a chain)."""
        if crit.match_nothing:  # only codes no resource can carry (reported to the caller as a warning)
            return literal(False)
        if crit.chain is not None:
            return r.c.pk.in_(_chain_subquery(rtype, crit))
        if crit.name == "_id":
            return r.c.id.in_(crit.values)
        if crit.name == "_lastUpdated":
            return or_(*[_date_cond(r.c.last_updated, r.c.last_updated, v) for v in crit.values])
        key = f"{rtype}:{crit.name}"
        tbl = s.INDEX_TABLES[crit.kind]
        ors = []
        for value in crit.values:
            if crit.kind == "token":
                system, code, has_bar = parse_token(value)
                system = normalise_ctgov_system(system)  # stored in one form (see FhirService)
                c = []
                if code is not None:
                    c.append(tbl.c.code == code)
                if has_bar:
                    c.append(tbl.c.system == system if system is not None else tbl.c.system.is_(None))
                ors.append(and_(*c) if c else literal(True))
            elif crit.kind == "string":
                nv = normalise_string(value)
                if crit.modifier == "exact":
                    ors.append(tbl.c.value == nv)
                elif crit.modifier == "contains":
                    ors.append(tbl.c.value.like(f"%{_like_escape(nv)}%", escape="\\"))
                else:
                    ors.append(tbl.c.value.like(f"{_like_escape(nv)}%", escape="\\"))
            elif crit.kind == "reference":
                ors.append(tbl.c.ref.in_(_reference_forms(value, crit)))
            elif crit.kind == "date":
                ors.append(_date_cond(tbl.c.low, tbl.c.high, value))
            else:
                ors.append(tbl.c.value == value)
        sub = select(tbl.c.res_pk).where(tbl.c.param == key, or_(*ors))
        return r.c.pk.in_(sub)

    def search(self, query: SearchQuery) -> tuple[int, list[Stored]]:
        r = s.resources
        conds = self._where(query)
        with self.read_connection() as conn:
            total = conn.execute(select(func.count()).select_from(r).where(*conds)).scalar_one()
            if query.summary_count or query.count == 0:
                return total, []
            rows = conn.execute(_sorted(select(r).where(*conds), query, conn.dialect.name)
                                .limit(query.count)
                                .offset(query.offset)).mappings().all()
        return total, [_stored(x) for x in rows]

    # -- _include / _revinclude --------------------------------------------------------------------
    def referenced(self, rows: list[Stored], param_keys: list[str], targets: set[str] | None = None) -> list[Stored]:
        """The current resources that ``rows`` refer to through the reference parameters ``param_keys``
        ('ResearchStudy:site'), optionally only of the types ``targets``: what ``_include`` adds."""
        if not rows or not param_keys:
            return []
        ref = s.idx_reference
        with self.read_connection() as conn:
            refs = conn.execute(select(ref.c.ref).where(ref.c.res_pk.in_([x.pk for x in rows]),
                                                        ref.c.param.in_(param_keys)).distinct()).scalars().all()
        wanted = sorted({tuple(x.split("/", 1)) for x in refs if "/" in x and not x.startswith(("urn:", "#"))})
        if targets is not None:
            wanted = [w for w in wanted if w[0] in targets]
        out: list[Stored] = []
        for i in range(0, len(wanted), 200):
            out.extend(self.read_many(wanted[i:i + 200]))
        return sorted(out, key=lambda x: x.pk)

    def referring(self, rows: list[Stored], param_keys: list[str], limit: int, after_pk: int = 0) -> list[Stored]:
        """Current resources that refer to any of ``rows`` through ``param_keys`` ('ResearchSubject:study'):
        what ``_revinclude`` adds, at most ``limit`` of them in pk order, from pk ``after_pk`` on (exclusive)."""
        if not rows or not param_keys:
            return []
        r, ref = s.resources, s.idx_reference
        targets = [f"{x.type}/{x.id}" for x in rows]
        sub = select(ref.c.res_pk).where(ref.c.param.in_(param_keys), ref.c.ref.in_(targets))
        with self.read_connection() as conn:
            found = conn.execute(select(r).where(r.c.pk.in_(sub), r.c.deleted.is_(False), r.c.pk > after_pk)
                                 .order_by(r.c.pk).limit(limit)).mappings().all()
        return [_stored(x) for x in found]

    def chain_targets(self, rtype: str, crit: Criterion, limit: int, after_pk: int = 0) -> list[Stored]:
        """Current ``rtype`` resources matching ``crit`` (a chain's inner criterion), at most ``limit`` of them in
        pk order from ``after_pk`` on (exclusive): the candidates a caller's Access filters (``limit_chains``)."""
        r = s.resources
        stmt = (select(r).where(r.c.type == rtype, r.c.deleted.is_(False), r.c.pk > after_pk,
                                self._criterion(rtype, crit)).order_by(r.c.pk).limit(limit))
        with self.read_connection() as conn:
            return [_stored(x) for x in conn.execute(stmt).mappings().all()]

    def search_ids(self, query: SearchQuery, conn=None, limit: int | None = None) -> list[str]:
        r = s.resources
        fast = _token_key_params(query, limit)
        if fast is not None:
            stmt, params = _TOKEN_KEY_IDS, fast
        else:
            stmt, params = select(r.c.id).where(*self._where(query)).order_by(r.c.pk), {}
            if limit:
                stmt = stmt.limit(limit)
        if conn is not None:
            return list(conn.execute(stmt, params).scalars())
        with self.read_connection() as c:
            return list(c.execute(stmt, params).scalars())

    def count(self, rtype: str | None = None) -> int:
        r = s.resources
        stmt = select(func.count()).select_from(r).where(r.c.deleted.is_(False))
        if rtype:
            stmt = stmt.where(r.c.type == rtype)
        with self.read_connection() as conn:
            return conn.execute(stmt).scalar_one()


# Conditional create/update keys are almost always one token, 'identifier=system|value': that search runs
# as one prebuilt statement (building the expression cost more than running the query).
_TOKEN_KEY_IDS = (
    select(s.resources.c.id)
    .where(s.resources.c.deleted.is_(False),  # no type = ?: the param key implies it (see Store._where)
           s.resources.c.pk.in_(select(s.idx_token.c.res_pk).where(
               s.idx_token.c.param == bindparam("b_param"), s.idx_token.c.code == bindparam("b_code"),
               s.idx_token.c.system == bindparam("b_system"))))
    .order_by(s.resources.c.pk)
    .limit(bindparam("b_limit"))
)


def _token_key_params(query: SearchQuery, limit: int | None) -> dict | None:
    """Parameters for _TOKEN_KEY_IDS when ``query`` is one 'system|code' token criterion, else None."""
    if not limit or not query.resource_type or len(query.criteria) != 1:
        return None
    crit = query.criteria[0]
    if crit.kind != "token" or crit.name.startswith("_") or crit.modifier or len(crit.values) != 1:
        return None
    system, code, has_bar = parse_token(crit.values[0])
    if not has_bar or system is None or code is None:
        return None
    return {"b_param": f"{query.resource_type}:{crit.name}",
            "b_code": code, "b_system": normalise_ctgov_system(system), "b_limit": limit}


def _like_escape(v: str) -> str:
    return v.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _reference_forms(value: str, crit: Criterion) -> list[str]:
    ref = normalise_reference(value)
    if "/" in ref:
        return [ref]
    if crit.modifier:  # subject:Patient=123 -> Patient/123
        return [f"{crit.modifier}/{ref}"]
    targets = crit.param.targets if crit.param else ()
    return [f"{t}/{ref}" for t in targets] or [ref]


def _date_cond(low_col, high_col, value: str):
    prefix, v = parse_date(value)
    lo, hi = date_range(v)
    if prefix == "eq":
        return and_(low_col >= lo, high_col <= hi + "\uffff")
    if prefix == "ne":
        return or_(high_col < lo, low_col > hi + "\uffff")
    if prefix in ("lt", "eb"):
        return low_col < lo
    if prefix == "le":
        return low_col <= hi + "\uffff"
    if prefix in ("gt", "sa"):
        return high_col > hi + "\uffff"
    return high_col >= lo  # ge


def _chain_subquery(rtype: str | None, crit: Criterion):
    """pks of ``rtype`` resources whose reference parameter ``crit.name`` points at a resource of one of the
    chain's target types matching the chained criterion (``ResearchSubject?study.identifier=x``)."""
    assert crit.chain is not None
    ref = s.idx_reference
    if crit.chain.allowed is not None:  # only the targets the caller may read (Access.limit_chains)
        return select(ref.c.res_pk).where(ref.c.param == f"{rtype}:{crit.name}",
                                          ref.c.ref.in_(crit.chain.allowed or ["-none-"]))
    target = s.resources.alias("chain_target")  # not correlated with the outer query's resources
    forms = []
    for t in crit.chain.targets:  # resource type names (checked by the parser): safe as SQL literals
        forms.append(select(literal_column(f"'{t}/'", String) + target.c.id).where(
            target.c.type == t, target.c.deleted.is_(False), Store._criterion(t, crit.chain.criterion, target)))
    refs = forms[0] if len(forms) == 1 else forms[0].union_all(*forms[1:])
    return select(ref.c.res_pk).where(ref.c.param == f"{rtype}:{crit.name}", ref.c.ref.in_(refs))


def _sorted(stmt, query: SearchQuery, dialect: str = "sqlite"):
    """``stmt`` (a select of resources) ordered for ``_sort``: each key, resources without a value last, then pk,
    so that pages are stable.

    A parameter key joins its index rows grouped per resource (one pass over the parameter's rows; a correlated
    subquery per row cost ten times more on SQLite). Text compares by code point on both backends (PostgreSQL's
    locale collation would order 'a-b' and 'ab' differently from SQLite); string values are stored case- and
    accent-folded, so 'Alpha' sorts with 'alpha'.
    """
    r = s.resources
    order = []
    for n, key in enumerate(query.sort):
        if key.name == "_id":
            col = r.c.id
        elif key.name == "_lastUpdated":
            col = r.c.last_updated
        else:
            assert key.param is not None
            kind = key.param.kind
            tbl = s.INDEX_TABLES[kind]
            if kind == "date":
                value = tbl.c.high if key.descending else tbl.c.low
            else:
                value = tbl.c.code if kind == "token" else tbl.c.ref if kind == "reference" else tbl.c.value
            agg = func.max(value) if key.descending else func.min(value)
            sub = (select(tbl.c.res_pk.label("res_pk"), agg.label("v"))
                   .where(tbl.c.param == f"{query.resource_type}:{key.name}")
                   .group_by(tbl.c.res_pk).subquery(f"sort_{n}"))
            stmt = stmt.outerjoin(sub, sub.c.res_pk == r.c.pk)
            col = sub.c.v
        if dialect == "postgresql" and key.name != "_lastUpdated" and not (key.param and key.param.kind == "date"):
            col = col.collate("C")
        order.append(col.desc().nulls_last() if key.descending else col.asc().nulls_last())
    order.append(r.c.pk.desc() if query.sort and query.sort[0].descending and query.sort[0].name == "_lastUpdated"
                 else r.c.pk)
    return stmt.order_by(*order)
