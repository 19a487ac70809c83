"""Token cases, once per kind of interaction: no token, expired, wrong audience, replayed jti, alg none,
HS256 signed with the public key, unknown key id, scope too narrow; plus the token endpoint's own checks."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
import uuid

import jwt
import pytest
from cryptography.hazmat.primitives import serialization

from tests.security.conftest import (
    FHIR,
    IDP_AUDIENCE,
    IDP_ISSUER,
    assertion,
    bearer,
    close_app,
    get_token,
    idp_token,
    token_form,
)

ISSUER = "http://localhost/auth"
AUDIENCE = "http://localhost/fhir"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _gateway_token(keys, *, exp_in=300, aud=AUDIENCE, sub="leeds-ehr", scope="system/*.cruds", kid=None, key=None,
                   alg="ES384") -> str:
    from gateway.security.tokens import SigningKey
    from tests.security.conftest import pem

    sk = SigningKey.from_pem(pem(keys.gateway))
    now = int(time.time())
    claims = {"iss": ISSUER, "sub": sub, "aud": aud, "iat": now, "exp": now + exp_in, "jti": str(uuid.uuid4()),
              "scope": scope}
    return jwt.encode(claims, key or keys.gateway, algorithm=alg, headers={"kid": kid or sk.kid})


def _unsigned(keys) -> str:
    good = _gateway_token(keys)
    header, payload, _ = good.split(".")
    none_header = _b64(json.dumps({"alg": "none", "typ": "JWT"}).encode())
    return f"{none_header}.{payload}."


def _hs256_with_public_key(keys) -> str:
    """The classic confusion attack: HMAC-sign with the server's PUBLIC key as the secret."""
    from gateway.security.tokens import SigningKey
    from tests.security.conftest import pem

    kid = SigningKey.from_pem(pem(keys.gateway)).kid
    public = keys.gateway.public_key().public_bytes(serialization.Encoding.PEM,
                                                    serialization.PublicFormat.SubjectPublicKeyInfo)
    now = int(time.time())
    header = _b64(json.dumps({"alg": "HS256", "typ": "JWT", "kid": kid}).encode())
    payload = _b64(json.dumps({"iss": ISSUER, "sub": "leeds-ehr", "aud": AUDIENCE, "exp": now + 300,
                               "scope": "system/*.cruds"}).encode())
    sig = hmac.new(public, f"{header}.{payload}".encode(), hashlib.sha256).digest()
    return f"{header}.{payload}.{_b64(sig)}"


# One request per kind of interaction (the tenant matrix covers what a valid token may do).
INTERACTIONS = {
    "read": ("GET", "/fhir/Patient/leeds-me", None),
    "search": ("GET", "/fhir/Condition?patient=Patient/leeds-me", None),
    "history": ("GET", "/fhir/Patient/leeds-me/_history", None),
    "create": ("POST", "/fhir/Observation", {"resourceType": "Observation", "status": "final",
                                              "code": {"text": "x"}, "subject": {"reference": "Patient/leeds-me"}}),
    "update": ("PUT", "/fhir/Patient/leeds-me", {"resourceType": "Patient", "id": "leeds-me"}),
    "delete": ("DELETE", "/fhir/Condition/cond-leeds-me", None),
    "transaction": ("POST", "/fhir", {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"request": {"method": "GET", "url": "Patient/leeds-me"}}]}),
    "operation": ("POST", "/fhir/ResearchStudy/$match", {"resourceType": "Parameters", "parameter": [
        {"name": "patient", "valueReference": {"reference": "Patient/leeds-me"}}]}),
}

BAD_TOKENS = {
    "no token": None,
    "expired": lambda keys: _gateway_token(keys, exp_in=-120),
    "wrong audience": lambda keys: _gateway_token(keys, aud="https://other.example.org/fhir"),
    "alg none": _unsigned,
    "HS256 with the public key": _hs256_with_public_key,
    "unknown key id": lambda keys: _gateway_token(keys, kid="not-a-key", key=keys.ec),
    "expired IdP token": lambda keys: idp_token(keys, exp_in=-120),
    "IdP token for another audience": lambda keys: jwt.encode(
        {"iss": IDP_ISSUER, "aud": "someone-else", "exp": int(time.time()) + 300, "client_id": "nhs-app",
         "nhs_number": "9434765919"}, keys.idp, algorithm="RS512", headers={"kid": "idp-1"}),
    "IdP token signed by a stranger": lambda keys: jwt.encode(
        {"iss": IDP_ISSUER, "aud": IDP_AUDIENCE, "exp": int(time.time()) + 300, "client_id": "nhs-app",
         "nhs_number": "9434765919"}, keys.stranger, algorithm="RS512", headers={"kid": "idp-1"}),
    "garbage": lambda keys: "not.a.jwt",
}


