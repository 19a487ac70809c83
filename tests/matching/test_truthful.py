"""Issue #12, patient side and scores: units, ULN, look-back windows, history, therapy statuses and classes,
completeness, confidence, not-checked criteria, coverage, explanations and the summary line."""

from __future__ import annotations

from datetime import date

import pytest

from gateway.fhir import conventions as cv
from gateway.matching import MatchQuery, StudyIndex, build_profile, evaluate, study_criteria
from gateway.matching.engine import MET, NOT_CHECKED, NOT_MET, UNKNOWN, screen
from gateway.matching.explain import search_element, summary
from gateway.matching.units import convert, factor
from tests.matching import builders as b
from tests.matching.tiny_terminology import BREAST_CA, GBM, TinyTerminology

T = TinyTerminology()
TODAY = date(2026, 12, 1)
PLT = (cv.LOINC, "777-3")
ALT = (cv.LOINC, "1742-6")
HIV = cv.HIV_INFECTION


def source(text: str, confidence: str = "high", section: str = "inclusion") -> dict:
    return {"url": cv.EXT_CRITERION_SOURCE, "extension": [
        {"url": "text", "valueString": text}, {"url": "section", "valueCode": section},
        {"url": "rule", "valueString": "test"}, {"url": "confidence", "valueCode": confidence}]}


def lookback(value: float, code: str) -> dict:
    return {"url": cv.EXT_CRITERION_LOOKBACK, "valueDuration": {"value": value, "system": cv.UCUM, "code": code}}


def unstructured(text: str, section: str = "inclusion") -> dict:
    return {"url": cv.EXT_UNSTRUCTURED_CRITERION, "extension": [
        {"url": "text", "valueString": text}, {"url": "section", "valueCode": section},
        {"url": "reason", "valueCode": "not-checkable"}]}


def qty(value: float, unit: str, comparator: str | None = None) -> dict:
    q = {"value": value, "system": cv.UCUM, "code": unit}
    if comparator:
        q["comparator"] = comparator
    return q


def lab(oid: str, code, value: float, unit: str, when: str = "2026-11-20", high: float | None = None,
        high_unit: str | None = None) -> dict:
    o = {"resourceType": "Observation", "id": oid, "status": "final", "code": b.concept(code),
         "subject": {"reference": "Patient/p"}, "effectiveDateTime": when, "valueQuantity": qty(value, unit)}
    if high is not None:
        o["referenceRange"] = [{"high": qty(high, high_unit or unit)}]
    return o


def run(chars: list[dict], records: list[dict], group_ext: list[dict] = (), gender: str = "female"):
    g = b.group("g", chars)
    if group_ext:
        g["extension"] = list(group_ext)
    sc = study_criteria(b.study("s", [GBM], group_id="g"), g, {}, T)
    p = build_profile([b.patient("p", gender=gender), b.condition("c", "p", GBM), *records], T)
    r = evaluate(sc, p, T, TODAY)
    s = screen(sc, p, T, TODAY)
    assert (s.score, s.not_met, s.evaluated, s.total) == (r.score, sum(f.result == NOT_MET for f in r.findings),
                                                          r.evaluated, r.total)
    return r


def finding(r, prefix: str):
    (f,) = [f for f in r.findings if f.criterion.startswith(prefix) or f.criterion.startswith("Exclusion: " + prefix)]
    return f


# -- units ------------------------------------------------------------------------------------------
def test_ucum_conversion_is_the_library_s():
    assert factor("10*3/uL", "/mm3") == 1000
    assert convert(250, "10*3/uL", "/mm3") == 250_000
    assert convert(1.2, "x10^9/L", "/mm3") == pytest.approx(1200)  # EHR spelling of 10*9/L
    assert convert(1, "mg/dL", "umol/L") is None  # mass vs substance: incompatible, never guessed
    assert convert(2, None, "10*3/uL") is None and convert(2, "{score}", None) == 2


def test_platelets_in_mm3_judged_against_a_result_in_10_3_per_ul():
    char = {"code": b.concept(PLT), "valueQuantity": qty(100000, "/mm3", ">=")}
    assert finding(run([char], [lab("o", PLT, 250, "10*3/uL")]), "'").result == MET
    assert finding(run([char], [lab("o", PLT, 80, "10*3/uL")]), "'").result == NOT_MET


