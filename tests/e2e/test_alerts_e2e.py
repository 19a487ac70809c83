"""Phase 2 end to end, with real processes on 127.0.0.1: the demo story of ARCHITECTURE.md, and alerts that are
never lost (receiver down, worker SIGKILLed) and never sent without consent.

Processes: our gateway; a second gateway playing Leeds' FHIR server behind a proxy that fails the first POSTs;
``gateway worker`` (outbox delivery + automatic flows); a subscriber's endpoint (tests/notify/receiver.py).
"""

from __future__ import annotations

import json
import signal
import sys
import time
import uuid
from pathlib import Path

import pytest
import requests

from gateway.fhir import conventions as cv
from gateway.notify.subscriptions import EXT_FILTER_CRITERIA, EXT_PAYLOAD_CONTENT
from tests.e2e.test_contact_delivery import Child, _child_env, point_hospital_file, start_proxy
from tests.procs import GatewayProcess, wait_until

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "fixtures" / "demo"
RECEIVER = ROOT / "tests" / "notify" / "receiver.py"
FHIR = {"Content-Type": "application/fhir+json", "Accept": "application/fhir+json"}
ENV = {
    "GATEWAY_ALLOWED_HOSTS": "127.0.0.1",
    "GATEWAY_CONTACT_ID_KEY": "e2e-contact-key",
    "GATEWAY_OUTBOX_MAX_ATTEMPTS": "20",
    "GATEWAY_OUTBOX_BACKOFF_BASE": "0.05",
    "GATEWAY_OUTBOX_BACKOFF_MAX": "0.3",
    "GATEWAY_OUTBOX_LEASE_SECONDS": "1.5",
    "GATEWAY_WORKER_POLL_SECONDS": "0.1",
    "GATEWAY_SUBSCRIPTION_ERROR_AFTER": "2",
}


class Receiver:
    def __init__(self, folder: Path, port: int = 0, *args: str):
        self.out = folder / "received.jsonl"
        self.child = Child([sys.executable, str(RECEIVER), "--out", str(self.out), "--port", str(port), *args],
                           _child_env({}), folder / f"receiver-{uuid.uuid4().hex[:6]}.log")
        self.port = int(self.child.wait_for(r"listening on (\d+)").group(1))
        self.url = f"http://127.0.0.1:{self.port}/hook"

    def bundles(self) -> list[dict]:
        if not self.out.exists():
            return []
        return [json.loads(line) for line in self.out.read_text().splitlines() if line.strip()]


def status_of(bundle: dict) -> dict:
    params = {}
    for p in bundle["entry"][0]["resource"]["parameter"]:
        params.setdefault(p["name"], []).append(p)
    return params


def notifications(receiver: Receiver, sub_id: str, kind: str = "event-notification") -> list[dict]:
    out = []
    for b in receiver.bundles():
        st = status_of(b)
        if st["type"][0]["valueCode"] == kind and st["subscription"][0]["valueReference"]["reference"].endswith(
                f"Subscription/{sub_id}"):
            out.append(b)
    return out


def event_numbers(bundles: list[dict]) -> list[int]:
    return [int(p["part"][0]["valueString"]) for b in bundles for p in status_of(b).get("notification-event", [])]


def post(gw: GatewayProcess, path: str, body: dict | bytes, **headers) -> requests.Response:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    return requests.post(f"{gw.base}{path}", data=data, headers={**FHIR, **headers}, timeout=30)


def person_bundle(nhs: str, family: str) -> dict:
    text = (DEMO / "03-leeds-patient-glioblastoma.json").read_text()
    for old, new in (("9449306060", nhs), ("Whitaker", family), ("PL-88213", f"PL-{nhs}"),
                     ("ECOG-55120", f"ECOG-{nhs}"), ("LTH0042195", f"LTH{nhs}")):
        text = text.replace(old, new)
    return json.loads(text)


def second_study() -> dict:
    text = (DEMO / "01-sponsor-glioblastoma-study.json").read_text()
    text = text.replace("NOTC-GBM-01", "NOTC-GBM-02").replace("ISRCTN12345678", "ISRCTN87654321")
    text = text.replace("ReGlio: re-irradiation", "ReGlio-2: proton re-irradiation")
    return json.loads(text)


