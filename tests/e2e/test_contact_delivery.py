"""Contact requests delivered to a hospital by real processes on 127.0.0.1, and nothing lost.

A second gateway instance (its own SQLite file) plays the hospital's FHIR server; a small proxy
process in front of it injects failures; ``gateway worker`` processes deliver. The four stories:
(1) exactly once; (2) two 500s then 201: delivered once; (3) worker SIGKILLed mid-delivery and
restarted: delivered once; (4) hospital down for the whole retry budget: dead, visible, and
``gateway outbox retry`` later delivers it.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import requests

from gateway.fhir.conventions import CONTACT_REQUEST_ID, NHS_NUMBER
from tests.conftest import BACKENDS
from tests.procs import GatewayProcess, e2e_database_url, free_port, post_fhir

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "fixtures" / "demo"
PROXY = ROOT / "tests" / "outbound" / "flaky_proxy.py"
NHS = "9449306060"  # the demo Leeds patient (ODS RR8)
FHIR = {"Content-Type": "application/fhir+json", "Accept": "application/fhir+json"}
OUTBOUND_ENV = {
    "GATEWAY_ALLOWED_HOSTS": "127.0.0.1",
    "GATEWAY_CONTACT_ID_KEY": "e2e-contact-key",
    "GATEWAY_OUTBOX_MAX_ATTEMPTS": "3",
    "GATEWAY_OUTBOX_BACKOFF_BASE": "0.05",
    "GATEWAY_OUTBOX_BACKOFF_MAX": "0.5",
    "GATEWAY_OUTBOX_LEASE_SECONDS": "1.5",
    "GATEWAY_WORKER_POLL_SECONDS": "0.1",
}


def _child_env(extra: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
    return {**env, "PYTHONUNBUFFERED": "1", **extra}


class Child:
    """A child process whose output goes to a file we can read while it runs."""

    def __init__(self, args: list[str], env: dict[str, str], log: Path):
        self.log_path = log
        with log.open("wb") as fh:
            self.proc = subprocess.Popen(args, cwd=ROOT, env=env, stdout=fh, stderr=subprocess.STDOUT)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_for(self, pattern: str, timeout: float = 20.0) -> re.Match:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            m = re.search(pattern, self.log())
            if m:
                return m
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        raise AssertionError(f"'{pattern}' not seen in {self.log_path.name}:\n{self.log()}")

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@pytest.fixture(scope="module")
def hospital(tmp_path_factory):
    """The hospital's FHIR server: a second gateway with its own SQLite file, holding the patient."""
    folder = tmp_path_factory.mktemp("hospital")
    with GatewayProcess(f"sqlite:///{folder / 'hospital.sqlite3'}", folder) as gw:
        r = post_fhir(gw.base, "", (DEMO / "03-leeds-patient-glioblastoma.json").read_bytes())
        assert r.status_code == 200, r.text
        yield gw


@pytest.fixture(scope="module", params=BACKENDS)
def gateway(request, tmp_path_factory):
    """Our gateway, routing RR8 patients to the hospital file in its own folder."""
    folder = tmp_path_factory.mktemp(f"gateway-{request.param}")
    (folder / "hospitals").mkdir()
    url = e2e_database_url(request.param, folder)
    env = {**OUTBOUND_ENV, "GATEWAY_HOSPITALS_PATH": str(folder / "hospitals")}
    point_hospital_file(folder, free_port())  # rewritten per test before its worker starts
    with GatewayProcess(url, folder, env=env) as gw:
        r = post_fhir(gw.base, "", (DEMO / "03-leeds-patient-glioblastoma.json").read_bytes())
        assert r.status_code == 200, r.text
        # GATEWAY_BASE_URL: a worker that delivers notifications does not start without it
        gw.env = _child_env({**env, "GATEWAY_DATABASE_URL": url, "GATEWAY_INSTANCE_PATH": str(folder),
                             "GATEWAY_BASE_URL": gw.base})
        gw.folder = folder
        yield gw


def point_hospital_file(folder: Path, port: int) -> None:
    (folder / "hospitals" / "leeds.yaml").write_text(
        "name: leeds\nods_code: RR8\n"
        f"fhir_base_url: http://127.0.0.1:{port}/fhir\n"
        "timeouts: {connect: 2, read: 10}\n"
        "write_back: {research_subject: true, task: true}\n")


