"""Many processes on one database give the same answers as one.

One database; ``gateway serve`` (one process) and gunicorn with two workers (``gateway/gunicorn_conf.py``, the
image's command) serve it side by side, with one public base URL so that their Bundles can be compared byte for
byte (less each Bundle's own id and timestamp). The same searches, ``$match`` and ``$candidates`` are asked of both,
each several times of gunicorn so that both of its workers answer; then a study written through gunicorn must show
in every worker's and the single process's ``$match`` (each process's matching indexes follow the change feed);
then two ``gateway worker`` processes deliver contact requests to a hospital, each exactly once.
"""

from __future__ import annotations

import json
import os
import sys
import time
import uuid
from pathlib import Path
from types import SimpleNamespace
from urllib.parse import urlsplit

import pytest
import requests

from gateway.fhir import conventions as cv
from tests.conftest import BACKENDS
from tests.e2e.test_contact_delivery import DEMO, FHIR, OUTBOUND_ENV, Child, at_hospital, job_of, point_hospital_file
from tests.matching import builders as b
from tests.procs import GatewayProcess, e2e_database_url, free_port, post_fhir, wait_until

BASE = "https://gateway.test/fhir"  # the one public base URL of both deployments
GLIO, BRAIN, BREAST, MELANOMA = (cv.SNOMED, "393563007"), (cv.SNOMED, "428061005"), (cv.SNOMED, "254837009"), \
    (cv.SNOMED, "372244006")
CODES = [GLIO, BRAIN, BREAST, MELANOMA]


def _data() -> list[dict]:
    """Studies (with eligibility Groups and sites) and people (with Conditions and research Consents)."""
    out: list[dict] = [b.location("leeds", 53.80, -1.55, "Leeds"), b.location("london", 51.51, -0.13, "London")]
    for i in range(12):
        code = CODES[i % len(CODES)]
        chars = [b.age_char(18 if i % 3 else 40, 80 if i % 2 else None), b.diagnosis_char(code)]
        if i % 5 == 0:
            chars.append(b.sex_char("female"))
        out += [b.group(f"g{i}", chars),
                b.study(f"s{i}", [code], group_id=f"g{i}", sites=["leeds" if i % 2 else "london"],
                        status="completed" if i == 11 else "active")]
    for i in range(10):
        pid = f"p{i}"
        out += [b.patient(pid, birth=f"{1950 + 3 * i}-03-01", gender="female" if i % 2 else "male",
                          postcode="LS6 3HE" if i % 3 else "SW1A 1AA"),
                b.condition(f"c{i}", pid, CODES[i % len(CODES)]),
                b.consent(f"consent{i}", pid, purposes=[cv.PURPOSE_RESEARCH])]
    return out


QUERIES = [
    "/ResearchStudy?status=active&_sort=title",
    "/ResearchStudy?_text=glioblastoma",
    "/ResearchStudy?postcode=LS6&distance=50",
    f"/ResearchStudy?condition={GLIO[0]}|{GLIO[1]}&_count=2",
    "/Patient?gender=female&_sort=birthdate",
    "/Condition?subject=Patient/p1&_include=Condition:subject",
    *[f"/ResearchStudy/$match?patient-id=p{i}" for i in range(10)],
    "/ResearchStudy/$match?age=60&gender=female&condition-text=glioblastoma",
    *[f"/ResearchStudy/s{i}/$candidates?consent=any" for i in (1, 2, 3)],
]


def _answer(base: str, path: str) -> object:
    r = requests.get(base + path, headers=FHIR, timeout=30)
    assert r.status_code == 200, f"{path}: {r.status_code} {r.text[:300]}"
    bundle = r.json()
    bundle.pop("id", None)  # each Bundle's own id and timestamp differ by construction
    bundle.pop("meta", None)
    return bundle


class Gunicorn(Child):
    """gunicorn with the image's settings on a free port of 127.0.0.1."""

    def __init__(self, env: dict[str, str], folder: Path, workers: int = 2):
        self.port = free_port()
        metrics = folder / f"prometheus-{uuid.uuid4().hex[:6]}"
        metrics.mkdir()
        super().__init__([sys.executable, "-m", "gunicorn", "-c", "python:gateway.gunicorn_conf",
                          "gateway.api.app:create_app()"],
                         {**env, "GATEWAY_BIND": f"127.0.0.1:{self.port}", "GATEWAY_WORKERS": str(workers),
                          "GATEWAY_THREADS": "4", "PROMETHEUS_MULTIPROC_DIR": str(metrics)},
                         folder / f"gunicorn-{uuid.uuid4().hex[:6]}.log")
        self.base = f"http://127.0.0.1:{self.port}/fhir"
        wait_until(self._up, 60, f"gunicorn on {self.port}:\n{self.log()}")

    def _up(self) -> bool:
        if self.proc.poll() is not None:
            raise AssertionError(f"gunicorn exited with {self.proc.returncode}:\n{self.log()}")
        try:
            return requests.get(self.base.removesuffix("/fhir") + "/healthz", timeout=5).status_code == 200
        except requests.RequestException:  # not listening yet, or its workers still starting
            return False

    def request_pids(self) -> set[int]:
        """The processes that logged a FHIR request (one JSON line per request)."""
        pids = set()
        for line in self.log().splitlines():
            if line.startswith("{"):
                rec = json.loads(line)
                if rec.get("event") == "request" and str(rec.get("path", "")).startswith("/fhir"):
                    pids.add(rec["pid"])
        return pids