def patient_id(gw: GatewayProcess, nhs: str) -> str:
    r = requests.get(f"{gw.base}/Patient", params={"identifier": f"{cv.NHS_NUMBER}|{nhs}"}, headers=FHIR)
    return r.json()["entry"][0]["resource"]["id"]


def consent(pid: str, *purposes) -> dict:
    return {"resourceType": "Consent", "status": "active",
            "scope": {"coding": [{"system": cv.CONSENT_SCOPE, "code": "research"}]},
            "category": [{"coding": [{"system": "http://loinc.org", "code": "57016-8"}]}],
            "patient": {"reference": f"Patient/{pid}"}, "policyRule": {"text": "NHS App research preferences"},
            "provision": {"type": "permit", "purpose": [{"system": s, "code": c} for s, c in purposes]}}


def subscription(pid: str, endpoint: str) -> dict:
    return {"resourceType": "Subscription", "status": "requested", "reason": "Tell me about trials I may fit",
            "criteria": cv.TOPIC_NEW_MATCHING_STUDY,
            "_criteria": {"extension": [{"url": EXT_FILTER_CRITERIA,
                                         "valueString": f"ResearchStudy?patient=Patient/{pid}"}]},
            "channel": {"type": "rest-hook", "endpoint": endpoint, "payload": "application/fhir+json",
                        "_payload": {"extension": [{"url": EXT_PAYLOAD_CONTENT, "valueCode": "full-resource"}]}}}


def start_worker(env: dict, folder: Path) -> Child:
    child = Child([sys.executable, "-c", "from gateway.cli import main; main()", "worker"], env,
                  folder / f"worker-{uuid.uuid4().hex[:6]}.log")
    child.wait_for(r"polling every")
    return child


@pytest.fixture
def world(tmp_path):
    """Leeds (a second gateway behind a proxy that fails twice), our gateway, a receiver, a worker."""
    procs: list = []
    hospital = GatewayProcess(f"sqlite:///{tmp_path / 'leeds.sqlite3'}", tmp_path / "leeds").start()
    procs.append(hospital)
    assert post(hospital, "", (DEMO / "03-leeds-patient-glioblastoma.json").read_bytes()).status_code == 200
    proxy, port = start_proxy(hospital, tmp_path, "--fail-posts", "2")
    procs.append(proxy)
    hub_dir = tmp_path / "hub"
    (hub_dir / "hospitals").mkdir(parents=True)
    point_hospital_file(hub_dir, port)
    env = {**ENV, "GATEWAY_HOSPITALS_PATH": str(hub_dir / "hospitals")}
    hub = GatewayProcess(f"sqlite:///{hub_dir / 'gateway.sqlite3'}", hub_dir, env=env).start()
    procs.append(hub)
    worker_env = _child_env({**env, "GATEWAY_DATABASE_URL": hub.database_url, "GATEWAY_INSTANCE_PATH": str(hub_dir),
                             "GATEWAY_BASE_URL": hub.base})
    receiver = Receiver(tmp_path)
    procs.append(receiver.child)
    worker = start_worker(worker_env, hub_dir)
    w = {"hospital": hospital, "proxy": proxy, "hub": hub, "receiver": receiver, "worker": worker,
         "worker_env": worker_env, "dir": hub_dir}
    yield w
    w["worker"].stop()
    w["receiver"].child.stop()  # a test may have replaced it (restarted on the same port)
    for p in reversed(procs):
        p.stop()


