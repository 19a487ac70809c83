"""ConceptMap/$translate over mappings/** and ConceptMaps stored through the REST API."""

from __future__ import annotations

import json

from tests.conftest import FHIR_JSON

LOCAL = "https://fhir.example-trust.nhs.uk/CodeSystem/problem-list-codes"
SNOMED = "http://snomed.info/sct"
ICD10 = "http://hl7.org/fhir/sid/icd-10"


def _matches(resp) -> list[tuple[str, str, str]]:
    out = []
    for p in resp.json["parameter"]:
        if p["name"] == "match":
            parts = {x["name"]: x for x in p["part"]}
            c = parts["concept"]["valueCoding"]
            out.append((parts["equivalence"]["valueCode"], c["system"], c["code"]))
    return out


def _result(resp) -> bool:
    return next(p["valueBoolean"] for p in resp.json["parameter"] if p["name"] == "result")


def test_get_translate_from_a_mappings_conceptmap(client):
    resp = client.get(f"/fhir/ConceptMap/$translate?code=ONC-GBM&system={LOCAL}", headers=FHIR_JSON)
    assert resp.status_code == 200 and resp.json["resourceType"] == "Parameters"
    assert _result(resp) is True
    assert _matches(resp) == [("equivalent", SNOMED, "393563007"), ("equivalent", ICD10, "C71.9")]
    only_icd = client.get(f"/fhir/ConceptMap/$translate?code=ONC-GBM&system={LOCAL}&targetsystem={ICD10}")
    assert _matches(only_icd) == [("equivalent", ICD10, "C71.9")]


def test_post_parameters_with_coding_and_url(client):
    body = {"resourceType": "Parameters", "parameter": [
        {"name": "coding", "valueCoding": {"system": LOCAL, "code": "RESP-COPD"}},
        {"name": "url", "valueUri": "https://trialgateway.org/fhir/ConceptMap/example-trust-problem-list"},
        {"name": "targetsystem", "valueUri": SNOMED}]}
    resp = client.post("/fhir/ConceptMap/$translate", data=json.dumps(body), headers=FHIR_JSON)
    assert resp.status_code == 200
    assert _matches(resp) == [("equivalent", SNOMED, "13645005")]


def test_no_translation(client):
    resp = client.get(f"/fhir/ConceptMap/$translate?code=MISC-FALLS&system={LOCAL}")
    assert _result(resp) is False and _matches(resp) == []
    assert any(p["name"] == "message" for p in resp.json["parameter"])


def test_stored_conceptmap_is_used_and_instance_level_works(client):
    cm = {"resourceType": "ConceptMap", "url": "https://trust.example/ConceptMap/legacy", "status": "active",
          "description": "Legacy ward codes to SNOMED CT (test).",
          "group": [{"source": "https://trust.example/legacy", "target": SNOMED,
                     "element": [{"code": "GBM1", "target": [{"code": "393563007", "equivalence": "equivalent"}]}]}]}
    created = client.post("/fhir/ConceptMap", data=json.dumps(cm), headers=FHIR_JSON)
    assert created.status_code == 201
    resp = client.get("/fhir/ConceptMap/$translate?code=GBM1&system=https://trust.example/legacy")
    assert _matches(resp) == [("equivalent", SNOMED, "393563007")]
    inst = client.get(f"/fhir/ConceptMap/{created.json['id']}/$translate?code=GBM1&system=https://trust.example/legacy")
    assert _matches(inst) == [("equivalent", SNOMED, "393563007")]
    other = client.get(f"/fhir/ConceptMap/{created.json['id']}/$translate?code=ONC-GBM&system={LOCAL}")
    assert _result(other) is False  # the instance only sees its own map


def test_missing_system_is_a_400(client):
    resp = client.get("/fhir/ConceptMap/$translate?code=ONC-GBM")
    assert resp.status_code == 400
    assert resp.json["issue"][0]["diagnostics"] == "'system' is required with 'code'"


def test_listed_in_capability_statement(client):
    cap = client.get("/fhir/metadata").json
    [cm] = [r for r in cap["rest"][0]["resource"] if r["type"] == "ConceptMap"]
    assert "translate" in [o["name"] for o in cm.get("operation", [])]
