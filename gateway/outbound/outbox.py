"""The transactional outbox: enqueue inside the caller's transaction, claim, finish, list, retry, purge.

Claiming: ``SELECT ... FOR UPDATE SKIP LOCKED`` on PostgreSQL, so any number of workers take
disjoint jobs; on SQLite the claim runs in a ``BEGIN IMMEDIATE`` transaction (one writer at a time),
which makes select-then-update a safe single claim. A claim is a lease: a worker that dies (even
SIGKILL) mid-delivery leaves the job ``in-progress`` with an expired lease, and another worker
claims it again. Redelivery is harmless because destinations use conditional creates.

Waking: on PostgreSQL ``enqueue`` also issues ``NOTIFY`` in the caller's transaction, so idle workers
(``Listener``) start a committed job at once; the poll stays as the fallback (and is all SQLite has).
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import orjson
from sqlalchemy import Connection, Engine, and_, delete, func, or_, select, text, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import DBAPIError

# The worker schedules a job's next attempt with the one outbound back-off (outbox.backoff_seconds).
from gateway.outbound.backoff import backoff_seconds as backoff_seconds
from gateway.store import bulk
from gateway.store import schema as s
from gateway.store.clock import now_iso
from gateway.store.repo import Store

STATES = ("pending", "in-progress", "delivered", "dead")
NOTIFY_CHANNEL = "gateway_outbox"  # PostgreSQL: NOTIFY in the enqueuing transaction, LISTEN in workers
log = logging.getLogger("gateway.outbound.outbox")


@dataclass
class Job:
    id: int
    kind: str
    destination: str
    resource_type: str | None
    resource_id: str | None
    resource_version: int | None
    dedupe_key: str
    payload: dict
    state: str
    attempts: int
    max_attempts: int
    next_attempt_at: str
    lease_until: str | None = None
    claimed_by: str | None = None
    created_at: str = ""
    updated_at: str = ""
    delivered_at: str | None = None
    last_status: int | None = None
    last_error: str | None = None
    result: str | None = None

    @property
    def resource(self) -> str | None:
        return f"{self.resource_type}/{self.resource_id}" if self.resource_type else None

    def to_json(self) -> dict:
        out = {k: getattr(self, k) for k in self.__dataclass_fields__}
        out["resource"] = self.resource
        return out


def _job(row) -> Job:
    d = dict(row)
    d["payload"] = orjson.loads(d["payload"]) if d.get("payload") else {}
    return Job(**d)


def iso_in(seconds: float, now: datetime | None = None) -> str:
    """-> now + seconds as the store's ISO form (fixed width, sorts in time order)."""
    return ((now or datetime.now(UTC)) + timedelta(seconds=seconds)).isoformat(timespec="microseconds")


def enqueue(conn: Connection, *, kind: str, destination: str, payload: dict, dedupe_key: str,
            max_attempts: int, resource: tuple[str, str, int] | None = None) -> bool:
    """Add a job in the caller's transaction; False when ``dedupe_key`` is already queued (no second job)."""
    now = now_iso()
    values = dict(kind=kind, destination=destination, payload=orjson.dumps(payload).decode(), dedupe_key=dedupe_key,
                  state="pending", attempts=0, max_attempts=max_attempts, next_attempt_at=now, created_at=now,
                  updated_at=now)
    if resource is not None:
        values.update(resource_type=resource[0], resource_id=resource[1], resource_version=resource[2])
    postgres = conn.dialect.name == "postgresql"
    ins = pg_insert if postgres else sqlite_insert
    stmt = (ins(s.outbox).values(**values).on_conflict_do_nothing(index_elements=["dedupe_key"])
            .returning(s.outbox.c.id))
    added = conn.execute(stmt).first() is not None
    if added and postgres:
        # Delivered to listening workers when this transaction commits (never for a rolled-back job);
        # PostgreSQL folds identical notifications of one transaction into one.
        conn.execute(text("SELECT pg_notify(:channel, :kind)"), {"channel": NOTIFY_CHANNEL, "kind": kind})
    return added


def enqueue_many(conn: Connection, jobs: list[dict], max_attempts: int) -> None:
    """``enqueue`` for many jobs in the caller's transaction: a few statements whatever their number
    (store.bulk; a dedupe key already queued adds no second job) and one NOTIFY; each job: kind, destination,
    payload, dedupe_key[, resource]."""
    if not jobs:
        return
    now = now_iso()
    rows = []
    for j in jobs:
        res = j.get("resource")
        rows.append(dict(kind=j["kind"], destination=j["destination"], payload=orjson.dumps(j["payload"]).decode(),
                         dedupe_key=j["dedupe_key"], state="pending", attempts=0, max_attempts=max_attempts,
                         next_attempt_at=now, created_at=now, updated_at=now,
                         resource_type=res[0] if res else None, resource_id=res[1] if res else None,
                         resource_version=res[2] if res else None))
    bulk.insert_rows(conn, s.outbox, rows, conflict=["dedupe_key"])
    if conn.dialect.name == "postgresql":
        for kind in sorted({r["kind"] for r in rows}):
            conn.execute(text("SELECT pg_notify(:channel, :kind)"), {"channel": NOTIFY_CHANNEL, "kind": kind})


