"""Property tests (hypothesis) for extracted criteria (issue #12).

- Adding an extracted characteristic never turns a patient from a match into a non-match without a datum: a
  criterion the patient's records say nothing about is unknown, whatever its kind, section or confidence.
  (A required *condition* is the exception by design: the active problem list is its datum, as before.)
- A medium-confidence characteristic never excludes anyone, datum or not.
- The cheap path the API serves (screen, page) still decides, scores, covers and orders exactly as full
  evaluation does with every new kind, look-back windows, confidences and criteria left as text.
"""

from __future__ import annotations

import copy
from datetime import date

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.fhir import conventions as cv
from gateway.matching import StudyIndex, build_profile, evaluate, study_criteria
from gateway.matching.engine import NOT_MET, screen
from tests.matching import builders as b
from tests.matching.test_screen import ALL_CODES, PATIENT_CODES, a_query
from tests.matching.tiny_terminology import GBM, TinyTerminology

T = TinyTerminology()
TODAY = date(2026, 11, 23)
FAST = settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
PLT, ALT = (cv.LOINC, "777-3"), (cv.LOINC, "1742-6")
EGFR = (cv.HGNC, "HGNC:3236")
PRODUCT = (cv.RXNORM, "1873980")  # ribociclib Oral Product (class cdk4-6-inhibitor in the lexicon)
CLASSES = ["cdk4-6-inhibitor", "taxane", "anti-pd-1"]
NOT_GBM = [c for c in ALL_CODES if c not in T.ancestors(*GBM)]
KINDS = ["platelets", "alt-uln", "ecog", "variant", "pregnancy", "stage", "other-malignancy", "diagnosis-exclusion",
         "therapy-class", "hormone-receptor"]
POS, NEG = (cv.SNOMED, "10828004"), (cv.SNOMED, "260385009")


def _source(conf: str, section: str) -> dict:
    return {"url": cv.EXT_CRITERION_SOURCE, "extension": [
        {"url": "text", "valueString": f"a {section} criterion"}, {"url": "section", "valueCode": section},
        {"url": "rule", "valueString": "property"}, {"url": "confidence", "valueCode": conf}]}


def _lookback(days: int | None) -> list[dict]:
    return [] if days is None else [{"url": cv.EXT_CRITERION_LOOKBACK, "valueDuration": {"value": days, "code": "d"}}]


@st.composite
def a_characteristic(draw, kind: str | None = None) -> dict:
    """One extracted characteristic of any kind, section, confidence and window."""
    kind = kind or draw(st.sampled_from(KINDS))
    exclude = draw(st.booleans())
    conf = draw(st.sampled_from(["high", "high", "medium"]))
    window = _lookback(draw(st.sampled_from([None, 30, 400])))
    if kind == "platelets":
        ch = {"code": b.concept(PLT), "valueQuantity": {"value": draw(st.sampled_from([100, 100000])), "comparator":
              ">=", "code": draw(st.sampled_from(["10*3/uL", "/mm3"]))}}
    elif kind == "alt-uln":
        ch = {"code": b.concept(ALT), "valueQuantity": {"value": 2.5, "comparator": "<=", "code": cv.UNIT_ULN}}
    elif kind == "ecog":
        ch = b.range_char(cv.ECOG, 0, draw(st.integers(0, 3)))
    elif kind == "variant":
        ch = {"code": b.concept(cv.GENETIC_VARIANT), "valueCodeableConcept": b.concept(
            draw(st.sampled_from([cv.VARIANT_PRESENT, cv.VARIANT_ABSENT]))), "extension": [
            {"url": cv.EXT_CHARACTERISTIC_GENE, "valueCodeableConcept": b.concept(EGFR)},
            *([{"url": cv.EXT_CHARACTERISTIC_VARIANT, "valueString": draw(st.sampled_from(["L858R", "T790M"]))}]
              if draw(st.booleans()) else [])]}
    elif kind == "pregnancy":
        ch = {"code": b.concept(cv.PREGNANCY), "valueBoolean": True}
    elif kind == "stage":
        ch = {"code": b.concept(cv.STAGE_GROUP), "valueCodeableConcept": {"coding": [
            {"system": cv.AJCC_STAGE_CS, "code": s} for s in draw(st.sampled_from([["II"], ["III", "IV"], ["IV"]]))]}}
    elif kind == "other-malignancy":
        ch = {"code": b.concept(cv.OTHER_MALIGNANCY), "valueCodeableConcept": b.concept(cv.MALIGNANCY)}
    elif kind == "hormone-receptor":  # HR+ ('ER and/or PR positive'), or HR- (both negative)
        ch = {"code": b.concept(cv.HORMONE_RECEPTOR),
              "valueCodeableConcept": b.concept(draw(st.sampled_from([POS, NEG])))}
    elif kind == "diagnosis-exclusion":  # of something the study's primary condition (GBM) is not a kind of
        ch, exclude = b.diagnosis_char(draw(st.sampled_from(NOT_GBM))), True
    else:
        ch = {"code": b.concept(cv.PRIOR_THERAPY),
              "valueCodeableConcept": b.concept((cv.DRUG_CLASS_CS, draw(st.sampled_from(CLASSES))))}
    ch = copy.deepcopy(ch)
    ch["exclude"] = exclude
    ch["extension"] = [*ch.get("extension", []), _source(conf, "exclusion" if exclude else "inclusion"), *window]
    return ch


