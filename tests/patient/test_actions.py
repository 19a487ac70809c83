"""Contact requests, withdrawal and alert opt-in for a patient whose own hospital is not configured: the research
office of a study site is the route; every call goes through the one authorization path."""

from __future__ import annotations

import json

import pytest
import responses

from gateway.fhir.conventions import CONTACT_REQUEST_ID, NHS_NUMBER
from gateway.outbound import outbox
from tests.patient.conftest import ALERTS, ME, NOBODY, OFFICE, csrf, sign_in

FHIR = {"Content-Type": "application/fhir+json", "Accept": "application/fhir+json"}


def _params(**values) -> str:
    out = []
    for k, v in values.items():
        key = "valueReference" if k == "study" else "valueInteger" if isinstance(v, int) else "valueString"
        out.append({"name": k, key: {"reference": v} if k == "study" else v})
    return json.dumps({"resourceType": "Parameters", "parameter": out})


def _office_answers():
    responses.post(f"{OFFICE}/Task", status=201, body=b"", headers={"Location": f"{OFFICE}/Task/t1/_history/1"})
    responses.put(f"{OFFICE}/Task", status=200, body=b"", headers={"Location": f"{OFFICE}/Task/t1/_history/2"})


@responses.activate(assert_all_requests_are_fired=False)
def test_contact_request_reaches_the_site_team_and_withdrawal_cancels_its_task(client, issuer, demo, worker, store):
    responses.add_passthru(issuer.url)
    _office_answers()
    sign_in(client)
    token = csrf(client)
    r = client.post("/patient/contact-requests", data=_params(study=f"ResearchStudy/{demo['study']}"),
                    headers={**FHIR, "X-CSRF-Token": token})
    assert r.status_code == 201, r.get_json()
    subject = r.get_json()
    assert subject["status"] == "candidate" and subject["individual"]["identifier"]["value"] == ME
    again = client.post("/patient/contact-requests", data=_params(study=f"ResearchStudy/{demo['study']}"),
                        headers={**FHIR, "X-CSRF-Token": token})
    assert again.status_code == 200 and again.get_json()["id"] == subject["id"]
    jobs = outbox.list_jobs(store, resource=f"ResearchSubject/{subject['id']}")[1]
    assert [(j.kind, j.destination) for j in jobs] == [("site-contact", "christie-research-office")]
    worker.run_until_idle()
    task = json.loads(next(c for c in responses.calls if c.request.method == "POST").request.body)
    assert task["status"] == "requested" and task["for"]["identifier"] == {"system": NHS_NUMBER, "value": ME}
    assert task["focus"]["identifier"]["value"] == "NOTC-GBM-01"
    listed = client.get("/patient/contact-requests").get_json()
    assert [e["resource"]["id"] for e in listed["entry"]] == [subject["id"]]
    gone = client.delete(f"/patient/contact-requests/{subject['id']}", headers={"X-CSRF-Token": token})
    assert gone.status_code == 200 and gone.get_json()["status"] == "withdrawn"
    worker.run_until_idle()
    put = next(c for c in responses.calls if c.request.method == "PUT")
    assert json.loads(put.request.body)["status"] == "cancelled"
    assert put.request.params["identifier"].startswith(CONTACT_REQUEST_ID)
    assert outbox.counts(store)["delivered"] == 2


def test_a_browser_post_without_the_csrf_token_is_refused(client, issuer, demo, store):
    sign_in(client)
    r = client.post("/patient/contact-requests", data=_params(study=f"ResearchStudy/{demo['study']}"), headers=FHIR)
    assert r.status_code == 403 and r.get_json()["resourceType"] == "OperationOutcome"
    assert outbox.counts(store)["pending"] == 0


def test_no_route_says_so_and_stores_nothing(app, client, issuer, demo, store):
    app.extensions["gateway.outbound"].hospitals.by_name.clear()  # no research office configured at all
    sign_in(client)
    r = client.post("/patient/contact-requests", data=_params(study=f"ResearchStudy/{demo['study']}"),
                    headers={**FHIR, "X-CSRF-Token": csrf(client)})
    assert r.status_code == 422 and "nothing was stored" in r.get_json()["issue"][0]["diagnostics"]
    assert client.get("/patient/contact-requests").get_json()["total"] == 0
    assert outbox.counts(store)["pending"] == 0


