"""Screening and paging: the cheap path the API serves must give exactly what full evaluation gives.

engine.screen decides each criterion without its sentence; StudyIndex.page / PatientIndex.page screen
every candidate, compute distances only where they order the page, screen people with no condition once
per kind of study, and explain only the page. Each is checked here against engine.evaluate, ``match`` and
the brute-force scan on hypothesis-generated studies and people (with and without conditions, deceased,
unknown age / sex / location, near misses, distance limits, pages of every size).
"""

from __future__ import annotations

from datetime import date

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.fhir import conventions as cv
from gateway.matching import MatchQuery, PatientIndex, StudyIndex, build_profile, engine, evaluate, study_criteria
from gateway.matching.criteria import PRIOR_THERAPY
from gateway.matching.engine import criterion_result, evaluate_criterion, screen
from tests.matching import builders as b
from tests.matching.tiny_terminology import BRAIN_METS, BREAST_CA, GBM, GLIOMA_MESH, PARENTS, TinyTerminology

T = TinyTerminology()
TODAY = date(2026, 11, 23)
HB = ("http://loinc.org", "718-7")  # haemoglobin
SMOKER = ("http://loinc.org", "72166-2")
TMZ = ("http://www.nlm.nih.gov/research/umls/rxnorm", "37776")  # temozolomide
PATIENT_CODES = [GBM, BRAIN_METS, BREAST_CA, GLIOMA_MESH]
ALL_CODES = sorted(set(PARENTS) | {p for ps in PARENTS.values() for p in ps})
# few distinct positions, so that distances tie and the study id has to break the tie
SITES = {"l1": (53.80, -1.55), "l2": (53.48, -2.24), "l3": (51.51, -0.13), "l4": (53.80, -1.55)}
POSTCODES = ["LS6 1LF", "M20 4BX", "SW1A 1AA", None]

FAST = settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def a_study(draw, sid: str):
    """A study with any mix of criteria, as FHIR JSON (ResearchStudy, Group, Locations)."""
    conditions = draw(st.lists(st.sampled_from(ALL_CODES), max_size=2, unique=True))
    texts = draw(st.lists(st.sampled_from(["glioma", "some rare syndrome"]), max_size=1))
    chars = []
    for _ in range(draw(st.integers(0, 5))):
        kind = draw(st.sampled_from(["age", "age-mo", "sex", "ecog", "hb", "hb-cmp", "diagnosis", "therapy", "flag"]))
        exclude = draw(st.integers(0, 3)) == 0
        if kind == "age":
            chars.append(b.age_char(draw(st.sampled_from([None, 0, 18, 40])), draw(st.sampled_from([None, 65, 99])),
                                    exclude))
        elif kind == "age-mo":
            chars.append({"code": b.concept(cv.AGE), "exclude": exclude, "valueRange": {
                "low": {"value": draw(st.sampled_from([0, 6])), "code": "mo"},
                "high": {"value": draw(st.sampled_from([24, 216])), "code": "mo"}}})
        elif kind == "sex":
            chars.append({**b.sex_char(draw(st.sampled_from(["male", "female"]))), "exclude": exclude})
        elif kind == "ecog":
            chars.append(b.range_char(cv.ECOG, 0, draw(st.integers(0, 4)), exclude))
        elif kind == "hb":
            chars.append(b.range_char(HB, draw(st.sampled_from([None, 90, 120])), None, exclude))
        elif kind == "hb-cmp":
            chars.append({"code": b.concept(HB), "exclude": exclude, "valueQuantity": {
                "value": draw(st.sampled_from([100, 130])), "comparator": draw(st.sampled_from([">=", "<", None]))}})
        elif kind == "diagnosis":
            chars.append(b.diagnosis_char(draw(st.sampled_from(ALL_CODES)), exclude))
        elif kind == "therapy":
            chars.append({"code": b.concept(PRIOR_THERAPY), "valueCodeableConcept": b.concept(TMZ),
                          "exclude": exclude})
        else:
            chars.append({"code": b.concept(SMOKER), "valueBoolean": draw(st.booleans()), "exclude": exclude})
    hv = draw(st.sampled_from([None, True, True, False]))
    if hv is not None:
        chars.append({"code": b.concept(cv.HEALTHY_VOLUNTEERS), "valueBoolean": hv})
    sites = draw(st.lists(st.sampled_from(sorted(SITES)), max_size=3, unique=True))
    status = draw(st.sampled_from(["active", "active", "active", "closed-to-accrual"]))
    phase = draw(st.sampled_from([None, "phase-2", "phase-3"]))
    study = b.study(sid, conditions, texts=texts, group_id=f"{sid}-g", sites=sites, status=status, phase=phase)
    locations = {lid: b.location(lid, *SITES[lid], name=f"Site {lid}") for lid in sites}
    return study_criteria(study, b.group(f"{sid}-g", chars), locations, T)