def start_proxy(hospital, folder: Path, *args: str, port: int = 0) -> tuple[Child, int]:
    log = folder / f"proxy-{uuid.uuid4().hex[:6]}.log"
    child = Child([sys.executable, str(PROXY), "--upstream", hospital.base.removesuffix("/fhir"), "--port",
                   str(port), *args], _child_env({}), log)
    return child, int(child.wait_for(r"listening on (\d+)").group(1))


def start_worker(gateway, **env: str) -> Child:
    log = gateway.folder / f"worker-{uuid.uuid4().hex[:6]}.log"
    child = Child([sys.executable, "-c", "from gateway.cli import main; main()", "worker"], {**gateway.env, **env},
                  log)
    child.wait_for(r"polling every")
    return child


def request_contact(gateway) -> dict:
    """A fresh study (so each test counts its own request) and the demo patient's contact request."""
    study = {"resourceType": "ResearchStudy", "status": "active", "title": "E2E delivery study",
             "identifier": [{"system": "https://e2e.example.org/studies", "value": uuid.uuid4().hex}]}
    sid = requests.post(f"{gateway.base}/ResearchStudy", json=study, headers=FHIR).json()["id"]
    pid = requests.get(f"{gateway.base}/Patient", params={"identifier": f"{NHS_NUMBER}|{NHS}"},
                       headers=FHIR).json()["entry"][0]["resource"]["id"]
    body = {"resourceType": "ResearchSubject", "status": "candidate", "individual": {"reference": f"Patient/{pid}"},
            "study": {"reference": f"ResearchStudy/{sid}"}}
    r = requests.post(f"{gateway.base}/ResearchSubject", data=json.dumps(body), headers=FHIR)
    assert r.status_code == 201, r.text
    return r.json()


def job_of(gateway, rs: dict) -> dict:
    r = requests.get(gateway.base.removesuffix("/fhir") + "/admin/outbox",
                     params={"resource": f"ResearchSubject/{rs['id']}", "attempts": "1"})
    jobs = r.json()["jobs"]
    assert len(jobs) == 1, jobs  # one job per request, whatever happened
    return jobs[0]


def wait_state(gateway, rs: dict, state: str, timeout: float = 30.0) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = job_of(gateway, rs)
        if job["state"] == state:
            return job
        time.sleep(0.1)
    raise AssertionError(f"job never reached {state}: {job}")


def at_hospital(hospital, rs: dict, rtype: str = "ResearchSubject") -> list[dict]:
    ident = next(i for i in rs["identifier"] if i["system"] == CONTACT_REQUEST_ID)
    r = requests.get(f"{hospital.base}/{rtype}", params={"identifier": f"{CONTACT_REQUEST_ID}|{ident['value']}"},
                     headers=FHIR)
    return [e["resource"] for e in r.json().get("entry", [])]


def hospital_patient_id(hospital) -> str:
    r = requests.get(f"{hospital.base}/Patient", params={"identifier": f"{NHS_NUMBER}|{NHS}"}, headers=FHIR)
    return r.json()["entry"][0]["resource"]["id"]


def test_1_contact_request_arrives_exactly_once(hospital, gateway):
    proxy, port = start_proxy(hospital, gateway.folder)
    point_hospital_file(gateway.folder, port)
    worker = start_worker(gateway)
    try:
        rs = request_contact(gateway)
        again = requests.post(f"{gateway.base}/ResearchSubject", headers=FHIR, data=json.dumps(
            {k: v for k, v in rs.items() if k not in ("id", "meta")}))
        assert again.status_code == 200 and again.json()["id"] == rs["id"]
        job = wait_state(gateway, rs, "delivered")
        time.sleep(0.5)  # give a (wrong) second delivery the chance to happen
    finally:
        worker.stop()
        proxy.stop()
    copies = at_hospital(hospital, rs)
    assert len(copies) == 1
    assert copies[0]["individual"] == {"reference": f"Patient/{hospital_patient_id(hospital)}"}
    assert copies[0]["study"]["identifier"]["system"] == "https://e2e.example.org/studies"
    assert len(at_hospital(hospital, rs, "Task")) == 1
    assert job["attempts"] == 1
    assert proxy.log().count("POST /fhir/ResearchSubject") == 1