def test_a_result_in_an_incompatible_unit_is_unknown_not_a_failure():
    char = {"code": b.concept(PLT), "valueQuantity": qty(100, "10*3/uL", ">=")}
    f = finding(run([char], [lab("o", PLT, 2, "mg/dL")]), "'")
    assert f.result == UNKNOWN and "not comparable" in f.text


def test_times_upper_limit_of_normal_uses_the_reference_range():
    char = {"code": b.concept(ALT), "valueQuantity": {"value": 3, "comparator": "<=", "code": cv.UNIT_ULN}}
    assert finding(run([char], [lab("o", ALT, 100, "U/L", high=40)]), "'").result == MET  # 2.5 x ULN
    assert finding(run([char], [lab("o", ALT, 130, "U/L", high=40)]), "'").result == NOT_MET  # 3.25 x ULN
    f = finding(run([char], [lab("o", ALT, 130, "U/L")]), "'")
    assert f.result == UNKNOWN and "reference range" in f.text


# -- windows --------------------------------------------------------------------------------------
def test_old_performance_status_is_unknown_not_met():
    char = b.range_char(cv.ECOG, 0, 1)
    r = run([char], [b.observation("o", "p", cv.ECOG, 3, "2026-01-10")])
    f = finding(r, "'")
    assert f.result == UNKNOWN and "90 days" in f.text and r.is_match


def test_a_criterion_s_own_window_counts_back_from_today():
    char = {"code": b.concept(PLT), "valueQuantity": qty(100, "10*3/uL", ">="), "extension": [lookback(4, "wk")]}
    assert finding(run([char], [lab("o", PLT, 50, "10*3/uL", when="2026-10-01")]), "'").result == UNKNOWN
    assert finding(run([char], [lab("o", PLT, 50, "10*3/uL", when="2026-11-20")]), "'").result == NOT_MET


# -- conditions, therapies, completeness ------------------------------------------------------------
def test_exclusion_with_no_datum_is_unknown_unless_the_list_is_complete():
    char = b.diagnosis_char(HIV, exclude=True)
    assert finding(run([char], []), "Diagnosis").result == UNKNOWN
    empty = {"resourceType": "List", "id": "l", "status": "current", "mode": "snapshot",
             "code": b.concept((cv.LOINC, "11450-4")), "subject": {"reference": "Patient/p"},
             "emptyReason": b.concept(("http://terminology.hl7.org/CodeSystem/list-empty-reason", "nilknown"))}
    f = finding(run([char], [empty]), "Diagnosis")
    assert f.result == MET and f.text.startswith("Does not have")
    no_known = {"resourceType": "Condition", "id": "nk", "subject": {"reference": "Patient/p"},
                "code": b.concept(("http://hl7.org/fhir/uv/ips/CodeSystem/absent-unknown-uv-ips",
                                   "no-known-problems"))}
    assert finding(run([char], [no_known]), "Diagnosis").result == MET


def test_resolved_conditions_count_for_other_malignancy_within_the_window():
    char = {"code": b.concept(cv.OTHER_MALIGNANCY), "valueCodeableConcept": b.concept(cv.MALIGNANCY),
            "exclude": True, "extension": [lookback(3, "a")]}

    class Term(TinyTerminology):
        def ancestors(self, system, code):
            a = super().ancestors(system, code)
            return a | {cv.MALIGNANCY} if (system, code) in (BREAST_CA, GBM) else a

    term = Term()

    def result(abated: str, status: str = "resolved"):
        g = b.group("g", [char])
        sc = study_criteria(b.study("s", [GBM], group_id="g"), g, {}, term)
        past = b.condition("c2", "p", BREAST_CA, clinical=status)
        past["abatementDateTime"] = abated
        p = build_profile([b.patient("p"), b.condition("c", "p", GBM), past], term)
        return evaluate(sc, p, term, TODAY).findings[-1].result

    assert result("2025-01-01") == NOT_MET  # breast cancer resolved 23 months ago: within 3 years
    assert result("2025-01-01", "remission") == NOT_MET
    assert result("2019-01-01") == UNKNOWN  # older: no datum for the window (the list is not stated complete)


