"""Security fixtures: keys generated per test session (never committed), client files written to a
temporary folder, a seeded two-hospital / two-sponsor / two-person data set, and token helpers."""

from __future__ import annotations

import dataclasses
import json
import time
import uuid
from pathlib import Path

import jwt
import pytest
import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from gateway.api.app import create_app
from gateway.config import SecuritySettings, Settings, StoreSettings
from gateway.fhir.conventions import NHS_NUMBER, SPONSOR_STUDY_ID, TENANT_TAG
from gateway.outbound.allowlist import AllowList
from gateway.outbound.settings import OutboundSettings
from gateway.store.repo import Store
from tests.conftest import BACKENDS, PG_URL, reset_postgres

FHIR = {"Content-Type": "application/fhir+json", "Accept": "application/fhir+json"}
IDP_ISSUER = "https://auth.login.example.nhs.uk"
IDP_AUDIENCE = "trial-gateway"

# Valid NHS numbers (Modulus 11): the person the patient app acts for, another Leeds patient, a Christie patient.
N_ME, N_OTHER, N_CHRISTIE = "9434765919", "9434765870", "9000000009"


def _rsa() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def public_jwk(key, kid: str) -> dict:
    pub = key.public_key()
    if isinstance(key, rsa.RSAPrivateKey):
        jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(pub))
    else:
        jwk = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(pub))
    jwk["kid"] = kid
    return jwk


def pem(key) -> str:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption()).decode()


class Keys:
    """Every private key the tests use, generated once per session."""

    def __init__(self):
        self.gateway = ec.generate_private_key(ec.SECP384R1())
        self.rsa = _rsa()  # shared by the backend clients (one key per client would only cost time)
        self.ec = ec.generate_private_key(ec.SECP384R1())
        self.stranger = _rsa()
        self.idp = _rsa()


@pytest.fixture(scope="session")
def keys() -> Keys:
    return Keys()


CLIENTS = {
    "admin-console": {"role": "admin", "scopes": ["system/*.cruds"]},
    "sponsor-a": {"role": "sponsor", "tenant": "SPA", "tenant_system": SPONSOR_STUDY_ID,
                  "scopes": ["system/ResearchStudy.cruds", "system/Group.cruds", "system/Location.cruds",
                             "system/Organization.rs", "system/CodeSystem.rs"]},
    "sponsor-b": {"role": "sponsor", "tenant": "SPB", "tenant_system": SPONSOR_STUDY_ID,
                  "scopes": ["system/ResearchStudy.cruds", "system/Group.cruds", "system/Location.cruds"]},
    "leeds-ehr": {"role": "hospital", "tenant": "RR8", "scopes": ["system/*.cruds"]},
    "christie-ehr": {"role": "hospital", "tenant": "RBV", "scopes": ["system/*.cruds"]},
    "team-a": {"role": "research-team", "studies": [f"{SPONSOR_STUDY_ID}|A-1"],
               "scopes": ["system/ResearchSubject.rus", "system/ResearchStudy.rs"]},
    "narrow": {"role": "hospital", "tenant": "RR8", "scopes": ["system/Organization.r"]},
    "nhs-app": {"role": "patient-app", "scopes": ["patient/*.cruds"]},
}