def test_2_two_server_errors_then_created_is_delivered_once(hospital, gateway):
    proxy, port = start_proxy(hospital, gateway.folder, "--fail-posts", "2")
    point_hospital_file(gateway.folder, port)
    worker = start_worker(gateway)
    try:
        rs = request_contact(gateway)
        job = wait_state(gateway, rs, "delivered")
    finally:
        worker.stop()
        proxy.stop()
    assert job["attempts"] == 3
    assert [a["outcome"] for a in job["attempts_log"]] == ["retry", "retry", "delivered"]
    assert [a["status"] for a in job["attempts_log"]][:2] == [500, 500]
    assert len(at_hospital(hospital, rs)) == 1


def test_3_worker_killed_mid_delivery_then_restarted_delivers_once(hospital, gateway):
    proxy, port = start_proxy(hospital, gateway.folder, "--hang-first-post", "3")
    point_hospital_file(gateway.folder, port)
    worker = start_worker(gateway)
    try:
        rs = request_contact(gateway)
        proxy.wait_for(r"POST #1 held")  # the worker is inside the delivery now
        worker.stop(signal.SIGKILL)
        assert job_of(gateway, rs)["state"] == "in-progress"
        worker = start_worker(gateway)
        job = wait_state(gateway, rs, "delivered")
        proxy.wait_for(r"forwarded after hold")  # the killed worker's request reached the hospital too
    finally:
        worker.stop()
        proxy.stop()
    assert job["attempts"] == 2  # the lost attempt counts; its lease expired and the job was claimed again
    assert len(at_hospital(hospital, rs)) == 1  # If-None-Exist made the second write harmless
    assert len(at_hospital(hospital, rs, "Task")) == 1


def test_4_hospital_down_for_the_whole_budget_is_dead_then_retried(hospital, gateway):
    port = free_port()  # nothing listens here yet: connection refused
    point_hospital_file(gateway.folder, port)
    worker = start_worker(gateway)
    proxy = None
    try:
        rs = request_contact(gateway)
        job = wait_state(gateway, rs, "dead")
        assert job["attempts"] == 3 and "TransportError" in job["last_error"]
        dead = requests.get(gateway.base.removesuffix("/fhir") + "/admin/outbox", params={"state": "dead"}).json()
        assert rs["id"] in [j["resource_id"] for j in dead["jobs"]]
        proxy, _ = start_proxy(hospital, gateway.folder, port=port)  # the hospital is back
        out = subprocess.run([sys.executable, "-c", "from gateway.cli import main; main()", "outbox", "retry",
                              str(job["id"])], cwd=ROOT, env=gateway.env, capture_output=True, text=True, timeout=60)
        assert out.returncode == 0 and "requeued 1 job(s)" in out.stdout, out.stdout + out.stderr
        job = wait_state(gateway, rs, "delivered")
    finally:
        worker.stop()
        if proxy:
            proxy.stop()
    assert len(at_hospital(hospital, rs)) == 1
    listed = subprocess.run([sys.executable, "-c", "from gateway.cli import main; main()", "outbox", "list",
                             "--resource", f"ResearchSubject/{rs['id']}"], cwd=ROOT, env=gateway.env,
                            capture_output=True, text=True, timeout=60)
    assert "\tdelivered\tresearch-subject\tleeds\t" in listed.stdout, listed.stdout + listed.stderr


def test_5_several_workers_deliver_each_request_once(hospital, gateway):
    proxy, port = start_proxy(hospital, gateway.folder)
    point_hospital_file(gateway.folder, port)
    # A lease well above a delivery's duration on a busy machine: then no job may be claimed twice.
    workers = [start_worker(gateway, GATEWAY_OUTBOX_LEASE_SECONDS="60") for _ in range(3)]
    try:
        requests_made = [request_contact(gateway) for _ in range(12)]
        jobs = [wait_state(gateway, rs, "delivered") for rs in requests_made]
    finally:
        for w in workers:
            w.stop()
        proxy.stop()
    assert [job["attempts"] for job in jobs] == [1] * 12  # no job was claimed twice
    assert all(len(at_hospital(hospital, rs)) == 1 for rs in requests_made)
    assert proxy.log().count("POST /fhir/ResearchSubject") == 12