class Listener:
    """Wake a worker when a job is committed: PostgreSQL ``LISTEN`` on its own connection; elsewhere a sleep.

    ``wait(seconds)`` returns early (True) on a notification; a lost connection falls back to the poll
    and is re-opened on a later wait. SQLite has no notifications: the worker's short poll bounds latency.
    """

    def __init__(self, engine: Engine):
        self.engine = engine
        self.enabled = engine.dialect.name == "postgresql"
        self._conn = None

    def _connect(self):
        raw = self.engine.raw_connection()
        conn = raw.driver_connection
        raw.detach()  # a connection of its own, never returned to the pool in LISTEN state
        conn.rollback()
        conn.autocommit = True
        conn.execute(f"LISTEN {NOTIFY_CHANNEL}")
        return conn

    def wait(self, seconds: float, stop: threading.Event | None = None) -> bool:
        """Sleep up to ``seconds``; True when woken by a notification."""
        if not self.enabled:
            if stop is not None:
                stop.wait(seconds)
            else:
                time.sleep(seconds)
            return False
        import psycopg

        try:
            if self._conn is None or self._conn.closed:
                self._conn = self._connect()
            woke = False
            for _ in self._conn.notifies(timeout=seconds, stop_after=1):
                woke = True
            if woke:  # several commits in a row: one round claims them all
                for _ in self._conn.notifies(timeout=0.001):
                    pass
            return woke
        except (psycopg.Error, DBAPIError) as exc:
            log.warning("outbox LISTEN connection lost (%s); polling until it is back", type(exc).__name__)
            self.close()
            (stop.wait if stop is not None else time.sleep)(seconds)
            return False

    def close(self) -> None:
        if self._conn is not None:
            try:
                self._conn.close()
            finally:
                self._conn = None


def backlog(store: Store) -> list[tuple[str, str, int, str | None]]:
    """Jobs not yet delivered: (kind, state, how many, oldest created_at) for pending, in-progress and dead."""
    o = s.outbox
    with store.engine.connect() as conn:
        rows = conn.execute(select(o.c.kind, o.c.state, func.count(), func.min(o.c.created_at))
                            .where(o.c.state.in_(("pending", "in-progress", "dead")))
                            .group_by(o.c.kind, o.c.state)).all()
    return [(r[0], r[1], int(r[2]), r[3]) for r in rows]


def dead_by_destination(store: Store) -> list[tuple[str, str, int]]:
    """(kind, destination, how many) of the dead jobs."""
    o = s.outbox
    with store.engine.connect() as conn:
        rows = conn.execute(select(o.c.kind, o.c.destination, func.count()).where(o.c.state == "dead")
                            .group_by(o.c.kind, o.c.destination)).all()
    return [(r[0], r[1], int(r[2])) for r in rows]


def _claimable(now: str):
    o = s.outbox
    return or_(and_(o.c.state == "pending", o.c.next_attempt_at <= now),
               and_(o.c.state == "in-progress", o.c.lease_until < now))


def claim(store: Store, worker: str, *, limit: int = 10, lease_seconds: float = 60.0,
          kinds: tuple[str, ...] = ()) -> list[Job]:
    """Claim up to ``limit`` due jobs for ``worker``; each claim counts as an attempt."""
    o = s.outbox
    now = now_iso()
    with store.write() as tx:
        conn = tx.conn
        q = select(o.c.id).where(_claimable(now))
        if kinds:
            q = q.where(o.c.kind.in_(kinds))
        q = q.order_by(o.c.next_attempt_at, o.c.id).limit(limit).with_for_update(skip_locked=True)
        ids = list(conn.execute(q).scalars())
        if not ids:
            return []
        lease = iso_in(lease_seconds)
        rows = conn.execute(update(o).where(o.c.id.in_(ids), _claimable(now))
                            .values(state="in-progress", claimed_by=worker, lease_until=lease,
                                    attempts=o.c.attempts + 1, updated_at=now)
                            .returning(*o.c)).mappings().all()
        jobs = [_job(r) for r in rows]
        if jobs:
            conn.execute(s.outbox_attempts.insert(), [
                dict(job_id=j.id, attempt=j.attempts, worker=worker, started_at=now, finished_at=now,
                     outcome="started") for j in jobs])
    return sorted(jobs, key=lambda j: (j.next_attempt_at, j.id))


@dataclass
class Outcome:
    """The result of one delivery attempt, to be recorded by ``finish_many``."""

    job: Job
    outcome: str  # delivered | retry | dead
    status: int | None = None
    error: str | None = None
    result: str | None = None
    retry_at: str | None = None


