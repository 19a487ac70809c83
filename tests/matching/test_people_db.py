"""The patient side of matching in the database (matching/people.py, store/profiles.py), on both backends.

Rows follow writes in the writing transaction; a store written without the hook is caught up; a stored profile
reads back equal to the one built from the records; the database's candidates (code, sex, age, consent columns)
and their keyset pages give exactly what the in-memory PatientIndex gives by full evaluation.
"""

from __future__ import annotations

import tempfile
from contextlib import contextmanager
from datetime import date, timedelta
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import select

from gateway.fhir import conventions as cv
from gateway.matching import MatchQuery, PatientIndex, build_profile, study_criteria
from gateway.matching.engine import screen
from gateway.matching.people import HOOK, People, column_filter, decided_by_columns
from gateway.matching.profile import profile_doc, profile_of_doc
from gateway.matching.state import MatchingState
from gateway.store import profiles as db
from gateway.store import schema as s
from gateway.store.engine import make_engine
from gateway.store.repo import Store
from tests.matching import builders as b
from tests.matching.test_screen import TODAY, T, _full, a_person_records, a_study
from tests.matching.tiny_terminology import BREAST_CA, GBM, TinyTerminology

Q = MatchQuery(today=TODAY)


def _put_all(store: Store, records: list[dict]) -> None:
    with store.write() as tx:
        for r in records:
            tx.put(r)


@contextmanager
def _sqlite_people():
    """A fresh SQLite store (one file per hypothesis example) with the people hook: (engine, store, People)."""
    with tempfile.TemporaryDirectory() as tmp:
        engine = make_engine(f"sqlite:///{Path(tmp) / 'g.db'}")
        s.migrate(engine)
        store = Store(engine)
        people_db = People(store, T)
        people_db.attach()
        try:
            yield engine, store, people_db
        finally:
            engine.dispose()


def _row(store: Store, person: str) -> dict | None:
    with store.engine.connect() as conn:
        row = conn.execute(select(s.match_people).where(s.match_people.c.person == person)).mappings().first()
        return dict(row) if row else None


def test_rows_are_written_by_the_writing_transaction(store):
    People(store, TinyTerminology()).attach()
    _put_all(store, [b.patient("p", nhs="9434765919", gender="male"), b.condition("c", "p", GBM),
                     b.consent("k", "p", purposes=[cv.PURPOSE_RESEARCH])])
    row = _row(store, "nhs:9434765919")  # no refresh, no catch-up: the transaction wrote it
    assert row is not None and row["sex"] == "male" and row["research_consent"] and not row["alerts_consent"]
    assert not row["no_condition"] and not row["deceased"]
    with store.engine.connect() as conn:
        codes = set(conn.execute(select(s.match_codes.c.code).where(s.match_codes.c.person == "nhs:9434765919"))
                    .scalars())
    assert db.code_key(*GBM) in codes and len(codes) > 1, "the condition's ancestors are indexed"
    # a transaction that fails leaves the row as it was
    with pytest.raises(RuntimeError), store.write() as tx:
        tx.put(b.patient("p", nhs="9434765919", gender="female"))
        raise RuntimeError("abandoned")
    assert _row(store, "nhs:9434765919")["sex"] == "male"
    # the record leaves: the person has no condition any more
    with store.write() as tx:
        tx.delete("Condition", "c")
    assert _row(store, "nhs:9434765919")["no_condition"]


def test_a_store_written_without_the_hook_is_caught_up(store):
    store.write_hooks.pop(HOOK, None)  # as a process started before the profile tables would write
    _put_all(store, [b.patient("a", nhs="9434765919"), b.condition("ca", "a", BREAST_CA),
                     b.patient("z")])
    assert _row(store, "nhs:9434765919") is None
    state = MatchingState(store, TinyTerminology())
    state.refresh()
    assert _row(store, "nhs:9434765919") is not None and _row(store, "Patient/z") is not None
    assert state.person_for_patient("a") == "nhs:9434765919"
    with store.engine.connect() as conn:
        assert db.cursor(conn) > 0
    assert state.refresh() == 0, "nothing left to catch up"


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(a_person_records("p"), min_size=1, max_size=1))
def test_a_stored_profile_reads_back_equal(recs):
    p = build_profile(recs[0], T)
    assert profile_of_doc(profile_doc(p), T) == p


