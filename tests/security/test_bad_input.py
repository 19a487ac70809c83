"""Issue #13, items 6 and 7: bad input is a 400 (or 413) OperationOutcome on both backends, never a 500.

- search values are bounded (GATEWAY_MAX_SEARCH_VALUE_LENGTH) and so are the parameters of one search
  (GATEWAY_MAX_SEARCH_PARAMETERS): SQLite used to fail on a 60,000-character LIKE pattern, PostgreSQL to plan
  thousands of ANDed criteria out of memory;
- a NUL character (U+0000) in a resource, a search value, a parameter name, a path or ``_since`` is refused
  alike (PostgreSQL used to fail, SQLite to store it);
- duplicate fullUrls in a transaction or batch are 400 (FHIR bdl-7); GATEWAY_MAX_BUNDLE_ENTRIES applies to a
  Bundle stored with POST/PUT /fhir/Bundle and to one inside a transaction (413).
"""

from __future__ import annotations

import dataclasses

import pytest

from gateway.api.app import create_app
from tests.security.conftest import FHIR, bearer, close_app

FORM = {"Content-Type": "application/x-www-form-urlencoded", "Accept": "application/fhir+json"}


def _oo(r, status: int = 400) -> dict:
    assert r.status_code == status, r.get_data(as_text=True)[:400]
    body = r.get_json()
    assert body["resourceType"] == "OperationOutcome"
    return body["issue"][0]


@pytest.fixture
def seeded(client):
    """Development-mode client with a Patient, so that string searches really run their LIKE."""
    r = client.post("/fhir/Patient", json={"resourceType": "Patient", "name": [{"family": "Smith"}]}, headers=FHIR)
    assert r.status_code == 201
    return client


def test_long_search_values_are_400(seeded):
    issue = _oo(seeded.get("/fhir/Patient", query_string={"name": "a" * 60_000}, headers=FHIR))
    assert "GATEWAY_MAX_SEARCH_VALUE_LENGTH" in issue["diagnostics"] and "a" * 50 not in issue["diagnostics"]
    _oo(seeded.post("/fhir/Patient/_search", data="name=" + "a" * (11 * 1024 * 1024), headers=FORM))
    _oo(seeded.get("/fhir/Patient", query_string={"name:contains": "%_" * 30_000}, headers=FHIR))
    _oo(seeded.get("/fhir/Patient", query_string={"_id": ",".join(str(i) for i in range(40_000))}, headers=FHIR))
    # at the limit: answered
    assert seeded.get("/fhir/Patient", query_string={"name": "a" * 4096}, headers=FHIR).status_code == 200
    assert seeded.get("/fhir/Patient", query_string={"name": "a" * 4097}, headers=FHIR).status_code == 400


def test_too_many_search_parameters_are_400(seeded):
    issue = _oo(seeded.post("/fhir/Patient/_search", data="&".join(["name=a"] * 33), headers=FORM))
    assert "GATEWAY_MAX_SEARCH_PARAMETERS" in issue["diagnostics"]
    assert seeded.post("/fhir/Patient/_search", data="&".join(["name=s"] * 32), headers=FORM).status_code == 200


def test_search_limits_are_settings(settings):
    app = create_app(dataclasses.replace(settings, max_search_value_length=10, max_search_parameters=2))
    try:
        c = app.test_client()
        assert c.get("/fhir/Patient?name=abcdefghij", headers=FHIR).status_code == 200
        assert c.get("/fhir/Patient?name=abcdefghijk", headers=FHIR).status_code == 400
        assert c.get("/fhir/Patient?name=a&family=b&gender=female", headers=FHIR).status_code == 400
    finally:
        close_app(app)
        close_app(create_app(settings))  # the bounds are per process: back to the defaults for later tests


@pytest.mark.parametrize("query", [{"name": "a\x00b"}, {"identifier": "https://fhir.nhs.uk/Id/nhs-number|9\x00"},
                                   {"na\x00me": "x"}, {"_since": "2020-01-01\x00"}])
