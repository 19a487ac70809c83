"""The logs of real processes hold no patient value and no token: a full end-to-end run (the demo story, with
`gateway serve`, a second gateway as the hospital's FHIR server and `gateway worker`), then a run with clients
and bearer tokens; every line each process wrote is one JSON object, and request lines carry request ids."""

from __future__ import annotations

import json
import time

import requests

from gateway.fhir import conventions as cv
from tests.e2e import test_alerts_e2e
from tests.e2e.test_alerts_e2e import (
    DEMO,
    FHIR,
    ROOT,
    consent,
    notifications,
    patient_id,
    person_bundle,
    post,
    subscription,
    wait_until,
)
from tests.procs import GatewayProcess
from tests.security.conftest import IDP_AUDIENCE, IDP_ISSUER, Keys, assertion, idp_token, pem, public_jwk, token_form
from tests.security.conftest import write_clients as write_security_clients

SECOND = ("9434765919", "Nolan")
story = test_alerts_e2e.world  # the fixture of the demo story's processes (tests/e2e/test_alerts_e2e.py)


def people_values(*bundles: dict) -> set[str]:
    """Every identifier value, name part, birth date, postcode and address line of the Patients in the bundles."""
    out: set[str] = set()
    for bundle in bundles:
        for entry in bundle.get("entry", []):
            res = entry.get("resource", {})
            if res.get("resourceType") != "Patient":
                continue
            out |= {i["value"] for i in res.get("identifier", [])}
            for name in res.get("name", []):
                out |= {name.get("family", ""), *name.get("given", [])}
            out.add(res.get("birthDate", ""))
            for addr in res.get("address", []):
                out |= {addr.get("postalCode", ""), *addr.get("line", [])}
    out.discard("")
    return out


def json_lines(text: str, where: str) -> list[dict]:
    records = []
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            raise AssertionError(f"{where} line {n} is not JSON: {line[:200]}") from None
        assert isinstance(rec, dict) and {"ts", "level", "logger", "event"} <= rec.keys(), line[:200]
        records.append(rec)
    return records


def assert_clean(logs: dict[str, str], secrets: set[str]) -> None:
    found = {(where, s) for where, text in logs.items() for s in secrets if s in text}
    assert found == set(), f"patient values or tokens in the logs: {sorted(found)}"


def test_demo_story_logs_are_json_with_request_ids_and_hold_no_patient_value(story):
    hub, hospital, receiver = story["hub"], story["hospital"], story["receiver"]
    patient_bundle = json.loads((DEMO / "03-leeds-patient-glioblastoma.json").read_text())
    second = person_bundle(*SECOND)
    secrets = people_values(patient_bundle, second)
    assert {"9449306060", "Whitaker", "1981-05-14", "LS6 1LF", "9434765919", "Nolan"} <= secrets
    assert post(hub, "", (DEMO / "01-sponsor-glioblastoma-study.json").read_bytes()).status_code == 200
    ct = requests.post(hub.base.removesuffix("/fhir") + "/ingest/ctgov-v2",
                       data=(ROOT / "tests/data/ctgov/get_nct02576665_20260811.json").read_bytes(),
                       headers={"Content-Type": "application/json"}, timeout=30)
    assert ct.status_code == 200
    assert post(hub, "", patient_bundle).status_code == 200
    # searches that put every kind of patient value in the URL
    pid = patient_id(hub, "9449306060")
    traced = requests.get(f"{hub.base}/Patient", headers={**FHIR, "X-Request-ID": "e2e-trace-1"}, timeout=30,
                          params={"family": "Whitaker", "given": "Joanne", "birthdate": "1981-05-14",
                                  "address-postalcode": "LS6 1LF", "identifier": "LTH0042195"})
    assert traced.status_code == 200 and traced.headers["X-Request-ID"] == "e2e-trace-1"
    m = requests.get(f"{hub.base}/ResearchStudy/$match", params={"patient-id": pid}, headers=FHIR, timeout=60)
    study_id = m.json()["entry"][0]["resource"]["id"]
    # a contact request delivered to the hospital by the worker
    rs = post(hub, "/ResearchSubject", {"resourceType": "ResearchSubject", "status": "candidate",
                                        "individual": {"reference": f"Patient/{pid}"},
                                        "study": {"reference": f"ResearchStudy/{study_id}"}})
    assert rs.status_code == 201, rs.text
    ident = next(i for i in rs.json()["identifier"] if i["system"] == cv.CONTACT_REQUEST_ID)["value"]
    wait_until(lambda: requests.get(f"{hospital.base}/ResearchSubject", headers=FHIR, timeout=30, params={
        "identifier": f"{cv.CONTACT_REQUEST_ID}|{ident}"}).json().get("entry"), what="the contact request at Leeds")
    # alerts: consent, subscription, handshake and one notification
    assert post(hub, "", second).status_code == 200
    assert post(hub, "/Consent", consent(pid, cv.PURPOSE_TRIAL_ALERTS)).status_code == 201
    sub = post(hub, "/Subscription", subscription(pid, receiver.url)).json()["id"]
    wait_until(lambda: notifications(receiver, sub), what="the alert")
    time.sleep(0.5)  # the last log lines of the deliveries
    logs = {"gateway": hub.log(), "worker": story["worker"].log(), "hospital": hospital.log()}
    assert_clean(logs, secrets)
    records = {where: json_lines(text, where) for where, text in logs.items()}
    requests_logged = [r for r in records["gateway"] if r["logger"] == "gateway.request"]
    assert len(requests_logged) >= 10 and all(r.get("request_id") for r in requests_logged)
    traced_line = next(r for r in requests_logged if r["request_id"] == "e2e-trace-1")
    assert traced_line["path"] == ("/fhir/Patient?family=<redacted>&given=<redacted>&birthdate=<redacted>"
                                   "&address-postalcode=<redacted>&identifier=<redacted>")
    assert any(r["logger"] == "gateway.outbound.worker" and "delivered" in r["event"] for r in records["worker"])
    # the hospital (another gateway) logged the worker's request with the id it generated
    assert any(r["logger"] == "gateway.request" and r.get("method") == "POST" for r in records["hospital"])