@st.composite
def a_person(draw, pid: str):
    """A person as FHIR JSON -> profile: often with no active condition, sometimes deceased or unknowns."""
    return build_profile(draw(a_person_records(pid)), T)


@st.composite
def a_person_records(draw, pid: str):
    """The FHIR JSON records of ``a_person``."""
    recs = [b.patient(pid, nhs=f"9{abs(hash(pid)) % 10**9:09d}" if draw(st.booleans()) else None,
                      birth=draw(st.sampled_from([None, "1950-03-01", "1990-11-23", "2025-06-30", "2010-01-01"])),
                      gender=draw(st.sampled_from([None, "male", "female"])),
                      postcode=draw(st.sampled_from(POSTCODES)), deceased=draw(st.integers(0, 9)) == 0)]
    for j in range(draw(st.sampled_from([0, 0, 1, 2]))):
        recs.append(b.condition(f"{pid}c{j}", pid, draw(st.sampled_from(PATIENT_CODES)),
                                clinical=draw(st.sampled_from(["active", "active", "resolved"]))))
    if draw(st.booleans()):
        recs.append(b.observation(f"{pid}e", pid, cv.ECOG, draw(st.integers(0, 5))))
    if draw(st.booleans()):
        recs.append(b.observation(f"{pid}h", pid, HB, draw(st.integers(80, 160))))
    if draw(st.integers(0, 3)) == 0:
        recs.append({"resourceType": "Observation", "id": f"{pid}s", "status": "final", "code": b.concept(SMOKER),
                     "subject": {"reference": f"Patient/{pid}"}, "valueBoolean": draw(st.booleans())})
    if draw(st.integers(0, 3)) == 0:
        recs.append({"resourceType": "MedicationStatement", "id": f"{pid}m", "status": "completed",
                     "medicationCodeableConcept": b.concept(TMZ), "subject": {"reference": f"Patient/{pid}"}})
    return recs


@st.composite
def a_query(draw):
    return MatchQuery(frozenset(draw(st.sampled_from([["active"], ["active", "closed-to-accrual"]]))),
                      frozenset(draw(st.sampled_from([[], ["phase-2"]]))),
                      draw(st.sampled_from([None, None, 50.0, 300.0])), draw(st.booleans()), TODAY)


@st.composite
def world(draw):
    studies = [draw(a_study(f"s{i}")) for i in range(draw(st.integers(1, 14)))]
    people = [draw(a_person(f"p{i}")) for i in range(draw(st.integers(1, 6)))]
    return studies, people, draw(a_query()), draw(st.sampled_from([None, 0, 1, 2, 3, 7]))


def _full(r) -> tuple:
    return (r.study_id, r.patient_key, r.score, r.distance_km, r.nearest, r.findings)


