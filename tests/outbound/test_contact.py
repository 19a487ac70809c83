"""Contact requests through the API and the outbox, with the hospital played by `responses`."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import responses
from responses import matchers

from gateway.fhir.conventions import CONTACT_REQUEST_ID, NHS_NUMBER
from gateway.outbound import outbox
from gateway.outbound.contact import contact_id
from tests.conftest import FHIR_JSON
from tests.outbound.conftest import HOSPITAL_BASE

DEMO = Path(__file__).resolve().parents[2] / "fixtures" / "demo"
NHS = "9449306060"  # the demo Leeds patient
STUDY_ID = {"system": "https://neuro-onc-trials.example.org/id", "value": "NOTC-GBM-01"}
FHIR = {"Content-Type": "application/fhir+json"}


@pytest.fixture
def demo(client):
    """Load the demo study and the demo Leeds patient; -> (patient id, study id)."""
    for name in ("01-sponsor-glioblastoma-study.json", "03-leeds-patient-glioblastoma.json"):
        r = client.post("/fhir", data=(DEMO / name).read_bytes(), headers=FHIR_JSON)
        assert r.status_code == 200, r.get_json()
    pid = client.get(f"/fhir/Patient?identifier={NHS_NUMBER}|{NHS}").get_json()["entry"][0]["resource"]["id"]
    sid = client.get("/fhir/ResearchStudy?identifier=NOTC-GBM-01").get_json()["entry"][0]["resource"]["id"]
    return pid, sid


def _request(pid: str, sid: str, **extra) -> dict:
    return {"resourceType": "ResearchSubject", "status": "candidate", "individual": {"reference": f"Patient/{pid}"},
            "study": {"reference": f"ResearchStudy/{sid}"}, **extra}


def _post(client, body: dict):
    return client.post("/fhir/ResearchSubject", data=json.dumps(body), headers=FHIR_JSON)


def _hospital_answers(hospital_patient: str = "hosp-77"):
    """Register the hospital's answers: Patient search by NHS number, conditional creates."""
    responses.get(f"{HOSPITAL_BASE}/Patient", headers=FHIR, json={
        "resourceType": "Bundle", "type": "searchset", "total": 1,
        "entry": [{"resource": {"resourceType": "Patient", "id": hospital_patient,
                                "identifier": [{"system": NHS_NUMBER, "value": NHS}]}}]},
        match=[matchers.query_param_matcher({"identifier": f"{NHS_NUMBER}|{NHS}"})])
    created = {"resourceType": "ResearchSubject", "id": "h1", "status": "candidate",
               "study": {"identifier": STUDY_ID}, "individual": {"reference": f"Patient/{hospital_patient}"}}
    responses.post(f"{HOSPITAL_BASE}/ResearchSubject", status=201, json=created,
                   headers={**FHIR, "Location": f"{HOSPITAL_BASE}/ResearchSubject/h1/_history/1"})
    responses.post(f"{HOSPITAL_BASE}/Task", status=201, json={"resourceType": "OperationOutcome", "issue": [
        {"severity": "information", "code": "informational", "diagnostics": "created"}]},
                   headers={**FHIR, "Location": f"{HOSPITAL_BASE}/Task/t1/_history/1"})


def test_a_contact_request_is_stored_with_its_keyed_identifier_and_queued(client, store, demo):
    pid, sid = demo
    r = _post(client, _request(pid, sid))
    assert r.status_code == 201, r.get_json()
    body = r.get_json()
    expected = contact_id("test-contact-key", NHS, STUDY_ID)
    assert {"system": CONTACT_REQUEST_ID, "value": expected} in body["identifier"]
    assert NHS not in expected
    total, jobs = outbox.list_jobs(store, resource=f"ResearchSubject/{body['id']}")
    assert total == 1
    job = jobs[0]
    assert (job.kind, job.destination, job.state, job.resource_version) == ("research-subject", "leeds-test",
                                                                          "pending", 1)
    assert job.payload["op"] == "create" and job.payload["study_identifier"] == STUDY_ID