def write_clients(folder: Path, keys: Keys) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for cid, spec in CLIENTS.items():
        doc = {"client_id": cid, **spec}
        if spec["role"] != "patient-app":
            doc["jwks"] = {"keys": [public_jwk(keys.rsa, "rsa-1"), public_jwk(keys.ec, "ec-1")]}
        (folder / f"{cid}.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))


def with_security(settings: Settings, **changes) -> Settings:
    """``settings`` with some of its security branch changed (the settings are frozen)."""
    return dataclasses.replace(settings, security=dataclasses.replace(settings.security, **changes))


def build_settings(db_url: str, folder: Path, keys: Keys) -> Settings:
    write_clients(folder / "clients", keys)
    idp = folder / "idp-jwks.json"
    idp.write_text(json.dumps({"keys": [public_jwk(keys.idp, "idp-1")]}))
    return Settings(store=StoreSettings(db_url), instance_path=folder,
                    security=SecuritySettings(clients_path=folder / "clients", token_signing_key=pem(keys.gateway),
                                              idp_jwks_file=idp, idp_issuer=IDP_ISSUER, idp_audience=IDP_AUDIENCE,
                                              rate_limit=0, audit="on"),
                    # Subscription endpoints (notify checks)
                    outbound=OutboundSettings(allowed_hosts=AllowList.parse("app.example.org")))


@pytest.fixture
def sec_settings(db_url, tmp_path, keys) -> Settings:
    return build_settings(db_url, tmp_path, keys)


class Shared:
    """One seeded app for a whole test module (cases that restore what they change), with cached tokens."""

    def __init__(self, app, keys: Keys):
        self.app, self.keys = app, keys
        self.http = app.test_client()
        self.store: Store = app.extensions["gateway.store"]
        self._tokens: dict[str, str] = {}

    def token(self, client_id: str) -> str:
        if client_id not in self._tokens:
            self._tokens[client_id] = get_token(self.http, self.keys, client_id)
        return self._tokens[client_id]

    def restore(self, rid: str) -> None:
        """Put a world resource back as seeded (a no-op when it is unchanged)."""
        original = next(r for r in WORLD if r["id"] == rid)
        with self.store.write() as tx:
            tx.put(_with_secret(original))


@pytest.fixture(scope="module", params=BACKENDS)
def shared(request, tmp_path_factory, keys):
    folder = tmp_path_factory.mktemp("security")
    if request.param == "sqlite":
        url = f"sqlite:///{folder / 'gateway.sqlite3'}"
    else:
        reset_postgres(PG_URL)
        url = PG_URL
    app = create_app(build_settings(url, folder, keys))
    app.config["TESTING"] = True
    seed(app.extensions["gateway.store"])
    yield Shared(app, keys)
    app.extensions["gateway.security"].audit_writer.close()
    app.extensions["gateway.store"].engine.dispose()


@pytest.fixture
def sec_app(sec_settings):
    app = create_app(sec_settings)
    app.config["TESTING"] = True
    yield app
    app.extensions["gateway.security"].audit_writer.close()
    app.extensions["gateway.store"].engine.dispose()


@pytest.fixture
def http(sec_app):
    return sec_app.test_client()


TOKEN_URL = "http://localhost/auth/token"


def assertion(keys: Keys, client_id: str, *, kid: str = "rsa-1", alg: str = "RS384", aud: str = TOKEN_URL,
              exp_in: int = 240, jti: str | None = None, key=None) -> str:
    now = int(time.time())
    claims = {"iss": client_id, "sub": client_id, "aud": aud, "exp": now + exp_in, "iat": now,
              "jti": jti or str(uuid.uuid4())}
    signing = key or (keys.ec if alg.startswith("ES") else keys.rsa)
    return jwt.encode(claims, signing, algorithm=alg, headers={"kid": kid})


def token_form(client_assertion: str, scope: str | None = None) -> dict:
    form = {"grant_type": "client_credentials",
            "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
            "client_assertion": client_assertion}
    if scope:
        form["scope"] = scope
    return form


def get_token(http, keys: Keys, client_id: str, scope: str | None = None) -> str:
    resp = http.post("/auth/token", data=token_form(assertion(keys, client_id), scope))
    assert resp.status_code == 200, resp.get_json()
    return resp.get_json()["access_token"]


def idp_token(keys: Keys, nhs: str = N_ME, *, client_id: str = "nhs-app", exp_in: int = 600, **extra) -> str:
    now = int(time.time())
    claims = {"iss": IDP_ISSUER, "aud": IDP_AUDIENCE, "sub": str(uuid.uuid4()), "exp": now + exp_in, "iat": now,
              "client_id": client_id, "nhs_number": nhs, **extra}
    return jwt.encode(claims, keys.idp, algorithm="RS512", headers={"kid": "idp-1"})


def bearer(token: str) -> dict:
    return {**FHIR, "Authorization": f"Bearer {token}"}


# -- the seeded world ------------------------------------------------------------------------------
def _tag(code: str | None) -> dict:
    return {"meta": {"tag": [{"system": TENANT_TAG, "code": code}]}} if code else {}


def _patient(pid: str, nhs: str, tenant: str) -> dict:
    return {"resourceType": "Patient", "id": pid, **_tag(tenant),
            "identifier": [{"system": NHS_NUMBER, "value": nhs}], "name": [{"family": pid}], "gender": "female",
            "birthDate": "1981-03-02"}


def _condition(cid: str, pid: str, tenant: str) -> dict:
    return {"resourceType": "Condition", "id": cid, **_tag(tenant), "subject": {"reference": f"Patient/{pid}"},
            "code": {"coding": [{"system": "http://snomed.info/sct", "code": "393563007"}]}}


def _observation(oid: str, pid: str, tenant: str) -> dict:
    return {"resourceType": "Observation", "id": oid, **_tag(tenant), "status": "final",
            "subject": {"reference": f"Patient/{pid}"},
            "code": {"coding": [{"system": "http://loinc.org", "code": "89247-1"}]}, "valueInteger": 1}


def _consent(kid: str, pid: str, tenant: str | None) -> dict:
    return {"resourceType": "Consent", "id": kid, **_tag(tenant), "status": "active",
            "scope": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/consentscope",
                                  "code": "research"}]},
            "category": [{"coding": [{"system": "http://loinc.org", "code": "59284-0"}]}],
            "patient": {"reference": f"Patient/{pid}"},
            "policyRule": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode",
                                       "code": "OPTIN"}]},
            "provision": {"type": "permit"}}