@FAST
@given(a_study("s"), a_person("p"), st.sampled_from([None, 50.0, 300.0]))
def test_screen_decides_as_evaluate_does(sc, p, dist):
    for crit in sc.criteria:
        assert criterion_result(crit, p, T, TODAY, sc.healthy_volunteers) == \
            evaluate_criterion(crit, p, T, TODAY, sc.healthy_volunteers).result
    full = evaluate(sc, p, T, TODAY, dist)
    s = screen(sc, p, T, TODAY, dist)
    assert (s.study_id, s.patient_key, s.score, s.distance_km, s.not_met, s.is_match) == \
        (full.study_id, full.patient_key, full.score, full.distance_km, len(full.reasons_not()), full.is_match)
    assert s.met == sum(f.result == engine.MET for f in full.findings)
    assert s.unknown == sum(f.result == engine.UNKNOWN for f in full.findings)
    quick = screen(sc, p, T, TODAY, dist, stop_early=True)
    assert quick.is_match == evaluate(sc, p, T, TODAY, dist, stop_early=True).is_match == full.is_match
    if quick.is_match:
        assert (quick.score, quick.distance_km) == (full.score, full.distance_km)
    lazy = screen(sc, p, T, TODAY, dist, distance=False)
    assert (lazy.score, lazy.not_met) == (s.score, s.not_met)


@FAST
@given(world())
def test_study_page_is_match_cut_to_the_page(case):
    studies, people, q, limit = case
    si = StudyIndex(T)
    for sc in studies:
        si.add(sc)
    for p in people:
        matches, near = si.match(p, q)
        page = si.page(p, q, limit)
        assert page.total == len(matches)
        assert [_full(r) for r in page.matches] == [_full(r) for r in matches[:limit]]
        if q.near_misses:
            assert page.near_total == len(near)
            assert [_full(r) for r in page.near] == [_full(r) for r in near[:limit]]
        else:
            assert page.near == []
        screened, screened_near = si.screen(p, q)
        assert [(r.study_id, r.score, r.distance_km) for r in screened] == \
            [(r.study_id, r.score, r.distance_km) for r in matches]
        assert [(r.study_id, r.score, r.distance_km, r.not_met) for r in screened_near] == \
            [(r.study_id, r.score, r.distance_km, len(r.reasons_not())) for r in near]
        # and the brute-force scan of every study (no index, no grouping, no screening) agrees
        bf, _ = si.brute_force(p, q)
        assert [_full(r) for r in page.matches] == [_full(r) for r in bf[:limit]]
        assert page.total == len(bf)


@FAST
@given(world())
def test_candidates_page_is_match_cut_to_the_page(case):
    studies, people, q, limit = case
    q = MatchQuery(q.statuses, q.phases, q.max_distance_km, False, TODAY)
    pi = PatientIndex(T)
    for p in people:
        pi.add(p)

    def allowed(p):  # a filter like consent: every other person by key
        return sum(map(ord, p.key)) % 2 == 0

    for sc in studies:
        for flt in (None, allowed):
            want = pi.match(sc, q, flt)
            page = pi.page(sc, q, flt, limit)
            assert page.total == len(want)
            assert [_full(r) for r in page.matches] == [_full(r) for r in want[:limit]]
            assert [(r.patient_key, r.score, r.distance_km) for r in pi.screen(sc, q, flt)] == \
                [(r.patient_key, r.score, r.distance_km) for r in want]
            bf = pi.brute_force(sc, q, flt)
            assert [_full(r) for r in page.matches] == [_full(r) for r in bf[:limit]]


@FAST
@given(world(), world())
def test_replacing_and_removing_studies_keeps_the_groups_exact(first, second):
    """Re-adding a study id with other criteria moves it between groups; removing all empties them."""
    studies, people, q, limit = first
    replacements = second[0]
    si = StudyIndex(T)
    for sc in studies:
        si.add(sc)
    for sc in replacements:  # same ids s0, s1, ...: replaces those studies
        si.add(sc)
    for p in people:
        bf, _ = si.brute_force(p, q)
        page = si.page(p, q, limit)
        assert [_full(r) for r in page.matches] == [_full(r) for r in bf[:limit]]
    for sid in list(si.studies):
        si.remove(sid)
    assert not si.blank_groups and not si._blank_of and not si.open and not si.healthy


