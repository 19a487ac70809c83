"""ctgov-v2 on real ClinicalTrials.gov records -> the expected FHIR (tests/data/ctgov/expected), field by field."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gateway.fhir.validate import validate_resource
from gateway.mapping import map_payload
from tests.mapping.golden import stable_entries

DATA = Path(__file__).resolve().parents[1] / "data" / "ctgov"
SOURCES = sorted(DATA.glob("*.json"))
EXPECTED = {p.stem: json.loads(p.read_text()) for p in (DATA / "expected").glob("*.json")}


def _mapped() -> dict[str, tuple[str, list[dict], list[dict]]]:
    out = {}
    for src in SOURCES:
        for rec in map_payload("ctgov-v2", src.read_bytes()):
            assert rec.errors == [], (src.name, rec.errors)
            out[rec.source_id] = (src.name, stable_entries(rec.bundle), rec.hierarchy)
    return out


MAPPED = _mapped()


def test_every_record_has_a_golden_file():
    assert sorted(MAPPED) == sorted(EXPECTED)
    assert len(MAPPED) == 12  # 1 full record + 1 single-study response + 5 + 5 studies in two API pages


@pytest.mark.parametrize("nct", sorted(EXPECTED))
def test_matches_golden_field_by_field(nct):
    expected = EXPECTED[nct]
    source, entries, hierarchy = MAPPED[nct]
    assert source == expected["source"]
    by_url = {e["request"]["url"]: e for e in entries}
    for exp in expected["entries"]:
        url = exp["request"]["url"]
        assert url in by_url, f"{nct}: no entry {url}"
        got = by_url[url]
        assert got["request"] == exp["request"]
        for element in sorted(set(exp["resource"]) | set(got["resource"])):
            assert got["resource"].get(element) == exp["resource"].get(element), f"{nct} {url} .{element}"
    assert hierarchy == expected["hierarchy"]


@pytest.mark.parametrize("nct", sorted(EXPECTED))
def test_every_mapped_resource_validates(nct):
    for e in MAPPED[nct][1]:
        validate_resource(e["resource"])


def test_full_record_maps_every_site_and_links_them():
    _, entries, hierarchy = MAPPED["NCT02513394"]
    locations = [e for e in entries if e["resource"]["resourceType"] == "Location"]
    study = entries[-1]["resource"]
    assert len(locations) == 437
    assert [s["reference"] for s in study["site"]] == [
        f"Location/{e['request']['url'].split('|', 1)[1]}" for e in locations]
    assert len({e["request"]["url"] for e in locations}) == 437  # each site keyed distinctly
    # secondary ids: EudraCT recognised by type, the others kept without a system
    assert {"use": "secondary", "value": "2014-005181-30", "system": "https://www.clinicaltrialsregister.eu"} in \
        study["identifier"]
    # MeSH: D000001943 normalised; the ancestors are hierarchy data, never codings of the condition
    assert study["condition"] == [{"text": "Breast Cancer", "coding": [
        {"system": "https://www.nlm.nih.gov/mesh", "code": "D001943", "display": "Breast Neoplasms"}]}]
    assert hierarchy[0]["ancestors"] == ["D009371", "D009369", "D001941", "D012871"]


def test_statuses_and_ages_from_real_records():
    status = {nct: v[1][-1]["resource"]["status"] for nct, v in MAPPED.items()}
    assert status["NCT02576665"] == "administratively-completed"  # TERMINATED
    assert status["NCT07119606"] == "approved"  # NOT_YET_RECRUITING
    assert status["NCT07281079"] == "active"  # RECRUITING
    invitation = MAPPED["NCT03836300"][1][-1]["resource"]  # ENROLLING_BY_INVITATION
    assert invitation["status"] == "active"
    assert {"url": "https://trialgateway.org/fhir/StructureDefinition/enrollment-by-invitation",
            "valueBoolean": True} in invitation["extension"]
    group = MAPPED["NCT07119606"][1][0]["resource"]  # "3 Months" .. "99 Years"
    assert group["characteristic"][0]["valueRange"] == {
        "low": {"value": 3, "unit": "months", "system": "http://unitsofmeasure.org", "code": "mo"},
        "high": {"value": 99, "unit": "years", "system": "http://unitsofmeasure.org", "code": "a"}}