def test_not_taken_statements_and_cancelled_orders_are_not_therapy():
    char = {"code": b.concept(cv.PRIOR_THERAPY), "exclude": True,
            "valueCodeableConcept": b.concept((cv.DRUG_CLASS_CS, "cdk4-6-inhibitor"))}
    product = (cv.RXNORM, "1873980")  # ribociclib Oral Product: a product code reaching the class via the lexicon

    def med(status: str, rtype: str = "MedicationStatement") -> dict:
        return {"resourceType": rtype, "id": "m", "status": status, "intent": "order",
                "medicationCodeableConcept": b.concept(product), "subject": {"reference": "Patient/p"},
                "effectiveDateTime": "2026-05-01"}

    assert finding(run([char], [med("completed")]), "Prior").result == NOT_MET
    assert finding(run([char], [med("not-taken")]), "Prior").result == UNKNOWN
    assert finding(run([char], [med("cancelled", "MedicationRequest")]), "Prior").result == UNKNOWN
    assert finding(run([char], [med("entered-in-error", "MedicationRequest")]), "Prior").result == UNKNOWN


def test_every_genomic_result_is_kept_and_gene_and_variant_are_judged_together():
    gene = {"url": cv.EXT_CHARACTERISTIC_GENE, "valueCodeableConcept": b.concept((cv.HGNC, "HGNC:3236"))}
    var = {"url": cv.EXT_CHARACTERISTIC_VARIANT, "valueString": "L858R"}
    char = {"code": b.concept(cv.GENETIC_VARIANT), "valueCodeableConcept": b.concept(cv.VARIANT_PRESENT),
            "extension": [gene, var]}

    def result_of(*variants: tuple[str, str, str]):
        obs = []
        for i, (hgnc, aa, when) in enumerate(variants):
            obs.append({"resourceType": "Observation", "id": f"v{i}", "status": "final",
                        "code": b.concept(cv.GENETIC_VARIANT), "subject": {"reference": "Patient/p"},
                        "effectiveDateTime": when, "valueCodeableConcept": b.concept(cv.VARIANT_PRESENT),
                        "component": [{"code": b.concept((cv.LOINC, "48018-6")),
                                       "valueCodeableConcept": b.concept((cv.HGNC, hgnc))},
                                      {"code": b.concept((cv.LOINC, "48005-3")),
                                       "valueCodeableConcept": {"text": aa}}]})
        return finding(run([char], obs), "EGFR").result

    # an older EGFR L858R result is not hidden by a later TP53 result
    assert result_of(("HGNC:3236", "p.Leu858Arg", "2025-01-01"), ("HGNC:11998", "p.Arg175His", "2026-06-01")) == MET
    # L858R of another gene is not EGFR L858R
    assert result_of(("HGNC:11998", "p.Leu858Arg", "2026-06-01")) == UNKNOWN
    assert result_of(("HGNC:3236", "p.Thr790Met", "2026-06-01")) == NOT_MET


# -- confidence, coverage, score, explanations ---------------------------------------------------------
def test_medium_confidence_never_excludes_and_says_possible_conflict():
    high = {**b.range_char(cv.ECOG, 0, 1), "extension": [source("ECOG 0-1")]}
    medium = {**b.range_char(cv.ECOG, 0, 1), "extension": [source("ECOG 0-1", "medium")]}
    ecog3 = [b.observation("o", "p", cv.ECOG, 3, "2026-11-20")]
    assert not run([high], ecog3).is_match
    r = run([medium], ecog3)
    f = finding(r, "'")
    assert r.is_match and f.result == UNKNOWN and f.conflict and f.text.startswith("Possible conflict")
    plain_unknown = run([medium], [])
    assert r.score < plain_unknown.score  # a conflict lowers the score more than no datum


def test_unchecked_criteria_make_a_perfect_score_impossible_and_count_in_coverage():
    char = {**b.age_char(18, None), "extension": [source("Aged 18 or over")]}
    full = run([char], [])
    assert full.score == 1.0 and (full.evaluated, full.total) == (2, 2)
    r = run([char], [], [unstructured("Life expectancy of at least 12 weeks"),
                         unstructured("Able to swallow tablets", "inclusion")])
    assert r.is_match and r.score < 1.0 and (r.evaluated, r.total) == (2, 4)
    checked = [f for f in r.findings if f.result == NOT_CHECKED]
    assert [f.text for f in checked][0] == ('Not checked from the records: "Life expectancy of at least 12 weeks"; '
                                            "the research team will check it")
    assert summary(r) == ("You may be able to take part. 2 of 4 criteria could be checked from your records; "
                          "the research team will check the rest.")