def _obs(pid: str, oid: str, code, when: str, **value) -> dict:
    return {"resourceType": "Observation", "id": f"{pid}{oid}", "status": "final", "code": b.concept(code),
            "subject": {"reference": f"Patient/{pid}"}, "effectiveDateTime": when, **value}


@st.composite
def a_records(draw, pid: str, without: str | None = None) -> list[dict]:
    """A person's records, with data for a random subset of kinds (never for ``without``)."""
    recs = [b.patient(pid, birth=draw(st.sampled_from([None, "1950-03-01", "1990-11-23"])),
                      gender=draw(st.sampled_from([None, "male", "female"])))]
    for j in range(draw(st.sampled_from([0, 1, 1, 2]))):
        recs.append(b.condition(f"{pid}c{j}", pid, draw(st.sampled_from(PATIENT_CODES)),
                                clinical=draw(st.sampled_from(["active", "active", "resolved"]))))
    when = draw(st.sampled_from(["2026-11-01", "2025-06-01"]))
    have = [k for k in KINDS if k != without and draw(st.booleans())]
    for k in have:
        if k == "platelets":
            recs.append(_obs(pid, "plt", PLT, when, valueQuantity={"value": draw(st.sampled_from([50, 250])),
                                                                   "code": "10*3/uL"}))
        elif k == "alt-uln":
            recs.append(_obs(pid, "alt", ALT, when, valueQuantity={"value": draw(st.sampled_from([30, 150])),
                                                                   "code": "U/L"},
                             referenceRange=[{"high": {"value": 40, "code": "U/L"}}]))
        elif k == "ecog":
            recs.append(b.observation(f"{pid}e", pid, cv.ECOG, draw(st.integers(0, 4)), when))
        elif k == "variant":
            recs.append(_obs(pid, "v", cv.GENETIC_VARIANT, when, valueCodeableConcept=b.concept(cv.VARIANT_PRESENT),
                             component=[{"code": b.concept((cv.LOINC, "48018-6")), "valueCodeableConcept":
                                         b.concept(EGFR)}, {"code": b.concept((cv.LOINC, "48005-3")),
                                                            "valueCodeableConcept": {"text": draw(st.sampled_from(
                                                                ["p.Leu858Arg", "p.Thr790Met"]))}}]))
        elif k == "pregnancy":
            recs.append(_obs(pid, "preg", (cv.LOINC, "82810-3"), "2026-11-20", valueCodeableConcept=b.concept(
                draw(st.sampled_from([(cv.LOINC, "LA15173-0"), (cv.LOINC, "LA26683-5")])))))
        elif k == "stage":
            recs.append(_obs(pid, "st", cv.STAGE_OBSERVATION_CODES[0], when,
                             valueCodeableConcept={"text": draw(st.sampled_from(["Stage IIB", "Stage IV"]))}))
        elif k == "hormone-receptor":  # one receptor, the other or both
            for name, code in draw(st.sampled_from([[("er", cv.ER_STATUS)], [("pr", cv.PR_STATUS)],
                                                    [("er", cv.ER_STATUS), ("pr", cv.PR_STATUS)]])):
                recs.append(_obs(pid, name, code, when, valueCodeableConcept=b.concept(draw(st.sampled_from([POS,
                                                                                                            NEG])))))
        elif k == "therapy-class":
            recs.append({"resourceType": "MedicationStatement", "id": f"{pid}m", "status": "completed",
                         "medicationCodeableConcept": b.concept(PRODUCT), "subject": {"reference": f"Patient/{pid}"},
                         "effectiveDateTime": when})
    return recs


