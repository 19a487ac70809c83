"""PATCH and conditional read go through the same authorization as update and read: another organisation's
resource is 404 before any version check (no 412, no 304 that would reveal it exists), a missing scope is 403,
and the caller's tenant stays stamped on what a patch writes. Both backends, real tokens."""

from __future__ import annotations

from gateway.fhir.conventions import TENANT_TAG
from tests.security import conftest as sec
from tests.security.conftest import bearer, get_token

# the security fixtures (clients with keys, a seeded two-hospital / two-sponsor world), used here as they are
keys, sec_settings, sec_app, http, world = sec.keys, sec.sec_settings, sec.sec_app, sec.http, sec.world

JSON_PATCH = "application/json-patch+json"


def _patch(http, token: str, path: str, ops: list, **headers):
    return http.patch(path, json=ops, headers={**bearer(token), "Content-Type": JSON_PATCH, **headers})


def _tags(resource: dict) -> list[str]:
    return [t["code"] for t in resource.get("meta", {}).get("tag", []) if t.get("system") == TENANT_TAG]


def test_patch_is_authorized_like_update(http, keys, world):
    leeds = get_token(http, keys, "leeds-ehr")
    rename = [{"op": "replace", "path": "/name/0/family", "value": "Patched"}]
    r = _patch(http, leeds, "/fhir/Patient/leeds-me", rename, **{"If-Match": 'W/"1"'})
    assert r.status_code == 200, r.get_json()
    assert r.get_json()["name"][0]["family"] == "Patched" and r.get_json()["meta"]["versionId"] == "2"
    # another hospital's patient: 404 whatever the If-Match says (never 412 or 200)
    for extra in ({}, {"If-Match": 'W/"99"'}, {"If-Match": 'W/"1"'}):
        r = _patch(http, leeds, "/fhir/Patient/christie-pat", rename, **extra)
        assert r.status_code == 404, (extra, r.get_json())
    admin = get_token(http, keys, "admin-console")
    christie = http.get("/fhir/Patient/christie-pat", headers=bearer(admin)).get_json()
    assert christie["meta"]["versionId"] == "1" and christie["name"][0]["family"] == "christie-pat"
    # a patch cannot hand the resource to another organisation: the caller's tenant is stamped again
    move = [{"op": "replace", "path": "/meta/tag", "value": [{"system": TENANT_TAG, "code": "RBV"}]}]
    r = _patch(http, leeds, "/fhir/Patient/leeds-me", move)
    assert r.status_code in (200, 403)
    stored = http.get("/fhir/Patient/leeds-me", headers=bearer(admin)).get_json()
    assert _tags(stored) == ["RR8"]
    # a sponsor has no Patient scope: 403; its own study patches; another sponsor's (public, active) study may
    # be read but not written: 403 as for PUT, before the stale If-Match is looked at; a draft it may not see: 404
    sponsor = get_token(http, keys, "sponsor-a")
    assert _patch(http, sponsor, "/fhir/Patient/leeds-me", rename).status_code == 403
    retitle = [{"op": "replace", "path": "/title", "value": "Retitled"}]
    assert _patch(http, sponsor, "/fhir/ResearchStudy/study-a", retitle).status_code == 200
    assert _patch(http, sponsor, "/fhir/ResearchStudy/study-b", retitle, **{"If-Match": 'W/"9"'}).status_code == 403
    r = _patch(http, sponsor, "/fhir/ResearchStudy/study-b-draft", retitle, **{"If-Match": 'W/"9"'})
    assert r.status_code == 404


def test_conditional_read_does_not_reveal_what_the_caller_may_not_see(http, keys, world):
    leeds = get_token(http, keys, "leeds-ehr")
    for tag in ("*", 'W/"1"'):
        r = http.get("/fhir/Patient/christie-pat", headers={**bearer(leeds), "If-None-Match": tag})
        assert r.status_code == 404
    r = http.get("/fhir/Patient/leeds-other", headers={**bearer(leeds), "If-None-Match": 'W/"1"'})
    assert r.status_code == 304 and r.data == b""