def test_nul_in_the_url_is_400(seeded, query):
    _oo(seeded.get("/fhir/Patient", query_string=query, headers=FHIR))
    _oo(seeded.get("/fhir/Patient/_history", query_string=query, headers=FHIR))


def test_nul_in_paths_forms_and_conditions_is_400(seeded):
    _oo(seeded.get("/fhir/Patient/a%00b", headers=FHIR))
    _oo(seeded.get("/fhir/Patient/a%00b/_history/1", headers=FHIR))
    _oo(seeded.delete("/fhir/Patient/a%00b", headers=FHIR))
    _oo(seeded.post("/fhir/Patient/_search", data="name=a%00b", headers=FORM))
    _oo(seeded.post("/fhir/Patient", json={"resourceType": "Patient"},
                    headers={**FHIR, "If-None-Exist": "identifier=x%00y"}))
    bundle = {"resourceType": "Bundle", "type": "batch", "entry": [
        {"request": {"method": "GET", "url": "Patient?name=a%00b"}}]}
    r = seeded.post("/fhir", json=bundle, headers=FHIR)
    assert r.status_code == 200
    assert r.get_json()["entry"][0]["response"]["status"].startswith("400")


def test_nul_in_a_resource_is_400_and_names_the_element(seeded):
    bad = {"resourceType": "Patient", "name": [{"family": "a\x00b"}]}
    issue = _oo(seeded.post("/fhir/Patient", json=bad, headers=FHIR))
    assert issue["expression"] == ["Patient.name[0].family"]
    _oo(seeded.put("/fhir/Patient/p1", json={**bad, "id": "p1"}, headers=FHIR))
    _oo(seeded.post("/fhir/Patient", json={"resourceType": "Patient", "extension": [
        {"url": "https://x/e", "valueString": "ok", "\x00": 1}]}, headers=FHIR))
    tx = {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"resource": bad, "request": {"method": "POST", "url": "Patient"}}]}
    _oo(seeded.post("/fhir", json=tx, headers=FHIR))
    # the six characters backslash-u-0-0-0-0 are text, not a NUL
    ok = seeded.post("/fhir/Patient", json={"resourceType": "Patient", "name": [{"family": "a\\u0000b"}]},
                     headers=FHIR)
    assert ok.status_code == 201 and ok.get_json()["name"][0]["family"] == "a\\u0000b"
    assert seeded.get("/fhir/Patient?_summary=count", headers=FHIR).get_json()["total"] == 2


def _tx(btype: str, entries: list) -> dict:
    return {"resourceType": "Bundle", "type": btype, "entry": entries}


@pytest.mark.parametrize("btype", ["transaction", "batch"])
def test_duplicate_full_urls_are_400(client, btype):
    patient = {"resourceType": "Patient", "name": [{"family": "Dup"}]}
    entries = [{"fullUrl": "urn:uuid:7f0c2b8e-0000-4000-8000-000000000001", "resource": patient,
                "request": {"method": "POST", "url": "Patient"}}] * 2
    issue = _oo(client.post("/fhir", json=_tx(btype, entries), headers=FHIR))
    assert issue["expression"] == ["Bundle.entry[1].fullUrl"] and "entry[0]" in issue["diagnostics"]
    assert client.get("/fhir/Patient?_summary=count", headers=FHIR).get_json()["total"] == 0
    distinct = [entries[0], {**entries[1], "fullUrl": "urn:uuid:7f0c2b8e-0000-4000-8000-000000000002"}]
    assert client.post("/fhir", json=_tx(btype, distinct), headers=FHIR).status_code == 200


