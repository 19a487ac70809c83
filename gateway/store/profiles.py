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
from sqlalchemy import delete, exists, func, insert, or_, select, update

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
    ids = list(dict.fromkeys(patient_ids))
    out: dict[str, str] = {}
    for i in range(0, len(ids), 500):
        out.update(conn.execute(select(PAT.c.patient_id, PAT.c.person).where(PAT.c.patient_id.in_(ids[i:i + 500])))
                   .all())
    return out


def patients_of(conn, person: str) -> list[str]:
    return sorted(conn.execute(select(PAT.c.patient_id).where(PAT.c.person == person)).scalars())


def set_patient(conn, patient_id: str, person: str | None) -> str | None:
    """Record which person a Patient record belongs to (None: deleted); returns the person it belonged to."""
    old = person_of(conn, patient_id)
    if old == person:
        return old
    if old is not None:
        conn.execute(delete(PAT).where(PAT.c.patient_id == patient_id))
    if person is not None:
        conn.execute(insert(PAT).values(patient_id=patient_id, person=person))
    return old


def set_record(conn, rtype: str, rid: str, patient_id: str | None) -> str | None:
    """Record which Patient a clinical record (or Consent) is about (None: none / deleted); returns the old one."""
    old = conn.execute(select(REC.c.patient_id).where(REC.c.type == rtype, REC.c.id == rid)).scalar()
    if old == patient_id:
        return old
    if old is not None:
        conn.execute(delete(REC).where(REC.c.type == rtype, REC.c.id == rid))
    if patient_id is not None:
        conn.execute(insert(REC).values(type=rtype, id=rid, patient_id=patient_id))
    return old


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


def current_resources(conn, patient_ids: list[str]) -> list[dict]:
    """The current Patient records ``patient_ids`` and every current record about them, as JSON: each Patient
    (by id) followed by its records by (type, id)."""
    if not patient_ids:
        return []
    about: dict[str, list[tuple[str, str]]] = {}
    for t, i, pid in conn.execute(select(REC.c.type, REC.c.id, REC.c.patient_id).where(
            REC.c.patient_id.in_(patient_ids))):
        about.setdefault(pid, []).append((t, i))
    refs: list[tuple[str, str]] = []
    for pid in sorted(patient_ids):
        refs.append(("Patient", pid))
        refs.extend(sorted(about.get(pid, ())))
    return read_current(conn, refs)


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


def put_person(conn, row: PersonRow, codes: Iterable[str], seq: int) -> None:
    """Replace the person's row and codes."""
    drop_person(conn, row.person)
    conn.execute(insert(P).values(
        person=row.person, nhs_number=row.nhs_number, birth_date=row.birth_date, sex=row.sex, deceased=row.deceased,
        no_condition=row.no_condition, alerts_only=row.alerts_only, alerts_consent=row.alerts_consent,
        research_consent=row.research_consent, lat=row.lat, lon=row.lon, seq=seq,
        doc=orjson.dumps(row.doc).decode()))
    keys = sorted({c[:255] for c in codes})
    if keys:
        conn.execute(insert(C), [{"code": c, "person": row.person} for c in keys])


def drop_person(conn, person: str) -> None:
    conn.execute(delete(C).where(C.c.person == person))
    conn.execute(delete(P).where(P.c.person == person))


def built_seq(conn, persons: Iterable[str]) -> dict[str, int]:
    keys = list(persons)
    out: dict[str, int] = {}
    for i in range(0, len(keys), 500):
        out.update(conn.execute(select(P.c.person, P.c.seq).where(P.c.person.in_(keys[i:i + 500]))).all())
    return out


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


def candidate_count(conn, f: Filter) -> int:
    return int(conn.execute(select(func.count()).select_from(P).where(*_where(f))).scalar_one())


# -- the cursor of the catch-up -----------------------------------------------------------------------------
def cursor(conn) -> int:
    return int(conn.execute(select(s.counters.c.value).where(s.counters.c.name == CURSOR)).scalar() or 0)


def advance_cursor(conn, seq: int) -> None:
    """Every person change up to ``seq`` is in the rows."""
    c = s.counters
    done = conn.execute(update(c).where(c.c.name == CURSOR, c.c.value < seq).values(value=seq)).rowcount
    if not done and conn.execute(select(c.c.value).where(c.c.name == CURSOR)).scalar() is None:
        conn.execute(insert(c).values(name=CURSOR, value=seq))


def gap(conn, after: int, before: int, types: tuple[str, ...]) -> bool:
    """Is there a change of ``types`` with ``after`` < seq < ``before`` (one the rows may not hold yet)?"""
    ch = s.changes
    return conn.execute(select(ch.c.seq).where(ch.c.type.in_(types), ch.c.seq > after, ch.c.seq < before)
                        .limit(1)).first() is not None
