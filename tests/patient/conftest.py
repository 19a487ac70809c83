"""Patient-action fixtures: the local OIDC test issuer, a gateway with clients configured (so every request is
authorized), a research office for The Christie (RBV) as the only route, and the demo study and patient."""

from __future__ import annotations

import json
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import requests

from gateway.api.app import create_app
from gateway.config import NotifySettings, OidcSettings, SecuritySettings, Settings, StoreSettings
from gateway.outbound.allowlist import AllowList
from gateway.outbound.settings import OutboundSettings
from gateway.outbound.worker import Worker
from tests.oidc_issuer import OidcIssuer

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "fixtures" / "demo"
ME = "9449306060"  # the demo Leeds patient (a record here; Leeds itself is not configured)
NOBODY = "9434765919"  # a person the gateway holds no record of
OFFICE = "https://fhir.christie.test/R4"
OFFICE_YAML = f"""\
# The Christie's research office: told of contact requests about studies sited there; no patients of its own here.
name: christie-research-office
ods_code: RBV
fhir_base_url: {OFFICE}
write_back: {{research_subject: false, site_contact: true}}
"""
NHS_APP = """\
client_id: nhs-app
name: Patient app (tests)
role: patient-app
scopes: [patient/Patient.rs, patient/ResearchStudy.rs, patient/ResearchSubject.crus, patient/Consent.cruds,
         patient/Subscription.cruds]
"""
ALERTS = "https://alerts.example.org/hook"


@pytest.fixture
def issuer():
    with OidcIssuer(client_id="gateway-web", client_secret="web-secret", nhs_number=ME) as idp:
        yield idp


@pytest.fixture
def patient_settings(db_url, tmp_path, issuer) -> Settings:
    hospitals = tmp_path / "hospitals"
    hospitals.mkdir()
    (hospitals / "christie-research-office.yaml").write_text(OFFICE_YAML)
    clients = tmp_path / "clients"
    clients.mkdir()
    (clients / "nhs-app.yaml").write_text(NHS_APP)
    # base_url: the test client's own base, which alert notifications name (GATEWAY_BASE_URL)
    return Settings(store=StoreSettings(db_url), instance_path=tmp_path, mappings_path=ROOT / "mappings",
                    base_url="http://localhost/fhir",
                    security=SecuritySettings(clients_path=clients, idp_jwks_url=f"{issuer.url}/jwks",
                                              idp_issuer=issuer.url, idp_audience="trial-gateway", rate_limit=0,
                                              audit="on"),
                    oidc=OidcSettings(issuer=issuer.url, client_id="gateway-web", client_secret="web-secret",
                                      redirect_uri="http://localhost/patient/callback",
                                      session_secret="test-session-secret", session_cookie_secure=False),
                    notify=NotifySettings(patient_alert_endpoint=ALERTS),
                    outbound=OutboundSettings(hospitals_path=hospitals,
                                              allowed_hosts=AllowList.parse("fhir.christie.test, alerts.example.org"),
                                              contact_id_key="test-contact-key", backoff_base=0.001, max_attempts=3))


@pytest.fixture
def app(patient_settings):
    application = create_app(patient_settings)
    application.config["TESTING"] = True
    yield application
    application.extensions["gateway.security"].audit_writer.close()
    application.extensions["gateway.store"].engine.dispose()


@pytest.fixture
def demo(app) -> dict[str, str]:
    """The demo study (sites: Christie RBV, Leeds RR8) and the demo Leeds patient, loaded by the operator."""
    svc = app.extensions["gateway.service"]
    for name in ("01-sponsor-glioblastoma-study.json", "03-leeds-patient-glioblastoma.json"):
        svc.process_bundle(json.loads((DEMO / name).read_text()))
    store = app.extensions["gateway.store"]
    from gateway.fhir.search import parse_search

    sid = store.search_ids(parse_search("ResearchStudy", [("identifier", "NOTC-GBM-01")]))[0]
    pid = store.search_ids(parse_search("Patient", [("identifier", f"https://fhir.nhs.uk/Id/nhs-number|{ME}")]))[0]
    return {"study": sid, "patient": pid}


@pytest.fixture
def worker(app) -> Worker:
    return app.extensions["gateway.root"].worker(name="test-worker")


def sign_in(client, next_path: str = "/patient/contact-requests"):
    """The browser's round trip: gateway -> issuer /authorize (auto-approves) -> gateway /patient/callback."""
    r = client.get("/patient/login", query_string={"next": next_path})
    assert r.status_code == 302, r.get_data(as_text=True)
    at_issuer = requests.get(r.headers["Location"], allow_redirects=False, timeout=10)
    assert at_issuer.status_code == 302, at_issuer.text
    back = urlsplit(at_issuer.headers["Location"])
    return client.get(f"{back.path}?{back.query}")


def csrf(client) -> str:
    with client.session_transaction() as s:
        return s["patient"]["csrf"]
