"""Patient sign-in with OpenID Connect against the local test issuer: code flow with PKCE, state and nonce."""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

import requests

from tests.patient.conftest import ME, csrf, sign_in


def test_sign_in_puts_the_nhs_number_in_the_session_and_uses_pkce(client, issuer):
    r = client.get("/patient/login", query_string={"next": "/trials/abc"})
    assert r.status_code == 302
    q = parse_qs(urlsplit(r.headers["Location"]).query)
    assert q["code_challenge_method"] == ["S256"] and q["state"] and q["nonce"] and q["code_challenge"]
    back = urlsplit(requests.get(r.headers["Location"], allow_redirects=False, timeout=10).headers["Location"])
    done = client.get(f"{back.path}?{back.query}")
    assert done.status_code == 303 and done.headers["Location"] == "/trials/abc"
    assert issuer.token_requests[-1]["code_verifier"]  # the code was exchanged with the PKCE verifier
    with client.session_transaction() as s:
        assert s["patient"]["nhs"] == ME and s["patient"]["csrf"]
    cookie = done.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie


def test_a_forged_state_signs_nobody_in(client, issuer):
    r = client.get("/patient/login")
    at_issuer = requests.get(r.headers["Location"], allow_redirects=False, timeout=10).headers["Location"]
    q = parse_qs(urlsplit(at_issuer).query)
    forged = client.get("/patient/callback", query_string={"code": q["code"][0], "state": "forged"})
    assert forged.status_code == 401 and forged.get_json()["resourceType"] == "OperationOutcome"
    with client.session_transaction() as s:
        assert "patient" not in s


def test_a_refusal_at_the_provider_is_an_operation_outcome(client, issuer):
    issuer.nhs_number = None  # the issuer answers error=access_denied
    r = sign_in(client)
    assert r.status_code == 401 and "access_denied" in r.get_json()["issue"][0]["diagnostics"]


def test_an_open_redirect_is_refused(client, issuer):
    r = sign_in(client, next_path="//evil.example.org/x")
    assert r.status_code == 303 and r.headers["Location"] == "/"


def test_logout_needs_the_csrf_token(client, issuer):
    sign_in(client)
    assert client.post("/patient/logout").status_code == 403
    token = csrf(client)
    assert client.post("/patient/logout", data={"csrf_token": token}).status_code == 303
    assert client.get("/patient/contact-requests").status_code == 401


def test_not_configured_is_a_503_that_names_the_settings(app, client):
    app.extensions["gateway.signin"] = None
    r = client.get("/patient/login")
    assert r.status_code == 503


def test_private_key_jwt_client_authentication_as_nhs_login_asks(patient_settings, issuer):
    """NHS login authenticates the client with a signed JWT (RS512), not a secret."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    from gateway.api.app import create_app

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    issuer.client_public_key = key.public_key()
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption()).decode()
    from dataclasses import replace

    oidc = replace(patient_settings.oidc, client_secret=None, private_key=pem)
    app = create_app(replace(patient_settings, oidc=oidc))
    try:
        client = app.test_client()
        done = sign_in(client)
        assert done.status_code == 303, done.get_data(as_text=True)
        sent = issuer.token_requests[-1]
        assert sent["client_assertion_type"].endswith("jwt-bearer") and "client_secret" not in sent
        with client.session_transaction() as s:
            assert s["patient"]["nhs"] == ME
    finally:
        app.extensions["gateway.security"].audit_writer.close()
        app.extensions["gateway.store"].engine.dispose()