def finish(store: Store, job: Job, worker: str, *, outcome: str, status: int | None = None,
           error: str | None = None, result: str | None = None, retry_at: str | None = None) -> bool:
    """Record one attempt and move the job to delivered / pending (retry_at) / dead.

    False when the job is no longer ours (our lease expired and another worker claimed it).
    """
    return finish_many(store, worker, [Outcome(job, outcome, status, error, result, retry_at)]) == 1


def finish_many(store: Store, worker: str, outcomes: list[Outcome]) -> int:
    """Record a batch of attempts in one transaction (one commit, not one per job); -> how many were ours."""
    o, a = s.outbox, s.outbox_attempts
    now = now_iso()
    ours = 0
    with store.write() as tx:
        for oc in outcomes:
            job = oc.job
            values: dict = dict(updated_at=now, last_status=oc.status, lease_until=None)
            if oc.outcome == "delivered":
                values.update(state="delivered", delivered_at=now, result=oc.result, last_error=None)
            elif oc.outcome == "retry":
                values.update(state="pending", next_attempt_at=oc.retry_at or now, last_error=oc.error)
            else:
                values.update(state="dead", last_error=oc.error)
            n = tx.conn.execute(update(o).where(o.c.id == job.id, o.c.claimed_by == worker,
                                                o.c.state == "in-progress", o.c.attempts == job.attempts)
                                .values(**values)).rowcount
            ours += n
            tx.conn.execute(update(a).where(a.c.job_id == job.id, a.c.attempt == job.attempts, a.c.worker == worker)
                            .values(finished_at=now, outcome=oc.outcome if n else f"{oc.outcome}-late",
                                    status=oc.status, error=oc.error))
    return ours


def list_jobs(store: Store, *, state: str | None = None, resource: str | None = None, kind: str | None = None,
              destination: str | None = None, limit: int = 100, offset: int = 0) -> tuple[int, list[Job]]:
    """Jobs newest first; ``resource`` is 'Type' or 'Type/id'."""
    o = s.outbox
    conds = []
    if state:
        conds.append(o.c.state == state)
    if kind:
        conds.append(o.c.kind == kind)
    if destination:
        conds.append(o.c.destination == destination)
    if resource:
        rtype, _, rid = resource.partition("/")
        conds.append(o.c.resource_type == rtype)
        if rid:
            conds.append(o.c.resource_id == rid)
    with store.engine.connect() as conn:
        total = conn.execute(select(func.count()).select_from(o).where(*conds)).scalar_one()
        rows = conn.execute(select(o).where(*conds).order_by(o.c.id.desc()).limit(limit).offset(offset)
                            ).mappings().all()
    return total, [_job(r) for r in rows]


def attempts_of(store: Store, job_id: int) -> list[dict]:
    a = s.outbox_attempts
    with store.engine.connect() as conn:
        return [dict(r) for r in conn.execute(select(a).where(a.c.job_id == job_id).order_by(a.c.id)).mappings()]


def get_job(store: Store, job_id: int) -> Job | None:
    with store.engine.connect() as conn:
        row = conn.execute(select(s.outbox).where(s.outbox.c.id == job_id)).mappings().first()
    return _job(row) if row else None


def retry(store: Store, job_ids: list[int] | None = None, *, all_dead: bool = False) -> int:
    """Dead (or pending) jobs -> pending now, with a fresh attempt budget; -> how many were reset."""
    o = s.outbox
    conds = [o.c.state.in_(("dead", "pending"))]
    if job_ids:
        conds.append(o.c.id.in_(job_ids))
    elif all_dead:
        conds = [o.c.state == "dead"]
    else:
        return 0
    now = now_iso()
    with store.write() as tx:
        return tx.conn.execute(update(o).where(*conds).values(state="pending", attempts=0, next_attempt_at=now,
                                                              updated_at=now, claimed_by=None, lease_until=None)
                               ).rowcount


def purge_delivered(store: Store, older_than_seconds: float = 0.0) -> int:
    """Delete delivered jobs (and their attempts) delivered more than ``older_than_seconds`` ago."""
    o, a = s.outbox, s.outbox_attempts
    cutoff = iso_in(-older_than_seconds)
    with store.write() as tx:
        ids = select(o.c.id).where(o.c.state == "delivered", o.c.delivered_at <= cutoff)
        tx.conn.execute(delete(a).where(a.c.job_id.in_(ids)))
        return tx.conn.execute(delete(o).where(o.c.state == "delivered", o.c.delivered_at <= cutoff)).rowcount


def counts(store: Store) -> dict[str, int]:
    o = s.outbox
    with store.engine.connect() as conn:
        rows = conn.execute(select(o.c.state, func.count()).group_by(o.c.state)).all()
    return {st: 0 for st in STATES} | {r[0]: r[1] for r in rows}
