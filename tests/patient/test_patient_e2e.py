"""End to end with real processes on 127.0.0.1: the OIDC test issuer, our gateway, a second gateway playing The
Christie's research office, ``gateway worker`` and an alert receiver (tests/notify/receiver.py).

A signed-in test patient (whose own hospital is not configured) requests contact: the research team sees the
Task ``requested``; she withdraws: it goes to ``cancelled``. She opts in to alerts; a new matching study gives
one alert.
"""

from __future__ import annotations

import base64
import json
import sys
import time
import uuid
import zlib

import pytest
import requests

from tests.conftest import BACKENDS, PG_URL, reset_postgres
from tests.e2e.test_alerts_e2e import Receiver, notifications, post, second_study, start_worker
from tests.e2e.test_contact_delivery import Child, _child_env
from tests.patient.conftest import DEMO, ME, ROOT
from tests.procs import GatewayProcess, free_port, wait_until

FHIR = {"Content-Type": "application/fhir+json", "Accept": "application/fhir+json"}


def _params(**values) -> str:
    out = [{"name": k, "valueReference": {"reference": v}} if k == "study" else {"name": k, "valueString": v}
           for k, v in values.items()]
    return json.dumps({"resourceType": "Parameters", "parameter": out})


@pytest.fixture(params=BACKENDS)
def world(request, tmp_path):
    procs: list = []
    try:
        idp = Child([sys.executable, str(ROOT / "tests" / "oidc_issuer.py"), "--port", "0", "--client-id", "gw",
                     "--client-secret", "s3cret", "--nhs-number", ME], _child_env({}), tmp_path / "idp.log")
        procs.append(idp)
        idp_port = int(idp.wait_for(r"listening on (\d+)").group(1))
        idp_url = f"http://127.0.0.1:{idp_port}"
        office = GatewayProcess(f"sqlite:///{tmp_path / 'office.sqlite3'}", tmp_path / "office").start()
        procs.append(office)
        receiver = Receiver(tmp_path)
        procs.append(receiver.child)
        hub_dir = tmp_path / "hub"
        (hub_dir / "hospitals").mkdir(parents=True)
        (hub_dir / "clients").mkdir()
        (hub_dir / "hospitals" / "office.yaml").write_text(
            f"name: christie-research-office\nods_code: RBV\nfhir_base_url: {office.base}\n"
            "timeouts: {connect: 2, read: 10}\nwrite_back: {research_subject: false, site_contact: true}\n")
        env = {"GATEWAY_ALLOWED_HOSTS": "127.0.0.1", "GATEWAY_CONTACT_ID_KEY": "e2e-key",
               "GATEWAY_HOSPITALS_PATH": str(hub_dir / "hospitals"), "GATEWAY_CLIENTS_PATH": str(hub_dir / "clients"),
               "GATEWAY_OUTBOX_BACKOFF_BASE": "0.05", "GATEWAY_OUTBOX_BACKOFF_MAX": "0.3",
               "GATEWAY_WORKER_POLL_SECONDS": "0.1", "GATEWAY_OIDC_ISSUER": idp_url, "GATEWAY_OIDC_CLIENT_ID": "gw",
               "GATEWAY_OIDC_CLIENT_SECRET": "s3cret", "GATEWAY_SESSION_SECRET": uuid.uuid4().hex,
               "GATEWAY_SESSION_COOKIE_SECURE": "false", "GATEWAY_PATIENT_ALERT_ENDPOINT": receiver.url}
        port = free_port()  # the redirect URI registered at the issuer names the hub's port
        root = f"http://127.0.0.1:{port}"
        hub_db = f"sqlite:///{hub_dir / 'gateway.sqlite3'}" if request.param == "sqlite" else PG_URL
        if request.param != "sqlite":
            reset_postgres(PG_URL)
        hub = Child([sys.executable, "-c", "from gateway.cli import main; main()", "serve", "--host", "127.0.0.1",
                     "--port", str(port)], _child_env({**env, "GATEWAY_DATABASE_URL": hub_db,
                                                       "GATEWAY_INSTANCE_PATH": str(hub_dir),
                                                       "GATEWAY_OIDC_REDIRECT_URI": f"{root}/patient/callback"}),
                    hub_dir / "hub.log")
        procs.append(hub)
        hub.base = hub.wait_for(r"FHIR base URL: (http://\S+/fhir)", timeout=60).group(1)
        wait_until(lambda: _healthy(root), what="the hub")
        worker = start_worker(_child_env({**env, "GATEWAY_DATABASE_URL": hub_db,
                                          "GATEWAY_INSTANCE_PATH": str(hub_dir), "GATEWAY_BASE_URL": hub.base}),
                              hub_dir)
        procs.append(worker)
        yield {"hub": hub, "office": office, "receiver": receiver, "root": root}
    finally:
        for p in reversed(procs):
            p.stop()