def test_stored_bundles_obey_the_entry_limit(client):
    entry = {"resource": {"resourceType": "Basic", "code": {"text": "x"}}}
    big = {"resourceType": "Bundle", "type": "collection", "entry": [entry] * 5000}
    issue = _oo(client.post("/fhir/Bundle", json=big, headers=FHIR), 413)
    assert "GATEWAY_MAX_BUNDLE_ENTRIES" in issue["diagnostics"]
    _oo(client.put("/fhir/Bundle/big", json={**big, "id": "big"}, headers=FHIR), 413)
    _oo(client.put("/fhir/Bundle?identifier=x|y", json=big, headers=FHIR), 413)
    nested = _tx("transaction", [{"resource": big, "request": {"method": "POST", "url": "Bundle"}}])
    _oo(client.post("/fhir", json=nested, headers=FHIR), 413)
    ok = {**big, "entry": [entry] * 1000}
    assert client.post("/fhir/Bundle", json=ok, headers=FHIR).status_code == 201
    assert client.get("/fhir/Bundle?_summary=count", headers=FHIR).get_json()["total"] == 1


def test_bundle_limit_is_the_setting(settings):
    app = create_app(dataclasses.replace(settings, max_bundle_entries=3))
    c = app.test_client()
    entry = {"resource": {"resourceType": "Basic", "code": {"text": "x"}}}
    assert c.post("/fhir/Bundle", json={"resourceType": "Bundle", "type": "collection", "entry": [entry] * 4},
                  headers=FHIR).status_code == 413
    assert c.post("/fhir/Bundle", json={"resourceType": "Bundle", "type": "collection", "entry": [entry] * 3},
                  headers=FHIR).status_code == 201
    close_app(app)


def test_restricted_callers_get_the_same_answers(shared):
    """The same refusals behind a token (hospital): 400, never 500."""
    h = bearer(shared.token("leeds-ehr"))
    _oo(shared.http.get("/fhir/Patient", query_string={"name": "a" * 60_000}, headers=h))
    _oo(shared.http.get("/fhir/Patient", query_string={"name": "a\x00"}, headers=h))
    _oo(shared.http.post("/fhir/Patient", json={"resourceType": "Patient", "name": [{"family": "\x00"}]},
                         headers=h))


def test_nul_in_any_json_body_is_400(seeded):
    """Operation parameters, erasure requests and uploads too: never a driver error on PostgreSQL."""
    bodies = {
        "/fhir/ResearchStudy/$match": {"resourceType": "Parameters", "parameter": [
            {"name": "patient", "valueString": "Patient/a\x00"}]},
        "/fhir/ConceptMap/$translate": {"resourceType": "Parameters", "parameter": [
            {"name": "code", "valueCode": "a"}, {"name": "system", "valueUri": "http://x\x00"}]},
        "/admin/erasure": {"resourceType": "Parameters", "parameter": [
            {"name": "patient", "valueReference": {"reference": "Patient/a\x00"}}]},
        "/fhir": {"resourceType": "Bundle", "type": "batch", "entry": [
            {"request": {"method": "GET", "url": "Patient/a\x00"}}]},
    }
    for path, body in bodies.items():
        issue = _oo(seeded.post(path, json=body, headers=FHIR))
        assert "NUL" in issue["diagnostics"], path
    issue = _oo(seeded.post("/ingest/ctgov-v2", data=b'{"protocolSection": {"identificationModule": '
                            b'{"nctId": "NCT0\\u0000"}}}', headers={**FHIR, "Content-Type": "application/json"}))
    assert issue["expression"] == ["body.protocolSection.identificationModule.nctId"]


@pytest.mark.parametrize("meta", [["x"], "text", 7, {"tag": "not-a-list"}, {"tag": [["nested"]]}])
def test_malformed_meta_is_400_not_500_for_a_tenant_caller(shared, meta):
    """Found by the fuzzer: the tenant stamp ran on a malformed ``meta`` before validation (500)."""
    h = bearer(shared.token("leeds-ehr"))
    _oo(shared.http.post("/fhir/Patient", json={"resourceType": "Patient", "meta": meta}, headers=h))
