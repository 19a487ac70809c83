"""Patient sign-in's provider calls (authlib: discovery, JWKS, code exchange) go through the one outbound client:
the allow-list is checked before a byte is sent, each call has its log line, and a host that is not allowed ends
sign-in with a clean OperationOutcome (no traceback, no code or token in the logs)."""

from __future__ import annotations

import logging
from dataclasses import replace
from urllib.parse import parse_qs, urlsplit

import pytest
import responses

from gateway.api.app import create_app
from gateway.outbound.allowlist import AllowList
from gateway.outbound.settings import OutboundSettings

ISSUER = "https://idp.example.org"
ELSEWHERE = "https://elsewhere.example.net"
CODE = "code-5b1e0c"  # what the provider hands the browser; must never reach a log
ACCESS_TOKEN = "at-6f0d2e9a41"
ID_TOKEN = "eyJhbGciOiJSUzI1NiIsImtpZCI6ImsifQ.eyJzdWIiOiJ4In0.c2lnbmF0dXJl"


def _discovery(token_host: str, jwks_host: str) -> dict:
    return {"issuer": ISSUER, "authorization_endpoint": f"{ISSUER}/authorize",
            "token_endpoint": f"{token_host}/token", "jwks_uri": f"{jwks_host}/jwks",
            "response_types_supported": ["code"], "id_token_signing_alg_values_supported": ["RS256"],
            "token_endpoint_auth_methods_supported": ["client_secret_basic"]}


@pytest.fixture
def signin_app(settings):
    from gateway.config import OidcSettings

    configured = replace(settings, oidc=OidcSettings(
        issuer=ISSUER, client_id="gateway-web", client_secret="web-secret",
        redirect_uri="http://localhost/patient/callback", session_secret="test-session-secret",
        session_cookie_secure=False),
        outbound=OutboundSettings(allowed_hosts=AllowList.parse("fhir.leeds.example.org"), client_retries=0))
    app = create_app(configured)
    app.config["TESTING"] = True
    yield app
    app.extensions["gateway.security"].audit_writer.close()
    app.extensions["gateway.store"].engine.dispose()


def _login(client) -> str:
    """GET /patient/login -> the state authlib put in the provider URL (the discovery document was read)."""
    r = client.get("/patient/login")
    assert r.status_code == 302, r.get_data(as_text=True)
    return parse_qs(urlsplit(r.headers["Location"]).query)["state"][0]


def _no_secret_logged(caplog) -> None:
    text = "\n".join(f"{r.getMessage()} {r.exc_text or ''}" for r in caplog.records)
    for secret in (CODE, ACCESS_TOKEN, ID_TOKEN, "web-secret"):
        assert secret not in text
    assert "Traceback" not in text and not any(r.exc_info for r in caplog.records)


@responses.activate
def test_discovery_goes_through_the_outbound_client_with_its_log_line(signin_app, caplog):
    responses.get(f"{ISSUER}/.well-known/openid-configuration", json=_discovery(ISSUER, ISSUER))
    caplog.set_level(logging.INFO, logger="gateway.outbound")
    _login(signin_app.test_client())
    lines = [r.getMessage() for r in caplog.records if r.name == "gateway.outbound"]
    assert any(x.startswith("GET /.well-known/openid-configuration -> 200 in ") for x in lines), lines


@responses.activate
@pytest.mark.parametrize("which", ["token endpoint", "JWKS"])
def test_a_provider_host_not_on_the_allow_list_is_refused_cleanly(signin_app, caplog, which):
    """The discovery document names an endpoint on a host that is neither the configured issuer's nor in
    GATEWAY_ALLOWED_HOSTS: nothing is sent there, and the person gets a 401 OperationOutcome."""
    token_host, jwks_host = (ELSEWHERE, ISSUER) if which == "token endpoint" else (ISSUER, ELSEWHERE)
    responses.get(f"{ISSUER}/.well-known/openid-configuration", json=_discovery(token_host, jwks_host))
    responses.post(f"{ISSUER}/token", json={"access_token": ACCESS_TOKEN, "token_type": "Bearer",
                                            "id_token": ID_TOKEN, "expires_in": 300})
    responses.post(f"{ELSEWHERE}/token", json={"access_token": ACCESS_TOKEN, "token_type": "Bearer"})
    responses.get(f"{ELSEWHERE}/jwks", json={"keys": []})
    caplog.set_level(logging.INFO)
    client = signin_app.test_client()
    state = _login(client)
    r = client.get("/patient/callback", query_string={"code": CODE, "state": state})
    assert r.status_code == 401
    body = r.get_json()
    assert body["resourceType"] == "OperationOutcome" and "Sign-in did not complete" in body["issue"][0]["diagnostics"]
    assert not [c for c in responses.calls if c.request.url.startswith(ELSEWHERE)]  # nothing left for that host
    if which == "JWKS":  # the code was exchanged at the issuer's own token endpoint, then the keys were refused
        assert [c.request.url for c in responses.calls if c.request.url.endswith("/token")] == [f"{ISSUER}/token"]
    refused = [r.getMessage() for r in caplog.records if r.name == "gateway.signin"]
    assert refused and "elsewhere.example.net" in refused[-1] and "refused" in refused[-1], refused
    _no_secret_logged(caplog)
    with client.session_transaction() as s:
        assert "patient" not in s
