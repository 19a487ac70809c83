"""General diagnoses as exclusions, exceptions that name a diagnosis, numbered / annotated section headings and
pregnancy as a requirement, on real ClinicalTrials.gov criteria (tests/data/eligibility-diagnoses, PROVENANCE.md).

None of these lines is in the gold sets; the one adversarial-suite line each rule was first seen on (severe COPD,
excepting Gilbert's, pregnant or recently pregnant, the numbered heading) is checked beside other corpus lines of the
same pattern, so that a rule reads the general case, not one fixture.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from gateway.cli import cli
from gateway.mapping.eligibility import annotate_group, extract, recognise_criterion, split_criteria
from gateway.mapping.eligibility.diagnoses import find_diagnoses, load_diagnoses
from gateway.mapping.eligibility.split import Criterion
from gateway.terminology.lexicons import DEFAULT_PATH, LexiconError, default_lexicons, is_sctid
from tests.conftest import ROOT

DATA = Path(__file__).resolve().parents[1] / "data" / "eligibility-diagnoses"
LINES = {x["id"]: x for x in json.loads((DATA / "lines.json").read_text(encoding="utf-8"))}
TEXTS = json.loads((DATA / "texts.json").read_text(encoding="utf-8"))
LX = default_lexicons()


def findings(line_id: str) -> list:
    it = LINES[line_id]
    return list(recognise_criterion(Criterion(it["text"], 0, len(it["text"]), it["section"]), LX).findings)


def of_kind(line_id: str, kind: str) -> list:
    return [f for f in findings(line_id) if f.kind == kind]


def test_lines_are_verbatim_from_the_corpus_records():
    for it in LINES.values():
        assert it["text"] and it["nct"].startswith("NCT") and it["end"] - it["start"] == len(it["text"])


# -- exceptions naming a diagnosis ------------------------------------------------------------------------------
@pytest.mark.parametrize("line_id", ["gilbert-excepting", "gilbert-unless", "gilbert-except-individuals",
                                     "gilbert-own-limit-or", "gilbert-own-limit-parens"])
def test_a_limit_with_a_diagnosis_exception_is_a_hard_rule_waived_for_that_diagnosis(line_id):
    bili = [f for f in of_kind(line_id, "lab") if f.concept == "bilirubin"]
    assert len(bili) == 1
    assert bili[0].confidence == "high" and bili[0].exceptions == ("gilbert-syndrome",)
    assert not bili[0].exclude  # the inclusion limit itself keeps its polarity
    assert not of_kind(line_id, "diagnosis")  # Gilbert's is the exception, never an exclusion of its own


@pytest.mark.parametrize("line_id", ["gilbert-or-liver-metastasis", "gilbert-then-if"])
def test_an_exception_with_more_than_a_diagnosis_stays_medium(line_id):
    # '(<=3xULN for subjects with Gilbert's syndrome or liver metastasis)', '... If patients have hepatic metastases'
    bili = [f for f in of_kind(line_id, "lab") if f.concept == "bilirubin"]
    assert bili and all(f.confidence == "medium" and not f.exceptions for f in bili)


def test_a_permission_for_the_excepted_patients_gives_no_bilirubin_rule():
    # 'except for participants with Gilbert's syndrome who may be included if ...': stays text
    assert not [f for f in of_kind("gilbert-may-be-included", "lab") if f.concept == "bilirubin"]


def test_for_patients_with_a_diagnosis_alone_is_a_subgroup_rule_not_an_exception():
    text = "ECOG performance status 0-1 for patients with heart failure"  # pattern of corpus subgroup lines
    f = recognise_criterion(Criterion(text, 0, len(text), "inclusion"), LX).findings
    assert f and all(x.confidence == "medium" and not x.exceptions for x in f)


def test_the_exception_travels_as_a_qualifier_and_the_matching_side_reads_it():
    from gateway.fhir import conventions as cv

    it = LINES["gilbert-excepting"]
    group = annotate_group({"resourceType": "Group", "type": "person", "actual": False, "extension": [
        {"url": cv.EXT_ELIGIBILITY_TEXT, "valueMarkdown": "Inclusion Criteria:\n\n* " + it["text"]}]})
    (ch,) = group["characteristic"]
    quals = [e["valueCode"] for e in ch["extension"] if e["url"] == cv.EXT_CHARACTERISTIC_QUALIFIER]
    assert quals == [f"{cv.QUALIFIER_UNLESS_PREFIX}27503000"]


# -- general diagnoses ------------------------------------------------------------------------------------------
def test_severe_copd_with_gold_stage_is_the_severe_copd_concept_not_a_cancer_stage():
    (f,) = findings("severe-copd")
    assert (f.kind, f.concept, f.exclude, f.confidence) == ("diagnosis", "severe-copd", True, "high")


@pytest.mark.parametrize(("line_id", "want"), [
    ("stroke-tia-12-months", {("stroke", (12.0, "mo")), ("transient-ischemic-attack", (12.0, "mo"))}),
    ("mi-cva-4-months", {("myocardial-infarction", (4.0, "mo")), ("stroke", (4.0, "mo"))}),
    ("history-of-chf", {("heart-failure", None)}),
    ("insulin-dependent-diabetes", {("type-1-diabetes", None)}),
])
def test_plain_diagnosis_exclusions_with_their_windows(line_id, want):
    got = of_kind(line_id, "diagnosis")
    assert {(f.concept, f.window) for f in got} == want
    assert all(f.exclude and f.confidence == "high" for f in got)


def test_history_of_keeps_the_history_qualifier():
    (f,) = of_kind("history-of-chf", "diagnosis")
    assert f.qualifiers == ("history",)


def test_a_negated_diagnosis_in_an_inclusion_is_an_exclusion():
    (f,) = findings("must-not-have-cirrhosis")
    assert (f.concept, f.exclude, f.confidence) == ("cirrhosis", True, "high")


@pytest.mark.parametrize("line_id", ["portal-hypertension", "pre-diabetes", "with-or-without-diabetes"])
def test_another_disease_or_neither_way_gives_no_diagnosis(line_id):
    assert not of_kind(line_id, "diagnosis")


def test_examples_of_a_broader_condition_and_qualified_diagnoses_are_medium():
    ex = of_kind("examples-include", "diagnosis")
    assert {f.concept for f in ex} >= {"diabetes", "heart-failure", "copd", "ulcerative-colitis"}
    assert all(f.confidence == "medium" for f in ex)
    qualified = {f.concept: f.confidence for f in of_kind("uncontrolled-hypertension", "diagnosis")}
    assert qualified["hypertension"] == "medium" and qualified["heart-failure"] == "medium"  # NYHA class
    assert qualified["myocardial-infarction"] == "high"  # its own sentence: 'Myocardial infarction ... within 6 months'


def test_a_diagnosis_is_never_written_as_a_requirement():
    text = "Diagnosis of chronic obstructive pulmonary disease"
    r = recognise_criterion(Criterion(text, 0, len(text), "inclusion"), LX)
    assert not r.findings


def test_diagnosis_characteristic_lists_the_concept_and_its_subtypes_as_alternatives():
    from gateway.fhir import conventions as cv

    it = LINES["severe-copd"]
    group = annotate_group({"resourceType": "Group", "type": "person", "actual": False, "extension": [
        {"url": cv.EXT_ELIGIBILITY_TEXT, "valueMarkdown": "Exclusion Criteria:\n\n* " + it["text"]}]})
    (ch,) = group["characteristic"]
    assert ch["exclude"] is True and ch["code"]["coding"][0]["code"] == cv.DIAGNOSIS[1]
    assert [c["code"] for c in ch["valueCodeableConcept"]["coding"]] == ["313299006", "135836000"]


def test_caps_only_abbreviations():
    assert [d.key for _, _, d in find_diagnoses("history of mi", "history of mi")] == []
    assert [d.key for _, _, d in find_diagnoses("history of mi", "history of MI")] == ["myocardial-infarction"]


def test_the_lexicon_is_checked_on_load(tmp_path):
    assert load_diagnoses(DEFAULT_PATH / "diagnoses.yaml").by_key["copd"].snomed == "13645005"
    bad = tmp_path / "diagnoses.yaml"
    bad.write_text("diagnoses:\n  copd:\n    display: COPD\n    snomed: 'COPD'\n    includes: []\n"
                   "    names: [copd]\n    checked: 'no'\n", encoding="utf-8")
    with pytest.raises(LexiconError, match=r"diagnoses\.yaml.*snomed"):
        load_diagnoses(bad)
    dup = tmp_path / "dup.yaml"
    dup.write_text("diagnoses:\n  a:\n    display: A\n    snomed: '13645005'\n    includes: []\n    names: [copd]\n"
                   "    checked: 'no'\n  b:\n    display: B\n    snomed: '84114007'\n    includes: []\n"
                   "    names: [copd]\n    checked: 'no'\n", encoding="utf-8")
    with pytest.raises(LexiconError, match=r"diagnoses\.b\.names: 'copd'"):
        load_diagnoses(dup)



def test_every_code_is_a_concept_id_with_its_check_digit_and_says_where_it_was_checked():
    # a mistyped SCTID fails its Verhoeff check digit; 'checked' names the source each code was confirmed in
    lexicon = load_diagnoses(DEFAULT_PATH / "diagnoses.yaml")
    raw = yaml.safe_load((DEFAULT_PATH / "diagnoses.yaml").read_text(encoding="utf-8"))
    for key, d in lexicon.by_key.items():
        assert all(is_sctid(c) for c in d.codes), key
        assert "recalled" not in raw["diagnoses"][key]["checked"], key
    assert not is_sctid("13645006") and not is_sctid("013645005") and is_sctid("13645005")


def test_mappings_check_names_a_broken_diagnoses_file_and_field_in_one_line(tmp_path):
    folder = tmp_path / "mappings"
    shutil.copytree(ROOT / "mappings", folder)
    env = {"GATEWAY_MAPPINGS_PATH": str(folder)}
    ok = CliRunner().invoke(cli, ["mappings", "check"], env=env)
    assert ok.exit_code == 0 and "ok  lexicons under" in ok.output, ok.output
    path = folder / "lexicons" / "diagnoses.yaml"
    path.write_text(path.read_text(encoding="utf-8").replace('snomed: "13645005"', 'snomed: "13645006"', 1),
                    encoding="utf-8")  # COPD's id with its check digit off by one
    bad = CliRunner().invoke(cli, ["mappings", "check"], env=env)
    errors = [line for line in bad.output.splitlines() if line.startswith("error")]
    assert bad.exit_code == 1
    assert errors == [f"error  {path}: diagnoses.copd.value.snomed: not a SNOMED CT concept id (6-18 digits, "
                      "concept partition, Verhoeff check digit)"]
    path.write_text("diagnoses:\n  copd:\n    display: COPD\n    snomed: '13645005'\n    includes: []\n"
                    "    names: [copd]\n", encoding="utf-8")  # no 'checked'
    bad = CliRunner().invoke(cli, ["mappings", "check"], env=env)
    errors = [line for line in bad.output.splitlines() if line.startswith("error")]
    assert bad.exit_code == 1 and len(errors) == 1
    assert errors[0].startswith(f"error  {path}: diagnoses.copd.value.checked: ")

# -- section headings -------------------------------------------------------------------------------------------
def test_numbered_section_headings_switch_the_section():
    crits = split_criteria(TEXTS["NCT06122480"])
    hiv = [c for c in crits if c.text == "Known HIV seropositivity"]
    assert hiv and hiv[0].section == "exclusion" and hiv[0].stated
    ecog = [c for c in crits if c.text.startswith("Eastern Cooperative Oncology Group")]
    assert ecog[0].section == "inclusion"
    assert not any(c.text.startswith(("Exclusion Criteria at", "Inclusion Criteria at")) for c in crits)


@pytest.mark.parametrize("heading", [
    "Inclusion criteria (all must apply):", "2) Exclusion criteria:", "3.1 Exclusion Criteria",
    "Exclusion Criteria (applicable to all participants and all parts unless otherwise specified):"])
def test_heading_variants(heading):
    # the heading wordings of corpus records (texts.json: NCT07070232 carries the last one), around two real lines
    section = "exclusion" if "xclusion" in heading else "inclusion"
    text = f"{heading}\n\n* Known HIV seropositivity\n"
    (c,) = split_criteria(text)
    assert c.section == section and c.stated and not c.cohort


def test_a_note_covering_everyone_is_no_cohort_heading():
    crits = split_criteria(TEXTS["NCT07070232"])
    assert crits and not any(c.cohort for c in crits)


def test_criteria_before_any_heading_are_not_stated():
    (c,) = split_criteria("* Pregnant women\n")
    assert c.section == "inclusion" and not c.stated


# -- pregnancy as a requirement ---------------------------------------------------------------------------------
def test_pregnant_or_recently_pregnant_under_an_inclusion_heading_is_required_with_its_window():
    ex = extract(TEXTS["NCT05013632"])
    preg = [(f.exclude, f.window, f.confidence) for r in ex.results for f in r.findings if f.kind == "pregnancy"]
    assert (False, (30.0, "d"), "high") in preg


def test_pregnancy_is_no_requirement_without_a_stated_heading_or_as_contraception():
    it = LINES["pregnant-required"]
    assert not [f for r in extract("* " + it["text"]).results for f in r.findings if f.kind == "pregnancy"]
    text = "Inclusion Criteria:\n\n* Women of childbearing potential must agree to avoid becoming pregnant\n"
    assert not [f for r in extract(text).results for f in r.findings if f.kind == "pregnancy"]


def test_review_lines_name_the_excepted_diagnosis():
    from gateway.fhir import conventions as cv
    from gateway.mapping.eligibility import review_lines

    it = LINES["gilbert-unless"]
    group = annotate_group({"resourceType": "Group", "type": "person", "actual": False, "extension": [
        {"url": cv.EXT_ELIGIBILITY_TEXT, "valueMarkdown": "Inclusion Criteria:\n\n* " + it["text"]}]})
    (line,) = [x for x in review_lines(group) if "Bilirubin" in x]
    assert "[unless Gilbert's syndrome]" in line and "unless-sct" not in line


def _diag(text: str, section: str) -> list:
    r = recognise_criterion(Criterion(text, 0, len(text), section), LX)
    return [f for f in r.findings if f.kind == "diagnosis"]


@pytest.mark.parametrize("key", sorted(k for k in load_diagnoses(DEFAULT_PATH / "diagnoses.yaml").by_key
                                       if k != "gilbert-syndrome"))
def test_every_lexicon_diagnosis_flips_or_withdraws_with_negation(key):
    """'History of X' excludes X; 'No history of X' in an exclusion section is no requirement (withdrawn), and in an
    inclusion section it excludes X: negating the text never leaves the same characteristic."""
    name = load_diagnoses(DEFAULT_PATH / "diagnoses.yaml").by_key[key].names[0]
    (f,) = _diag(f"History of {name}", "exclusion")
    assert (f.concept, f.exclude, f.confidence, f.qualifiers) == (key, True, "high", ("history",))
    assert not _diag(f"No history of {name}", "exclusion")
    (g,) = _diag(f"No history of {name}", "inclusion")
    assert (g.concept, g.exclude) == (key, True)
    assert not _diag(f"History of {name}", "inclusion")


@pytest.mark.parametrize("nct", ["NCT04065269", "NCT05031897", "NCT06771544"])
def test_a_pregnancy_exclusion_under_an_inclusion_heading_is_never_a_requirement(nct):
    # 'Pregnant or lactating women.', 'Pregnant or breastfeeding', '... are prohibited from enrolling in this study.'
    ex = extract(TEXTS[nct])
    assert not [f for r in ex.results for f in r.findings if f.kind in ("pregnancy", "breastfeeding") and not f.exclude]


def test_a_text_that_also_excludes_pregnancy_drops_the_requirement():
    # NCT05013632's requirement beside NCT05031897's exclusion line: one of the two stands under the wrong heading
    text = f"Inclusion Criteria:\n\n* {LINES['pregnant-required']['text']}\n\nExclusion Criteria:\n\n* Pregnant or " \
           "breastfeeding\n"
    ex = extract(text)
    assert [f for r in ex.results for f in r.findings if f.kind == "pregnancy" and f.exclude]
    assert not [f for r in ex.results for f in r.findings if f.kind == "pregnancy" and not f.exclude]
    assert ex.results[0].reason == "conditional"