def test_demo_story_end_to_end(world):
    hub, hospital, receiver, proxy = world["hub"], world["hospital"], world["receiver"], world["proxy"]
    # 1. A sponsor pushes a conditional transaction Bundle; pushing it again changes nothing.
    first = post(hub, "", (DEMO / "01-sponsor-glioblastoma-study.json").read_bytes())
    assert first.status_code == 200, first.text
    again = post(hub, "", (DEMO / "01-sponsor-glioblastoma-study.json").read_bytes()).json()
    assert {e["response"]["status"] for e in again["entry"]} == {"200 OK"}
    assert [e["response"]["etag"] for e in again["entry"]] == [e["response"]["etag"] for e in first.json()["entry"]]
    assert post(hub, "", (DEMO / "02-sponsor-brain-metastases-study.json").read_bytes()).status_code == 200
    # 2. Imports: ClinicalTrials.gov records and a hospital problem list with local codes.
    ct = requests.post(hub.base.removesuffix("/fhir") + "/ingest/ctgov-v2",
                       data=(ROOT / "tests/data/ctgov/get_nct02576665_20260811.json").read_bytes(),
                       headers={"Content-Type": "application/json", "Accept": "application/fhir+json"}, timeout=30)
    assert ct.status_code == 200 and ct.json()["entry"][0]["response"]["status"].startswith("201"), ct.text
    pl = requests.post(hub.base.removesuffix("/fhir") + "/ingest/problem-list",
                       data=(ROOT / "fixtures/problem-list/problem-list-extract.csv").read_bytes(),
                       headers={"Content-Type": "text/csv", "Accept": "application/fhir+json"}, timeout=30)
    statuses = [e["response"]["status"][:3] for e in pl.json()["entry"]]
    assert pl.status_code == 200 and statuses.count("422") + statuses.count("400") == 1, statuses
    assert statuses.count("201") + statuses.count("200") == len(statuses) - 1, "only the bad NHS number is refused"
    # 3. Leeds pushes the patient.
    assert post(hub, "", (DEMO / "03-leeds-patient-glioblastoma.json").read_bytes()).status_code == 200
    pid = patient_id(hub, "9449306060")
    # 4. $match: the glioblastoma study first, with reasons and the nearest site; not the metastases study.
    m = requests.get(f"{hub.base}/ResearchStudy/$match", params={"patient-id": pid}, headers=FHIR).json()
    titles = [e["resource"].get("title", "") for e in m["entry"] if e["search"]["mode"] == "match"]
    assert titles[0].startswith("ReGlio"), titles
    assert not any("metastases" in t.lower() for t in titles)
    top = m["entry"][0]["search"]
    assert 0 < top["score"] <= 1 and top["extension"], top
    text = json.dumps(top)
    assert "393563007" in text and "km" in text
    near = requests.get(f"{hub.base}/ResearchStudy/$match", params={"patient-id": pid, "includeNearMisses": "true"},
                        headers=FHIR).json()
    assert "94225005" in json.dumps(near), "near misses say why the metastases study is not a match"
    # 5. She asks to be contacted: delivered once to Leeds although Leeds fails twice first.
    study_id = m["entry"][0]["resource"]["id"]
    rs = post(hub, "/ResearchSubject", {"resourceType": "ResearchSubject", "status": "candidate",
                                        "individual": {"reference": f"Patient/{pid}"},
                                        "study": {"reference": f"ResearchStudy/{study_id}"}})
    assert rs.status_code == 201, rs.text
    ident = next(i for i in rs.json()["identifier"] if i["system"] == cv.CONTACT_REQUEST_ID)["value"]

    def at_leeds():
        r = requests.get(f"{hospital.base}/ResearchSubject",
                         params={"identifier": f"{cv.CONTACT_REQUEST_ID}|{ident}"}, headers=FHIR)
        return r.json().get("entry")

    assert len(wait_until(at_leeds, what="the contact request at Leeds")) == 1
    assert proxy.log().count("-> 500") == 2
    # 6. She opts in to alerts; a second person subscribes without consent.
    assert post(hub, "", person_bundle("9434765919", "Nolan")).status_code == 200
    other = patient_id(hub, "9434765919")
    assert post(hub, "/Consent", consent(pid, cv.PURPOSE_TRIAL_ALERTS)).status_code == 201
    sub = post(hub, "/Subscription", subscription(pid, receiver.url)).json()["id"]
    sub_other = post(hub, "/Subscription", subscription(other, receiver.url)).json()["id"]
    wait_until(lambda: notifications(receiver, sub, "handshake") and notifications(receiver, sub_other, "handshake"),
               what="handshakes")
    wait_until(lambda: requests.get(f"{hub.base}/Subscription/{sub}", headers=FHIR).json()["status"] == "active",
               what="the subscription to become active")
    # Consent granted: she is re-matched against the studies already recruiting (one alert: ReGlio).
    opted_in = wait_until(lambda: notifications(receiver, sub), what="the alert for the recruiting study")
    time.sleep(1.0)
    assert event_numbers(notifications(receiver, sub)) == [1], "one alert: the one recruiting study she fits"
    assert opted_in[0]["entry"][1]["resource"]["id"] == study_id
    # A sponsor pushes a second matching study: exactly one new notification, event 2, about that study.
    pushed = post(hub, "", second_study()).json()
    new_study = next(e["response"]["location"].split("/")[1] for e in pushed["entry"]
                     if e["response"]["location"].startswith("ResearchStudy/"))
    wait_until(lambda: len(notifications(receiver, sub)) >= 2, what="the alert for the second study")
    time.sleep(1.5)  # room for a wrong extra notification to arrive
    got = notifications(receiver, sub)
    assert event_numbers(got) == [1, 2]
    assert got[1]["entry"][1]["resource"]["id"] == new_study
    assert notifications(receiver, sub_other) == [], "no consent: no alert"
    subjects = requests.get(f"{hub.base}/ResearchSubject", params={"individual": f"Patient/{other}"},
                            headers=FHIR).json()
    assert subjects["total"] == 0, "no consent: never proposed to a research team"


