"""The patient side of matching, kept in the database (gateway.store.profiles), not in any process.

A write hook on the store rebuilds, in the transaction that writes a person's records, that person's row: their
profile (profile.profile_doc), every concept their active conditions are a kind of, and the columns the candidate
queries filter on. A study's candidates are then asked of the database: the people holding one of the study's
required codes, alive, of an accepted sex and age, and allowed by the consent gate's coarse state; only those are
read, rebuilt and screened by the engine (the same decisions as full evaluation), and only the page is explained.

Paging is by key: a page ends on a row whose (score, coverage, distance) and rank among the rows tied with it
make the ``after`` of the next page, so a page never shifts when an earlier one is skipped, and no person
identifier (an NHS number is a person's key) is ever put in a link.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from datetime import date

from gateway.fhir import conventions as cv
from gateway.matching import consent
from gateway.matching.criteria import StudyCriteria
from gateway.matching.engine import MatchResult, Screened, evaluate, nearest_site, screen
from gateway.matching.index import MatchQuery, _arrange, _coarse, _patient_order
from gateway.matching.profile import (
    THERAPY_TYPES,
    PatientProfile,
    build_profile,
    person_key,
    profile_doc,
    profile_of_doc,
    subject_ref,
)
from gateway.matching.terms import Terminology
from gateway.store import profiles as db
from gateway.store.repo import Store, Tx

PERSON_TYPES = ("Patient", "Condition", "Observation", "Consent", *THERAPY_TYPES)
HOOK = "matching.people"
_SEXES = frozenset({"male", "female", "other"})


def _patient_id(resource: dict) -> str | None:
    ref = subject_ref(resource)
    return ref.split("/", 1)[1] if ref and ref.startswith("Patient/") else None


def _alerts_only(patients: list[dict]) -> bool:
    return bool(patients) and all(
        any(isinstance(t, dict) and (t.get("system"), t.get("code")) == cv.ALERTS_ONLY_TAG
            for t in (pat.get("meta") or {}).get("tag") or []) for pat in patients)


def _years_before(today: date, years: int, leap_day: int) -> str:
    """``today`` ``years`` earlier, as ISO; 29 February becomes ``leap_day`` February / 1 March when needed."""
    try:
        return today.replace(year=today.year - years).isoformat()
    except ValueError:  # 29 February in a year without one
        return (date(today.year - years, 3, 1) if leap_day == 30 else date(today.year - years, 2, 28)).isoformat()


def column_filter(sc: StudyCriteria, today: date) -> db.Filter:
    """What the database can decide of ``sc`` from the columns: a superset of the people the engine lets through.

    Only high-confidence criteria can fail a person (engine._decide), and a missing datum is unknown, not failed,
    so each condition keeps the people whose value is unknown.
    """
    keys = sc.index_keys()
    codes = None if keys is None else (*sorted(db.code_key(*c) for c in keys[0]),
                                       *sorted(db.text_code(t) for t in keys[1]))
    sexes: frozenset[str] | None = None
    born_after = born_on_or_before = None
    for c in sc.criteria:
        if c.confidence != cv.CONFIDENCE_HIGH:
            continue
        if c.kind == "sex":
            ok = _SEXES - set(c.values) if c.exclude else _SEXES & set(c.values)
            sexes = ok if sexes is None else sexes & ok
        elif c.kind == "age" and not c.exclude and (c.unit or "a") == "a":
            if c.low is not None and float(c.low).is_integer():  # age >= low: born on or before today - low
                d = _years_before(today, int(c.low), 30)
                born_on_or_before = d if born_on_or_before is None else min(born_on_or_before, d)
            if c.high is not None and float(c.high).is_integer():  # age <= high: born after today - (high + 1)
                d = _years_before(today, int(c.high) + 1, 28)
                born_after = d if born_after is None else max(born_after, d)
    return db.Filter(codes=codes, no_condition=bool(sc.healthy_volunteers), sexes=sexes, born_after=born_after,
                     born_on_or_before=born_on_or_before)


@dataclass
class Row:
    """A person who fits, screened, with the decision of the gate."""

    screened: Screened
    profile: PatientProfile
    decision: consent.Decision | None = None


class People:
    """The people of one store, as matching sees them (``profiles``, ``candidates``, ``page``)."""

    def __init__(self, store: Store, term: Terminology):
        self.store = store
        self.term = term
        self.profiles = _Profiles(self)

    # -- keeping the rows current --------------------------------------------------------------------------
    def attach(self) -> None:
        """Rebuild the rows of the people a transaction touches, in that transaction (one hook per store)."""
        self.store.write_hooks[HOOK] = self._on_write

    def _on_write(self, tx: Tx, touched: list[tuple[str, str]]) -> None:
        refs = [(t, i) for t, i in touched if t in PERSON_TYPES]
        if not refs:
            return
        self.apply(tx.conn, refs, tx.last_seq)
        # the cursor moves on only over changes the rows hold: none older left to the catch-up
        if not db.gap(tx.conn, db.cursor(tx.conn), tx.first_seq, PERSON_TYPES):
            db.advance_cursor(tx.conn, tx.last_seq)

    def apply(self, conn, refs: list[tuple[str, str]], seq: int) -> int:
        """Re-derive the people these (type, id) writes touch; returns how many people were rebuilt.

        A fixed number of statements whatever the number of people (a Bundle or an import batch of thousands).
        """
        current = {(r["resourceType"], r["id"]): r for r in db.read_current(conn, refs)}
        patients_now: dict[str, str | None] = {}
        records_now: dict[tuple[str, str], str | None] = {}
        for rtype, rid in refs:
            res = current.get((rtype, rid))
            if rtype == "Patient":
                patients_now[rid] = person_key(res) if res is not None else None
            else:
                records_now[(rtype, rid)] = _patient_id(res) if res is not None else None
        old_people = db.set_patients(conn, patients_now)
        old_records = db.set_records(conn, records_now)
        people = {k for k in (*old_people.values(), *patients_now.values()) if k}
        touched = {p for p in (*old_records.values(), *records_now.values()) if p}
        people |= set(db.persons_of(conn, touched).values())
        self._rebuild(conn, sorted(people), seq)
        return len(people)

    def _rebuild(self, conn, keys: list[str], seq: int) -> None:
        members = db.patients_of_many(conn, keys)
        by_patient = db.current_resources_many(conn, [p for k in keys for p in members.get(k, ())])
        rows: list[tuple[db.PersonRow, set[str]]] = []
        for key in keys:
            pids = members.get(key)
            if not pids:
                continue
            resources = [r for pid in pids for r in by_patient.get(pid, ())]
            prof = build_profile(resources, self.term, key=key)
            gate = [r for r in resources if r.get("resourceType") == "Consent"]
            row = db.PersonRow(
                person=key, nhs_number=prof.nhs_number,
                birth_date=prof.birth_date.isoformat() if prof.birth_date else None,
                sex=prof.sex, deceased=prof.deceased, no_condition=not prof.conditions,
                alerts_only=_alerts_only([r for r in resources if r.get("resourceType") == "Patient"]),
                alerts_consent=consent.may_ever(gate, cv.PURPOSE_TRIAL_ALERTS),
                research_consent=consent.may_ever(gate, cv.PURPOSE_RESEARCH),
                lat=prof.position[0] if prof.position else None, lon=prof.position[1] if prof.position else None,
                doc=profile_doc(prof))
            rows.append((row, {db.code_key(*c) for c in prof.ancestors} | {db.text_code(t) for t in prof.texts}))
        db.replace_people(conn, keys, rows, seq)

    def catch_up(self, batch: int = 2000) -> int:
        """Apply the person changes no write hook applied (a database from before the profile tables, writes of a
        process without the hook); returns how many changes were read. Cheap when every writer has the hook."""
        done = 0
        with self.store.engine.connect() as conn:
            if not db.gap(conn, db.cursor(conn), 2 ** 62, PERSON_TYPES):
                return 0
        while True:
            with self.store.write() as tx:
                tx.lock(db.CURSOR)  # one process at a time fills the gap
                seq = db.cursor(tx.conn)
                changes = self.store.changes_since(seq, limit=batch, types=PERSON_TYPES)
                if not changes:
                    return done
                self.apply(tx.conn, list(dict.fromkeys((c["type"], c["id"]) for c in changes)), changes[-1]["seq"])
                db.advance_cursor(tx.conn, changes[-1]["seq"])
                done += len(changes)

    @staticmethod
    def install_default(store: Store, term: Callable[[], Terminology]) -> None:
        """Keep people current from the first write, before any matching state is built (``term`` is loaded on
        the first write of a person); a MatchingState built later replaces it with its own terminology."""
        box: list[People] = []

        def hook(tx: Tx, touched: list[tuple[str, str]]) -> None:
            if not any(t in PERSON_TYPES for t, _ in touched):
                return
            if not box:
                box.append(People(store, term()))
            box[0]._on_write(tx, touched)

        store.write_hooks.setdefault(HOOK, hook)

    def __len__(self) -> int:
        return len(self.profiles)

    # -- lookups -----------------------------------------------------------------------------------------------
    def person_for_patient(self, patient_id: str) -> str | None:
        with self.store.engine.connect() as conn:
            return db.person_of(conn, patient_id)

    def persons_for_patients(self, patient_ids: list[str]) -> dict[str, str]:
        with self.store.engine.connect() as conn:
            return db.persons_of(conn, patient_ids)

    def alerts_only(self, key: str) -> bool:
        with self.store.engine.connect() as conn:
            return db.alerts_only(conn, key)

    def get(self, key: str) -> PatientProfile | None:
        with self.store.engine.connect() as conn:
            doc = db.docs(conn, [key]).get(key)
        return profile_of_doc(doc, self.term) if doc is not None else None

    def get_many(self, keys: list[str]) -> dict[str, tuple[PatientProfile, bool]]:
        """key -> (profile, alerts-only?) for the people of ``keys`` who exist, in one round trip per 1,000."""
        with self.store.engine.connect() as conn:
            found = db.docs_and_flags(conn, sorted(set(keys)))
        return {k: (profile_of_doc(doc, self.term), only) for k, (doc, only) in found.items()}

    # -- candidates ------------------------------------------------------------------------------------------
    def fitting(self, sc: StudyCriteria, q: MatchQuery, gate: db.Filter, only: list[str] | None = None,
                seen=None) -> Iterator[tuple[Screened, PatientProfile]]:
        """Everyone the database lets through ``gate`` (and the study's columns) who fits ``sc``, screened;
        ``only``: among these people; ``seen.screened`` (when given) counts the people screened."""
        today = q.today or date.today()
        f = replace(column_filter(sc, today), research=gate.research, alerts=gate.alerts, nhs=gate.nhs,
                    any_consent=gate.any_consent, include_alerts_only=gate.include_alerts_only)
        with self.store.engine.connect() as conn:
            for chunk in db.candidate_rows(conn, f, only=only):
                if seen is not None:
                    seen.screened += len(chunk)
                for _key, _nhs, doc in chunk:
                    p = profile_of_doc(doc, self.term)
                    r = screen(sc, p, self.term, today, q.max_distance_km, stop_early=True, distance=False)
                    if r.not_met == 0:
                        yield r, p

    def page(self, sc: StudyCriteria, q: MatchQuery, gate: db.Filter, allowed: Callable[[PatientProfile], bool],
             limit: int, after: tuple | None = None) -> tuple[list[tuple[MatchResult, PatientProfile]], int,
                                                              tuple | None]:
        """The ``limit`` people after ``after`` (a cursor from a previous page) who fit ``sc`` and pass
        ``allowed``, explained; the exact count of all who do; and the cursor of the page's last row."""
        today = q.today or date.today()
        q = MatchQuery(q.statuses, q.phases, q.max_distance_km, q.near_misses, today)
        rows: list[Screened] = []
        profiles: dict[str, PatientProfile] = {}
        for r, p in self.fitting(sc, q, gate):
            if allowed(p):
                rows.append(r)
                profiles[r.patient_key] = p
        total = len(rows)
        lazy = None if q.max_distance_km is not None else (lambda r: nearest_site(sc, profiles[r.patient_key])[1])
        if after is not None:
            rows = _after(rows, after, lazy)
        _arrange(rows, limit, _coarse, _patient_order, lazy)
        taken = rows[:limit]
        out = [(evaluate(sc, profiles[r.patient_key], self.term, today, q.max_distance_km), profiles[r.patient_key])
               for r in taken]
        cursor = None
        if taken and len(rows) > limit:
            last = taken[-1]
            tied = sum(1 for r in taken if _tie(r) == _tie(last))
            skipped = after[3] if after is not None and _tie(last) == tuple(after[:3]) else 0
            cursor = (*_tie(last), skipped + tied)
        return out, total, cursor


def _tie(r: Screened) -> tuple:
    return (r.score, round(r.coverage, 6), round(r.distance_km, 6) if r.distance_km is not None else -1.0)


def _after(rows: list[Screened], after: tuple, lazy) -> list[Screened]:
    """The rows that come after cursor ``after`` = (score, coverage, distance or -1, how many rows tied on those
    three the earlier pages showed): everything later in order, less the first of the tied rows."""
    score, coverage, dist, skip = after
    mark = (-score, -coverage)
    out, tied = [], []
    for r in rows:
        c = (-r.score, -round(r.coverage, 6))
        if c < mark:
            continue
        if c == mark:
            if r.distance_km is None and lazy is not None:
                r.distance_km = lazy(r)
            d = round(r.distance_km, 6) if r.distance_km is not None else -1.0
            key_d, mark_d = (float("inf") if d < 0 else d), (float("inf") if dist < 0 else dist)
            if key_d < mark_d:
                continue
            if key_d == mark_d:
                tied.append(r)
                continue
        out.append(r)
    tied.sort(key=lambda r: r.patient_key)
    return tied[int(skip):] + out


class _Profiles:
    """``people.profiles[key]``: one person's profile read from the database (a mapping view, not a cache)."""

    def __init__(self, people: People):
        self._people = people

    def get(self, key: str, default=None):
        p = self._people.get(key)
        return default if p is None else p

    def __getitem__(self, key: str) -> PatientProfile:
        p = self._people.get(key)
        if p is None:
            raise KeyError(key)
        return p

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and self._people.get(key) is not None

    def __len__(self) -> int:
        with self._people.store.engine.connect() as conn:
            return db.count_people(conn)

    def __iter__(self) -> Iterator[str]:  # every key: for tests and small tools, not for a request
        with self._people.store.engine.connect() as conn:
            return iter(db.person_keys(conn))

    def values(self) -> Iterator[PatientProfile]:
        for key in self:
            p = self._people.get(key)
            if p is not None:
                yield p
