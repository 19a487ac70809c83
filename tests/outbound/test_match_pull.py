"""$match with patient-identifier + hospital: the record is pulled from the hospital on the fly."""

from __future__ import annotations

import json
from pathlib import Path

import requests
import responses

from gateway.fhir.conventions import NHS_NUMBER
from tests.conftest import FHIR_JSON
from tests.outbound.conftest import HOSPITAL_BASE

DEMO = Path(__file__).resolve().parents[2] / "fixtures" / "demo"
NHS = "9449306060"
FHIR = {"Content-Type": "application/fhir+json"}


def _hospital_record() -> dict[str, list[dict]]:
    """The demo Leeds patient as the hospital holds it: its own ids, references to its own Patient."""
    bundle = json.loads((DEMO / "03-leeds-patient-glioblastoma.json").read_text())
    out: dict[str, list[dict]] = {}
    for i, e in enumerate(bundle["entry"]):
        res = dict(e["resource"], id=f"h{i}")
        if res["resourceType"] == "Organization":
            continue
        if res["resourceType"] == "Patient":
            res.pop("managingOrganization", None)
        else:
            res["subject"] = {"reference": "Patient/h1"}
        out.setdefault(res["resourceType"], []).append(res)
    return out


def _searchset(resources: list[dict]) -> dict:
    return {"resourceType": "Bundle", "type": "searchset", "entry": [{"resource": r} for r in resources]}


def _params(**values: str) -> str:
    return json.dumps({"resourceType": "Parameters", "parameter": [
        {"name": k.replace("_", "-"), "valueString": v} for k, v in values.items()]})


@responses.activate
def test_match_pulls_the_record_from_the_hospital(client):
    r = client.post("/fhir", data=(DEMO / "01-sponsor-glioblastoma-study.json").read_bytes(), headers=FHIR_JSON)
    assert r.status_code == 200
    record = _hospital_record()
    for rtype in ("Patient", "Condition", "Observation"):
        responses.get(f"{HOSPITAL_BASE}/{rtype}", json=_searchset(record[rtype]), headers=FHIR)
    r = client.post("/fhir/ResearchStudy/$match", headers=FHIR_JSON,
                    data=_params(patient_identifier=f"{NHS_NUMBER}|{NHS}", hospital="leeds-test"))
    assert r.status_code == 200, r.get_json()
    titles = [e["resource"]["title"] for e in r.get_json()["entry"] if e["resource"]["resourceType"] ==
              "ResearchStudy"]
    assert any("glioblastoma" in t for t in titles)
    sent = [c.request for c in responses.calls]
    assert [req.path_url.split("?")[0] for req in sent] == ["/R4/Patient", "/R4/Condition", "/R4/Observation"]
    assert all(req.headers["Authorization"] == "Bearer leeds-token" for req in sent)
    # The hospital can be named by ODS code too.
    r = client.post("/fhir/ResearchStudy/$match", headers=FHIR_JSON,
                    data=_params(patient_identifier=NHS, hospital="RR8"))
    assert r.status_code == 200


@responses.activate
def test_match_pull_errors_are_clear_and_unknown_hospitals_send_nothing(client):
    r = client.post("/fhir/ResearchStudy/$match", headers=FHIR_JSON,
                    data=_params(patient_identifier=NHS, hospital="nowhere"))
    assert r.status_code == 422 and "Unknown hospital 'nowhere'" in r.get_json()["issue"][0]["diagnostics"]
    r = client.post("/fhir/ResearchStudy/$match", headers=FHIR_JSON,
                    data=_params(patient_identifier=NHS, hospital="elsewhere"))
    assert r.status_code == 422 and "GATEWAY_ALLOWED_HOSTS" in r.get_json()["issue"][0]["diagnostics"]
    assert len(responses.calls) == 0
    responses.get(f"{HOSPITAL_BASE}/Patient", json=_searchset([]), headers=FHIR)
    r = client.post("/fhir/ResearchStudy/$match", headers=FHIR_JSON,
                    data=_params(patient_identifier=NHS, hospital="leeds-test"))
    assert r.status_code == 404
    responses.replace(responses.GET, f"{HOSPITAL_BASE}/Patient", status=503, headers=FHIR,
                      json={"resourceType": "OperationOutcome", "issue": []})
    r = client.post("/fhir/ResearchStudy/$match", headers=FHIR_JSON,
                    data=_params(patient_identifier=NHS, hospital="leeds-test"))
    assert r.status_code == 502 and "503" in r.get_json()["issue"][0]["diagnostics"]
    responses.replace(responses.GET, f"{HOSPITAL_BASE}/Patient", body=requests.ConnectTimeout("down"))
    r = client.post("/fhir/ResearchStudy/$match", headers=FHIR_JSON,
                    data=_params(patient_identifier=NHS, hospital="leeds-test"))
    assert r.status_code == 504


@responses.activate
def test_only_the_person_their_hospital_or_an_administrator_may_pull(app):
    from flask import g

    from gateway.api.contact import pulled_bundle
    from gateway.fhir.errors import Forbidden
    from gateway.security.principal import Caller

    params = {"patient-identifier": [NHS], "hospital": ["leeds-test"]}
    refused = [Caller("app", "patient-app", nhs_number="9434765919"), Caller("h", "hospital", tenant="RBV"),
               Caller("s", "sponsor", tenant="NOTC"), Caller("t", "research-team")]
    for caller in refused:
        with app.test_request_context("/fhir/ResearchStudy/$match", method="POST"):
            g.caller = caller
            try:
                pulled_bundle(params)
            except Forbidden as exc:
                assert caller.role in exc.diagnostics
            else:
                raise AssertionError(f"{caller} was allowed")
    assert len(responses.calls) == 0
    record = _hospital_record()
    for rtype in ("Patient", "Condition", "Observation"):
        responses.get(f"{HOSPITAL_BASE}/{rtype}", json=_searchset(record[rtype]), headers=FHIR)
    for caller in (Caller("app", "patient-app", nhs_number=NHS), Caller("h", "hospital", tenant="RR8")):
        with app.test_request_context("/fhir/ResearchStudy/$match", method="POST"):
            g.caller = caller
            assert pulled_bundle(params)["entry"][0]["resource"]["resourceType"] == "Patient"