def test_a_duplicate_request_returns_the_existing_subject_and_queues_nothing(client, store, demo):
    pid, sid = demo
    first = _post(client, _request(pid, sid))
    again = _post(client, _request(pid, sid, period={"start": "2026-11-23"}))
    assert (first.status_code, again.status_code) == (201, 200)
    assert again.get_json()["id"] == first.get_json()["id"]
    assert outbox.counts(store)["pending"] == 1


@responses.activate
def test_the_worker_writes_the_hospital_copy_with_if_none_exist(client, store, demo, worker):
    pid, sid = demo
    rs = _post(client, _request(pid, sid)).get_json()
    _hospital_answers()
    assert worker.run_until_idle() == 1
    job = outbox.list_jobs(store)[1][0]
    assert job.state == "delivered", job.last_error
    assert "ResearchSubject/h1" in job.result and "Task 201" in job.result
    search, post, task = responses.calls
    assert search.request.headers["Authorization"] == "Bearer leeds-token"
    ident = f"{CONTACT_REQUEST_ID}|{contact_id('test-contact-key', NHS, STUDY_ID)}"
    assert post.request.headers["If-None-Exist"] == f"identifier={ident}"
    sent = json.loads(post.request.body)
    assert sent["individual"] == {"reference": "Patient/hosp-77"}  # the hospital's own Patient
    assert sent["study"]["identifier"] == STUDY_ID and "reference" not in sent["study"]
    assert sent["status"] == "candidate"
    assert pid not in post.request.body.decode() and sid not in post.request.body.decode()  # no gateway ids
    assert NHS not in post.request.body.decode()
    task_body = json.loads(task.request.body)
    assert task_body["focus"] == {"reference": "ResearchSubject/h1"} and task_body["for"]["reference"] == (
        "Patient/hosp-77")
    assert task.request.headers["If-None-Exist"] == f"identifier={ident}"
    assert rs["status"] == "candidate"


@responses.activate
def test_status_changes_reach_the_hospital_through_the_outbox(client, store, demo, worker):
    pid, sid = demo
    rs = _post(client, _request(pid, sid)).get_json()
    _hospital_answers()
    worker.run_until_idle()
    responses.put(f"{HOSPITAL_BASE}/ResearchSubject", status=200, body=b"", headers=FHIR)
    responses.put(f"{HOSPITAL_BASE}/Task", status=200, body=b"", headers=FHIR)
    # The research team moves it on (If-Match), then the patient withdraws.
    for status, version in (("eligible", 1), ("withdrawn", 2)):
        changed = {k: v for k, v in rs.items() if k != "meta"} | {"status": status}
        r = client.put(f"/fhir/ResearchSubject/{rs['id']}", data=json.dumps(changed),
                       headers={**FHIR_JSON, "If-Match": f'W/"{version}"'})
        assert r.status_code == 200, r.get_json()
        worker.run_until_idle()
    stale = client.put(f"/fhir/ResearchSubject/{rs['id']}", data=json.dumps(rs), headers={**FHIR_JSON,
                                                                                          "If-Match": 'W/"1"'})
    assert stale.status_code == 412
    puts = [c for c in responses.calls if c.request.method == "PUT"]
    assert [(json.loads(c.request.body)["resourceType"], json.loads(c.request.body)["status"]) for c in puts] == [
        ("ResearchSubject", "eligible"), ("ResearchSubject", "withdrawn"), ("Task", "cancelled")]
    ident = f"{CONTACT_REQUEST_ID}|{contact_id('test-contact-key', NHS, STUDY_ID)}"
    assert all(c.request.params == {"identifier": ident} for c in puts)
    assert outbox.counts(store) == {"pending": 0, "in-progress": 0, "delivered": 3, "dead": 0}


