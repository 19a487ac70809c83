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

import heapq
import itertools
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from datetime import date

from gateway.fhir import conventions as cv
from gateway.matching import consent
from gateway.matching.criteria import Criterion, StudyCriteria
from gateway.matching.derived import DerivedRows
from gateway.matching.engine import MatchResult, Screened, _score, evaluate, screen
from gateway.matching.index import MatchQuery, _patient_order
from gateway.matching.profile import (
    THERAPY_TYPES,
    PatientProfile,
    build_profile,
    identity_of_doc,
    person_key,
    profile_doc,
    profile_of_doc,
    subject_ref,
)
from gateway.matching.terms import Terminology
from gateway.store import profiles as db
from gateway.store.ahead import read_ahead
from gateway.store.geo import EARTH_KM
from gateway.store.repo import Store

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


def _years_before(today: date, years: int) -> str:
    """``today`` ``years`` earlier, as ISO; 29 February becomes 28 February in a year without one (the last day
    on which someone born then has completed their years, as profile.age counts them)."""
    try:
        return today.replace(year=today.year - years).isoformat()
    except ValueError:  # 29 February in a year without one
        return date(today.year - years, 2, 28).isoformat()


def _waivable(c: Criterion) -> bool:
    """Does the study waive this criterion for people with some diagnosis (qualifier ``unless-sct-<code>``)?"""
    return any(q.startswith(cv.QUALIFIER_UNLESS_PREFIX) for q in c.qualifiers)


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
        if c.confidence != cv.CONFIDENCE_HIGH or _waivable(c):  # a waiver can let a person through: no filter
            continue
        if c.kind == "sex":
            ok = _SEXES - set(c.values) if c.exclude else _SEXES & set(c.values)
            sexes = ok if sexes is None else sexes & ok
        elif c.kind == "age" and not c.exclude and (c.unit or "a") == "a":
            if c.low is not None and float(c.low).is_integer():  # age >= low: born on or before today - low
                d = _years_before(today, int(c.low))
                born_on_or_before = d if born_on_or_before is None else min(born_on_or_before, d)
            if c.high is not None and float(c.high).is_integer():  # age <= high: born after today - (high + 1)
                d = _years_before(today, int(c.high) + 1)
                born_after = d if born_after is None else max(born_after, d)
    return db.Filter(codes=codes, no_condition=bool(sc.healthy_volunteers), sexes=sexes, born_after=born_after,
                     born_on_or_before=born_on_or_before)


def decided_by_columns(sc: StudyCriteria, q: MatchQuery) -> bool:
    """Do the database's columns (``column_filter``) decide exactly who fits ``sc``, so that a person they let
    through needs no screening? True when every criterion that can fail a person (high confidence, no waiver) is
    the required condition the rows are keyed on (``index_keys``: codes with their ancestors in ``match_codes``,
    no metastasis-only alternative), an age range in whole years or a sex, and no distance limit applies.
    Anything else (an exclusion, a laboratory value, a therapy, a second required condition ...) needs the
    profile. tests/matching/test_people_db.py checks it against full evaluation on generated studies.

    study requiring glioblastoma, aged 18 or over -> True; the same study excluding ECOG >= 2 -> False
    """
    if q.max_distance_km is not None:
        return False
    keyed = False
    for c in sc.criteria:
        if c.confidence != cv.CONFIDENCE_HIGH:
            continue  # medium confidence can lower a score, never fail a person (engine._decide)
        if _waivable(c):
            return False
        if c.kind in ("condition", "diagnosis") and not c.exclude:
            if keyed or "history" in c.qualifiers or c.lookback_days is not None \
                    or any(a.secondary for a in c.alternatives) \
                    or any(len(db.code_key(*code)) > 255 for a in c.alternatives for code in a.codes):
                return False  # not the keyed criterion, or one match_codes cannot answer alone
            keyed = True
        elif c.kind == "age":
            if c.exclude or (c.unit or "a") != "a" or \
                    any(v is not None and not float(v).is_integer() for v in (c.low, c.high)):
                return False
        elif c.kind != "sex":
            return False
    return True


@dataclass
class Row:
    """A person who fits, screened, with the decision of the gate."""

    screened: Screened
    profile: PatientProfile
    decision: consent.Decision | None = None


