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