@responses.activate
def test_hospital_without_the_patient_retries_then_dead_and_visible(client, store, demo, worker):
    pid, sid = demo
    _post(client, _request(pid, sid))
    responses.get(f"{HOSPITAL_BASE}/Patient", headers=FHIR, json={"resourceType": "Bundle", "type": "searchset"})
    worker.run_once()
    job = outbox.list_jobs(store)[1][0]
    assert job.state == "pending" and "no active Patient" in job.last_error
    r = client.get("/admin/outbox?state=pending&resource=ResearchSubject&attempts=1")
    listed = r.get_json()
    assert listed["total"] == 1 and listed["jobs"][0]["attempts_log"][0]["outcome"] == "retry"
    assert "payload" not in listed["jobs"][0]  # the NHS number stays in the database


def test_missing_contact_key_refuses_with_a_clear_error_and_stores_nothing(client, store, demo, app,
                                                                          monkeypatch):
    pid, sid = demo
    dest = app.extensions["gateway.outbound"]
    dest.settings = dataclasses.replace(dest.settings, contact_id_key=None)  # settings are frozen
    r = _post(client, _request(pid, sid))
    assert r.status_code == 500
    assert "GATEWAY_CONTACT_ID_KEY" in r.get_json()["issue"][0]["diagnostics"]
    assert client.get("/fhir/ResearchSubject").get_json()["total"] == 0
    assert outbox.counts(store)["pending"] == 0


@responses.activate
def test_invalid_destinations_are_refused_without_traffic(client, store, demo):
    pid, sid = demo
    # Unknown hospital: a patient whose trust has no file.
    other = {"resourceType": "Patient", "identifier": [{"system": NHS_NUMBER, "value": "9434765919"}],
             "managingOrganization": {"identifier": {"system": "https://fhir.nhs.uk/Id/ods-organization-code",
                                                     "value": "RQQ"}}}
    opid = client.post("/fhir/Patient", data=json.dumps(other), headers=FHIR_JSON).get_json()["id"]
    r = _post(client, _request(opid, sid))
    assert r.status_code == 422 and "No hospital endpoint is configured" in r.get_json()["issue"][0]["diagnostics"]
    # A hospital file whose host is not allow-listed.
    other["managingOrganization"]["identifier"]["value"] = "RXX"
    other["identifier"][0]["value"] = "9434765870"
    xpid = client.post("/fhir/Patient", data=json.dumps(other), headers=FHIR_JSON).get_json()["id"]
    r = _post(client, _request(xpid, sid))
    assert r.status_code == 422 and "GATEWAY_ALLOWED_HOSTS" in r.get_json()["issue"][0]["diagnostics"]
    # Unknown study, patient without a reference.
    assert _post(client, _request(pid, "nope")).status_code == 422
    assert _post(client, {"resourceType": "ResearchSubject", "status": "candidate",
                          "individual": {"display": "me"}, "study": {"reference": f"ResearchStudy/{sid}"}}
                 ).status_code == 422
    assert client.get("/fhir/ResearchSubject").get_json()["total"] == 0
    assert outbox.counts(store)["pending"] == 0
    assert len(responses.calls) == 0


@responses.activate
def test_bad_token_is_a_permanent_failure(client, store, demo, worker, monkeypatch):
    pid, sid = demo
    _post(client, _request(pid, sid))
    responses.get(f"{HOSPITAL_BASE}/Patient", status=401, headers=FHIR,
                  json={"resourceType": "OperationOutcome", "issue": [{"severity": "error", "code": "login",
                                                                       "diagnostics": "token rejected"}]})
    worker.run_once()
    job = outbox.list_jobs(store)[1][0]
    assert job.state == "dead" and job.last_status == 401 and "token rejected" in job.last_error
    assert len(responses.calls) == 1


