"""Issue #13, item 8: the token endpoint answers forged or malformed requests with RFC 6749 errors (400/401,
``{"error", "error_description"}``) in every mode: development mode (no clients), clients without a signing
key, and fully configured. It used to answer 503 in development mode before looking at the assertion."""

from __future__ import annotations

import pytest
import yaml

from gateway.api.app import create_app
from tests.security.conftest import assertion, close_app, public_jwk, token_form, with_security
from tests.security.test_tokens import ASSERTION_CASES

MODES = ["development", "clients without signing key", "configured"]
FORGED = ["alg none", "signed by a stranger's key", "unknown client", "expired", "HS256 with the public key",
          "wrong audience", "unknown key id"]


@pytest.fixture(params=MODES)
def token_http(request, settings, sec_settings):
    """A test client of an app in each security mode."""
    if request.param == "development":
        app = create_app(settings)
    elif request.param == "clients without signing key":
        app = create_app(with_security(sec_settings, token_signing_key=None))
    else:
        app = create_app(sec_settings)
    yield app.test_client()
    close_app(app)


def _oauth(r, status: int, error: str) -> None:
    assert r.status_code == status, r.get_data(as_text=True)
    body = r.get_json()
    assert body["error"] == error, body
    assert body["error_description"]
    assert "access_token" not in body
    assert r.headers["Cache-Control"] == "no-store"


@pytest.mark.parametrize("case", FORGED)
def test_forged_assertions_are_invalid_client_in_every_mode(token_http, keys, case):
    _oauth(token_http.post("/auth/token", data=token_form(ASSERTION_CASES[case](keys))), 401, "invalid_client")


def test_malformed_token_requests_in_every_mode(token_http, keys):
    good = token_form(assertion(keys, "leeds-ehr"))
    _oauth(token_http.post("/auth/token", data={k: v for k, v in good.items() if k != "grant_type"}),
           400, "invalid_request")
    _oauth(token_http.post("/auth/token", data={**good, "grant_type": "password"}), 400, "unsupported_grant_type")
    _oauth(token_http.post("/auth/token", data={k: v for k, v in good.items() if k != "client_assertion"}),
           401, "invalid_client")
    _oauth(token_http.post("/auth/token", data={**good, "client_assertion_type": "x"}), 401, "invalid_client")
    _oauth(token_http.post("/auth/token", json=good), 400, "invalid_request")
    _oauth(token_http.post("/auth/token", data="grant_type=client_credentials&grant_type=client_credentials",
                           content_type="application/x-www-form-urlencoded"), 400, "invalid_request")
    _oauth(token_http.post("/auth/token", data=good, headers={"Authorization": "Basic dXNlcjpwYXNz"}),
           401, "invalid_client")
    _oauth(token_http.post("/auth/token", data="\x00", content_type="application/x-www-form-urlencoded"),
           400, "invalid_request")


def test_a_valid_assertion_without_signing_key_is_refused_after_authentication(sec_settings, keys):
    """Only an authenticated client learns that the endpoint cannot issue (503 with an OperationOutcome); its
    assertion is not spent, so it can retry once the key is configured."""
    app = create_app(with_security(sec_settings, token_signing_key=None))
    http = app.test_client()
    form = token_form(assertion(keys, "leeds-ehr", jti="kept-for-retry"))
    r = http.post("/auth/token", data=form)
    close_app(app)
    assert r.status_code == 503 and r.get_json()["resourceType"] == "OperationOutcome"
    app = create_app(sec_settings)
    assert app.test_client().post("/auth/token", data=form).status_code == 200
    close_app(app)


def test_scope_outside_allowance_is_invalid_scope_before_the_signing_key_is_needed(sec_settings, keys):
    app = create_app(with_security(sec_settings, token_signing_key=None))
    r = app.test_client().post("/auth/token", data=token_form(assertion(keys, "sponsor-a"), "system/Patient.r"))
    close_app(app)
    _oauth(r, 400, "invalid_scope")


def test_a_patient_app_client_cannot_use_client_credentials(sec_settings, keys):
    """Patient apps sign in through the identity provider; even with keys on file they get no backend token."""
    doc = {"client_id": "nhs-app-keys", "role": "patient-app", "scopes": ["patient/*.rs"],
           "jwks": {"keys": [public_jwk(keys.rsa, "rsa-1")]}}
    (sec_settings.security.clients_path / "nhs-app-keys.yaml").write_text(yaml.safe_dump(doc))
    app = create_app(sec_settings)
    r = app.test_client().post("/auth/token", data=token_form(assertion(keys, "nhs-app-keys")))
    close_app(app)
    _oauth(r, 400, "unauthorized_client")