@st.composite
def _world(draw):
    studies = [draw(a_study(f"s{i}")) for i in range(draw(st.integers(1, 6)))]
    people = [draw(a_person_records(f"p{i}")) for i in range(draw(st.integers(1, 7)))]
    consents = [i for i in range(len(people)) if draw(st.booleans())]
    return studies, people, consents, draw(st.sampled_from([None, 50.0])), draw(st.sampled_from([1, 2, 3, 50]))


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_world())
def test_database_pages_are_full_evaluation_cut_to_the_page(world):
    """SQLite here (a fresh file per example); the API tests run the same queries on PostgreSQL."""
    studies, people, consents, dist, limit = world
    with _sqlite_people() as (engine, store, people_db):
        records = [r for recs in people for r in recs]
        records += [b.consent(f"k{i}", people[i][0]["id"], purposes=[cv.PURPOSE_RESEARCH]) for i in consents]
        _put_all(store, records)
        pi = PatientIndex(T)
        for recs in people:
            pid = recs[0]["id"]
            key = people_db.person_for_patient(pid)
            pi.add(build_profile(db.current_resources(engine.connect(), db.patients_of(engine.connect(), key)), T,
                                 key=key))
        q = MatchQuery(frozenset({"active", "closed-to-accrual"}), frozenset(), dist, False, TODAY)
        consenting = {people_db.person_for_patient(people[i][0]["id"]) for i in consents}
        for sc, sql_distance in ((sc, mode) for sc in studies for mode in (True, False)):
            people_db._has_trig = sql_distance  # False: distances not ordered in SQL (SQLite without math)
            for gate, allowed in ((db.Filter(any_consent=True), None),
                                  (db.Filter(research=True), lambda p: p.key in consenting)):
                want = pi.match(sc, q, allowed)
                got, total, cursor = people_db.page(sc, q, gate, allowed or (lambda p: True), limit)
                assert total == len(want) or (total is None and len(want) > limit), "exact, or not given"
                counted = people_db.page(sc, q, gate, allowed or (lambda p: True), limit, count=True)
                assert counted[1] == len(want) and counted[2] == cursor
                assert [_full(r) for r, _ in counted[0]] == [_full(r) for r, _ in got]
                assert [_full(r) for r, _ in got] == [_full(r) for r in want[:limit]]
                # the next links walk every candidate once, in order
                walked = [r for r, _ in got]
                while cursor is not None:
                    more, n, cursor = people_db.page(sc, q, gate, allowed or (lambda p: True), limit, cursor)
                    assert n is None or n == len(want)
                    assert more, "a next link never leads to an empty page"
                    walked += [r for r, _ in more]
                assert [_full(r) for r in walked] == [_full(r) for r in want]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(a_study("s"), a_person_records("p"))
def test_the_column_filter_never_drops_a_person_who_fits(sc, recs):
    """What the database decides from columns (sex, birth date, codes) keeps everyone the engine keeps."""
    from gateway.matching.engine import screen

    p = build_profile(recs, T)
    if p.deceased or not screen(sc, p, T, TODAY, stop_early=True).is_match:
        return
    f = column_filter(sc, TODAY)
    born = p.birth_date.isoformat() if p.birth_date else None
    assert f.sexes is None or p.sex is None or p.sex in f.sexes
    assert f.born_after is None or born is None or born > f.born_after
    assert f.born_on_or_before is None or born is None or born <= f.born_on_or_before
    if f.codes is not None:
        have = {db.code_key(*c) for c in p.ancestors} | {db.text_code(t) for t in p.texts}
        assert have & set(f.codes) or (f.no_condition and not p.conditions)


def test_age_bounds_are_exact_at_the_birthday():
    sc_recs = b.study("s", [GBM], group_id="g")
    from gateway.matching import study_criteria

    sc = study_criteria(sc_recs, b.group("g", [b.age_char(18, 65)]), {}, T)
    f = column_filter(sc, date(2026, 11, 23))
    assert f.born_on_or_before == "2008-11-23"  # 18 today
    assert f.born_after == "1960-11-23"  # 66 today is too old; 65 and 364 days is not
    leap = column_filter(sc, date(2028, 2, 29))
    # on 29 February 2028 someone born on 1 March 2010 is 17 for one more day (profile.age): 28 February is the bound
    assert leap.born_on_or_before == "2010-02-28" and leap.born_after == "1962-02-28"


LEAP_DAY = date(2028, 2, 29)


def _birthdays(today: date) -> list[str]:
    """Birth dates either side of each age bound a_study states (18, 40, 65, 99), as seen on ``today``."""
    out = []
    for years in (18, 40, 66, 100):
        try:
            day = today.replace(year=today.year - years)
        except ValueError:  # 29 February in a year without one
            day = date(today.year - years, 2, 28)
        out += [(day + timedelta(days=d)).isoformat() for d in (-1, 0, 1, 2)]
    return out


@st.composite
def _fit_world(draw):
    today = draw(st.sampled_from([TODAY, LEAP_DAY]))
    studies = [draw(a_study(f"s{i}")) for i in range(draw(st.integers(1, 6)))]
    people = []
    for i in range(draw(st.integers(1, 8))):
        recs = draw(a_person_records(f"p{i}"))
        if draw(st.booleans()):
            recs[0] = {**recs[0], "birthDate": draw(st.sampled_from(_birthdays(today)))}
        people.append(recs)
    return today, studies, people


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_fit_world())
def test_fitting_is_full_evaluation_whether_or_not_the_columns_decide(world):
    """``fitting`` (the automatic flows' candidates) gives exactly the people full evaluation lets through, both
    when it screens each row and when the columns alone decide the study (decided_by_columns: no screening)."""
    today, studies, people = world
    with _sqlite_people() as (engine, store, people_db):
        _put_all(store, [r for recs in people for r in recs])
        keys = {people_db.person_for_patient(recs[0]["id"]) for recs in people}
        profiles = {k: people_db.get(k) for k in keys}
        q = MatchQuery(today=today)
        for sc in studies:
            want = sorted(k for k, p in profiles.items() if screen(sc, p, T, today, stop_early=True).is_match)
            got = [p for p in people_db.fitting(sc, q, db.Filter(any_consent=True))]
            assert sorted(p.key for p in got) == want, ("decided by the columns" if decided_by_columns(sc, q)
                                                        else "screened")
            for p in got:  # whichever way, who the person is and what they consented to are given
                assert p.patient_ids == profiles[p.key].patient_ids and p.consents == profiles[p.key].consents
                assert p.nhs_number == profiles[p.key].nhs_number