def test_other_research_subjects_are_stored_without_delivery(client, store, demo):
    pid, sid = demo
    r = _post(client, _request(pid, sid, status="on-study"))
    assert r.status_code == 201
    assert not any(i.get("system") == CONTACT_REQUEST_ID for i in r.get_json().get("identifier", []))
    assert outbox.counts(store)["pending"] == 0


@pytest.fixture
def christie_site(hospital_dir):
    """The Christie (RBV), one of the demo study's sites, asks to hear of every request about its studies."""
    (hospital_dir / "christie-test.yaml").write_text(
        "name: christie-test\nods_code: RBV\nfhir_base_url: https://fhir.christie.test/R4\n"
        "write_back: {research_subject: true, site_contact: true}\n")


@responses.activate
@pytest.mark.parametrize("allowed_hosts", ["fhir.leeds.test, fhir.christie.test"])  # the Christie is allowed too
def test_the_study_site_research_team_gets_a_task(christie_site, client, store, demo, worker):
    pid, sid = demo
    rs = _post(client, _request(pid, sid)).get_json()
    total, jobs = outbox.list_jobs(store, resource=f"ResearchSubject/{rs['id']}")
    assert sorted((j.kind, j.destination) for j in jobs) == [("research-subject", "leeds-test"),
                                                              ("site-contact", "christie-test")]
    _hospital_answers()
    responses.post("https://fhir.christie.test/R4/Task", status=201, body=b"",
                   headers={"Location": "https://fhir.christie.test/R4/Task/c1/_history/1"})
    worker.run_until_idle()
    assert outbox.counts(store)["delivered"] == 2
    site_call = next(c for c in responses.calls if c.request.url.startswith("https://fhir.christie.test"))
    task = json.loads(site_call.request.body)
    assert task["for"] == {"identifier": {"system": NHS_NUMBER, "value": NHS}}
    assert task["focus"]["identifier"] == STUDY_ID
    assert site_call.request.headers["If-None-Exist"].startswith(f"identifier={CONTACT_REQUEST_ID}|")
    assert "Authorization" not in site_call.request.headers  # auth: none in this file
    # A withdrawal reaches every copy: the patient's hospital and the site's research team (its Task cancelled).
    changed = {k: v for k, v in rs.items() if k != "meta"} | {"status": "withdrawn"}
    client.put(f"/fhir/ResearchSubject/{rs['id']}", data=json.dumps(changed), headers={**FHIR_JSON,
                                                                                       "If-Match": 'W/"1"'})
    kinds = sorted(j.kind for j in outbox.list_jobs(store, state="pending")[1])
    assert kinds == ["research-subject", "site-contact"]


def test_changes_to_a_contact_request_need_if_match_and_keep_its_identifier(client, store, demo):
    pid, sid = demo
    rs = _post(client, _request(pid, sid)).get_json()
    body = {k: v for k, v in rs.items() if k not in ("meta", "identifier")} | {"status": "screening"}
    r = client.put(f"/fhir/ResearchSubject/{rs['id']}", data=json.dumps(body), headers=FHIR_JSON)
    assert r.status_code == 428 and "If-Match" in r.get_json()["issue"][0]["diagnostics"]
    r = client.put(f"/fhir/ResearchSubject/{rs['id']}", data=json.dumps(body),
                   headers={**FHIR_JSON, "If-Match": 'W/"1"'})
    assert r.status_code == 200
    assert r.get_json()["identifier"] == rs["identifier"]  # kept although the body left it out
    assert [j.payload["op"] for j in outbox.list_jobs(store)[1]] == ["update", "create"]
    # An ordinary ResearchSubject (not a contact request) is updated as any resource.
    plain = {"resourceType": "ResearchSubject", "id": "plain-1", "status": "on-study",
             "individual": {"reference": f"Patient/{pid}"}, "study": {"reference": f"ResearchStudy/{sid}"}}
    assert client.put("/fhir/ResearchSubject/plain-1", data=json.dumps(plain), headers=FHIR_JSON).status_code == 201
