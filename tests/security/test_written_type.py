"""Issue #13, item 2: the type written is the type checked. A body whose resourceType differs from the URL's
type is 400 naming both (REST create and update, transaction and batch entries), before the scopes are
checked; the scopes are checked against the type actually written (POST /fhir/Bundle: Bundle). Development
mode too."""

from __future__ import annotations

import pytest

from tests.security.conftest import FHIR, bearer

SMUGGLED = {
    "Location": {"resourceType": "Location", "name": "smuggled"},
    "CodeSystem": {"resourceType": "CodeSystem", "status": "active", "content": "complete", "url": "https://x/cs"},
    "ConceptMap": {"resourceType": "ConceptMap", "status": "active"},
    "Organization": {"resourceType": "Organization", "name": "smuggled"},
}


def _count(http, admin: dict, rtype: str) -> int:
    r = http.get(f"/fhir/{rtype}?_summary=count", headers=admin)
    assert r.status_code == 200, r.get_data(as_text=True)
    return r.get_json()["total"]


@pytest.mark.parametrize("rtype", sorted(SMUGGLED))
def test_sponsor_cannot_smuggle_another_type_through_its_endpoint(shared, rtype):
    """sponsor-a may create ResearchStudy; posting a Location (or CodeSystem ...) to /fhir/ResearchStudy is 400."""
    admin = bearer(shared.token("admin-console"))
    before = _count(shared.http, admin, rtype)
    sponsor = bearer(shared.token("sponsor-a"))
    r = shared.http.post("/fhir/ResearchStudy", json=SMUGGLED[rtype], headers=sponsor)
    assert r.status_code == 400, r.get_data(as_text=True)
    issue = r.get_json()["issue"][0]
    assert f"'{rtype}'" in issue["diagnostics"] and "'ResearchStudy'" in issue["diagnostics"]
    body = {**SMUGGLED[rtype], "id": "smuggled-1"}
    assert shared.http.put("/fhir/ResearchStudy/smuggled-1", json=body, headers=sponsor).status_code == 400
    assert _count(shared.http, admin, rtype) == before


def test_bundle_entries_are_checked_against_the_type_written(shared):
    sponsor = bearer(shared.token("sponsor-a"))
    for btype in ("transaction", "batch"):
        bundle = {"resourceType": "Bundle", "type": btype, "entry": [
            {"resource": SMUGGLED["Location"], "request": {"method": "POST", "url": "ResearchStudy"}}]}
        r = shared.http.post("/fhir", json=bundle, headers=sponsor)
        assert r.status_code == 400, (btype, r.get_data(as_text=True))
        assert "'Location'" in r.get_data(as_text=True)


def test_a_stored_bundle_is_checked_as_a_bundle(shared):
    """POST /fhir/Bundle writes a Bundle: a sponsor without Bundle scopes is refused, a hospital is not."""
    collection = {"resourceType": "Bundle", "type": "collection",
                  "entry": [{"resource": {"resourceType": "Location", "name": "x"}}]}
    r = shared.http.post("/fhir/Bundle", json=collection, headers=bearer(shared.token("sponsor-a")))
    assert r.status_code == 403
    r = shared.http.post("/fhir/Bundle", json=collection, headers=bearer(shared.token("leeds-ehr")))
    assert r.status_code == 201
    r = shared.http.post("/fhir/ResearchStudy", json=collection, headers=bearer(shared.token("sponsor-a")))
    assert r.status_code == 400


def test_narrow_scope_checks_the_written_type(shared):
    """'narrow' may only read Organizations: a create is 403 whatever its body, a mismatch 400."""
    h = bearer(shared.token("narrow"))
    assert shared.http.post("/fhir/Organization", json=SMUGGLED["Organization"], headers=h).status_code == 403
    assert shared.http.post("/fhir/Organization", json=SMUGGLED["Location"], headers=h).status_code == 400


def test_development_mode_refuses_a_mismatched_body(client):
    obs = {"resourceType": "Observation", "status": "final", "code": {"text": "x"}}
    r = client.post("/fhir/Patient", json=obs, headers=FHIR)
    assert r.status_code == 400, r.get_data(as_text=True)
    assert r.get_json()["resourceType"] == "OperationOutcome"
    assert client.get("/fhir/Observation?_summary=count", headers=FHIR).get_json()["total"] == 0
    assert client.post("/fhir/Observation", json=obs, headers=FHIR).status_code == 201