def test_presented_token_is_verified_even_in_development_mode(client, keys):
    """No clients configured (the shared ``client`` fixture): no token is the local admin, a bad one is 401."""
    assert client.get("/fhir/Patient", headers=FHIR).status_code == 200
    r = client.get("/fhir/Patient", headers=bearer(_unsigned(keys)))
    assert r.status_code == 401
    assert r.get_json()["resourceType"] == "OperationOutcome"


# -- the token endpoint ------------------------------------------------------------------------------
def _post_token(http, form):
    return http.post("/auth/token", data=form)


def test_token_endpoint_issues_a_short_lived_token(http, keys):
    r = _post_token(http, token_form(assertion(keys, "leeds-ehr", kid="ec-1", alg="ES384"),
                                     "system/Patient.rs system/Condition.cruds system/AuditEvent.r"))
    assert r.status_code == 200, r.get_json()
    body = r.get_json()
    assert body["token_type"] == "bearer" and body["expires_in"] <= 300
    assert set(body["scope"].split()) == {"system/Patient.rs", "system/Condition.cruds", "system/AuditEvent.r"}
    assert r.headers["Cache-Control"] == "no-store"
    claims = jwt.decode(body["access_token"], options={"verify_signature": False})
    assert claims["sub"] == "leeds-ehr" and claims["aud"] == AUDIENCE and claims["exp"] - claims["iat"] <= 300


@pytest.mark.parametrize("alg", ["RS384", "RS512", "ES384"])
def test_accepted_assertion_algorithms(http, keys, alg):
    kid = "ec-1" if alg.startswith("ES") else "rsa-1"
    assert _post_token(http, token_form(assertion(keys, "sponsor-a", kid=kid, alg=alg))).status_code == 200


def _hs256_assertion(keys) -> str:
    public = keys.rsa.public_key().public_bytes(serialization.Encoding.PEM,
                                                serialization.PublicFormat.SubjectPublicKeyInfo)
    now = int(time.time())
    header = _b64(json.dumps({"alg": "HS256", "kid": "rsa-1"}).encode())
    payload = _b64(json.dumps({"iss": "leeds-ehr", "sub": "leeds-ehr", "aud": "http://localhost/auth/token",
                               "exp": now + 200, "jti": str(uuid.uuid4())}).encode())
    sig = hmac.new(public, f"{header}.{payload}".encode(), hashlib.sha256).digest()
    return f"{header}.{payload}.{_b64(sig)}"


def _none_assertion(keys) -> str:
    good = assertion(keys, "leeds-ehr")
    _, payload, _ = good.split(".")
    return f"{_b64(json.dumps({'alg': 'none'}).encode())}.{payload}."


ASSERTION_CASES = {
    "expired": lambda keys: assertion(keys, "leeds-ehr", exp_in=-60),
    "exp more than 5 minutes ahead": lambda keys: assertion(keys, "leeds-ehr", exp_in=900),
    "wrong audience": lambda keys: assertion(keys, "leeds-ehr", aud="http://localhost/fhir"),
    "alg none": _none_assertion,
    "HS256 with the public key": _hs256_assertion,
    "RS256 (not allowed)": lambda keys: assertion(keys, "leeds-ehr", alg="RS256"),
    "unknown key id": lambda keys: assertion(keys, "leeds-ehr", kid="nope"),
    "signed by a stranger's key": lambda keys: assertion(keys, "leeds-ehr", key=keys.stranger),
    "unknown client": lambda keys: assertion(keys, "who-is-this"),
    "patient app (no keys)": lambda keys: assertion(keys, "nhs-app"),
}


@pytest.mark.parametrize("case", sorted(ASSERTION_CASES))
def test_bad_client_assertions_are_refused(http, keys, case):
    r = _post_token(http, token_form(ASSERTION_CASES[case](keys)))
    assert r.status_code == 401, r.get_json()
    assert r.get_json()["error"] == "invalid_client"
    assert "access_token" not in r.get_json()


def test_replayed_assertion_is_refused(http, keys):
    jti = str(uuid.uuid4())
    first = _post_token(http, token_form(assertion(keys, "leeds-ehr", jti=jti)))
    assert first.status_code == 200
    again = _post_token(http, token_form(assertion(keys, "leeds-ehr", jti=jti)))
    assert again.status_code == 401
    assert "replay" in again.get_json()["error_description"]