# -- JSON nulls and empty values (FHIR JSON: "null is not a valid value", "arrays must not be empty",
# "empty strings are not valid"): refused at the edge, on every write path, naming the element ------------
_STUDY = {"resourceType": "ResearchStudy", "id": "null-check", "status": "active", "title": "Nulls"}
_EMPTY_CASES = [
    ({"title": None}, "ResearchStudy.title", "null is not a valid value"),
    ({"identifier": [None]}, "ResearchStudy.identifier[0]", "null is not a valid value"),
    ({"identifier": []}, "ResearchStudy.identifier", "arrays must not be empty"),
    ({"identifier": [{}]}, "ResearchStudy.identifier[0]", "an object must not be empty"),
    ({"title": ""}, "ResearchStudy.title", "empty strings are not valid"),
    ({"identifier": [{"system": "urn:x", "value": ""}]}, "ResearchStudy.identifier[0].value",
     "empty strings are not valid"),
    ({"category": [{"coding": [{"code": "x", "display": None}]}]}, "ResearchStudy.category[0].coding[0].display",
     "null is not a valid value"),
]


def _refused(r, expression: str, why: str) -> None:
    body = r.get_json()
    assert r.status_code == 400, body
    assert body["resourceType"] == "OperationOutcome"
    issue = body["issue"][0]
    assert expression in issue["expression"][0], body
    assert why in issue["diagnostics"], body


def test_nulls_and_empty_values_are_refused_on_every_write_path(http, keys, world):
    admin = bearer(get_token(http, keys, "admin-console"))
    assert http.put("/fhir/ResearchStudy/null-check", json=_STUDY, headers=admin).status_code == 201
    for extra, expression, why in _EMPTY_CASES:
        body = {**_STUDY, **extra}
        _refused(http.put("/fhir/ResearchStudy/null-check", json=body, headers=admin), expression, why)
        _refused(http.post("/fhir/ResearchStudy", json={k: v for k, v in body.items() if k != "id"},
                           headers=admin), expression, why)
        bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [
            {"resource": body, "request": {"method": "PUT", "url": "ResearchStudy/null-check"}}]}
        r = http.post("/fhir", json=bundle, headers=admin)
        assert r.status_code == 400 and why in r.get_data(as_text=True), r.get_json()
        assert expression.removeprefix("ResearchStudy") in r.get_data(as_text=True)
    # a PATCH whose result holds an empty value (a null value is refused earlier, by the patch itself: 422)
    for patch, expression, why in (([{"op": "add", "path": "/title", "value": ""}], "ResearchStudy.title",
                                    "empty strings are not valid"),
                                   ([{"op": "add", "path": "/identifier", "value": []}],
                                    "ResearchStudy.identifier", "arrays must not be empty")):
        r = http.patch("/fhir/ResearchStudy/null-check", json=patch, headers={**admin, "Content-Type": JSON_PATCH})
        _refused(r, expression, why)
    stored = http.get("/fhir/ResearchStudy/null-check", headers=admin).get_json()
    assert stored["meta"]["versionId"] == "1" and stored["title"] == "Nulls"


def test_null_placeholders_paired_with_extensions_are_valid_fhir_json(http, keys, world):
    """R4 JSON allows ``"given": [null, "Jo"]`` when ``_given`` carries the first item's extension."""
    admin = bearer(get_token(http, keys, "admin-console"))
    ext = {"extension": [{"url": "http://example.org/fhir/StructureDefinition/x", "valueString": "kept"}]}
    patient = {"resourceType": "Patient", "id": "placeholder", "gender": "female",
               "name": [{"family": "Ok", "given": [None, "Jo"], "_given": [ext, None]}]}
    r = http.put("/fhir/Patient/placeholder", json=patient, headers=admin)
    assert r.status_code == 201, r.get_json()
    assert r.get_json()["name"][0]["_given"][0] == ext
    unpaired = {**patient, "name": [{"family": "Ok", "given": [None, "Jo"]}]}
    _refused(http.put("/fhir/Patient/placeholder", json=unpaired, headers=admin), "Patient.name[0].given[0]",
             "null is not a valid value")
