"""CodeSystem/$subsumes over HTTP (R4: system, codeA, codeB or codingA/codingB -> Parameters outcome)."""

from __future__ import annotations

import pytest

from gateway.fhir.conventions import ICD10, MESH, ONCOTREE, SNOMED
from tests.conftest import FHIR_JSON


def _outcome(resp) -> str:
    assert resp.status_code == 200, resp.get_json()
    body = resp.get_json()
    assert body["resourceType"] == "Parameters"
    return next(p["valueCode"] for p in body["parameter"] if p["name"] == "outcome")


@pytest.mark.parametrize(("system", "a", "b", "expected"), [
    (ONCOTREE, "DIFG", "GB", "subsumes"),
    (ONCOTREE, "GB", "DIFG", "subsumed-by"),
    (ONCOTREE, "GB", "GB", "equivalent"),
    (ONCOTREE, "GB", "BREAST", "not-subsumed"),
    (ICD10, "C69-C72", "C71.9", "subsumes"),
    (SNOMED, "393563007", "126952004", "subsumed-by"),
    (SNOMED, "94225005", "126952004", "not-subsumed"),  # brain metastases are not a brain neoplasm
    (MESH, "D000005910", "D005909", "subsumes"),  # padded MeSH id accepted
])
def test_get(client, system, a, b, expected):
    r = client.get("/fhir/CodeSystem/$subsumes", query_string={"system": system, "codeA": a, "codeB": b},
                   headers=FHIR_JSON)
    assert _outcome(r) == expected


def test_post_parameters_with_codings_and_alias_system(client):
    body = {"resourceType": "Parameters", "parameter": [
        {"name": "codingA", "valueCoding": {"system": "http://id.nlm.nih.gov/mesh", "code": "D005910"}},
        {"name": "codingB", "valueCoding": {"system": MESH, "code": "D000001254"}},
    ]}
    r = client.post("/fhir/CodeSystem/$subsumes", json=body, headers=FHIR_JSON)
    assert _outcome(r) == "subsumes"


def test_post_with_system_and_codes(client):
    body = {"resourceType": "Parameters", "parameter": [
        {"name": "system", "valueUri": SNOMED}, {"name": "codeA", "valueCode": "276828006"},
        {"name": "codeB", "valueCode": "276826005"}]}
    assert _outcome(client.post("/fhir/CodeSystem/$subsumes", json=body, headers=FHIR_JSON)) == "subsumed-by"


def test_instance_level_takes_the_system_of_the_codesystem(client):
    r = client.get("/fhir/CodeSystem/oncotree/$subsumes?codeA=BRAIN&codeB=GB", headers=FHIR_JSON)
    assert _outcome(r) == "subsumes"


def test_unknown_code_is_422_with_expression(client):
    r = client.get(f"/fhir/CodeSystem/$subsumes?system={ONCOTREE}&codeA=NOPE&codeB=GB", headers=FHIR_JSON)
    assert r.status_code == 422
    issue = r.get_json()["issue"][0]
    assert issue["code"] == "code-invalid" and issue["expression"] == ["codeA"]


def test_unknown_system_is_404(client):
    r = client.get("/fhir/CodeSystem/$subsumes?system=https://example.org/none&codeA=a&codeB=b",
                   headers=FHIR_JSON)
    assert r.status_code == 404
    assert r.get_json()["resourceType"] == "OperationOutcome"


@pytest.mark.parametrize("query", [
    "codeA=GB&codeB=DIFG",  # no system
    f"system={ONCOTREE}&codeA=GB",  # no codeB
    f"system={ONCOTREE}&codeA=GB&codeA=DIFG&codeB=GB",  # repeated
])
def test_bad_requests_are_400(client, query):
    r = client.get(f"/fhir/CodeSystem/$subsumes?{query}", headers=FHIR_JSON)
    assert r.status_code == 400
    assert r.get_json()["resourceType"] == "OperationOutcome"


def test_codings_of_two_systems_are_refused(client):
    body = {"resourceType": "Parameters", "parameter": [
        {"name": "codingA", "valueCoding": {"system": SNOMED, "code": "393563007"}},
        {"name": "codingB", "valueCoding": {"system": MESH, "code": "D005910"}}]}
    assert client.post("/fhir/CodeSystem/$subsumes", json=body, headers=FHIR_JSON).status_code == 400


def test_a_codesystem_stored_through_the_api(client):
    cs = {"resourceType": "CodeSystem", "url": "https://trust.example/fhir/CodeSystem/local-tumours",
          "status": "active", "content": "complete", "hierarchyMeaning": "is-a",
          "concept": [{"code": "CNS", "display": "CNS tumour", "concept": [
              {"code": "GLI", "display": "Glioma", "concept": [{"code": "GBM", "display": "Glioblastoma"}]}]}]}
    assert client.post("/fhir/CodeSystem", json=cs, headers=FHIR_JSON).status_code == 201
    r = client.get("/fhir/CodeSystem/$subsumes", query_string={"system": cs["url"], "codeA": "CNS", "codeB": "GBM"},
                   headers=FHIR_JSON)
    assert _outcome(r) == "subsumes"


def test_listed_in_the_capability_statement(client):
    cap = client.get("/fhir/metadata", headers=FHIR_JSON).get_json()
    ops = [op for res in cap["rest"][0]["resource"] if res["type"] == "CodeSystem" for op in res.get("operation", [])]
    assert any(op["name"] == "subsumes" for op in ops)
