"""More REST behaviour: conditional delete, history _since, clinical search parameters, DELETE in transactions."""

from __future__ import annotations

import time

from tests.api.conftest import CheckedClient

SNOMED = "http://snomed.info/sct"
LOINC = "http://loinc.org"
CLINICAL = "http://terminology.hl7.org/CodeSystem/condition-clinical"


def _condition(code: str, status: str, patient: str = "Patient/p1") -> dict:
    return {"resourceType": "Condition", "subject": {"reference": patient},
            "code": {"coding": [{"system": SNOMED, "code": code}]},
            "clinicalStatus": {"coding": [{"system": CLINICAL, "code": status}]}}


def _observation(code: str, status: str, when: str) -> dict:
    return {"resourceType": "Observation", "status": status, "subject": {"reference": "Patient/p1"},
            "code": {"coding": [{"system": LOINC, "code": code}]}, "effectiveDateTime": when}


def test_condition_and_observation_search_parameters(fhir: CheckedClient):
    fhir.post("/fhir/Condition", json=_condition("393563007", "active"))
    fhir.post("/fhir/Condition", json=_condition("393563007", "resolved"))
    fhir.post("/fhir/Condition", json=_condition("94225005", "active", "Patient/p2"))
    c = "/fhir/Condition?"
    assert fhir.get(c + f"code={SNOMED}|393563007").get_json()["total"] == 2
    assert fhir.get(c + "code=393563007&clinical-status=active").get_json()["total"] == 1
    assert fhir.get(c + f"clinical-status={CLINICAL}|active").get_json()["total"] == 2
    assert fhir.get(c + "patient=p2").get_json()["total"] == 1
    assert fhir.get(c + "subject=Patient/p1&code=94225005").get_json()["total"] == 0

    fhir.post("/fhir/Observation", json=_observation("89247-1", "final", "2024-05-01T10:00:00Z"))
    fhir.post("/fhir/Observation", json=_observation("89247-1", "preliminary", "2025-01-15"))
    o = "/fhir/Observation?"
    assert fhir.get(o + f"code={LOINC}|89247-1").get_json()["total"] == 2
    assert fhir.get(o + "code=89247-1&status=final").get_json()["total"] == 1
    assert fhir.get(o + "date=ge2025-01-01").get_json()["total"] == 1
    assert fhir.get(o + "date=2024-05").get_json()["total"] == 1


def test_conditional_delete(fhir):
    for i in range(2):
        fhir.post("/fhir/Condition", json=_condition("1234", "active", f"Patient/cd{i}"))
    assert fhir.delete("/fhir/Condition?code=1234").status_code == 412, "two matches"
    r = fhir.delete("/fhir/Condition?code=1234&patient=cd0")
    assert r.status_code == 200 and "Deleted Condition/" in r.get_json()["issue"][0]["diagnostics"]
    assert fhir.get("/fhir/Condition?code=1234").get_json()["total"] == 1
    none = fhir.delete("/fhir/Condition?code=1234&patient=nobody")
    assert none.status_code == 200 and "nothing deleted" in none.get_json()["issue"][0]["diagnostics"]


def test_history_since(fhir):
    old = fhir.put("/fhir/Patient/old", json={"resourceType": "Patient", "id": "old"}).get_json()
    time.sleep(0.01)
    new = fhir.put("/fhir/Patient/new", json={"resourceType": "Patient", "id": "new"}).get_json()
    since_new = fhir.get("/fhir/Patient/_history", query_string={"_since": new["meta"]["lastUpdated"]})
    assert [e["resource"]["id"] for e in since_new.get_json()["entry"]] == ["new"]
    since_old = fhir.get("/fhir/Patient/_history", query_string={"_since": old["meta"]["lastUpdated"]})
    assert [e["resource"]["id"] for e in since_old.get_json()["entry"]] == ["new", "old"], "inclusive"
    later = fhir.get("/fhir/_history", query_string={"_since": "2999-01-01T00:00:00Z"}).get_json()
    assert later["total"] == 0


def test_transaction_with_deletes_and_client_ids(fhir, store):
    fhir.put("/fhir/Patient/gone", json={"resourceType": "Patient", "id": "gone"})
    fhir.post("/fhir/Condition", json=_condition("555", "active", "Patient/gone"))
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"request": {"method": "DELETE", "url": "Patient/gone"}},
        {"request": {"method": "DELETE", "url": "Condition?code=555"}},
        {"fullUrl": "urn:uuid:44444444-4444-4444-8444-444444444444",
         "request": {"method": "PUT", "url": "Patient/kept"}, "resource": {"resourceType": "Patient", "id": "kept"}},
        {"request": {"method": "POST", "url": "Condition"},
         "resource": _condition("556", "active", "urn:uuid:44444444-4444-4444-8444-444444444444")},
    ]}
    out = fhir.post("/fhir", json=bundle).get_json()
    assert [e["response"]["status"] for e in out["entry"]] == ["200 OK", "200 OK", "201 Created", "201 Created"]
    assert fhir.get("/fhir/Patient/gone").status_code == 410
    assert fhir.get("/fhir/Condition?code=555").get_json()["total"] == 0
    assert fhir.get("/fhir/Condition?code=556&patient=kept").get_json()["total"] == 1