class People(DerivedRows):
    """The people of one store, as matching sees them (``profiles``, ``candidates``, ``page``)."""

    HOOK, TYPES, ROWS = HOOK, PERSON_TYPES, db

    def __init__(self, store: Store, term: Terminology):
        self.store = store
        self.term = term
        self.profiles = _Profiles(self)
        self._has_trig: bool | None = None

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

    def __len__(self) -> int:
        return len(self.profiles)

    # -- lookups -----------------------------------------------------------------------------------------------
    def person_for_patient(self, patient_id: str) -> str | None:
        with self.store.engine.connect() as conn:
            return db.person_of(conn, patient_id)

    def without_alerts_consent(self, patient_ids: list[str]) -> set[str]:
        """Person keys of the people of ``patient_ids`` whose row says no trial-alerts consent."""
        with self.store.engine.connect() as conn:
            return db.persons_without_alerts_consent(conn, patient_ids)

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
                seen=None) -> Iterator[PatientProfile]:
        """Everyone the database lets through ``gate`` (and the study's columns) who fits ``sc``; ``only``: among
        these people; ``seen.screened`` (when given) counts the people the database returned.

        When the columns decide the study (``decided_by_columns``: a broad "any cancer, adults" study), every
        row returned fits and is given without screening, as an identity-only profile (profile.identity_of_doc:
        key, Patient ids, NHS number, demographics, consents; no clinical facts); otherwise each row's profile
        is rebuilt and screened by the engine."""
        today = q.today or date.today()
        f = replace(column_filter(sc, today), research=gate.research, alerts=gate.alerts, nhs=gate.nhs,
                    any_consent=gate.any_consent, include_alerts_only=gate.include_alerts_only)
        exact = decided_by_columns(sc, q)
        term = self.term

        def chunks() -> Iterator[tuple[int, list[PatientProfile]]]:
            with self.store.engine.connect() as conn:
                for chunk in db.candidate_rows(conn, f, only=only):
                    if exact:
                        yield len(chunk), [identity_of_doc(doc) for _, _, doc in chunk]
                        continue
                    found = []
                    for _, _, doc in chunk:
                        p = profile_of_doc(doc, term)
                        if screen(sc, p, term, today, q.max_distance_km, stop_early=True, distance=False).is_match:
                            found.append(p)
                    yield len(chunk), found

        # Read and screened on a worker thread, a chunk ahead: the flows write one chunk's alerts while the next
        # is read, and the screening runs while the writer waits on the database.
        for n, found in read_ahead(chunks):
            if seen is not None:
                seen.screened += n
            yield from found

    def ordered(self, sc: StudyCriteria, q: MatchQuery, gate: db.Filter,
                allowed: Callable[[PatientProfile], bool]) -> Iterator[tuple[Screened, PatientProfile]]:
        """Everyone the database lets through ``gate`` who fits ``sc`` and passes ``allowed``, screened (with the
        distance), in the order of full evaluation (score, coverage, distance, key), produced lazily: the caller
        that stops after a page has screened only the rows the database put before it.

        The database returns the candidates tier by tier, best possible (score, coverage) first: a tier is what
        the columns say of the criteria that need a datum (age without a birth date, sex unknown, a distance
        limit without a position can only be unknown, never met), so every row of a tier can at best reach the
        tier's bound. Within a tier rows come by person, or by their nearest site's distance (computed in SQL)
        then person when the study has sites. A screened row is given out once no row still unread can come
        before it: its full key is below the bound key of the next row (the tier's bound, that row's distance,
        less a margin for the database's arithmetic, and its person key).
        """
        today = q.today or date.today()
        f = replace(column_filter(sc, today), research=gate.research, alerts=gate.alerts, nhs=gate.nhs,
                    any_consent=gate.any_consent, include_alerts_only=gate.include_alerts_only)
        positioned = [s.position for s in sc.sites if s.position is not None]
        heap: list[tuple[tuple, Screened, PatientProfile]] = []
        with self.store.engine.connect() as conn:
            in_sql = positioned if positioned and len(positioned) <= MAX_SQL_SITES and self._trig(conn) else None
            for (score, coverage), tiers in _tiers(sc, q, bool(positioned)):
                for chunk in db.tier_rows(conn, f, tiers, in_sql):
                    for person, _nhs, doc, hav in chunk:
                        if not positioned:  # no distance at all: by person
                            bound = (-score, -coverage, _INF, person)
                        elif in_sql is None:  # distances not known in SQL: any distance may still come
                            bound = (-score, -coverage, 0.0, "")
                        elif hav is None:  # no position: distance unknown, last of the tier, by person
                            bound = (-score, -coverage, _INF, person)
                        else:
                            bound = (-score, -coverage, _lower_km(hav), "")
                        while heap and heap[0][0] < bound:
                            _, r, p = heapq.heappop(heap)
                            yield r, p
                        p = profile_of_doc(doc, self.term)
                        r = screen(sc, p, self.term, today, q.max_distance_km, stop_early=True,
                                   distance=bool(positioned))
                        if r.not_met == 0 and allowed(p):
                            heapq.heappush(heap, (_patient_order(r), r, p))
        while heap:
            _, r, p = heapq.heappop(heap)
            yield r, p

    def _trig(self, conn) -> bool:
        if self._has_trig is None:
            self._has_trig = db.has_trigonometry(conn)
        return self._has_trig

    def page(self, sc: StudyCriteria, q: MatchQuery, gate: db.Filter, allowed: Callable[[PatientProfile], bool],
             limit: int, after: tuple | None = None, count: bool = False
             ) -> tuple[list[tuple[MatchResult, PatientProfile]], int | None, tuple | None]:
        """The ``limit`` people after ``after`` (a cursor from a previous page) who fit ``sc`` and pass
        ``allowed``, explained; how many do in all (exact; None when that would need more screening than the
        page did, unless ``count``); and the cursor of the page's last row (None: no later page).

        Only the rows up to the page's end and one more are screened (``ordered``); a later page screens the
        rows of the pages before it again (no person key is kept in a cursor)."""
        today = q.today or date.today()
        q = MatchQuery(q.statuses, q.phases, q.max_distance_km, q.near_misses, today)
        seen = skipped = 0
        taken: list[tuple[Screened, PatientProfile]] = []
        finished = True
        rows = self.ordered(sc, q, gate, allowed)
        for r, p in rows:
            seen += 1
            if after is not None and not taken:
                where = _relation(r, after)
                if where < 0 or (where == 0 and skipped < after[3]):  # shown by the pages before
                    skipped += where == 0
                    continue
            if len(taken) <= limit:
                taken.append((r, p))
            if len(taken) > limit and not count:  # one row past the page: there is a next page
                finished = False
                break
        rows.close()
        shown = taken[:limit]
        out = [(evaluate(sc, p, self.term, today, q.max_distance_km), p) for _, p in shown]
        cursor = None
        if shown and len(taken) > limit:
            last = shown[-1][0]
            tied = sum(1 for r, _ in shown if _tie(r) == _tie(last))
            before = after[3] if after is not None and _tie(last) == tuple(after[:3]) else 0
            cursor = (*_tie(last), before + tied)
        return out, (seen if finished else None), cursor


