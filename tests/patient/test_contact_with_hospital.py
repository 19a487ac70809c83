"""A contact request through /patient when the person's own hospital IS configured (issue #14: "when it is, the
hospital also gets its ResearchSubject as today"): one request, two routes - the hospital's ResearchSubject and
the study site research team's Task - and a withdrawal that reaches both."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from gateway.outbound import outbox
from gateway.outbound.allowlist import AllowList
from tests.patient.conftest import ME, csrf, sign_in

FHIR = {"Content-Type": "application/fhir+json", "Accept": "application/fhir+json"}
LEEDS_YAML = """\
name: leeds-hospital
ods_code: RR8
fhir_base_url: https://fhir.leeds.test/R4
write_back: {research_subject: true, task: true}
"""


@pytest.fixture
def patient_settings(patient_settings, tmp_path):
    """The shared settings plus Leeds (RR8), the demo patient's own hospital, as a configured hospital."""
    (tmp_path / "hospitals" / "leeds-hospital.yaml").write_text(LEEDS_YAML)
    hosts = AllowList.parse("fhir.christie.test, fhir.leeds.test, alerts.example.org")
    return replace(patient_settings, outbound=replace(patient_settings.outbound, allowed_hosts=hosts))


def _ask(client, study_id: str, token: str):
    body = {"resourceType": "Parameters", "parameter": [{"name": "study",
                                                         "valueReference": {"reference": f"ResearchStudy/{study_id}"}}]}
    return client.post("/patient/contact-requests", data=json.dumps(body), headers={**FHIR, "X-CSRF-Token": token})


def test_the_hospital_and_the_site_team_are_both_told_and_both_hear_of_the_withdrawal(client, issuer, demo, store):
    issuer.nhs_number = ME
    sign_in(client)
    token = csrf(client)
    r = _ask(client, demo["study"], token)
    assert r.status_code == 201, r.get_json()
    subject = r.get_json()
    assert subject["individual"] == {"reference": f"Patient/{demo['patient']}"}  # the record at the hospital
    jobs = outbox.list_jobs(store, resource=f"ResearchSubject/{subject['id']}")[1]
    assert sorted((j.kind, j.destination) for j in jobs) == [("research-subject", "leeds-hospital"),
                                                             ("site-contact", "christie-research-office")]
    assert _ask(client, demo["study"], token).status_code == 200  # asking again queues nothing new
    assert len(outbox.list_jobs(store, resource=f"ResearchSubject/{subject['id']}")[1]) == 2
    gone = client.delete(f"/patient/contact-requests/{subject['id']}", headers={"X-CSRF-Token": token})
    assert gone.status_code == 200 and gone.get_json()["status"] == "withdrawn"
    after = outbox.list_jobs(store, resource=f"ResearchSubject/{subject['id']}")[1]
    updates = sorted((j.kind, j.destination) for j in after if j.payload.get("op") == "update")
    assert updates == [("research-subject", "leeds-hospital"), ("site-contact", "christie-research-office")]