def _healthy(root: str) -> bool:
    try:
        return requests.get(f"{root}/healthz", timeout=2).status_code == 200
    except requests.RequestException:
        return False


def test_contact_withdraw_and_alerts_end_to_end(world):
    hub, office, receiver, root = world["hub"], world["office"], world["receiver"], world["root"]
    for name in ("01-sponsor-glioblastoma-study.json", "03-leeds-patient-glioblastoma.json"):
        assert post(hub, "", (DEMO / name).read_bytes()).status_code == 200
    sid = requests.get(f"{hub.base}/ResearchStudy", params={"identifier": "NOTC-GBM-01"}, headers=FHIR,
                       timeout=10).json()["entry"][0]["resource"]["id"]
    browser = requests.Session()
    done = browser.get(f"{root}/patient/login", params={"next": "/patient/contact-requests"}, timeout=10)
    assert done.status_code == 200 and done.json()["resourceType"] == "Bundle", done.text  # signed in, redirected
    token = _csrf(browser)
    r = browser.post(f"{root}/patient/contact-requests", data=_params(study=f"ResearchStudy/{sid}"),
                     headers={**FHIR, "X-CSRF-Token": token}, timeout=10)
    assert r.status_code == 201, r.text
    subject = r.json()

    def office_task():
        found = requests.get(f"{office.base}/Task", headers=FHIR, timeout=10).json().get("entry") or []
        return found[0]["resource"] if found else None

    task = wait_until(office_task, what="the research team's Task")
    assert task["status"] == "requested" and task["for"]["identifier"]["value"] == ME
    assert browser.delete(f"{root}/patient/contact-requests/{subject['id']}", headers={"X-CSRF-Token": token},
                          timeout=10).json()["status"] == "withdrawn"
    wait_until(lambda: (office_task() or {}).get("status") == "cancelled", what="the Task cancelled")
    assert len(requests.get(f"{office.base}/Task", headers=FHIR, timeout=10).json()["entry"]) == 1
    # Alerts: opt in, then a sponsor pushes a second matching study: one alert.
    made = browser.post(f"{root}/patient/alerts", data=_params(condition="brain tumour", postcode="LS6 3HE"),
                        headers={**FHIR, "X-CSRF-Token": token}, timeout=10)
    assert made.status_code == 201, made.text
    sub_id = next(e["resource"]["id"] for e in made.json()["entry"] if e["resource"]["resourceType"] ==
                  "Subscription")
    # Opting in re-matches her (a Consent granted): she is told once of the study already recruiting.
    wait_until(lambda: _foci(receiver, sub_id) == [f"ResearchStudy/{sid}"], what="the alert about the first study")
    assert post(hub, "", second_study()).status_code == 200
    sid2 = requests.get(f"{hub.base}/ResearchStudy", params={"identifier": "NOTC-GBM-02"}, headers=FHIR,
                        timeout=10).json()["entry"][0]["resource"]["id"]
    wait_until(lambda: f"ResearchStudy/{sid2}" in _foci(receiver, sub_id), what="the alert about the new study")
    time.sleep(2)  # a second alert would have arrived by now
    assert sorted(_foci(receiver, sub_id)) == sorted([f"ResearchStudy/{sid}", f"ResearchStudy/{sid2}"])
    # Opt out in one step: the next matching study tells her nothing.
    assert browser.delete(f"{root}/patient/alerts", headers={"X-CSRF-Token": token}, timeout=10).status_code == 200
    third = json.loads(json.dumps(second_study()).replace("NOTC-GBM-02", "NOTC-GBM-03").replace(
        "ISRCTN87654321", "ISRCTN11223344"))
    assert post(hub, "", third).status_code == 200
    time.sleep(2)
    assert len(_foci(receiver, sub_id)) == 2


def _foci(receiver: Receiver, sub_id: str) -> list[str]:
    """The studies each event notification of the subscription was about, one entry per event."""
    out = []
    for bundle in notifications(receiver, sub_id):
        for p in bundle["entry"][0]["resource"]["parameter"]:
            if p["name"] == "notification-event":
                out += [q["valueReference"]["reference"] for q in p["part"] if q["name"] == "focus"]
    return out


def _csrf(browser: requests.Session) -> str:
    """The CSRF token the pages would put in their forms (here: read from the signed session cookie)."""
    raw = browser.cookies["gateway_session"]
    compressed = raw.startswith(".")
    payload = raw.lstrip(".").split(".")[0]
    data = base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))
    return json.loads(zlib.decompress(data) if compressed else data)["patient"]["csrf"]
