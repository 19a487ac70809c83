"""The matching side of two extraction rules: a criterion waived for a named diagnosis ('Total bilirubin <= 1.5 x ULN
(excepting Gilbert's syndrome)', NCT06757647) and pregnancy required within a stated window ('Pregnant or recently
pregnant (up to 30 days after the end of pregnancy)', NCT05013632), on those real lines extracted end to end
(tests/data/eligibility-diagnoses/lines.json)."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path

from gateway.fhir import conventions as cv
from gateway.mapping.eligibility import annotate_group
from gateway.matching import MET, NOT_MET, build_profile, evaluate, study_criteria
from gateway.matching.terms import default_terminology
from tests.matching import builders as b

LINES = {x["id"]: x for x in json.loads((Path(__file__).resolve().parents[1] / "data" / "eligibility-diagnoses" /
                                          "lines.json").read_text(encoding="utf-8"))}
T = default_terminology()
TODAY = date(2026, 12, 1)
CLL = (cv.SNOMED, "92814006")
GILBERT = (cv.SNOMED, "27503000")
BILIRUBIN = (cv.LOINC, "1975-2")


def _study(line_id: str, heading: str):
    text = f"{heading}\n\n* {LINES[line_id]['text']}\n"
    group = annotate_group({"resourceType": "Group", "id": "g", "type": "person", "actual": False, "extension": [
        {"url": cv.EXT_ELIGIBILITY_TEXT, "valueMarkdown": text}]})
    return study_criteria(b.study("s", [CLL], group_id="g"), group, {}, T)


def _bilirubin(value: float) -> dict:
    mgdl = {"system": cv.UCUM, "code": "mg/dL", "unit": "mg/dL"}
    return {"resourceType": "Observation", "id": "bili", "status": "final", "code": b.concept(BILIRUBIN),
            "subject": {"reference": "Patient/p"}, "effectiveDateTime": "2026-11-20",
            "valueQuantity": {"value": value, **mgdl}, "referenceRange": [{"high": {"value": 1.2, **mgdl}}]}


def _result(sc, records: list[dict]) -> str:
    p = build_profile([b.patient("p", gender="male"), b.condition("c", "p", CLL), *records], T)
    (f,) = [f for f in evaluate(sc, p, T, TODAY).findings if "Bilirubin" in f.criterion or "Pregnan" in f.criterion]
    return f.result


def test_a_limit_waived_for_gilbert_syndrome_excludes_others_and_not_the_excepted():
    sc = _study("gilbert-excepting", "Inclusion Criteria:")
    (crit,) = [c for c in sc.criteria if c.kind == "observation"]
    assert crit.confidence == "high"
    assert _result(sc, [_bilirubin(1.0)]) == MET
    assert _result(sc, [_bilirubin(3.0)]) == NOT_MET  # 2.5 x ULN, no Gilbert's on record
    assert _result(sc, [_bilirubin(3.0), b.condition("g", "p", GILBERT)]) == MET  # the study's exception
    refuted = b.condition("g", "p", GILBERT, verified="refuted")
    assert _result(sc, [_bilirubin(3.0), refuted]) == NOT_MET  # a refuted diagnosis is no exception


def test_the_waiver_sentence_names_the_diagnosis():
    sc = _study("gilbert-unless", "Inclusion Criteria:")
    p = build_profile([b.patient("p"), b.condition("c", "p", CLL), _bilirubin(3.0), b.condition("g", "p", GILBERT)],
                      T)
    (f,) = [f for f in evaluate(sc, p, T, TODAY).findings if "Bilirubin" in f.criterion]
    assert f.result == MET and f.text.startswith("Waived: the study makes an exception for") and "27503000" in f.text


def _pregnancy(code: str, when: str, oid: str) -> dict:
    return {"resourceType": "Observation", "id": oid, "status": "final",
            "code": b.concept((cv.LOINC, "82810-3")), "subject": {"reference": "Patient/p"},
            "effectiveDateTime": when, "valueCodeableConcept": b.concept((cv.LOINC, code))}


def _preg_result(sc, records: list[dict]) -> str:
    p = build_profile([b.patient("p", gender="female", birth="1994-06-01"), b.condition("c", "p", CLL), *records], T)
    (f,) = [f for f in evaluate(sc, p, T, TODAY).findings if f.criterion.startswith("Pregnan")]
    return f.result


def test_pregnant_within_the_stated_window_counts_even_after_a_later_not_pregnant_record():
    sc = _study("pregnant-required", "Inclusion Criteria:")
    (crit,) = [c for c in sc.criteria if c.kind == "pregnancy"]
    assert not crit.exclude and crit.lookback_days == 30 and crit.confidence == "high"
    assert _preg_result(sc, [_pregnancy("LA15173-0", "2026-11-28", "o1")]) == MET
    assert _preg_result(sc, [_pregnancy("LA26683-5", "2026-11-28", "o1")]) == NOT_MET
    # delivered in the window: pregnant on 11-10, not pregnant on 11-28 -> recently pregnant
    assert _preg_result(sc, [_pregnancy("LA15173-0", "2026-11-10", "o1"),
                             _pregnancy("LA26683-5", "2026-11-28", "o2")]) == MET
    # pregnant only before the window
    assert _preg_result(sc, [_pregnancy("LA15173-0", "2026-09-01", "o1"),
                             _pregnancy("LA26683-5", "2026-11-28", "o2")]) == NOT_MET
