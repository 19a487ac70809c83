"""The patient side of matching in the database: one compact row per person (schema.match_people and friends).

This module knows tables and SQL only; what goes into a row (the profile, its codes, its consent state) is
decided by gateway.matching.people, which registers a write hook so that every transaction writing a person's
records rebuilds their row before it commits. The queries here are what matching asks:

- ``candidate_rows``: people holding any of some codes (or with no active condition), filtered on columns
  (not deceased, consent state, sex, birth-date range), in ``person`` order after a key (keyset), a chunk at a
  time: the database walks ``match_codes`` (primary key ``code, person``) and ``match_people`` by index;
- ``docs``: the stored profiles of a page of people.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import orjson
from sqlalchemy import String, and_, any_, bindparam, delete, exists, func, insert, or_, select
from sqlalchemy.dialects.postgresql import ARRAY

from gateway.store import derived
from gateway.store import schema as s

P, C, PAT, REC = s.match_people, s.match_codes, s.match_patients, s.match_records
CURSOR = "matching:profiles-seq"  # counters row: every change up to this sequence number is in the profiles


def text_code(text: str) -> str:
    return f"text:{text}"


def code_key(system: str, code: str) -> str:
    return f"{system}|{code}"


# -- membership: Patient -> person, record -> Patient -------------------------------------------------------
def person_of(conn, patient_id: str) -> str | None:
    return conn.execute(select(PAT.c.person).where(PAT.c.patient_id == patient_id)).scalar()


def persons_of(conn, patient_ids: Iterable[str]) -> dict[str, str]:
    ids = sorted(set(patient_ids))
    out: dict[str, str] = {}
    for i in range(0, len(ids), 500):
        out.update(conn.execute(select(PAT.c.patient_id, PAT.c.person).where(PAT.c.patient_id.in_(ids[i:i + 500])))
                   .all())
    return out


def persons_without_alerts_consent(conn, patient_ids: Iterable[str]) -> set[str]:
    """The people of ``patient_ids`` whose row says no trial-alerts consent (few, however many ids: on PostgreSQL
    the ids go as one array per 50,000, elsewhere 500 at a time)."""
    ids = sorted(set(patient_ids))
    step = 50_000 if conn.dialect.name == "postgresql" else 500
    out: set[str] = set()
    for i in range(0, len(ids), step):
        part = ids[i:i + step]
        match = (PAT.c.patient_id == any_(bindparam("ids", part, type_=ARRAY(String)))
                 if conn.dialect.name == "postgresql" else PAT.c.patient_id.in_(part))
        out.update(conn.execute(select(PAT.c.person).join(P, P.c.person == PAT.c.person).where(
            match, P.c.alerts_consent.is_(False))).scalars())
    return out


def patients_of(conn, person: str) -> list[str]:
    return sorted(conn.execute(select(PAT.c.patient_id).where(PAT.c.person == person)).scalars())


def read_current(conn, refs: list[tuple[str, str]]) -> list[dict]:
    """The current (not deleted) resources among ``refs``, as JSON, in the order of ``refs``."""
    r = s.resources
    by_type: dict[str, list[str]] = {}
    for t, i in refs:
        by_type.setdefault(t, []).append(i)
    found: dict[tuple[str, str], str] = {}
    for t, ids in by_type.items():
        for i in range(0, len(ids), 500):
            for rid, content in conn.execute(select(r.c.id, r.c.content).where(
                    r.c.type == t, r.c.id.in_(ids[i:i + 500]), r.c.deleted.is_(False))):
                if content:
                    found[(t, rid)] = content
    return [orjson.loads(found[ref]) for ref in refs if ref in found]


def _chunks(items: list, n: int = 500):
    for i in range(0, len(items), n):
        yield items[i:i + n]


def set_patients(conn, persons: dict[str, str | None]) -> dict[str, str]:
    """Patient id -> the person it belongs to now (None: deleted), for many; returns who they belonged to."""
    old = persons_of(conn, persons)
    for part in _chunks(sorted(pid for pid, person in persons.items() if old.get(pid) != person and pid in old)):
        conn.execute(delete(PAT).where(PAT.c.patient_id.in_(part)))
    new = [{"patient_id": pid, "person": person} for pid, person in sorted(persons.items())
           if person is not None and old.get(pid) != person]
    if new:
        conn.execute(insert(PAT), new)
    return old


def set_records(conn, records: dict[tuple[str, str], str | None]) -> dict[tuple[str, str], str]:
    """(type, id) -> the Patient the record is about now (None: none / deleted), for many; returns the old ones."""
    old: dict[tuple[str, str], str] = {}
    by_type: dict[str, list[str]] = {}
    for t, i in records:
        by_type.setdefault(t, []).append(i)
    for t, ids in by_type.items():
        for part in _chunks(ids):
            old.update(((t, i), pid) for i, pid in conn.execute(
                select(REC.c.id, REC.c.patient_id).where(REC.c.type == t, REC.c.id.in_(part))))
    stale: dict[str, list[str]] = {}
    for (t, i) in records:
        if (t, i) in old and old[(t, i)] != records[(t, i)]:
            stale.setdefault(t, []).append(i)
    for t, ids in stale.items():
        for part in _chunks(ids):
            conn.execute(delete(REC).where(REC.c.type == t, REC.c.id.in_(part)))
    new = [{"type": t, "id": i, "patient_id": pid} for (t, i), pid in records.items()
           if pid is not None and old.get((t, i)) != pid]
    if new:
        conn.execute(insert(REC), new)
    return old


def patients_of_many(conn, persons: list[str]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for part in _chunks(persons):
        for pid, person in conn.execute(select(PAT.c.patient_id, PAT.c.person).where(PAT.c.person.in_(part))):
            out.setdefault(person, []).append(pid)
    return {k: sorted(v) for k, v in out.items()}


def current_resources_many(conn, patient_ids: list[str]) -> dict[str, list[dict]]:
    """Patient id -> [the current Patient, then every current record about it by (type, id)]."""
    about: dict[str, list[tuple[str, str]]] = {}
    for part in _chunks(patient_ids):
        for t, i, pid in conn.execute(select(REC.c.type, REC.c.id, REC.c.patient_id).where(
                REC.c.patient_id.in_(part))):
            about.setdefault(pid, []).append((t, i))
    refs = [ref for pid in patient_ids for ref in (("Patient", pid), *sorted(about.get(pid, ())))]
    found = {(r["resourceType"], r["id"]): r for r in read_current(conn, refs)}
    return {pid: [found[ref] for ref in (("Patient", pid), *sorted(about.get(pid, ()))) if ref in found]
            for pid in patient_ids}


def replace_people(conn, keys: list[str], rows: list[tuple[PersonRow, set[str]]], seq: int) -> None:
    """The rows of people ``keys`` become ``rows`` (people of ``keys`` without a row are removed)."""
    for part in _chunks(keys):
        conn.execute(delete(C).where(C.c.person.in_(part)))
        conn.execute(delete(P).where(P.c.person.in_(part)))
    if not rows:
        return
    conn.execute(insert(P), [dict(
        person=r.person, nhs_number=r.nhs_number, birth_date=r.birth_date, sex=r.sex, deceased=r.deceased,
        no_condition=r.no_condition, alerts_only=r.alerts_only, alerts_consent=r.alerts_consent,
        research_consent=r.research_consent, lat=r.lat, lon=r.lon, seq=seq, doc=orjson.dumps(r.doc).decode())
        for r, _ in rows])
    codes = [{"code": c, "person": r.person} for r, cs in rows for c in sorted({c[:255] for c in cs})]
    for part in _chunks(codes, 5000):
        conn.execute(insert(C), part)


def current_resources(conn, patient_ids: list[str]) -> list[dict]:
    """The current Patient records ``patient_ids`` and every current record about them: each Patient (by id)
    followed by its records by (type, id), the order profiles are built in."""
    many = current_resources_many(conn, sorted(patient_ids))
    return [r for pid in sorted(patient_ids) for r in many[pid]]


# -- the person rows -------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class PersonRow:
    person: str
    nhs_number: str | None
    birth_date: str | None
    sex: str | None
    deceased: bool
    no_condition: bool
    alerts_only: bool
    alerts_consent: bool
    research_consent: bool
    lat: float | None
    lon: float | None
    doc: dict


def docs(conn, persons: list[str]) -> dict[str, dict]:
    """Stored profiles (JSON dicts) of ``persons``; missing people are absent."""
    out: dict[str, dict] = {}
    for i in range(0, len(persons), 1000):
        for person, doc in conn.execute(select(P.c.person, P.c.doc).where(P.c.person.in_(persons[i:i + 1000]))):
            out[person] = orjson.loads(doc)
    return out


def docs_and_flags(conn, persons: list[str]) -> dict[str, tuple[dict, bool]]:
    """(profile JSON, alerts-only?) of ``persons``; missing people are absent."""
    out: dict[str, tuple[dict, bool]] = {}
    for i in range(0, len(persons), 1000):
        for person, doc, only in conn.execute(select(P.c.person, P.c.doc, P.c.alerts_only).where(
                P.c.person.in_(persons[i:i + 1000]))):
            out[person] = (orjson.loads(doc), bool(only))
    return out


def alerts_only(conn, person: str) -> bool:
    return bool(conn.execute(select(P.c.alerts_only).where(P.c.person == person)).scalar())


def count_people(conn) -> int:
    return int(conn.execute(select(func.count()).select_from(P)).scalar_one())


def person_keys(conn) -> list[str]:
    return list(conn.execute(select(P.c.person).order_by(P.c.person)).scalars())


# -- candidate queries -----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Filter:
    """Column conditions a candidate must meet; each is a superset of what the engine would keep."""

    codes: tuple[str, ...] | None = None  # any of these (code_key / text_code); None: no code required
    no_condition: bool = False  # ... or no active condition (healthy volunteers)
    sexes: frozenset[str] | None = None  # sex in these, or unknown
    born_after: str | None = None  # birth_date > this, or unknown
    born_on_or_before: str | None = None  # birth_date <= this, or unknown
    # consent: people whose row says research consent, or alerts consent, or (legal basis) an NHS number
    research: bool = False
    alerts: bool = False
    nhs: bool = False
    any_consent: bool = False  # no consent filter at all (administrators' consent=any)
    include_alerts_only: bool = False


def _where(f: Filter) -> list:
    conds = [P.c.deceased.is_(False)]
    if not f.include_alerts_only:
        conds.append(P.c.alerts_only.is_(False))
    if f.codes is not None:
        has_code = exists().where(C.c.person == P.c.person, C.c.code.in_(list(f.codes))) if f.codes else None
        parts = [x for x in (has_code, P.c.no_condition.is_(True) if f.no_condition else None) if x is not None]
        conds.append(or_(*parts) if parts else P.c.person.is_(None))
    if f.sexes is not None:
        conds.append(or_(P.c.sex.is_(None), P.c.sex.in_(sorted(f.sexes))))
    if f.born_after is not None:
        conds.append(or_(P.c.birth_date.is_(None), P.c.birth_date > f.born_after))
    if f.born_on_or_before is not None:
        conds.append(or_(P.c.birth_date.is_(None), P.c.birth_date <= f.born_on_or_before))
    if not f.any_consent:
        gates = []
        if f.research:
            gates.append(P.c.research_consent.is_(True))
        if f.alerts:
            gates.append(P.c.alerts_consent.is_(True))
        if f.nhs:
            gates.append(P.c.nhs_number.is_not(None))
        conds.append(or_(*gates) if gates else P.c.person.is_(None))
    return conds


def candidate_rows(conn, f: Filter, chunk: int = 2000, only: list[str] | None = None
                   ) -> Iterator[list[tuple[str, str | None, dict]]]:
    """Chunks of (person, NHS number, profile JSON) meeting ``f``, in person order (keyset: each chunk starts after
    the last key of the one before, so a chunk is one index range scan however far the walk has gone).
    ``only``: restrict to these people (the consenting side, e.g. subscribers)."""
    after = ""
    conds = _where(f)
    if only is not None:
        keys = sorted(set(only))
        for i in range(0, len(keys), chunk):
            rows = conn.execute(select(P.c.person, P.c.nhs_number, P.c.doc).where(
                P.c.person.in_(keys[i:i + chunk]), *conds).order_by(P.c.person)).all()
            if rows:
                yield [(p, n, orjson.loads(d)) for p, n, d in rows]
        return
    while True:
        rows = conn.execute(select(P.c.person, P.c.nhs_number, P.c.doc).where(P.c.person > after, *conds)
                            .order_by(P.c.person).limit(chunk)).all()
        if not rows:
            return
        yield [(p, n, orjson.loads(d)) for p, n, d in rows]
        if len(rows) < chunk:
            return
        after = rows[-1][0]


def has_trigonometry(conn) -> bool:
    """Can this database compute sin / cos in SQL? (PostgreSQL: yes; SQLite: when built with its math
    functions, as Python's usually is.)"""
    if conn.dialect.name != "sqlite":
        return True
    try:
        conn.exec_driver_sql("SELECT sin(0.5), cos(0.5)").all()
    except Exception:  # noqa: BLE001 (sqlite3.OperationalError: no such function)
        return False
    return True


_RAD = 3.141592653589793 / 180.0


def _hav(conn, sites: list[tuple[float, float]]):
    """SQL: the haversine term (sin^2(d / 2R)) to the nearest of ``sites`` (lat, lon degrees); NULL without a
    position. Increasing with the great-circle distance, so it orders people by their nearest site."""
    import math

    terms = []
    for lat, lon in sites:
        phi, lam = lat * _RAD, lon * _RAD
        dphi = func.sin((P.c.lat * _RAD - phi) / 2)
        dlam = func.sin((P.c.lon * _RAD - lam) / 2)
        terms.append(dphi * dphi + func.cos(P.c.lat * _RAD) * math.cos(phi) * dlam * dlam)
    if len(terms) == 1:
        return terms[0]
    return (func.least if conn.dialect.name == "postgresql" else func.min)(*terms)


def tier_rows(conn, f: Filter, tiers: list[dict[str, bool]], sites: list[tuple[float, float]] | None = None,
              first: int = 64, most: int = 4096) -> Iterator[list[tuple[str, str | None, dict, float | None]]]:
    """Chunks of (person, NHS number, profile JSON, haversine term to the nearest site or None) meeting ``f`` and
    one of ``tiers`` (each: column -> must it be NULL?), in order: by person (keyset, one index range scan per
    chunk); with ``sites``, by the nearest site's distance (NULL last) then person, computed in SQL and sorted
    there. Chunks grow from ``first`` rows to ``most``: a page's caller usually stops after the first."""
    conds = _where(f)
    if tiers and any(tiers):
        alts = [and_(*[(P.c[col].is_(None) if null else P.c[col].is_not(None)) for col, null in tier.items()])
                for tier in tiers]
        conds.append(or_(*alts))
    size = first
    if sites:
        hav = _hav(conn, sites).label("hav")
        offset = 0
        while True:
            rows = conn.execute(select(P.c.person, P.c.nhs_number, P.c.doc, hav).where(*conds)
                                .order_by(hav.asc().nulls_last(), P.c.person).offset(offset).limit(size)).all()
            if rows:
                yield [(p, n, orjson.loads(d), h) for p, n, d, h in rows]
            if len(rows) < size:
                return
            offset += size
            size = min(most, size * 4)
    after = ""
    while True:
        rows = conn.execute(select(P.c.person, P.c.nhs_number, P.c.doc).where(P.c.person > after, *conds)
                            .order_by(P.c.person).limit(size)).all()
        if rows:
            yield [(p, n, orjson.loads(d), None) for p, n, d in rows]
        if len(rows) < size:
            return
        after = rows[-1][0]
        size = min(most, size * 4)


# -- the cursor of the catch-up -----------------------------------------------------------------------------
def cursor(conn) -> int:
    return derived.cursor(conn, CURSOR)


def advance_cursor(conn, seq: int) -> None:
    """Every person change up to ``seq`` is in the rows."""
    derived.advance_cursor(conn, CURSOR, seq)


gap = derived.gap
changes_after = derived.changes_after