def test_replay_is_refused_by_another_process(sec_settings, keys):
    """The used jti is in the database, so a second app (another process) refuses the replay too."""
    from gateway.api.app import create_app

    a, b = create_app(sec_settings), create_app(sec_settings)
    jti = str(uuid.uuid4())
    assert a.test_client().post("/auth/token", data=token_form(assertion(keys, "leeds-ehr", jti=jti))).status_code \
        == 200
    assert b.test_client().post("/auth/token", data=token_form(assertion(keys, "leeds-ehr", jti=jti))).status_code \
        == 401
    for app in (a, b):
        close_app(app)


def test_scope_outside_the_client_allowance_is_invalid_scope(http, keys):
    r = _post_token(http, token_form(assertion(keys, "sponsor-a"), "system/Patient.r"))
    assert r.status_code == 400
    assert r.get_json()["error"] == "invalid_scope"


def test_wrong_grant_type(http, keys):
    form = token_form(assertion(keys, "leeds-ehr"))
    form["grant_type"] = "password"
    assert _post_token(http, form).get_json()["error"] == "unsupported_grant_type"


def test_token_endpoint_without_signing_key_says_so(db_url, tmp_path, keys):
    from gateway.api.app import create_app
    from gateway.config import SecuritySettings, Settings, StoreSettings
    from tests.security.conftest import write_clients

    write_clients(tmp_path / "clients", keys)
    app = create_app(Settings(store=StoreSettings(db_url), instance_path=tmp_path,
                              security=SecuritySettings(clients_path=tmp_path / "clients")))
    r = app.test_client().post("/auth/token", data=token_form(assertion(keys, "leeds-ehr")))
    close_app(app)
    assert r.status_code == 503
    oo = r.get_json()
    assert oo["resourceType"] == "OperationOutcome" and "GATEWAY_TOKEN_SIGNING_KEY" in oo["issue"][0]["diagnostics"]


def test_smart_configuration_and_jwks(http, keys):
    r = http.get("/fhir/.well-known/smart-configuration")
    assert r.status_code == 200
    conf = r.get_json()
    assert conf["token_endpoint"] == "http://localhost/auth/token"
    assert conf["token_endpoint_auth_methods_supported"] == ["private_key_jwt"]
    assert set(conf["token_endpoint_auth_signing_alg_values_supported"]) == {"RS384", "ES384", "RS512"}
    jwks = http.get("/auth/jwks").get_json()
    assert [k["alg"] for k in jwks["keys"]] == ["ES384"]
    assert "d" not in jwks["keys"][0]
    # The published key verifies the tokens we issue.
    tok = get_token(http, keys, "leeds-ehr")
    key = jwt.PyJWK(jwks["keys"][0])
    assert jwt.decode(tok, key.key, algorithms=["ES384"], audience=AUDIENCE)["sub"] == "leeds-ehr"


def test_idp_patient_token_needs_a_valid_nhs_number(http, keys, world):
    r = http.get("/fhir/Patient", headers=bearer(idp_token(keys, nhs="1234567890")))
    assert r.status_code == 401
    assert "1234567890" not in r.get_data(as_text=True)


def test_idp_jwks_fetched_over_http_and_cached(db_url, tmp_path, keys, monkeypatch):
    """GATEWAY_IDP_JWKS_URL: fetched with requests once, then served from the cache."""
    import responses

    from gateway.api.app import create_app
    from gateway.config import SecuritySettings, Settings, StoreSettings
    from tests.security.conftest import public_jwk, write_clients

    write_clients(tmp_path / "clients", keys)
    url = "https://auth.login.example.nhs.uk/.well-known/jwks.json"
    with responses.RequestsMock() as rsps:
        rsps.get(url, json={"keys": [public_jwk(keys.idp, "idp-1")]})
        app = create_app(Settings(store=StoreSettings(db_url), instance_path=tmp_path, security=SecuritySettings(
            clients_path=tmp_path / "clients", idp_jwks_url=url, idp_issuer=IDP_ISSUER, idp_audience=IDP_AUDIENCE,
            rate_limit=0)))
        c = app.test_client()
        for _ in range(3):
            assert c.get("/fhir/ResearchStudy", headers=bearer(idp_token(keys))).status_code == 200
        assert len(rsps.calls) == 1
    close_app(app)