def test_tokens_and_client_assertions_never_reach_the_log(tmp_path):
    keys = Keys()
    write_security_clients(tmp_path / "clients", keys)
    (tmp_path / "idp.json").write_text(json.dumps({"keys": [public_jwk(keys.idp, "idp-1")]}))
    env = {"GATEWAY_CLIENTS_PATH": str(tmp_path / "clients"), "GATEWAY_TOKEN_SIGNING_KEY": pem(keys.gateway),
           "GATEWAY_IDP_JWKS_FILE": str(tmp_path / "idp.json"), "GATEWAY_IDP_ISSUER": IDP_ISSUER,
           "GATEWAY_IDP_AUDIENCE": IDP_AUDIENCE, "GATEWAY_AUDIT": "on"}
    bundle = json.loads((DEMO / "03-leeds-patient-glioblastoma.json").read_text())
    with GatewayProcess(f"sqlite:///{tmp_path / 'gw.sqlite3'}", tmp_path / "gw", env=env) as gw:
        root = gw.base.removesuffix("/fhir")
        client_assertion = assertion(keys, "leeds-ehr", aud=f"{root}/auth/token")
        tok = requests.post(f"{root}/auth/token", data=token_form(client_assertion), timeout=30)
        assert tok.status_code == 200, tok.text
        access = tok.json()["access_token"]
        auth = {**FHIR, "Authorization": f"Bearer {access}"}
        patient = next(e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == "Patient")
        patient = {k: v for k, v in patient.items() if k != "managingOrganization"}
        created = requests.post(f"{gw.base}/Patient", json=patient, headers=auth, timeout=30)
        assert created.status_code == 201, created.text
        hit = requests.get(f"{gw.base}/Patient", params={"identifier": f"{cv.NHS_NUMBER}|9449306060"},
                           headers={**auth, "X-Request-ID": "with-token"}, timeout=30)
        assert hit.status_code == 200 and len(hit.json()["entry"]) == 1
        patient_token = idp_token(keys, "9449306060")
        mine = requests.get(f"{gw.base}/Patient", headers={**FHIR, "Authorization": f"Bearer {patient_token}"},
                            timeout=30)
        assert mine.status_code == 200
        forged = access[:-6] + "AAAAAA"
        assert requests.get(f"{gw.base}/Patient", headers={**FHIR, "Authorization": f"Bearer {forged}"},
                            timeout=30).status_code == 401
        assert requests.get(f"{root}/metrics", headers=auth, timeout=30).status_code == 403  # a hospital client
        time.sleep(0.5)  # the audit writer's batch
        text = gw.log()
    secrets = people_values(bundle) | {access, client_assertion, patient_token, forged}
    secrets |= {t.split(".")[1] for t in (access, client_assertion, patient_token)}  # a claims part alone
    assert_clean({"gateway": text}, secrets)
    records = json_lines(text, "gateway")
    lines = {r["request_id"]: r for r in records if r["logger"] == "gateway.request"}
    assert lines["with-token"]["path"] == "/fhir/Patient?identifier=<redacted>"
    assert lines["with-token"]["role"] == "hospital"
    assert sorted(r["status"] for r in lines.values() if r["route"] == "/fhir/<rtype>") == [200, 200, 201, 401]
