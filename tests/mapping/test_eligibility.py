"""The eligibility extraction core on real criteria (tests/data/eligibility, ClinicalTrials.gov text)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.fhir import conventions as cv
from gateway.fhir.validate import validate_resource
from gateway.mapping.eligibility import annotate_group, extract, recognise_criterion, split_criteria
from gateway.mapping.eligibility.conditions import qualified_condition
from gateway.mapping.eligibility.split import Criterion
from gateway.terminology.lexicons import default_lexicons

DATA = Path(__file__).resolve().parents[1] / "data" / "eligibility"
TEXTS: dict[str, str] = json.loads((DATA / "criteria-texts.json").read_text(encoding="utf-8"))
GOLD = [json.loads(line) for line in (DATA / "gold.jsonl").read_text(encoding="utf-8").splitlines() if line]
BY_ID = {g["id"]: g for g in GOLD}
LX = default_lexicons()


def keys(text: str, section: str = "inclusion", *, high_only: bool = False) -> set[tuple]:
    r = recognise_criterion(Criterion(text, 0, len(text), section), LX)
    return {f.key() for f in r.findings if not high_only or f.confidence == "high"}


def gold(cid: str) -> set[tuple]:
    item = BY_ID[cid]
    return keys(item["text"], item["section"])


# -- splitting ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("nct", sorted(TEXTS))
def test_offsets_index_the_text_and_sections_follow_headings(nct):
    text = TEXTS[nct]
    crits = split_criteria(text)
    assert crits
    for c in crits:
        assert text[c.start:c.end] == c.text
        assert c.text.strip() == c.text
    if "Exclusion Criteria" in text:
        assert any(c.section == "exclusion" for c in crits)
        first_exclusion = text.index("Exclusion Criteria")
        assert all(c.section == "inclusion" for c in crits if c.end < first_exclusion)


def test_a_line_ending_in_a_colon_with_sub_items_is_one_criterion():
    text = ("Inclusion Criteria:\n\n* Adequate organ function defined as:\n\n  * ANC >= 1500/mm3\n"
            "  * Platelets >= 100,000/mm3\n* ECOG 0-1\n\nExclusion Criteria:\n\n* Pregnant or breastfeeding")
    crits = split_criteria(text)
    assert [c.section for c in crits] == ["inclusion", "inclusion", "exclusion"]
    assert crits[0].text.startswith("Adequate organ function") and "Platelets" in crits[0].text
    found = {f.key()[:2] for f in recognise_criterion(crits[0], LX).findings}
    assert found == {("lab", "neutrophils"), ("lab", "platelets")}


def test_headings_the_registry_writes_in_many_ways():
    text = ("Key Inclusion Criteria\n* ECOG 0-1\nExclusion Criteria --\n1. Known HIV\nOther Exclusions\n"
            "* Pregnant\nEligibility Criteria for Vaccination:\n1. ECOG <= 2")
    assert [c.section for c in split_criteria(text)] == ["inclusion", "exclusion", "exclusion", "inclusion"]
    assert split_criteria(text)[-1].cohort  # criteria for one part of the study only: never a hard rule


# -- recognisers on real criteria (ids are gold criteria) -------------------------------------------------------
def test_performance_status_ranges():
    assert ("ecog", "ECOG", "0-1", "include", None) in gold("c018")  # 'ECOG performance status of 0 or 1'
    assert ("ecog", "ECOG", "0-2", "include", None) in gold("c103")  # '0, 1, or 2'
    assert ("ecog", "ECOG", "0-1", "include", None) in gold("c057")  # '< 2'
    assert ("ecog", "ECOG", "0-2", "include", None) in gold("c035")  # 'ECOG PS - 0/1-2.'
    assert ("karnofsky", "KARNOFSKY", "80-100", "include", None) in gold("c051")


def test_laboratory_thresholds_with_units_uln_and_windows():
    assert ("lab", "platelets", ">=100000 /uL", "include", "28 d") in gold("c176")
    assert ("lab", "leukocytes", "<25 10*9/L", "include", None) in gold("c026")
    assert ("lab", "bilirubin", "<=1.5 {ULN}", "include", "14 d") in gold("c042")
    assert {("lab", "alt", "<=3.5 {ULN}", "include", None), ("lab", "ast", "<=3.5 {ULN}", "include", None),
            ("lab", "creatinine", "<=1.6 mg/dL", "include", None)} <= gold("c023")
    # 'creatinine less than 1.5 gm/dL' is a typo no unit table should guess: nothing rather than a wrong threshold
    assert not any(k[1] == "creatinine" for k in gold("c188"))


def test_conditional_thresholds_are_never_high_confidence():
    # '<= 2.5 x ULN (<= 5 x ULN for participants with liver metastases)'
    item = BY_ID["c009"]
    r = recognise_criterion(Criterion(item["text"], 0, len(item["text"]), item["section"]), LX)
    assert r.findings and all(f.confidence == "medium" for f in r.findings)
    # 'With bone marrow involvement: Hemoglobin >= 7 g/dL'
    assert not keys(BY_ID["c066"]["text"], high_only=True)


def test_cns_metastases_keep_their_qualifiers():
    r = recognise_criterion(Criterion("Active untreated brain metastases", 0, 33, "exclusion"), LX)
    (f,) = r.findings
    assert (f.kind, f.exclude, set(f.qualifiers)) == ("cns", True, {"active", "untreated"})
    assert f.confidence == "medium"  # a qualified exclusion cannot exclude every patient with brain metastases
    assert keys("Known brain metastases", "exclusion", high_only=True) == {
        ("cns", "CNS metastases", "present", "exclude", None)}


def test_biomarkers_gene_status_variant_and_shorthand():
    assert ("variant", "BRAF", "present:V600E", "include", None) in gold("c046")
    assert keys("EGFR mutation negative", high_only=True) == {("variant", "EGFR", "absent", "include", None)}
    assert keys("No EGFR mutation") == {("variant", "EGFR", "present", "exclude", None)}
    assert ("variant", "EGFR", "present:L858R|exon 19 deletion", "include", None) in keys(
        "Documented EGFR mutation (exon 19 deletion or L858R)")
    assert {k[1:3] for k in keys("ER+/HER2- advanced breast cancer")} >= {("ER", "positive"), ("HER2", "negative")}
    assert ("msi", "MSI", "present", "include", None) in keys("MSI-H colorectal cancer")
    assert keys("Prior KRAS G12D inhibitor therapy", "exclusion") == set()  # a drug, not a variant


def test_prior_therapy_by_drug_and_class_with_windows():
    assert ("prior-therapy", "cdk4-6-inhibitor", "received", "exclude", None) in gold("c119")
    assert ("prior-therapy", "radiotherapy", "received", "exclude", "2 wk") in gold("c024")
    assert {("prior-therapy", "anti-pd-1", "received", "exclude", None),
            ("prior-therapy", "anti-pd-l1", "received", "exclude", None)} <= gold("c154")
    # a wash-out written in an inclusion criterion still excludes recent therapy
    assert ("prior-therapy", "radiotherapy", "received", "exclude", "21 d") in gold("c058")
    assert ("prior-therapy", "1601374", "received", "exclude", None) in keys("No prior palbociclib")
    # allergy to a drug, and toxicity of a therapy, are not prior therapy
    assert not keys("Known hypersensitivity to pembrolizumab", "exclusion")
    assert not {k for k in gold("c064") if k[0] == "prior-therapy"}


def test_pregnancy_infections_other_malignancy_and_stage():
    assert gold("c000") == {("pregnancy", "pregnancy", "present", "exclude", None),
                            ("breastfeeding", "breastfeeding", "present", "exclude", None)}
    # a negative pregnancy test required at inclusion excludes pregnancy
    assert ("pregnancy", "pregnancy", "present", "exclude", None) in gold("c212")
    assert {k[1] for k in gold("c233")} == {"HIV", "HBV", "HCV"}
    assert ("other-malignancy", "other malignancy", "present", "exclude", "5 a") in gold("c150")
    assert ("stage", "stage", "III|IV", "include", None) in gold("c093")
    assert not gold("c086")  # 'Stages 1 and 2:' of the study, not of the cancer


def test_permission_and_not_checkable_criteria_stay_text():
    item = BY_ID["c021"]  # 'Patients with treated brain metastases are eligible if ...'
    r = recognise_criterion(Criterion(item["text"], 0, len(item["text"]), item["section"]), LX)
    assert r.findings == () and r.reason == "conditional"
    r = recognise_criterion(Criterion("Life expectancy >= 12 weeks", 0, 27, "inclusion"), LX)
    assert r.findings == () and r.reason == "not-checkable"


# -- evaluation against the hand-labelled gold set -------------------------------------------------------------
def test_gold_set_high_confidence_precision_and_no_inversions():
    from scripts.eval_extraction import evaluate

    res = evaluate(DATA / "gold.jsonl")
    assert res["criteria"] >= 300
    assert res["inversions"] == []
    for kind, row in res["kinds"].items():
        if row["high_tp"] + row["high_fp"] >= 3:
            assert row["high_precision"] >= 0.95, kind


# -- property: negating a criterion flips or withdraws what it says --------------------------------------------
# One-clause criteria (a prefixed 'No' negates the first clause only: 'No RE-REGISTRATION: ECOG 0-2' is not a negation
# of the ECOG rule), short enough for the negation's scope.
NEGATABLE = [g for g in GOLD if g["labels"] and len(g["text"].split()) <= 12 and not any(
    p in g["text"].rstrip(". ") for p in ("\n", ":", ";", ". "))]


@settings(max_examples=60, deadline=None)
@given(item=st.sampled_from(NEGATABLE), how=st.sampled_from(["No ", "Without ", "Must not have "]))
def test_negating_a_criterion_flips_or_withdraws_its_characteristics(item, how):
    text = item["text"]
    before = keys(text, item["section"])
    after = keys(how + text[0].lower() + text[1:], item["section"])
    for k in before:
        kind, concept, value, polarity, window = k
        if kind in ("pregnancy",) or "washout" in polarity:
            continue
        assert k not in after, (text, k, after)


@settings(max_examples=60, deadline=None)
@given(item=st.sampled_from([g for g in GOLD if g["labels"]]))
def test_moving_a_criterion_to_the_other_section_flips_its_polarity(item):
    text = item["text"]
    other = "exclusion" if item["section"] == "inclusion" else "inclusion"
    a = {k for k in keys(text, item["section"]) if k[0] not in ("pregnancy", "breastfeeding", "infection",
                                                                 "prior-therapy")}
    b = {k for k in keys(text, other) if k[0] not in ("pregnancy", "breastfeeding", "infection", "prior-therapy")}
    flipped = {(k[0], k[1], k[2], "include" if k[3] == "exclude" else "exclude", k[4]) for k in a}
    assert not (a & b) or not a, (text, a, b)
    assert b <= flipped | b  # never the same polarity in both sections
    assert not (a & b)


# -- FHIR output -----------------------------------------------------------------------------------------------
def _group(text: str, chars: list | None = None) -> dict:
    g = {"resourceType": "Group", "type": "person", "actual": False,
         "extension": [{"url": cv.EXT_ELIGIBILITY_TEXT, "valueMarkdown": text}]}
    if chars:
        g["characteristic"] = chars
    return g


@pytest.mark.parametrize("nct", sorted(TEXTS))
def test_annotated_groups_validate_and_count_every_criterion(nct):
    g = annotate_group(_group(TEXTS[nct]))
    validate_resource(g)
    count = next(e for e in g["extension"] if e["url"] == cv.EXT_CRITERIA_COUNT)
    n = {e["url"]: e["valueInteger"] for e in count["extension"]}
    unstructured = [e for e in g["extension"] if e["url"] == cv.EXT_UNSTRUCTURED_CRITERION]
    assert n["total"] == len(split_criteria(TEXTS[nct]))
    assert n["structured"] + len(unstructured) == n["total"]
    for ch in g.get("characteristic") or []:
        src = next(e for e in ch["extension"] if e["url"] == cv.EXT_CRITERION_SOURCE)
        parts = {e["url"]: next(v for k, v in e.items() if k.startswith("value")) for e in src["extension"]}
        assert TEXTS[nct][parts["start"]:parts["end"]] == parts["text"]
        assert parts["confidence"] in ("high", "medium") and parts["section"] in ("inclusion", "exclusion")
    assert annotate_group(g) == g  # annotating again changes nothing


def test_a_sponsor_characteristic_wins_over_an_extracted_one():
    sponsor = {"code": {"coding": [{"system": cv.LOINC, "code": "89247-1"}]},
               "valueRange": {"low": {"value": 0}, "high": {"value": 2}}, "exclude": False}
    g = annotate_group(_group("Inclusion Criteria:\n* ECOG 0-1\n* Known HIV infection is not allowed", [sponsor]))
    ecog = [ch for ch in g["characteristic"] if ch["code"]["coding"][0]["code"] == "89247-1"]
    assert ecog == [sponsor]
    assert any(ch["valueCodeableConcept"]["coding"][0]["code"] == cv.HIV_INFECTION[1]
               for ch in g["characteristic"] if "valueCodeableConcept" in ch)


def test_lab_characteristic_shape():
    g = annotate_group(_group("Inclusion Criteria:\n* Platelets >= 100,000/mm3 within 14 days prior to registration\n"
                              "* Total bilirubin <= 1.5 x ULN"))
    plt, bili = g["characteristic"]
    assert plt["code"]["coding"][0] == {"system": cv.LOINC, "code": "777-3",
                                        "display": "Platelets [#/volume] in Blood by Automated count"}
    assert plt["valueQuantity"] == {"value": 100000, "comparator": ">=", "unit": "/mm3", "system": cv.UCUM,
                                    "code": "/mm3"}
    assert {"url": cv.EXT_CRITERION_LOOKBACK, "valueDuration": {"value": 14, "unit": "days", "system": cv.UCUM,
                                                               "code": "d"}} in plt["extension"]
    assert bili["valueQuantity"]["code"] == "{ULN}" and bili["valueQuantity"]["unit"] == "x ULN"


# -- conditions never broaden ----------------------------------------------------------------------------------
def test_qualified_condition_phrases():
    q = qualified_condition("Microsatellite Instability-High Solid Malignant Tumor")
    assert q is not None and q.generic
    assert qualified_condition("Glioblastoma, IDH-wildtype").core == "Glioblastoma"
    assert qualified_condition("Non-small Cell Lung Cancer") is None
    assert qualified_condition("Solid Tumor") is None  # a basket trial's 'any solid tumour' loses nothing


def _ctgov(conditions: list[str], criteria: str = "Inclusion Criteria:\n* ECOG 0-1") -> dict:
    return {"protocolSection": {
        "identificationModule": {"nctId": "NCT06047379", "briefTitle": "t"},
        "statusModule": {"overallStatus": "RECRUITING"},
        "conditionsModule": {"conditions": conditions},
        "eligibilityModule": {"eligibilityCriteria": criteria, "minimumAge": "18 Years"}}}


def test_ctgov_condition_with_qualifiers_is_left_unresolved_not_broadened():
    from gateway.mapping import map_payload

    # the real condition list of NCT06047379 (abridged)
    (rec,) = map_payload("ctgov-v2", _ctgov(["Melanoma", "Microsatellite Instability-High Solid Malignant Tumor",
                                             "Microsatellite Instability-High Colorectal Cancer"]))
    study = next(e["resource"] for e in rec.bundle["entry"] if e["resource"]["resourceType"] == "ResearchStudy")
    assert study["condition"][0] == {"text": "Melanoma"}
    for cc in study["condition"][1:]:
        assert cc["coding"] == [{"system": cv.UNRESOLVED_QUALIFIED[0], "code": cv.UNRESOLVED_QUALIFIED[1],
                                 "display": "Condition with qualifiers no code carries"}]


def test_ctgov_single_qualified_condition_is_split_into_diagnosis_and_characteristic():
    from gateway.mapping import map_payload

    (rec,) = map_payload("ctgov-v2", _ctgov(["Stage IV Non-small Cell Lung Cancer AJCC v8"]))
    res = {e["resource"]["resourceType"]: e["resource"] for e in rec.bundle["entry"]}
    assert res["ResearchStudy"]["condition"] == [{"text": "Non-small Cell Lung Cancer"}]
    stage = [ch for ch in res["Group"]["characteristic"] if ch["code"]["coding"][0]["code"] == "cancer-stage-group"]
    assert [c["code"] for c in stage[0]["valueCodeableConcept"]["coding"]] == ["IV"]
    src = next(e for e in stage[0]["extension"] if e["url"] == cv.EXT_CRITERION_SOURCE)
    assert {"url": "rule", "valueString": "condition-qualifier:stage-group"} in src["extension"]


def test_extraction_is_stable_for_the_same_text():
    text = TEXTS[sorted(TEXTS)[0]]
    assert [r.findings for r in extract(text).results] == [r.findings for r in extract(text).results]
