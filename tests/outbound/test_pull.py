"""Pulling a patient's record from their hospital, ready for $match."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime

import pytest
import responses
from responses import matchers

from gateway.fhir.conventions import NHS_NUMBER
from gateway.outbound.allowlist import AllowList
from gateway.outbound.destinations import Destinations
from gateway.outbound.errors import Conflict, DestinationNotAllowed, PatientNotFound
from gateway.outbound.hospitals import Hospitals, parse_hospital
from gateway.outbound.pull import pull_patient_bundle
from gateway.outbound.settings import OutboundSettings

BASE = "https://fhir.leeds.test/R4"
FHIR = {"Content-Type": "application/fhir+json"}
NHS = "9449306060"
NOW = datetime(2026, 11, 23, tzinfo=UTC)


@pytest.fixture
def dest():
    h = parse_hospital({"name": "leeds", "ods_code": "RR8", "fhir_base_url": BASE,
                        "pull": {"observation_days": 30, "page_size": 2}})
    return Destinations(OutboundSettings(allowed_hosts=AllowList.parse("fhir.leeds.test"), client_retries=0),
                        hospitals=Hospitals({"leeds": h}))


def _bundle(resources: list[dict], next_url: str | None = None) -> dict:
    b = {"resourceType": "Bundle", "type": "searchset", "entry": [{"resource": r, "search": {"mode": "match"}}
                                                                   for r in resources]}
    if next_url:
        b["link"] = [{"relation": "next", "url": next_url}]
    return b


def _cond(i: str) -> dict:
    return {"resourceType": "Condition", "id": i, "subject": {"reference": "Patient/p9"},
            "clinicalStatus": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-clinical",
                                           "code": "active"}]},
            "code": {"coding": [{"system": "http://snomed.info/sct", "code": "393563007"}]}}


@responses.activate
def test_pull_gathers_patient_active_conditions_and_recent_observations_across_pages(dest):
    patient = {"resourceType": "Patient", "id": "p9", "identifier": [{"system": NHS_NUMBER, "value": NHS}]}
    responses.get(f"{BASE}/Patient", json=_bundle([patient]), headers=FHIR,
                  match=[matchers.query_param_matcher({"identifier": f"{NHS_NUMBER}|{NHS}"})])
    responses.get(f"{BASE}/Condition", json=_bundle([_cond("c1"), _cond("c2")], f"{BASE}/Condition?page=2"),
                  headers=FHIR, match=[matchers.query_param_matcher(
                      {"patient": "Patient/p9", "clinical-status": "active", "_count": "2"})])
    responses.get(f"{BASE}/Condition", json=_bundle([_cond("c3")]), headers=FHIR,
                  match=[matchers.query_param_matcher({"page": "2"})])
    ecog = {"resourceType": "Observation", "id": "o1", "status": "final", "subject": {"reference": "Patient/p9"},
            "code": {"coding": [{"system": "http://loinc.org", "code": "89247-1"}]}, "valueInteger": 1}
    responses.get(f"{BASE}/Observation", json=_bundle([ecog]), headers=FHIR, match=[matchers.query_param_matcher(
        {"patient": "Patient/p9", "date": "ge2026-10-24", "_count": "2"})])
    bundle = pull_patient_bundle("leeds", NHS, destinations=dest, now=NOW)
    assert bundle["type"] == "collection"
    assert [e["fullUrl"] for e in bundle["entry"]] == [f"{BASE}/Patient/p9", f"{BASE}/Condition/c1",
                                                       f"{BASE}/Condition/c2", f"{BASE}/Condition/c3",
                                                       f"{BASE}/Observation/o1"]
    assert len(responses.calls) == 4


@responses.activate
def test_pull_of_an_unknown_or_ambiguous_patient_says_so(dest):
    responses.get(f"{BASE}/Patient", json=_bundle([]), headers=FHIR)
    with pytest.raises(PatientNotFound):
        pull_patient_bundle("leeds", NHS, destinations=dest)
    responses.replace(responses.GET, f"{BASE}/Patient", headers=FHIR, json=_bundle([
        {"resourceType": "Patient", "id": "a"}, {"resourceType": "Patient", "id": "b"}]))
    with pytest.raises(Conflict):
        pull_patient_bundle("leeds", NHS, destinations=dest)


@responses.activate
def test_pull_from_a_host_not_allow_listed_sends_nothing(dest):
    dest.settings = dataclasses.replace(dest.settings, allowed_hosts=AllowList.parse("elsewhere.test"))
    with pytest.raises(DestinationNotAllowed):
        pull_patient_bundle("leeds", NHS, destinations=dest)
    assert len(responses.calls) == 0
