"""Issue #13, item 5: authorization is decided before any version check. Another tenant's resource answers
exactly like a missing one (404, same diagnostics but for the id) for PUT, DELETE and PATCH with or without
If-Match, vread of any version, and history; it used to answer 412 with its current version."""

from __future__ import annotations

import json

import pytest

from tests.security.conftest import N_CHRISTIE, NHS_NUMBER, WORLD, bearer, get_token, idp_token, secret

BY_ID = {r["id"]: r for r in WORLD}
MISSING = "no-such-resource"
STALE = {"If-Match": 'W/"99"'}
CURRENT = {"If-Match": 'W/"1"'}

# (caller, type, another's resource the caller may not see)
CASES = [("leeds-ehr", "Patient", "christie-pat"), ("leeds-ehr", "Condition", "cond-christie"),
         ("patient", "Consent", "consent-leeds-other"), ("sponsor-a", "ResearchStudy", "study-b-draft")]


def _headers(shared, caller: str) -> dict:
    return bearer(idp_token(shared.keys) if caller == "patient" else shared.token(caller))


def _requests(rtype: str, rid: str, template: str) -> dict:
    body = {**json.loads(json.dumps(BY_ID[template])), "id": rid}
    body.pop("text", None)
    body["language"] = "en-GB"
    patch = [{"op": "add", "path": "/language", "value": "en-GB"}]
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"resource": body, "request": {"method": "PUT", "url": f"{rtype}/{rid}", "ifMatch": 'W/"99"'}}]}
    return {
        "PUT stale": ("PUT", f"/fhir/{rtype}/{rid}", body, STALE),
        "PUT current": ("PUT", f"/fhir/{rtype}/{rid}", body, CURRENT),
        "DELETE stale": ("DELETE", f"/fhir/{rtype}/{rid}", None, STALE),
        "DELETE current": ("DELETE", f"/fhir/{rtype}/{rid}", None, CURRENT),
        "PATCH stale": ("PATCH", f"/fhir/{rtype}/{rid}", patch, STALE),
        "PATCH": ("PATCH", f"/fhir/{rtype}/{rid}", patch, {}),
        "vread 1": ("GET", f"/fhir/{rtype}/{rid}/_history/1", None, {}),
        "vread 99": ("GET", f"/fhir/{rtype}/{rid}/_history/99", None, {}),
        "history": ("GET", f"/fhir/{rtype}/{rid}/_history", None, {}),
        "read": ("GET", f"/fhir/{rtype}/{rid}", None, {}),
        "transaction PUT stale": ("POST", "/fhir", bundle, {}),
    }


def _send(http, headers: dict, method: str, path: str, body, extra: dict):
    h = {**headers, **extra}
    if method == "PATCH":
        h["Content-Type"] = "application/json-patch+json"
        return http.open(path, method="PATCH", data=json.dumps(body), headers=h)
    return http.open(path, method=method, json=body, headers=h)


@pytest.mark.parametrize(("caller", "rtype", "other"), CASES, ids=[f"{c}-{t}" for c, t, _ in CASES])
def test_another_tenants_resource_answers_like_a_missing_one(shared, caller, rtype, other):
    headers = _headers(shared, caller)
    theirs, missing = _requests(rtype, other, other), _requests(rtype, MISSING, other)
    try:
        for name in theirs:
            r_other = _send(shared.http, headers, *theirs[name])
            r_missing = _send(shared.http, headers, *missing[name])
            text = r_other.get_data(as_text=True)
            assert r_other.status_code == 404, (name, text[:300])
            assert r_missing.status_code == 404, (name, r_missing.get_data(as_text=True)[:300])
            assert text.replace(other, MISSING) == r_missing.get_data(as_text=True), name
            assert secret(other) not in text and "ETag" not in r_other.headers
    finally:
        shared.restore(other)


def test_the_owner_still_gets_412_for_a_stale_if_match(shared):
    h = bearer(shared.token("christie-ehr"))
    body = {**json.loads(json.dumps(BY_ID["christie-pat"])), "language": "en-GB"}
    try:
        r = shared.http.put("/fhir/Patient/christie-pat", json=body, headers={**h, **STALE})
        assert r.status_code == 412
        assert shared.http.delete("/fhir/Patient/christie-pat", headers={**h, **STALE}).status_code == 412
    finally:
        shared.restore("christie-pat")


def test_a_visible_resource_of_another_owner_is_403_before_its_version(shared):
    """sponsor-a may see sponsor-b's active study but not change it: 403, whatever the If-Match says."""
    h = bearer(shared.token("sponsor-a"))
    body = {**json.loads(json.dumps(BY_ID["study-b"])), "title": "taken"}
    for extra in ({}, STALE, CURRENT):
        assert shared.http.put("/fhir/ResearchStudy/study-b", json=body, headers={**h, **extra}).status_code == 403
        assert shared.http.delete("/fhir/ResearchStudy/study-b", headers={**h, **extra}).status_code == 403


def test_conditional_requests_match_only_what_the_caller_sees(http, keys, world):
    """If-None-Exist / conditional update / conditional delete on another hospital's patient's NHS number: the
    match is invisible, so it is as if there were none (Leeds gets a record of its own), never that patient's
    id, version or a 404/412 telling that someone else knows the person."""
    h = bearer(get_token(http, keys, "leeds-ehr"))
    ident = f"{NHS_NUMBER}|{N_CHRISTIE}"
    patient = {"resourceType": "Patient", "identifier": [{"system": NHS_NUMBER, "value": N_CHRISTIE}]}
    r = http.post("/fhir/Patient", json=patient, headers={**h, "If-None-Exist": f"identifier={ident}"})
    assert r.status_code == 201, r.get_data(as_text=True)
    mine = r.get_json()["id"]
    assert mine != "christie-pat" and "christie-pat" not in r.get_data(as_text=True)
    # now Leeds has its own record: the same request finds it (and only it)
    again = http.post("/fhir/Patient", json=patient, headers={**h, "If-None-Exist": f"identifier={ident}"})
    assert again.status_code == 200 and again.get_json()["id"] == mine
    r = http.put(f"/fhir/Patient?identifier={ident}", json={**patient, "gender": "female"}, headers=h)
    assert r.status_code == 200 and r.get_json()["id"] == mine
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"resource": patient, "request": {"method": "POST", "url": "Patient", "ifNoneExist": f"identifier={ident}"}}]}
    r = http.post("/fhir", json=bundle, headers=h)
    assert r.status_code == 200 and mine in r.get_json()["entry"][0]["response"]["location"]
    assert "christie-pat" not in r.get_data(as_text=True)
    r = http.delete(f"/fhir/Patient?identifier={ident}", headers=h)
    assert r.status_code in (200, 204)
    christie = bearer(get_token(http, keys, "christie-ehr"))
    assert http.get("/fhir/Patient/christie-pat", headers=christie).status_code == 200  # untouched
