"""REST interactions end to end through the Flask test client, on every configured backend."""

from __future__ import annotations

from tests.conftest import FHIR_JSON

NHS = "https://fhir.nhs.uk/Id/nhs-number"


def _patient(**extra) -> dict:
    return {"resourceType": "Patient", "gender": "female", "name": [{"family": "Smith", "given": ["Ann"]}],
            "identifier": [{"system": NHS, "value": "9000000009"}], **extra}


def test_create_read_update_delete_cycle(client):
    r = client.post("/fhir/Patient", json=_patient(), headers=FHIR_JSON)
    assert r.status_code == 201
    pid = r.get_json()["id"]
    assert r.headers["Location"].endswith(f"/fhir/Patient/{pid}/_history/1")
    assert r.headers["ETag"] == 'W/"1"'

    r = client.get(f"/fhir/Patient/{pid}")
    assert r.status_code == 200 and r.get_json()["meta"]["versionId"] == "1"
    assert r.headers["Last-Modified"].endswith("GMT")

    body = {**_patient(gender="male"), "id": pid}
    r = client.put(f"/fhir/Patient/{pid}", json=body, headers={**FHIR_JSON, "If-Match": 'W/"1"'})
    assert r.status_code == 200 and r.headers["ETag"] == 'W/"2"'

    stale = client.put(f"/fhir/Patient/{pid}", json=body, headers={**FHIR_JSON, "If-Match": 'W/"1"'})
    assert stale.status_code == 412
    assert stale.get_json()["resourceType"] == "OperationOutcome"

    same = client.put(f"/fhir/Patient/{pid}", json=body, headers=FHIR_JSON)
    assert same.status_code == 200 and same.headers["ETag"] == 'W/"2"', "unchanged content makes no version"

    assert client.get(f"/fhir/Patient/{pid}/_history/1").get_json()["gender"] == "female"
    assert client.get(f"/fhir/Patient/{pid}/_history").get_json()["total"] == 2

    assert client.delete(f"/fhir/Patient/{pid}").status_code == 204
    gone = client.get(f"/fhir/Patient/{pid}")
    assert gone.status_code == 410
    assert gone.get_json()["issue"][0]["code"] == "deleted"


def test_bad_code_is_422_with_expression(client):
    r = client.post("/fhir/Patient", json=_patient(gender="bogus"), headers=FHIR_JSON)
    assert r.status_code == 422
    issue = r.get_json()["issue"][0]
    assert issue["expression"] == ["Patient.gender"] and "bogus" in issue["diagnostics"]


def test_structural_error_is_400_with_expression(client):
    r = client.post("/fhir/Patient", json=_patient(birthDate="not-a-date"), headers=FHIR_JSON)
    assert r.status_code == 400
    assert r.get_json()["issue"][0]["expression"] == ["Patient.birthDate"]


def test_media_types(client):
    assert client.post("/fhir/Patient", data="x", headers={"Content-Type": "text/plain"}).status_code == 415
    assert client.get("/fhir/metadata", headers={"Accept": "application/fhir+xml"}).status_code == 406
    assert client.get("/fhir/metadata", headers={"Accept": "text/html,*/*;q=0.8"}).status_code == 200


def test_unknown_type_and_r4_only_type(client):
    assert client.get("/fhir/Nonsense/1").status_code == 404
    r = client.post("/fhir/MedicinalProduct", json={"resourceType": "MedicinalProduct"}, headers=FHIR_JSON)
    assert r.status_code == 404 and "R4B" in r.get_json()["issue"][0]["diagnostics"]


def test_search_identifier_forms_and_paging(client):
    for i in range(5):
        client.post("/fhir/Patient", json=_patient(identifier=[{"system": NHS, "value": f"90000000{i}"}]),
                    headers=FHIR_JSON)
    for q in (f"{NHS}|900000003", "|900000003", "900000003"):
        total = client.get("/fhir/Patient", query_string={"identifier": q}).get_json()["total"]
        assert total == (0 if q.startswith("|") else 1), q
    page = client.get("/fhir/Patient?_count=2").get_json()
    assert page["total"] == 5 and len(page["entry"]) == 2
    seen = [e["resource"]["id"] for e in page["entry"]]
    nxt = next(link["url"] for link in page["link"] if link["relation"] == "next")
    while nxt:
        page = client.get(nxt.split("localhost", 1)[1]).get_json()
        seen += [e["resource"]["id"] for e in page["entry"]]
        nxt = next((link["url"] for link in page["link"] if link["relation"] == "next"), None)
    assert len(seen) == len(set(seen)) == 5
    assert client.get("/fhir/Patient?_summary=count").get_json()["total"] == 5


def test_unknown_search_param_reported_or_strict(client):
    lax = client.get("/fhir/Patient?foo=bar").get_json()
    assert lax["entry"][-1]["search"]["mode"] == "outcome"
    strict = client.get("/fhir/Patient?foo=bar", headers={"Prefer": "handling=strict"})
    assert strict.status_code == 400
