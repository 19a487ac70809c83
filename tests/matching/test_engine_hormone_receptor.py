"""HR+ ('ER and/or PR positive') as one characteristic, judged on the ER and PR results together.

Extracted end to end from real corpus lines (NCT id beside each): either receptor positive meets it, both negative
fail it, one result missing (or neither positive nor negative) is unknown - never 'not met' without the datum.
"""

from __future__ import annotations

from datetime import date

import pytest

from gateway.fhir import conventions as cv
from gateway.mapping.eligibility import annotate_group
from gateway.matching import MET, NOT_MET, UNKNOWN, build_profile, evaluate, study_criteria
from gateway.matching.terms import default_terminology
from tests.matching import builders as b

T = default_terminology()
TODAY = date(2026, 12, 1)
BREAST = (cv.SNOMED, "254837009")
POS, NEG = (cv.SNOMED, "10828004"), (cv.SNOMED, "260385009")
POS_LOINC, NEG_LOINC = (cv.LOINC, "LA6576-8"), (cv.LOINC, "LA6577-6")
EQUIVOCAL = (cv.SNOMED, "42425007")  # Equivocal: neither positive nor negative


def _study(heading: str, line: str):
    group = annotate_group({"resourceType": "Group", "id": "g", "type": "person", "actual": False, "extension": [
        {"url": cv.EXT_ELIGIBILITY_TEXT, "valueMarkdown": f"{heading}\n\n* {line}\n"}]})
    return study_criteria(b.study("s", [BREAST], group_id="g"), group, {}, T)


def _receptor(oid: str, code: tuple[str, str], answer: tuple[str, str], when: str = "2026-06-01") -> dict:
    return {"resourceType": "Observation", "id": oid, "status": "final", "code": b.concept(code),
            "subject": {"reference": "Patient/p"}, "effectiveDateTime": when, "valueCodeableConcept": b.concept(answer)}


def _patient(er: tuple[str, str] | None, pr: tuple[str, str] | None) -> list[dict]:
    recs = [b.patient("p", birth="1960-02-02"), b.condition("c", "p", BREAST)]
    if er:
        recs.append(_receptor("er", cv.ER_STATUS, er))
    if pr:
        recs.append(_receptor("pr", cv.PR_STATUS, pr))
    return recs


def _hr(sc) -> list:
    return [c for c in sc.criteria if c.kind == "hormone-receptor"]


@pytest.mark.parametrize("line", [
    "ER and/or PR positive",  # NCT04985032
    "Diagnosis of metastatic or advanced unresectable invasive breast cancer that is hormone receptor-positive (HR+) "
    "and HER2-negative.",  # NCT05977036
    "Documented ER-positive and/or progesterone receptor-positive tumor according to American Society of Clinical "
    "Oncology/College of American Pathologists (ASCO/CAP) guidelines",  # NCT06790693
    "Histologically confirmed metastatic or advanced and unresectable breast cancer that is hormone receptor positive "
    "(estrogen receptor and/or progesterone receptor positive) defined as \\>1% on any metastatic site or the primary "
    "tumor.",  # NCT06263543
])
def test_hr_positive_lines_give_one_high_confidence_characteristic(line):
    sc = _study("Inclusion Criteria:", line)
    hr = _hr(sc)
    assert len(hr) == 1 and hr[0].confidence == "high" and not hr[0].exclude and hr[0].flag is True
    # neither receptor alone is required: an ER-negative, PR-positive tumour is hormone-receptor positive
    assert not [c for c in sc.criteria if c.kind == "observation" and set(c.obs_codes) & {cv.ER_STATUS, cv.PR_STATUS}]


@pytest.mark.parametrize(("er", "pr", "result"), [
    (POS, NEG, MET), (NEG, POS, MET), (POS_LOINC, None, MET),  # either positive: has it (the other need not be known)
    (NEG, NEG_LOINC, NOT_MET),  # both negative (SNOMED CT and LOINC answers alike)
    (NEG, None, UNKNOWN), (None, NEG, UNKNOWN), (None, None, UNKNOWN),  # one missing: unknown, not 'not met'
    (NEG, EQUIVOCAL, UNKNOWN),  # neither positive nor negative
])
def test_required_hr_positive(er, pr, result):
    sc = _study("Inclusion Criteria:", "ER and/or PR positive")  # NCT04985032
    r = evaluate(sc, build_profile(_patient(er, pr), T), T, TODAY)
    f = next(f for f in r.findings if "Hormone receptor" in f.criterion)
    assert f.result == result, f.text
    assert '"ER and/or PR positive"' in f.text


@pytest.mark.parametrize(("er", "pr", "result"), [(NEG, POS, NOT_MET), (NEG, NEG, MET), (NEG, None, UNKNOWN)])
def test_excluded_hr_positive(er, pr, result):
    # the same words under an exclusion heading: a patient with either receptor positive is excluded
    sc = _study("Exclusion Criteria:", "ER and/or PR positive")
    hr = _hr(sc)
    assert len(hr) == 1 and hr[0].exclude
    f = next(f for f in evaluate(sc, build_profile(_patient(er, pr), T), T, TODAY).findings
             if "Hormone receptor" in f.criterion)
    assert f.result == result, f.text
    if result == MET:
        assert f.text.startswith("Does not have hormone receptor positive")


def test_latest_result_of_each_receptor_counts():
    sc = _study("Inclusion Criteria:", "ER and/or PR positive")
    recs = _patient(None, NEG) + [_receptor("er-old", cv.ER_STATUS, POS, "2020-01-01"),
                                  _receptor("er-new", cv.ER_STATUS, NEG, "2026-09-01")]
    f = next(f for f in evaluate(sc, build_profile(recs, T), T, TODAY).findings if "Hormone receptor" in f.criterion)
    assert f.result == NOT_MET and "ER negative (2026-09-01)" in f.text


def test_er_plus_and_or_pr_plus_is_no_longer_two_medium_alternatives():
    # 'ER+ or PR+' was two characteristics, each medium ('alternatives'): a PR-only positive patient got a possible
    # conflict. Now one high-confidence HR+ that she meets.
    sc = _study("Inclusion Criteria:", "ER+ or PR+ (\\>1% on IHC) metastatic breast cancer")  # NCT05095207 (wording)
    assert [(c.kind, c.confidence) for c in sc.criteria if c.kind != "condition"] == [("hormone-receptor", "high")]
    r = evaluate(sc, build_profile(_patient(NEG, POS), T), T, TODAY)
    assert all(f.result == MET for f in r.findings if "Hormone receptor" in f.criterion)


def test_a_sponsor_characteristic_with_the_code_is_read_the_same_way():
    char = {"code": b.concept(cv.HORMONE_RECEPTOR), "valueCodeableConcept": b.concept(POS), "exclude": False}
    sc = study_criteria(b.study("s", [BREAST], group_id="g"), b.group("g", [char]), {}, T)
    assert [(c.kind, c.confidence, c.flag) for c in sc.criteria if c.kind != "condition"] == [
        ("hormone-receptor", "high", True)]
    neg = {**char, "valueCodeableConcept": b.concept(NEG)}  # 'HR-negative': ER and PR both negative
    sc = study_criteria(b.study("s", [BREAST], group_id="g"), b.group("g", [neg]), {}, T)
    results = {(er, pr): next(f.result for f in evaluate(sc, build_profile(_patient(er, pr), T), T, TODAY).findings
                              if "Hormone receptor" in f.criterion) for er, pr in [(NEG, NEG), (NEG, POS), (NEG, None)]}
    assert results == {(NEG, NEG): MET, (NEG, POS): NOT_MET, (NEG, None): UNKNOWN}