def _subject(sid: str, study: str, pid: str) -> dict:
    return {"resourceType": "ResearchSubject", "id": sid, "status": "candidate",
            "study": {"reference": f"ResearchStudy/{study}"}, "individual": {"reference": f"Patient/{pid}"}}


def _study(sid: str, tenant: str, ident: str, status: str = "active", group: str | None = None,
           site: str | None = None) -> dict:
    out = {"resourceType": "ResearchStudy", "id": sid, **_tag(tenant), "status": status, "title": f"Study {sid}",
           "identifier": [{"system": SPONSOR_STUDY_ID, "value": ident}]}
    if group:
        out["enrollment"] = [{"reference": f"Group/{group}"}]
    if site:
        out["site"] = [{"reference": f"Location/{site}"}]
    return out


def _group(gid: str, tenant: str) -> dict:
    return {"resourceType": "Group", "id": gid, **_tag(tenant), "type": "person", "actual": False,
            "characteristic": [{"code": {"coding": [{"system": "http://loinc.org", "code": "30525-0"}]},
                                "valueRange": {"low": {"value": 18, "unit": "a"}}, "exclude": False}]}


def _location(lid: str, tenant: str) -> dict:
    return {"resourceType": "Location", "id": lid, **_tag(tenant), "name": f"Site {lid}"}


def _subscription(sid: str, pid: str) -> dict:
    return {"resourceType": "Subscription", "id": sid, "status": "off", "reason": "alerts",
            "criteria": "https://trialgateway.org/fhir/SubscriptionTopic/new-matching-study",
            "_criteria": {"extension": [{
                "url": "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/backport-filter-criteria",
                "valueString": f"ResearchStudy?patient=Patient/{pid}"}]},
            "channel": {"type": "rest-hook", "endpoint": "https://app.example.org/hook",
                        "payload": "application/fhir+json"}}


WORLD = [
    _patient("leeds-me", N_ME, "RR8"), _patient("leeds-other", N_OTHER, "RR8"),
    _patient("christie-pat", N_CHRISTIE, "RBV"),
    _condition("cond-leeds-me", "leeds-me", "RR8"), _condition("cond-leeds-other", "leeds-other", "RR8"),
    _condition("cond-christie", "christie-pat", "RBV"),
    _observation("obs-leeds-me", "leeds-me", "RR8"), _observation("obs-leeds-other", "leeds-other", "RR8"),
    _observation("obs-christie", "christie-pat", "RBV"),
    _consent("consent-leeds-me", "leeds-me", "RR8"), _consent("consent-leeds-other", "leeds-other", "RR8"),
    _consent("consent-christie", "christie-pat", "RBV"),
    _study("study-a", "SPA", "A-1", group="group-a", site="loc-a"),
    _study("study-b", "SPB", "B-1", group="group-b", site="loc-b"),
    {**_study("study-b2", "SPB", "B-3", group="group-members"), **_tag("SPB")},
    _study("study-b-draft", "SPB", "B-2", status="in-review"),
    _group("group-a", "SPA"), _group("group-b", "SPB"),
    {**_group("group-members", "RBV"), "actual": True,
     "member": [{"entity": {"reference": "Patient/christie-pat"}}]},
    _location("loc-a", "SPA"), _location("loc-b", "SPB"),
    _subject("subj-leeds-me", "study-a", "leeds-me"), _subject("subj-leeds-other", "study-b", "leeds-other"),
    _subject("subj-christie", "study-b", "christie-pat"),
    _subscription("sub-me", "leeds-me"), _subscription("sub-other", "leeds-other"),
]


def secret(rid: str) -> str:
    """A marker only the resource's content carries: finding it in a response means that content leaked."""
    return f"SECRET-{rid}-END"


def _with_secret(res: dict) -> dict:
    body = json.loads(json.dumps(res))
    body["text"] = {"status": "generated",
                    "div": f'<div xmlns="http://www.w3.org/1999/xhtml">{secret(res["id"])}</div>'}
    return body


def seed(store: Store) -> None:
    """The world, written straight into the store (no request, no hooks: fast and caller-free)."""
    with store.write() as tx:
        for res in WORLD:
            tx.put(_with_secret(res))


@pytest.fixture
def world(sec_app):
    seed(sec_app.extensions["gateway.store"])
    return {r["id"]: r for r in WORLD}


def close_app(app) -> None:
    """Write pending audit events and close the app's database connections."""
    sec = app.extensions.get("gateway.security")
    if sec is not None:
        sec.audit_writer.close()
    app.extensions["gateway.store"].engine.dispose()