def test_a_person_with_no_record_here_can_ask_through_a_registry_site_linked_by_name(app, client, issuer, store):
    """A ClinicalTrials.gov-style site (name, city, postcode; no ODS code) is linked to The Christie (RBV)."""
    svc = app.extensions["gateway.service"]
    loc = svc.create({"resourceType": "Location", "status": "active", "name": "The Christie NHS Foundation Trust",
                      "address": {"city": "Manchester", "postalCode": "M20 4BX", "country": "United Kingdom"}})
    study = svc.create({"resourceType": "ResearchStudy", "status": "active", "title": "A registry study",
                        "identifier": [{"system": "https://clinicaltrials.gov", "value": "NCT09999999"}],
                        "site": [{"reference": f"Location/{loc.stored.id}"}]})
    issuer.nhs_number = NOBODY
    sign_in(client)
    r = client.post("/patient/contact-requests", data=_params(study=f"ResearchStudy/{study.stored.id}"),
                    headers={**FHIR, "X-CSRF-Token": csrf(client)})
    assert r.status_code == 201, r.get_json()
    jobs = outbox.list_jobs(store, resource=f"ResearchSubject/{r.get_json()['id']}")[1]
    assert [(j.kind, j.destination) for j in jobs] == [("site-contact", "christie-research-office")]


def test_a_patient_acts_only_on_their_own_requests(app, client, issuer, demo):
    issuer.nhs_number = ME
    sign_in(client)
    mine = client.post("/patient/contact-requests", data=_params(study=f"ResearchStudy/{demo['study']}"),
                       headers={**FHIR, "X-CSRF-Token": csrf(client)}).get_json()
    other = app.test_client()
    issuer.nhs_number = NOBODY
    sign_in(other)
    r = other.delete(f"/patient/contact-requests/{mine['id']}", headers={"X-CSRF-Token": csrf(other)})
    assert r.status_code == 404 and ME not in r.get_data(as_text=True)
    assert other.get("/patient/contact-requests").get_json()["total"] == 0


def test_bearer_tokens_of_the_issuer_go_through_the_idp_path(client, issuer, demo):
    token = issuer.access_token(ME, client_id="nhs-app")
    r = client.post("/patient/contact-requests", data=_params(study=f"ResearchStudy/{demo['study']}"),
                    headers={**FHIR, "Authorization": f"Bearer {token}"})
    assert r.status_code == 201, r.get_json()
    unknown_app = issuer.access_token(ME, client_id="not-registered")
    assert client.get("/patient/alerts", headers={"Authorization": f"Bearer {unknown_app}"}).status_code == 401
    assert client.get("/patient/alerts").status_code == 401  # no token, no session


def test_opt_in_shows_and_opt_out_in_one_step(client, issuer, demo, store):
    sign_in(client)
    token = csrf(client)
    r = client.post("/patient/alerts", data=_params(condition="brain tumour", postcode="LS6 3HE", distance=80),
                    headers={**FHIR, "X-CSRF-Token": token})
    assert r.status_code == 201, r.get_json()
    made = {e["resource"]["resourceType"]: e["resource"] for e in r.get_json()["entry"]}
    assert made["Consent"]["provision"]["purpose"][0]["code"] == "trial-alerts"
    assert made["Subscription"]["channel"]["endpoint"] == ALERTS
    assert f"patient=Patient/{demo['patient']}" in json.dumps(made["Subscription"]["_criteria"])
    shown = client.get("/patient/alerts").get_json()
    assert sorted(e["resource"]["resourceType"] for e in shown["entry"]) == ["Consent", "Subscription"]
    assert "brain tumour" in json.dumps(shown)
    again = client.post("/patient/alerts", data=_params(condition="glioma"), headers={**FHIR, "X-CSRF-Token": token})
    assert again.status_code == 201  # replaces the first opt-in, in one transaction
    shown = client.get("/patient/alerts").get_json()
    assert shown["total"] == 2 and "glioma" in json.dumps(shown) and "brain tumour" not in json.dumps(shown)
    assert store.read("Subscription", made["Subscription"]["id"]).resource()["status"] == "off"
    made = {e["resource"]["resourceType"]: e["resource"] for e in again.get_json()["entry"]}
    out = client.delete("/patient/alerts", headers={"X-CSRF-Token": token})
    assert out.status_code == 200 and "1 alert subscription ended" in out.get_json()["issue"][0]["diagnostics"]
    assert client.get("/patient/alerts").get_json()["total"] == 0
    sub = store.read("Subscription", made["Subscription"]["id"]).resource()
    assert sub["status"] == "off"


