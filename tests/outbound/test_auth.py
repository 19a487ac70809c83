"""SMART Backend Services: the signed client assertion, the token request, caching, re-auth after 401."""

from __future__ import annotations

from urllib.parse import parse_qs

import jwt
import pytest
import responses
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from gateway.outbound import errors as E
from gateway.outbound.allowlist import AllowList
from gateway.outbound.auth import ASSERTION_TYPE, SmartBackendAuth
from gateway.outbound.client import FhirClient

BASE = "https://fhir.hospital.test/R4"
TOKEN_URL = "https://fhir.hospital.test/auth/token"
FHIR = {"Content-Type": "application/fhir+json"}
PATIENT = {"resourceType": "Patient", "id": "p1"}
ALLOWED = AllowList.parse("fhir.hospital.test")


def _pem(key) -> str:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption()).decode()


@pytest.fixture(scope="module")
def rsa_key():
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def ec_key():
    return ec.generate_private_key(ec.SECP384R1())


class Clock:
    def __init__(self, t: float = 1_800_000_000.0):
        self.t = t

    def __call__(self) -> float:
        return self.t


def _auth(key, alg: str, clock: Clock | None = None, allowed: AllowList = ALLOWED) -> SmartBackendAuth:
    return SmartBackendAuth(TOKEN_URL, "trial-gateway", "HOSP_KEY", algorithm=alg, kid="kid-1",
                            scope="system/Patient.rs", env={"HOSP_KEY": _pem(key)}, allowed_hosts=allowed,
                            clock=clock or Clock())


@pytest.mark.parametrize("alg", ["RS384", "ES384"])
@responses.activate
def test_token_request_carries_a_signed_assertion(alg, rsa_key, ec_key):
    key = rsa_key if alg == "RS384" else ec_key
    clock = Clock()
    responses.post(TOKEN_URL, json={"access_token": "tok-1", "token_type": "bearer", "expires_in": 300})
    responses.get(f"{BASE}/Patient/p1", json=PATIENT, headers=FHIR)
    client = FhirClient(BASE, allowed_hosts=ALLOWED, auth=_auth(key, alg, clock))
    client.read("Patient", "p1")
    token_call, fhir_call = responses.calls
    form = {k: v[0] for k, v in parse_qs(token_call.request.body).items()}
    assert form["grant_type"] == "client_credentials"
    assert form["scope"] == "system/Patient.rs"
    assert form["client_assertion_type"] == ASSERTION_TYPE
    header = jwt.get_unverified_header(form["client_assertion"])
    assert header["alg"] == alg and header["kid"] == "kid-1" and header["typ"] == "JWT"
    claims = jwt.decode(form["client_assertion"], key.public_key(), algorithms=[alg], audience=TOKEN_URL,
                        options={"verify_exp": False, "verify_iat": False})
    assert claims["iss"] == claims["sub"] == "trial-gateway"
    assert claims["aud"] == TOKEN_URL
    assert 0 < claims["exp"] - clock.t <= 300
    assert claims["jti"]
    assert fhir_call.request.headers["Authorization"] == "Bearer tok-1"


@responses.activate
def test_token_is_cached_until_it_expires(rsa_key):
    clock = Clock()
    responses.post(TOKEN_URL, json={"access_token": "tok-1", "expires_in": 300})
    responses.post(TOKEN_URL, json={"access_token": "tok-2", "expires_in": 300})
    responses.get(f"{BASE}/Patient/p1", json=PATIENT, headers=FHIR)
    client = FhirClient(BASE, allowed_hosts=ALLOWED, auth=_auth(rsa_key, "RS384", clock))
    client.read("Patient", "p1")
    clock.t += 200
    client.read("Patient", "p1")
    assert [c.request.url for c in responses.calls].count(TOKEN_URL) == 1
    clock.t += 100  # within the renewal margin of expiry
    client.read("Patient", "p1")
    token_calls = [c for c in responses.calls if c.request.url == TOKEN_URL]
    assert len(token_calls) == 2
    assert responses.calls[-1].request.headers["Authorization"] == "Bearer tok-2"
    jtis = {jwt.decode(parse_qs(c.request.body)["client_assertion"][0], options={"verify_signature": False})["jti"]
            for c in token_calls}
    assert len(jtis) == 2  # a fresh jti for each assertion


@responses.activate
def test_a_401_from_the_server_renews_the_token_once(rsa_key):
    responses.post(TOKEN_URL, json={"access_token": "revoked", "expires_in": 300})
    responses.post(TOKEN_URL, json={"access_token": "fresh", "expires_in": 300})
    responses.get(f"{BASE}/Patient/p1", status=401, json={"resourceType": "OperationOutcome", "issue": []},
                  headers=FHIR)
    responses.get(f"{BASE}/Patient/p1", json=PATIENT, headers=FHIR)
    client = FhirClient(BASE, allowed_hosts=ALLOWED, auth=_auth(rsa_key, "RS384"), max_retries=0)
    assert client.read("Patient", "p1")["id"] == "p1"
    assert [c.request.headers.get("Authorization") for c in responses.calls if c.request.url != TOKEN_URL] == [
        "Bearer revoked", "Bearer fresh"]


@responses.activate
def test_token_endpoint_refusal_is_unauthorized_and_no_fhir_request_is_sent(rsa_key):
    responses.post(TOKEN_URL, status=401, json={"error": "invalid_client", "error_description": "unknown key"})
    client = FhirClient(BASE, allowed_hosts=ALLOWED, auth=_auth(rsa_key, "RS384"), max_retries=0)
    with pytest.raises(E.Unauthorized, match="invalid_client"):
        client.read("Patient", "p1")
    assert [c.request.url for c in responses.calls] == [TOKEN_URL]


@responses.activate
def test_a_bad_key_is_a_configuration_error(rsa_key):
    auth = SmartBackendAuth(TOKEN_URL, "gw", "HOSP_KEY", env={"HOSP_KEY": "not a pem"}, allowed_hosts=ALLOWED)
    client = FhirClient(BASE, allowed_hosts=ALLOWED, auth=auth)
    with pytest.raises(E.ConfigurationError, match="HOSP_KEY"):
        client.read("Patient", "p1")
    assert len(responses.calls) == 0


@responses.activate
def test_token_endpoint_must_be_allow_listed(rsa_key):
    auth = _auth(rsa_key, "RS384", allowed=AllowList.parse("fhir.hospital.test:443"))
    auth.token_url = "https://idp.elsewhere.test/token"
    client = FhirClient(BASE, allowed_hosts=ALLOWED, auth=auth)
    with pytest.raises(E.DestinationNotAllowed):
        client.read("Patient", "p1")
    assert len(responses.calls) == 0


def test_only_rs384_and_es384_are_accepted():
    with pytest.raises(E.ConfigurationError):
        SmartBackendAuth(TOKEN_URL, "gw", "K", algorithm="HS256")