MAX_SQL_SITES = 32  # more sites: the distance is not ordered in SQL (a tier is then screened whole)
_INF = float("inf")


def _lower_km(hav: float) -> float:
    """A lower bound of the great-circle distance (km) whose haversine term the database computed: the
    Python distance of the same points is never below it (the margin covers both sides' rounding)."""
    d = 2 * EARTH_KM * math.asin(min(1.0, math.sqrt(max(0.0, hav))))
    return d * (1 - 1e-9) - 1e-5


def _tiers(sc: StudyCriteria, q: MatchQuery, positioned: bool) -> list[tuple[tuple[float, float], list[dict]]]:
    """The study's tiers, best first: ((score, coverage) a row of the tier can at most reach, [the column
    null-patterns of the tier]). Tiers with the same bound are one (their rows interleave by key)."""
    ages = sum(1 for c in sc.criteria if c.kind == "age" and not c.qualifiers)
    sexes = sum(1 for c in sc.criteria if c.kind == "sex" and not c.qualifiers)
    cols = [c for c, k in (("birth_date", ages), ("sex", sexes)) if k]
    limit = q.max_distance_km is not None
    if limit and positioned:
        cols.append("lat")
    n, total, free = len(sc.criteria), sc.total, len(sc.unstructured)
    groups: dict[tuple[float, float], list[dict]] = {}
    for nulls in itertools.product((False, True), repeat=len(cols)):
        null = dict(zip(cols, nulls, strict=True))
        met = n - (ages if null.get("birth_date") else 0) - (sexes if null.get("sex") else 0)
        unknown = n - met + free
        if limit:  # the Distance criterion: met only for a person with a position, near a positioned site
            met_all, unknown_all = (met + 1, unknown) if positioned and not null.get("lat") else (met, unknown + 1)
        else:
            met_all, unknown_all = met, unknown
        groups.setdefault((_score(met_all, unknown_all), met / total if total else 1.0), []).append(null)
    return sorted(groups.items(), key=lambda kv: (-kv[0][0], -kv[0][1]))


def _tie(r: Screened) -> tuple:
    return (r.score, round(r.coverage, 6), round(r.distance_km, 6) if r.distance_km is not None else -1.0)


def _relation(r: Screened, after: tuple) -> int:
    """Where ``r`` is against cursor ``after`` = (score, coverage, distance or -1, rank): -1 before it, 0 tied
    with it (on the three values), 1 after it."""
    score, coverage, dist, _ = after
    c, mark = (-r.score, -round(r.coverage, 6)), (-score, -coverage)
    if c != mark:
        return -1 if c < mark else 1
    d = round(r.distance_km, 6) if r.distance_km is not None else -1.0
    key_d, mark_d = (_INF if d < 0 else d), (_INF if dist < 0 else dist)
    return -1 if key_d < mark_d else 0 if key_d == mark_d else 1


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