def test_a_person_with_no_condition_is_screened_once_per_kind_of_study(monkeypatch):
    """100 healthy-volunteer studies stating the same criteria (whatever their condition codes) cost one
    screening per kind (near misses) or one decision per distinct criterion (matches only); a study closed to
    the person's age is not a match; the page is explained, the rest counted."""
    studies = []
    for i in range(100):
        code = ALL_CODES[i % len(ALL_CODES)]
        chars = [b.age_char(18, 65 if i % 2 else 99), {"code": b.concept(cv.HEALTHY_VOLUNTEERS), "valueBoolean": True},
                 b.diagnosis_char(ALL_CODES[(i + 3) % len(ALL_CODES)], exclude=True)]
        studies.append(study_criteria(b.study(f"s{i:03d}", [code], group_id="g", sites=["l1"] if i % 3 else []),
                                      b.group("g", chars), {"l1": b.location("l1", *SITES["l1"])}, T))
    si = StudyIndex(T)
    for sc in studies:
        si.add(sc)
    assert len(si.blank_groups) == 2  # 18-65 and 18-99
    person = build_profile([b.patient("p", birth="1950-03-01", postcode="LS6 1LF")], T)  # 76, no condition
    calls = []
    real = engine.tally

    def counting(*args, **kw):
        calls.append(args[0].study_id)
        return real(*args, **kw)

    decisions = []
    real_decide = engine.decide

    def deciding(*args, **kw):
        decisions.append(args[0])
        return real_decide(*args, **kw)

    monkeypatch.setattr("gateway.matching.index.tally", counting)
    monkeypatch.setattr("gateway.matching.index.decide", deciding)
    # with near misses: one screening per kind of study
    si.page(person, MatchQuery(today=TODAY, near_misses=True), 5)
    assert len(calls) == 2
    # without (what $match asks by default): each distinct criterion decided once for all 100 studies
    # (required condition, 18-65, 18-99, excluded diagnosis), counted over the kinds stating it
    calls.clear()
    q = MatchQuery(today=TODAY)
    page = si.page(person, q, 5)
    assert calls == [] and len(decisions) == 4
    assert page.total == 50  # only the 18-99 studies
    assert [r.study_id for r in page.matches] == [r.study_id for r in si.brute_force(person, q)[0][:5]]
    assert all(r.is_match and r.findings[0].result == engine.UNKNOWN for r in page.matches)
    assert {r.study_id for r in si.brute_force(person, q)[0]} == {f"s{i:03d}" for i in range(0, 100, 2)}


def test_kinds_of_study_keep_include_and_exclude_apart():
    """For a person with no condition a required diagnosis and an excluded one are both unknown (no datum
    either way, issue #12), for different reasons: two studies that differ only there are two kinds, as full
    evaluation says."""
    hv = {"code": b.concept(cv.HEALTHY_VOLUNTEERS), "valueBoolean": True}
    si = StudyIndex(T)
    for sid, exclude in (("inc", False), ("exc", True)):
        si.add(study_criteria(b.study(sid, [GBM], group_id="g"), b.group("g", [b.diagnosis_char(BREAST_CA, exclude),
                                                                                 hv]), {}, T))
    assert len(si.blank_groups) == 2
    person = build_profile([b.patient("p")], T)
    q = MatchQuery(today=TODAY, near_misses=True)
    page = si.page(person, q)
    full = [evaluate(si.studies[sid], person, T, TODAY) for sid in ("exc", "inc")]
    assert [_full(r) for r in page.matches] == [_full(r) for r in full]
    assert page.matches[0].findings[-1].text != page.matches[1].findings[-1].text