@pytest.mark.parametrize("body", [
    {"resourceType": "Parameters", "parameter": [{"name": "condition", "valueInteger": 3}]},
    {"resourceType": "Parameters", "parameter": [{"name": "condition", "valueString": ""}]},
    {"resourceType": "Parameters", "parameter": [{"name": "condition", "valueString": "x"},
                                                 {"name": "distance", "valueInteger": 0}]},
    {"resourceType": "Patient"},
])
def test_bad_opt_in_bodies_are_operation_outcomes(client, issuer, demo, body):
    sign_in(client)
    r = client.post("/patient/alerts", data=json.dumps(body), headers={**FHIR, "X-CSRF-Token": csrf(client)})
    assert r.status_code == 400 and r.get_json()["resourceType"] == "OperationOutcome"


def test_opt_in_without_a_record_here_is_taken_on_an_alerts_only_patient(client, issuer):
    """Issue #14: a person the gateway holds no record of can opt in (tests/patient/test_alert_filters.py)."""
    issuer.nhs_number = NOBODY
    sign_in(client)
    r = client.post("/patient/alerts", data=_params(condition="glioblastoma"),
                    headers={**FHIR, "X-CSRF-Token": csrf(client)})
    assert r.status_code == 201, r.get_json()
    assert client.get("/patient/alerts").get_json()["total"] == 2
    other = client.post("/patient/alerts", data=_params(condition="not a condition anyone knows zqx"),
                        headers={**FHIR, "X-CSRF-Token": csrf(client)})
    assert other.status_code == 422 and "nothing was stored" in other.get_json()["issue"][0]["diagnostics"]
    assert client.get("/patient/alerts").get_json()["total"] == 2, "the earlier opt-in stays"


def test_patient_actions_are_audited_without_the_nhs_number(app, client, issuer, demo):
    import orjson
    from sqlalchemy import select

    from gateway.store import schema

    token = issuer.access_token(ME, client_id="nhs-app")
    r = client.post("/patient/contact-requests", data=_params(study=f"ResearchStudy/{demo['study']}"),
                    headers={**FHIR, "Authorization": f"Bearer {token}", "X-Request-ID": "req-patient-1"})
    assert r.status_code == 201
    app.extensions["gateway.security"].audit_writer.flush()
    with app.extensions["gateway.store"].engine.connect() as conn:
        rows = conn.execute(select(schema.resources.c.content).where(schema.resources.c.type == "AuditEvent"))
        events = [orjson.loads(x[0]) for x in rows]
    mine = [e for e in events if "req-patient-1" in json.dumps(e)]
    assert len(mine) == 1 and mine[0]["subtype"][0]["code"] == "create"
    assert {"reference": f"ResearchSubject/{r.get_json()['id']}"} in [x["what"] for x in mine[0]["entity"]]
    assert ME not in json.dumps(mine[0])


def test_the_fhir_route_takes_the_same_request_when_the_patients_hospital_is_not_configured(client, issuer, demo,
                                                                                            store):
    """POST /fhir/ResearchSubject (apps speaking plain FHIR): today's 422 becomes a request to the site teams."""
    token = issuer.access_token(ME, client_id="nhs-app")
    body = {"resourceType": "ResearchSubject", "status": "candidate",
            "study": {"reference": f"ResearchStudy/{demo['study']}"},
            "individual": {"reference": f"Patient/{demo['patient']}"}}
    r = client.post("/fhir/ResearchSubject", data=json.dumps(body),
                    headers={**FHIR, "Authorization": f"Bearer {token}"})
    assert r.status_code == 201, r.get_json()
    jobs = outbox.list_jobs(store, resource=f"ResearchSubject/{r.get_json()['id']}")[1]
    assert [(j.kind, j.destination) for j in jobs] == [("site-contact", "christie-research-office")]
