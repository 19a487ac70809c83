"""Property tests: whoever meets every criterion matches; an exclusion they meet removes the match;
the indexed path always agrees with the brute-force scan."""

from __future__ import annotations

from datetime import date

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.fhir import conventions as cv
from gateway.matching import MatchQuery, PatientIndex, StudyIndex, build_profile, evaluate, study_criteria
from tests.matching import builders as b
from tests.matching.tiny_terminology import (
    BRAIN_METS,
    BREAST_CA,
    GBM,
    GLIOMA_MESH,
    NEOPLASMS_MESH,
    PARENTS,
    TinyTerminology,
)

T = TinyTerminology()
TODAY = date(2026, 11, 23)
PATIENT_CODES = [GBM, BRAIN_METS, BREAST_CA, GLIOMA_MESH]
ALL_CODES = sorted(set(PARENTS) | {p for ps in PARENTS.values() for p in ps})
HB = ("http://loinc.org", "718-7")  # haemoglobin

# per-test settings (not a global profile: other test modules keep their own)
FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def patient_and_study(draw):
    """A patient, and a study built from the patient's own facts so that they meet every criterion."""
    age = draw(st.integers(0, 99))
    sex = draw(st.sampled_from(["male", "female"]))
    ecog = draw(st.integers(0, 4))
    hb = draw(st.integers(60, 180))
    code = draw(st.sampled_from(PATIENT_CODES))
    birth = date(TODAY.year - age - 1, 12, 31) if age else date(TODAY.year, 1, 1)
    records = [b.patient("p", birth=birth.isoformat(), gender=sex), b.condition("c", "p", code),
               b.observation("o1", "p", cv.ECOG, ecog), b.observation("o2", "p", HB, hb)]
    real_age = TODAY.year - birth.year - ((TODAY.month, TODAY.day) < (birth.month, birth.day))
    chars = []
    if draw(st.booleans()):
        lo = draw(st.integers(0, real_age))
        chars.append(b.age_char(lo, draw(st.integers(real_age, 120))))
    if draw(st.booleans()):
        chars.append(b.sex_char(sex))
    if draw(st.booleans()):
        chars.append(b.range_char(cv.ECOG, draw(st.integers(0, ecog)), draw(st.integers(ecog, 5))))
    if draw(st.booleans()):
        chars.append(b.range_char(HB, draw(st.integers(0, hb)), None))
    # the study's condition: the patient's code or any of its ancestors (patient -> study direction)
    wanted = draw(st.sampled_from(sorted(T.ancestors(*code))))
    if draw(st.booleans()):
        chars.append(b.diagnosis_char(wanted))
    return records, chars, wanted, (real_age, ecog, hb, code)


def _criteria(chars, wanted, sid="s"):
    return study_criteria(b.study(sid, [wanted], group_id="g"), b.group("g", chars), {}, T)


@FAST
@given(patient_and_study())
def test_meeting_every_criterion_always_matches(case):
    records, chars, wanted, _ = case
    r = evaluate(_criteria(chars, wanted), build_profile(records, T), T, TODAY)
    assert r.is_match, r.findings
    assert 0 < r.score <= 1


@FAST
@given(patient_and_study(), st.sampled_from(["age", "diagnosis", "ecog", "lab", "sex"]))
def test_adding_an_exclusion_the_patient_meets_removes_the_match(case, kind):
    records, chars, wanted, (age, ecog, hb, code) = case
    excl = {"age": b.age_char(age, age, exclude=True), "diagnosis": b.diagnosis_char(code, exclude=True),
            "ecog": b.range_char(cv.ECOG, ecog, ecog, exclude=True), "lab": b.range_char(HB, None, hb, exclude=True),
            "sex": {**b.sex_char(records[0]["gender"]), "exclude": True}}[kind]
    p = build_profile(records, T)
    assert evaluate(_criteria(chars, wanted), p, T, TODAY).is_match
    r = evaluate(_criteria([*chars, excl], wanted), p, T, TODAY)
    assert not r.is_match and r.reasons_not()


@st.composite
def population(draw):
    studies = []
    for i in range(draw(st.integers(1, 12))):
        code = draw(st.sampled_from(ALL_CODES + [None]))
        chars = [b.age_char(draw(st.integers(0, 50)), draw(st.integers(50, 100)))] if draw(st.booleans()) else []
        if draw(st.booleans()):
            chars.append(b.diagnosis_char(draw(st.sampled_from(ALL_CODES)), exclude=True))
        if draw(st.integers(0, 4)) == 0:
            chars.append({"code": b.concept(cv.HEALTHY_VOLUNTEERS), "valueBoolean": True})
        status = draw(st.sampled_from(["active", "active", "completed"]))
        studies.append(study_criteria(b.study(f"s{i}", [code] if code else [], group_id="g", status=status),
                                      b.group("g", chars), {}, T))
    people = []
    for i in range(draw(st.integers(1, 12))):
        codes = draw(st.lists(st.sampled_from(PATIENT_CODES), max_size=2))
        recs = [b.patient(f"p{i}", birth=f"{draw(st.integers(1925, 2025))}-06-01")]
        recs += [b.condition(f"c{i}{j}", f"p{i}", c) for j, c in enumerate(codes)]
        people.append(build_profile(recs, T))
    return studies, people


def _key(results):
    return [(r.study_id, r.patient_key, r.score) for r in results]


@FAST
@given(population())
def test_indexed_path_agrees_with_brute_force(pop):
    studies, people = pop
    si, pi = StudyIndex(T), PatientIndex(T)
    for s in studies:
        si.add(s)
    for p in people:
        pi.add(p)
    q = MatchQuery(today=TODAY)
    for p in people:
        assert _key(si.match(p, q)[0]) == _key(si.brute_force(p, q)[0])
    for s in studies:
        assert _key(pi.match(s, q)) == _key(pi.brute_force(s, q))
    # removing everything leaves empty indexes (no stale keys)
    for s in studies:
        si.remove(s.study_id)
    for p in people:
        pi.remove(p.key)
    assert not (si.by_code or si.by_text or si.by_related or si.open or si.healthy or pi.by_code or pi.by_text
                or pi.no_condition)


def test_neoplasms_study_finds_every_cancer_patient():
    """A broad study ('any neoplasm') reaches every patient through the ancestor index."""
    pi = PatientIndex(T)
    for i, code in enumerate(PATIENT_CODES):
        pi.add(build_profile([b.patient(f"p{i}"), b.condition(f"c{i}", f"p{i}", code)], T))
    sc = study_criteria(b.study("broad", [NEOPLASMS_MESH]), None, {}, T)
    # GBM, breast cancer and glioma are neoplasms; brain metastases too except that a primary-neoplasm
    # requirement never excludes a secondary one (only the reverse is guarded)
    assert len(pi.match(sc, MatchQuery(today=TODAY))) == 4
