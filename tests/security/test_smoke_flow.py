"""End to end: a backend client gets a token with a signed assertion and uses it; a patient app uses an IdP token."""

from __future__ import annotations

from tests.security.conftest import FHIR, bearer, get_token, idp_token


def test_hospital_token_reads_own_patient(http, keys, world):
    tok = get_token(http, keys, "leeds-ehr")
    r = http.get("/fhir/Patient/leeds-me", headers=bearer(tok))
    assert r.status_code == 200
    assert r.get_json()["id"] == "leeds-me"
    r = http.get("/fhir/Patient/christie-pat", headers=bearer(tok))
    assert r.status_code == 404
    assert "christie" not in r.get_data(as_text=True).replace("Patient/christie-pat is not known", "")


def test_patient_app_reads_own_data_only(http, keys, world):
    tok = idp_token(keys)
    r = http.get("/fhir/Condition", headers=bearer(tok))
    assert r.status_code == 200, r.get_json()
    ids = [e["resource"]["id"] for e in r.get_json().get("entry", [])]
    assert ids == ["cond-leeds-me"]
    assert r.get_json()["total"] == 1


def test_no_token_is_401_with_challenge(http, world):
    r = http.get("/fhir/Patient/leeds-me", headers=FHIR)
    assert r.status_code == 401
    assert r.headers["WWW-Authenticate"].startswith("Bearer")
    assert r.get_json()["resourceType"] == "OperationOutcome"