def test_the_columns_decide_a_broad_adult_study_and_not_one_with_an_exclusion(store):
    """A broad "any glioma, adults" study's candidates are the database's rows as they are; add an ECOG
    exclusion (or a distance limit) and every row is screened again."""
    people_db = People(store, T)
    people_db.attach()
    _put_all(store, [b.patient("a", nhs="9434765919", birth="1970-01-01"), b.condition("ac", "a", GBM),
                     b.observation("ae", "a", cv.ECOG, 3),
                     b.patient("k", nhs="9434765870", birth="2015-01-01"), b.condition("kc", "k", GBM)])
    adults = study_criteria(b.study("s", [GBM], group_id="g"), b.group("g", [b.age_char(18, None)]), {}, T)
    fit = study_criteria(b.study("t", [GBM], group_id="h"),
                         b.group("h", [b.age_char(18, None), b.range_char(cv.ECOG, 2, 5, True)]), {}, T)
    assert decided_by_columns(adults, Q) and not decided_by_columns(fit, Q)
    assert not decided_by_columns(adults, MatchQuery(max_distance_km=50.0, today=TODAY))
    found = list(people_db.fitting(adults, Q, db.Filter(any_consent=True)))
    assert [p.key for p in found] == ["nhs:9434765919"] and found[0].conditions == [], "identity only, unscreened"
    assert list(people_db.fitting(fit, Q, db.Filter(any_consent=True))) == [], "ECOG 3 is excluded"


def _broad_world(store: Store, n: int = 40) -> list[str]:
    """``n`` people with a glioblastoma (one in five without a birth date, one in seven without a postcode)."""
    records = []
    postcodes = ["LS6 1LF", "M20 4BX", "SW1A 1AA"]
    for i in range(n):
        pid = f"w{i:02d}"
        records += [b.patient(pid, nhs=f"94{i:08d}", birth=None if i % 5 == 0 else f"19{50 + i}-03-01",
                              gender="female" if i % 2 else "male",
                              postcode=None if i % 7 == 0 else postcodes[i % 3]),
                    b.condition(f"{pid}c", pid, GBM)]
    _put_all(store, records)
    return [r["id"] for r in records if r["resourceType"] == "Patient"]


@pytest.mark.parametrize("sites", [[], ["l1", "l3"]])
@pytest.mark.parametrize("dist", [None, 300.0])
def test_a_broad_study_page_screens_only_its_rows(store, sites, dist):
    """The candidates come tier by tier (age unknown: a lower bound) and, within one, by person or by the nearest
    site's distance computed in SQL (SQLite and PostgreSQL): a page of 5 among 40 people who fit screens a few
    more than 5, not 40; every page and the walk by next links equal full evaluation; the total is exact only
    when counted (or when everything was screened)."""
    from tests.matching.test_screen import SITES

    people_db = People(store, T)
    people_db.attach()
    pids = _broad_world(store)
    study = b.study("broad", [GBM], group_id="broad-g", sites=sites, status="active")
    locations = {lid: b.location(lid, *SITES[lid], name=f"Site {lid}") for lid in sites}
    sc = study_criteria(study, b.group("broad-g", [b.age_char(18, None, False)]), locations, T)
    pi = PatientIndex(T)
    for pid in pids:
        key = people_db.person_for_patient(pid)
        with store.engine.connect() as conn:
            pi.add(build_profile(db.current_resources(conn, db.patients_of(conn, key)), T, key=key))
    q = MatchQuery(frozenset({"active"}), frozenset(), dist, False, TODAY)
    want = pi.match(sc, q)
    assert len(want) == 40
    screened = []

    def allowed(p):
        screened.append(p.key)
        return True

    got, total, cursor = people_db.page(sc, q, db.Filter(any_consent=True), allowed, 5)
    assert [_full(r) for r, _ in got] == [_full(r) for r in want[:5]]
    assert total is None and cursor is not None
    assert len(screened) < 20, f"screened {len(screened)} people for a page of 5"
    walked = [r for r, _ in got]
    while cursor is not None:
        screened.clear()
        more, total, cursor = people_db.page(sc, q, db.Filter(any_consent=True), allowed, 5, cursor)
        walked += [r for r, _ in more]
    assert total == 40, "the last page screened everyone: its total is exact"
    assert [_full(r) for r in walked] == [_full(r) for r in want]
    assert people_db.page(sc, q, db.Filter(any_consent=True), allowed, 5, count=True)[1] == 40
