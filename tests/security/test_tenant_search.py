"""Whole-type searches, _include and type history, per caller: only what the caller may see, never a leak."""

from __future__ import annotations

import pytest

from tests.security.conftest import bearer, get_token, idp_token, secret
from tests.security.test_tenant_matrix import BY_ID, READS, VISIBLE


def _token(http, keys, role: str) -> str:
    if role == "patient-app":
        return idp_token(keys)
    return get_token(http, keys, {"hospital": "leeds-ehr", "sponsor": "sponsor-a", "research-team": "team-a"}[role])


@pytest.mark.parametrize("role", sorted(VISIBLE))
def test_include_and_type_search_leak_nothing(http, keys, world, role):
    """_include of eligibility Groups and sites, and whole-type searches: only what the caller may see."""
    tok = _token(http, keys, role)
    h = bearer(tok)
    r = http.get("/fhir/ResearchStudy?_include=ResearchStudy:enrollment&_include=ResearchStudy:site&_count=50",
                 headers=h)
    if "ResearchStudy" not in READS[role] and role != "research-team":
        assert r.status_code == 403
    else:
        assert r.status_code == 200
        ids = {e["resource"]["id"] for e in r.get_json()["entry"]}
        assert ids <= VISIBLE[role]
        assert "study-b-draft" not in ids and "group-members" not in ids
        assert {"study-a", "group-a", "loc-a"} <= ids
    for rtype in sorted({BY_ID[i]["resourceType"] for i in BY_ID}):
        r = http.get(f"/fhir/{rtype}?_count=100", headers=h)
        text = r.get_data(as_text=True)
        assert r.status_code in (200, 403), text[:300]
        assert [i for i in BY_ID if i not in VISIBLE[role] and secret(i) in text] == []
        if r.status_code == 200:
            ids = {e["resource"]["id"] for e in r.get_json().get("entry", []) if e["search"]["mode"] == "match"}
            expect = {i for i in VISIBLE[role] if BY_ID[i]["resourceType"] == rtype}
            assert ids == expect, rtype


@pytest.mark.parametrize("role", sorted(VISIBLE))
def test_type_history_leaks_nothing(http, keys, world, role):
    h = bearer(_token(http, keys, role))
    for rtype in ("Patient", "Condition", "ResearchSubject", "ResearchStudy"):
        r = http.get(f"/fhir/{rtype}/_history?_count=100", headers=h)
        text = r.get_data(as_text=True)
        assert [i for i in BY_ID if i not in VISIBLE[role] and secret(i) in text] == []
        if r.status_code == 200:
            assert "total" not in r.get_json()
    assert http.get("/fhir/_history", headers=h).status_code == 403