def _study(sid: str, chars: list[dict], texts: list[str] = ()) -> tuple[dict, dict]:
    g = b.group(f"{sid}-g", chars)
    if texts:
        g["extension"] = [{"url": cv.EXT_UNSTRUCTURED_CRITERION, "extension": [
            {"url": "text", "valueString": t}, {"url": "section", "valueCode": "inclusion"}]} for t in texts]
    return b.study(sid, [GBM], group_id=f"{sid}-g"), g


@FAST
@given(st.sampled_from(KINDS).flatmap(lambda k: st.tuples(st.just(k), a_characteristic(k),
                                                          st.lists(a_characteristic(), max_size=3),
                                                          a_records("p", without=k))))
def test_adding_a_characteristic_without_a_datum_never_turns_a_match_into_a_non_match(args):
    kind, added, others, records = args
    if kind in ("diagnosis-exclusion", "other-malignancy"):  # no condition of the person is a datum for them:
        records = [r for r in records if r["resourceType"] != "Condition"]  # keep only the primary below
    records.append(b.condition("p-primary", "p", GBM))
    if kind == "pregnancy":
        records = [r if r["resourceType"] != "Patient" else {**r, "gender": "female"} for r in records]
    p = build_profile(records, T)
    before = evaluate(study_criteria(*_study("s", others), {}, T), p, T, TODAY)
    after = evaluate(study_criteria(*_study("s", [*others, added]), {}, T), p, T, TODAY)
    new = after.findings[len(before.findings)]
    assert new.result != NOT_MET, new
    assert after.is_match == before.is_match
    assert after.score <= before.score  # an unknown never raises the score


@FAST
@given(a_characteristic("hormone-receptor"), st.sampled_from([(cv.ER_STATUS, "er"), (cv.PR_STATUS, "pr")]),
       st.sampled_from(["2026-11-01", "2025-06-01"]))
def test_hormone_receptor_with_one_result_negative_and_the_other_missing_is_never_not_met(char, which, when):
    """HR+ needs ER or PR positive, HR- both negative: one negative result alone decides neither."""
    code, name = which
    records = [b.patient("p"), b.condition("p-primary", "p", GBM),
               _obs("p", name, code, when, valueCodeableConcept=b.concept(NEG))]
    r = evaluate(study_criteria(*_study("s", [char]), {}, T), build_profile(records, T), T, TODAY)
    assert r.findings[-1].result != NOT_MET, r.findings[-1]
    assert r.is_match


@FAST
@given(st.lists(a_characteristic(), min_size=1, max_size=4), a_records("p"))
def test_medium_confidence_never_excludes(chars, records):
    for ch in chars:
        for ext in ch["extension"]:
            if ext["url"] == cv.EXT_CRITERION_SOURCE:
                ext["extension"][-1]["valueCode"] = "medium"
    records.append(b.condition("p-primary", "p", GBM))
    r = evaluate(study_criteria(*_study("s", chars), {}, T), build_profile(records, T), T, TODAY)
    assert r.is_match


@st.composite
def a_rich_world(draw):
    studies = []
    for i in range(draw(st.integers(1, 8))):
        chars = draw(st.lists(a_characteristic(), max_size=4))
        if draw(st.booleans()):
            chars.append({"code": b.concept(cv.HEALTHY_VOLUNTEERS), "valueBoolean": True})
        study, group = _study(f"s{i}", chars, draw(st.lists(st.sampled_from(["Life expectancy > 3 months",
                                                                            "Able to give consent"]), max_size=2)))
        if draw(st.booleans()):
            study["condition"] = [b.concept(draw(st.sampled_from(ALL_CODES)))]
        studies.append(study_criteria(study, group, {}, T))
    people = [build_profile(draw(a_records(f"p{i}")), T) for i in range(draw(st.integers(1, 4)))]
    return studies, people, draw(a_query())


@FAST
@given(a_rich_world())
def test_screen_and_page_equal_full_evaluation_with_extracted_criteria(w):
    studies, people, q = w
    si = StudyIndex(T)
    for sc in studies:
        si.add(sc)
    for p in people:
        for sc in studies:
            full = evaluate(sc, p, T, TODAY, q.max_distance_km)
            s = screen(sc, p, T, TODAY, q.max_distance_km)
            assert (s.score, s.not_met, s.evaluated, s.total, s.coverage) == \
                (full.score, len(full.reasons_not()), full.evaluated, full.total, full.coverage)
        matches, _ = si.match(p, q)
        page = si.page(p, q)
        key = [(r.study_id, r.score, r.evaluated, r.total, r.findings) for r in matches]
        assert [(r.study_id, r.score, r.evaluated, r.total, r.findings) for r in page.matches] == key[:len(
            page.matches)]
        assert page.total == len(matches)