def test_results_order_by_score_then_coverage():
    """Equal scores, different coverage: the study more of which could be checked comes first, whatever its id."""
    si = StudyIndex(T)
    medium = {**b.range_char(cv.ECOG, 0, 1), "extension": [source("ECOG 0-1", "medium")]}
    # z: condition + age met, a medium-confidence ECOG in conflict -> (2+1)/(2+1+1+1) = 0.6, 2 of 3 checked
    si.add(study_criteria(b.study("z", [GBM], group_id="gz"), b.group("gz", [b.age_char(18, None), medium]), {}, T))
    # y: condition + age met, two exclusions with no datum -> (2+1)/(2+2+1) = 0.6, 2 of 4 checked
    si.add(study_criteria(b.study("y", [GBM], group_id="gy"), b.group("gy", [
        b.age_char(18, None), b.diagnosis_char(HIV, True), b.diagnosis_char(BREAST_CA, True)]), {}, T))
    p = build_profile([b.patient("p"), b.condition("c", "p", GBM), b.observation("o", "p", cv.ECOG, 3, "2026-11-20")],
                      T)
    page = si.page(p, MatchQuery(today=TODAY))
    assert [(r.study_id, r.score, r.evaluated, r.total) for r in page.matches] == [("z", 0.6, 2, 3), ("y", 0.6, 2, 4)]
    assert [r.study_id for r in si.match(p, MatchQuery(today=TODAY))[0]] == ["z", "y"]


def test_explanations_name_code_systems_never_urls_and_say_does_not_have():
    chars = [{"code": b.concept(cv.PRIOR_THERAPY), "exclude": True,
              "extension": [source("No prior taxane", section="exclusion")],
              "valueCodeableConcept": b.concept((cv.DRUG_CLASS_CS, "taxane"))},
             {"code": b.concept(cv.LANSKY), "valueRange": {"low": {"value": 50}}}]
    empty = {"resourceType": "List", "id": "l", "status": "current", "mode": "snapshot",
             "code": b.concept((cv.LOINC, "10160-0")), "subject": {"reference": "Patient/p"},
             "emptyReason": b.concept(("http://terminology.hl7.org/CodeSystem/list-empty-reason", "nilknown"))}
    r = run(chars, [empty])
    texts = [f.text for f in r.findings]
    assert not any("http" in t for t in texts), texts
    assert texts[1].startswith("Does not have prior 'taxane' (drug class taxane)")
    assert texts[1].endswith('(the study says: "No prior taxane")')
    element = search_element(r)
    urls = [e["url"] for e in element["extension"]]
    assert urls.count(cv.EXT_MATCH_COVERAGE) == 1 and urls.count(cv.EXT_MATCH_SUMMARY) == 1
    explained = [e for e in element["extension"] if e["url"] == cv.EXT_MATCH_EXPLANATION]
    assert len({x["extension"][2]["valueString"] for x in explained}) == len(explained)


def test_the_same_sentence_is_said_once():
    char = b.diagnosis_char(HIV, exclude=True)
    r = run([char, char], [])
    element = search_element(r)
    explained = [e for e in element["extension"] if e["url"] == cv.EXT_MATCH_EXPLANATION]
    assert len(explained) == 2  # Condition, and the HIV exclusion once
    assert r.total == 3  # both characteristics still count as criteria of the study
    same = run([b.diagnosis_char(GBM)], [])  # the study's condition stated again as a diagnosis
    (cond,) = [e for e in search_element(same)["extension"] if e["url"] == cv.EXT_MATCH_EXPLANATION]
    assert cond["extension"][0]["valueString"] == "Condition; Diagnosis 'Glioblastoma multiforme' (SNOMED CT 393563007)"


def test_pregnancy_does_not_apply_to_a_male_patient_and_needs_a_recent_status_otherwise():
    char = {"code": b.concept(cv.PREGNANCY), "valueBoolean": True, "exclude": True}
    assert finding(run([char], [], gender="male"), "Pregnancy").result == MET
    assert finding(run([char], []), "Pregnancy").result == UNKNOWN
    old = {"resourceType": "Observation", "id": "preg", "status": "final", "code": b.concept((cv.LOINC, "82810-3")),
           "subject": {"reference": "Patient/p"}, "effectiveDateTime": "2026-01-01",
           "valueCodeableConcept": b.concept((cv.LOINC, "LA15173-0"))}
    assert finding(run([char], [old]), "Pregnancy").result == UNKNOWN  # older than 30 days
    assert finding(run([char], [{**old, "effectiveDateTime": "2026-11-25"}]), "Pregnancy").result == NOT_MET