def test_receiver_down_then_up_and_worker_killed_lose_nothing(world):
    hub, receiver = world["hub"], world["receiver"]
    post(hub, "", (DEMO / "03-leeds-patient-glioblastoma.json").read_bytes())
    pid = patient_id(hub, "9449306060")
    post(hub, "/Consent", consent(pid, cv.PURPOSE_TRIAL_ALERTS))
    sub = post(hub, "/Subscription", subscription(pid, receiver.url)).json()["id"]
    wait_until(lambda: notifications(receiver, sub, "handshake"), what="handshake")
    # The receiver goes down; a study arrives; deliveries fail and the subscription shows the error.
    receiver.child.stop()
    post(hub, "", (DEMO / "01-sponsor-glioblastoma-study.json").read_bytes())
    wait_until(lambda: requests.get(f"{hub.base}/Subscription/{sub}", headers=FHIR).json()["status"] == "error",
               what="the subscription to show the error")
    # The subscriber can see what it missed with $status and $events.
    st = requests.get(f"{hub.base}/Subscription/{sub}/$status", headers=FHIR).json()
    since = status_of(st)["events-since-subscription-start"]
    assert since[0]["valueString"] == "1"
    missed = requests.get(f"{hub.base}/Subscription/{sub}/$events", params={"eventsSinceNumber": "1"},
                          headers=FHIR).json()
    assert event_numbers([missed]) == [1]
    # Back up (same port), with a first request that hangs: kill the worker during it, start another.
    world["receiver"] = up = Receiver(world["dir"], receiver.port, "--hang-first", "3")
    up.child.wait_for(r"POST #1 held", timeout=40)
    world["worker"].stop(signal.SIGKILL)
    world["worker"] = start_worker(world["worker_env"], world["dir"])
    wait_until(lambda: 1 in event_numbers(notifications(up, sub)), what="the missed event")
    wait_until(lambda: requests.get(f"{hub.base}/Subscription/{sub}", headers=FHIR).json()["status"] == "active",
               what="recovery to active")
    post(hub, "", second_study())
    wait_until(lambda: 2 in event_numbers(notifications(up, sub)), what="the next event")
    numbers = event_numbers(notifications(up, sub))
    assert sorted(set(numbers)) == [1, 2], numbers  # at least once each, nothing lost
    ids = {b["id"] for b in notifications(up, sub) if event_numbers([b]) == [1]}
    assert len(ids) == 1, "a redelivered notification keeps its id"
