"""Bad and partial ClinicalTrials.gov records: clear per-record errors naming the source field."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from gateway.mapping import PayloadError, map_payload

DATA = Path(__file__).resolve().parents[1] / "data" / "ctgov"
PAGE = json.loads((DATA / "search_phelan_limit5_20260811.json").read_text())
STUDY = PAGE["studies"][0]


def _with(path: str, value: object) -> dict:
    study = copy.deepcopy(STUDY)
    *parents, last = path.split(".")
    node = study
    for p in parents:
        node = node.setdefault(p, {})
    if value is None:
        node.pop(last, None)
    else:
        node[last] = value
    return study


def _one(study: object):
    [rec] = map_payload("ctgov-v2", study)
    return rec


def test_unknown_status_is_an_error_naming_the_field():
    rec = _one(_with("protocolSection.statusModule.overallStatus", "ON_HOLD"))
    assert rec.bundle is None
    [(path, msg)] = rec.errors
    assert path == "protocolSection.statusModule.overallStatus"
    assert msg.startswith("'ON_HOLD' is not a known value (table 'status' has: RECRUITING, NOT_YET_RECRUITING")


def test_every_api_status_is_mapped_explicitly():
    api_statuses = ["ACTIVE_NOT_RECRUITING", "COMPLETED", "ENROLLING_BY_INVITATION", "NOT_YET_RECRUITING",
                    "RECRUITING", "SUSPENDED", "TERMINATED", "WITHDRAWN", "AVAILABLE", "NO_LONGER_AVAILABLE",
                    "TEMPORARILY_NOT_AVAILABLE", "APPROVED_FOR_MARKETING", "WITHHELD", "UNKNOWN"]
    got = {s: _one(_with("protocolSection.statusModule.overallStatus", s)).bundle["entry"][-1]["resource"]["status"]
           for s in api_statuses}
    assert got == {"ACTIVE_NOT_RECRUITING": "closed-to-accrual", "COMPLETED": "completed",
                   "ENROLLING_BY_INVITATION": "active", "NOT_YET_RECRUITING": "approved", "RECRUITING": "active",
                   "SUSPENDED": "temporarily-closed-to-accrual", "TERMINATED": "administratively-completed",
                   "WITHDRAWN": "withdrawn", "AVAILABLE": "active", "NO_LONGER_AVAILABLE": "closed-to-accrual",
                   "TEMPORARILY_NOT_AVAILABLE": "temporarily-closed-to-accrual",
                   "APPROVED_FOR_MARKETING": "completed", "WITHHELD": "in-review", "UNKNOWN": "closed-to-accrual"}


def test_missing_status_module_is_required():
    rec = _one(_with("protocolSection.statusModule", None))
    assert rec.errors == [("protocolSection.statusModule.overallStatus", "is required but missing")]


def test_missing_optional_modules_still_map():
    study = {"protocolSection": {"identificationModule": {"nctId": "NCT09999999", "briefTitle": "Minimal"},
                                 "statusModule": {"overallStatus": "RECRUITING"}}}
    rec = _one(study)
    assert rec.errors == []
    [entry] = rec.bundle["entry"]  # no eligibilityModule: no Group; no locations: no Location
    assert entry["resource"] == {"resourceType": "ResearchStudy", "identifier": [
        {"use": "official", "system": "https://clinicaltrials.gov", "value": "NCT09999999"}],
        "title": "Minimal", "status": "active", "extension": [
        {"url": "https://trialgateway.org/fhir/StructureDefinition/registry-status", "valueCode": "RECRUITING"}]}


def test_bad_nct_id():
    rec = _one(_with("protocolSection.identificationModule.nctId", "NCT123"))
    assert rec.errors == [("protocolSection.identificationModule.nctId",
                           "nctId 'NCT123' is not an NCT number (NCT followed by 8 digits)")]


@pytest.mark.parametrize(("min_age", "max_age", "low", "high"), [
    ("N/A", "N/A", None, None),
    ("1 Month", "99 Years", {"value": 1, "unit": "months", "code": "mo"}, {"value": 99, "unit": "years", "code": "a"}),
    ("3 Weeks", "6 Months", {"value": 3, "unit": "weeks", "code": "wk"}, {"value": 6, "unit": "months", "code": "mo"}),
    ("18 Years", None, {"value": 18, "unit": "years", "code": "a"}, None),
    ("2 Days", "12 Hours", {"value": 2, "unit": "days", "code": "d"}, {"value": 12, "unit": "hours", "code": "h"}),
])
def test_odd_age_strings(min_age, max_age, low, high):
    study = _with("protocolSection.eligibilityModule", {"minimumAge": min_age, **(
        {"maximumAge": max_age} if max_age else {})})
    group = _one(study).bundle["entry"][0]["resource"]
    ages = [c for c in group.get("characteristic", []) if c["code"]["coding"][0]["code"] == "30525-0"]
    if low is None and high is None:
        assert ages == []
        return
    rng = ages[0]["valueRange"]
    for bound, exp in (("low", low), ("high", high)):
        if exp is None:
            assert bound not in rng
        else:
            assert rng[bound] == {**exp, "system": "http://unitsofmeasure.org"}


@pytest.mark.parametrize(("field", "value", "message"), [
    ("minimumAge", "eighteen", "'eighteen' is not an age (expected a number and a unit, e.g. '18 Years'"),
    ("maximumAge", "99", "'99' is not an age"),
])
def test_unparseable_age_names_the_field(field, value, message):
    rec = _one(_with(f"protocolSection.eligibilityModule.{field}", value))
    [(path, msg)] = rec.errors
    assert path == f"protocolSection.eligibilityModule.{field}"
    assert msg.startswith(message)


def test_minimum_above_maximum():
    rec = _one(_with("protocolSection.eligibilityModule", {"minimumAge": "65 Years", "maximumAge": "18 Years"}))
    assert rec.errors == [("protocolSection.eligibilityModule.minimumAge",
                           "minimumAge '65 Years' is above maximumAge '18 Years'")]


def test_bad_json_is_a_payload_error():
    with pytest.raises(PayloadError, match="not valid JSON"):
        map_payload("ctgov-v2", b'{"studies": [')


def test_one_bad_record_does_not_stop_the_page():
    page = copy.deepcopy(PAGE)
    page["studies"][1] = "not a study"
    page["studies"][3]["protocolSection"]["statusModule"]["overallStatus"] = "BOGUS"
    recs = map_payload("ctgov-v2", page)
    assert [bool(r.errors) for r in recs] == [False, True, False, True, False]
    assert recs[1].errors == [("studies[1]", "expected a study object with a 'protocolSection'")]
    assert recs[3].source_id == "NCT03493607" and recs[3].bundle is None


def test_single_study_array_and_page_give_the_same_records():
    ids = [r.source_id for r in map_payload("ctgov-v2", PAGE["studies"])]
    assert ids == [r.source_id for r in map_payload("ctgov-v2", PAGE)]
    assert [r.source_id for r in map_payload("ctgov-v2", STUDY)] == ids[:1]


def test_ndjson_with_a_bad_line_keeps_the_others():
    lines = [json.dumps(s) for s in PAGE["studies"][:3]]
    lines[1] = lines[1][:50]  # truncated line
    recs = map_payload("ctgov-v2", "\n".join(lines).encode())
    assert [r.source_id for r in recs] == ["NCT02710084", None, "NCT01525901"]
    [(path, msg)] = recs[1].errors
    assert path == "line 2" and msg.startswith("not valid JSON:")
