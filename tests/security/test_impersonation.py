"""Issue #13, item 1: an identity-provider token acts only as a patient app, whatever client it names.

An IdP token whose ``client_id`` (or ``azp``/``cid``) claim names a backend client used to get that client's
role: it read every tenant's patients and /admin/outbox. A backend client's role comes only from its own
signed assertion (the tokens /auth/token issues).
"""

from __future__ import annotations

import time
import uuid

import jwt
import pytest

from tests.security.conftest import CLIENTS, IDP_AUDIENCE, IDP_ISSUER, N_ME, WORLD, bearer, idp_token, secret

BACKEND_CLIENTS = sorted(c for c, spec in CLIENTS.items() if spec["role"] != "patient-app")
PROBES = ["/fhir/Patient", "/fhir/Patient/christie-pat", "/fhir/Condition", "/admin/outbox", "/fhir/AuditEvent",
          "/fhir/_history", "/fhir/ResearchStudy/study-b-draft"]


def _idp(keys, **claims) -> str:
    """An IdP token with exactly these client claims (idp_token always sets client_id)."""
    now = int(time.time())
    body = {"iss": IDP_ISSUER, "aud": IDP_AUDIENCE, "sub": str(uuid.uuid4()), "exp": now + 600, "iat": now,
            "nhs_number": N_ME, **claims}
    return jwt.encode(body, keys.idp, algorithm="RS512", headers={"kid": "idp-1"})


@pytest.mark.parametrize("claim", ["client_id", "azp", "cid"])
@pytest.mark.parametrize("client_id", BACKEND_CLIENTS)
def test_idp_token_naming_a_backend_client_is_refused(shared, client_id, claim):
    tok = _idp(shared.keys, **{claim: client_id}, scope="system/*.cruds")
    for path in PROBES:
        r = shared.http.get(path, headers=bearer(tok))
        text = r.get_data(as_text=True)
        assert r.status_code == 401, (path, text[:300])
        assert r.get_json()["issue"][0]["code"] == "login"
        assert "may only act for a patient app" in r.get_json()["issue"][0]["diagnostics"]
        assert not [rid for rid in (x["id"] for x in WORLD) if secret(rid) in text]
    r = shared.http.post("/fhir/Organization", json={"resourceType": "Organization", "name": "x"},
                         headers=bearer(tok))
    assert r.status_code == 401


def test_patient_token_cannot_claim_more_than_a_patient(shared):
    """Extra claims (a backend azp next to the patient app's client_id, system scopes, a role) change nothing."""
    tok = _idp(shared.keys, client_id="nhs-app", azp="admin-console", scope="system/*.cruds patient/*.cruds",
               role="admin")
    h = bearer(tok)
    assert shared.http.get("/admin/outbox", headers=h).status_code == 403
    assert shared.http.get("/fhir/Patient/christie-pat", headers=h).status_code == 404
    r = shared.http.get("/fhir/Patient", headers=h)
    assert r.status_code == 200
    assert [e["resource"]["id"] for e in r.get_json()["entry"] if e["search"]["mode"] == "match"] == ["leeds-me"]


def test_patient_app_token_still_works(shared):
    r = shared.http.get("/fhir/Patient/leeds-me", headers=bearer(idp_token(shared.keys)))
    assert r.status_code == 200 and secret("leeds-me") in r.get_data(as_text=True)


def test_backend_client_role_comes_from_its_own_assertion(shared):
    """The genuine admin client (signed assertion -> our token) keeps its role."""
    assert shared.http.get("/admin/outbox", headers=bearer(shared.token("admin-console"))).status_code == 200