@pytest.fixture(scope="module", params=BACKENDS)
def deployment(request, tmp_path_factory):
    """A hospital; one database; the single process and gunicorn on it, data loaded through the single one."""
    folder = tmp_path_factory.mktemp(f"many-{request.param}")
    (folder / "hospitals").mkdir()
    url = e2e_database_url(request.param, folder)
    hospital_dir = folder / "hospital"
    with GatewayProcess(f"sqlite:///{hospital_dir / 'hospital.sqlite3'}", hospital_dir) as hospital:
        r = post_fhir(hospital.base, "", (DEMO / "03-leeds-patient-glioblastoma.json").read_bytes())
        assert r.status_code == 200, r.text
        point_hospital_file(folder, urlsplit(hospital.base).port)
        # a lease far longer than a delivery: a second attempt would mean two workers claimed one job
        env = {**OUTBOUND_ENV, "GATEWAY_OUTBOX_LEASE_SECONDS": "60",
               "GATEWAY_HOSPITALS_PATH": str(folder / "hospitals"), "GATEWAY_BASE_URL": BASE}
        with GatewayProcess(url, folder / "one", env=env) as one:
            for path in sorted(DEMO.glob("0*.json")):
                r = requests.post(one.base, data=path.read_bytes(), headers=FHIR)
                assert r.status_code == 200, r.text
            tx = {"resourceType": "Bundle", "type": "transaction", "entry": [
                {"resource": res, "request": {"method": "PUT", "url": f"{res['resourceType']}/{res['id']}"}}
                for res in _data()]}
            r = requests.post(one.base, json=tx, headers=FHIR)
            assert r.status_code == 200, r.text
            child_env = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
            child_env.update({**env, "PYTHONUNBUFFERED": "1", "GATEWAY_DATABASE_URL": url,
                              "GATEWAY_INSTANCE_PATH": str(folder / "many")})
            many = Gunicorn(child_env, folder)
            try:
                yield {"one": one, "many": many, "hospital": hospital, "env": child_env, "folder": folder}
            finally:
                many.stop()


def test_same_answers_as_one_process(deployment):
    one, many = deployment["one"], deployment["many"]
    for path in QUERIES:
        expected = _answer(one.base, path)
        if path.startswith("/ResearchStudy/$match"):
            assert expected.get("entry"), f"{path}: the data set should give matches"
        for _ in range(4):  # several connections: both gunicorn workers answer
            assert _answer(many.base, path) == expected, path
    assert len(many.request_pids()) == 2, "both gunicorn workers should have answered"


def test_a_write_through_one_worker_is_seen_by_every_process(deployment):
    one, many = deployment["one"], deployment["many"]
    study = b.study("new-glio", [GLIO], sites=["leeds"])
    r = requests.put(f"{many.base}/ResearchStudy/new-glio", json=study, headers=FHIR, timeout=30)
    assert r.status_code == 201, r.text
    path = "/ResearchStudy/$match?patient-id=p0"  # p0 has glioblastoma
    expected = _answer(one.base, path)
    assert "new-glio" in [e["resource"]["id"] for e in expected["entry"]]
    for _ in range(6):
        assert _answer(many.base, path) == expected


def test_contact_requests_delivered_once_by_two_workers(deployment):
    many, hospital, folder = deployment["many"], deployment["hospital"], deployment["folder"]
    workers = [Child([sys.executable, "-c", "from gateway.cli import main; main()", "worker"], deployment["env"],
                     folder / f"worker-{i}-{uuid.uuid4().hex[:6]}.log") for i in range(2)]
    try:
        for w in workers:
            w.wait_for(r"polling every", 30)
        pid = requests.get(f"{many.base}/Patient", params={"identifier": f"{cv.NHS_NUMBER}|9449306060"},
                           headers=FHIR).json()["entry"][0]["resource"]["id"]
        subjects = []
        for i in range(4):
            study = {"resourceType": "ResearchStudy", "status": "active", "title": f"Contact study {i}",
                     "identifier": [{"system": "https://e2e.example.org/studies", "value": uuid.uuid4().hex}]}
            sid = requests.post(f"{many.base}/ResearchStudy", json=study, headers=FHIR).json()["id"]
            body = {"resourceType": "ResearchSubject", "status": "candidate",
                    "individual": {"reference": f"Patient/{pid}"}, "study": {"reference": f"ResearchStudy/{sid}"}}
            r = requests.post(f"{many.base}/ResearchSubject", json=body, headers=FHIR)
            assert r.status_code == 201, r.text
            subjects.append(r.json())
        gw = SimpleNamespace(base=many.base)  # what job_of reads
        wait_until(lambda: all(job_of(gw, rs)["state"] == "delivered" for rs in subjects), 60,
                   "every contact request delivered")
        time.sleep(0.5)  # give a (wrong) second delivery the chance to happen
        for rs in subjects:
            assert len(at_hospital(hospital, rs)) == 1
            job = job_of(gw, rs)
            assert job["attempts"] == 1, (job, [w.log() for w in workers])
    finally:
        for w in workers:
            w.stop()
