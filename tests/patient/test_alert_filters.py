"""Trial alerts narrowed by the opt-in's condition and area (issue #14), for a person the gateway holds no record
of: the opt-in makes a minimal alerts-only Patient, the Subscription's filters carry the condition codes and the
postcode district, and the automatic flows tell the person of a new study only if it is about that condition (or a
kind of it) with a recruiting site within the distance."""

from __future__ import annotations

import json

import pytest

from gateway.fhir.conventions import NHS_NUMBER
from gateway.fhir.search import parse_search
from gateway.notify import events
from gateway.notify.flows import ALERTS_ONLY_TAG
from gateway.notify.subscriptions import filters_of
from tests.patient.conftest import NOBODY, csrf, sign_in

SNOMED = "http://snomed.info/sct"
FHIR = {"Content-Type": "application/fhir+json", "Accept": "application/fhir+json"}


def _params(**values) -> str:
    return json.dumps({"resourceType": "Parameters", "parameter": [
        {"name": k, "valueInteger" if isinstance(v, int) else "valueString": v} for k, v in values.items()]})


def _study(service, title: str, code: str, display: str, postcode: str, city: str, status: str = "active") -> str:
    """A ResearchStudy (one condition, SNOMED) with one site at ``postcode``; -> its id."""
    loc = service.create({"resourceType": "Location", "name": f"{city} hospital",
                          "address": {"city": city, "postalCode": postcode, "country": "GB"}}).stored.id
    return service.create({"resourceType": "ResearchStudy", "status": status, "title": title,
                           "condition": [{"coding": [{"system": SNOMED, "code": code, "display": display}]}],
                           "site": [{"reference": f"Location/{loc}"}]}).stored.id


def _opt_in(client, **values):
    return client.post("/patient/alerts", data=_params(**values), headers={**FHIR, "X-CSRF-Token": csrf(client)})


@pytest.fixture
def nobody(client, issuer):
    issuer.nhs_number = NOBODY
    sign_in(client)
    return client


def test_opt_in_without_a_record_makes_an_alerts_only_patient_and_filters(app, nobody, store):
    r = _opt_in(nobody, condition="brain tumour", postcode="LS6 3HE", distance=50)
    assert r.status_code == 201, r.get_json()
    made = {e["resource"]["resourceType"]: e["resource"] for e in r.get_json()["entry"]}
    filters = filters_of(made["Subscription"])
    assert filters["condition"] == {f"{SNOMED}|126952004"}  # brain tumour, through the terminology
    assert filters["postcode"] == {"LS6"} and filters["distance"] == {"50"}, "the district only"
    assert "3HE" not in json.dumps(made)
    pid = filters["patient"].pop().removeprefix("Patient/")
    stub = store.read("Patient", pid).resource()
    assert [i["value"] for i in stub["identifier"] if i["system"] == NHS_NUMBER] == [NOBODY]
    assert any((t["system"], t["code"]) == ALERTS_ONLY_TAG for t in stub["meta"]["tag"])
    assert set(stub) <= {"resourceType", "id", "meta", "identifier"}, "nothing clinical"
    assert made["Consent"]["patient"] == {"reference": f"Patient/{pid}"}
    assert nobody.get("/patient/alerts").get_json()["total"] == 2
    again = _opt_in(nobody, condition="glioma")  # the same alerts-only Patient, not a second one
    assert again.status_code == 201
    ids = store.search_ids(parse_search("Patient", [("identifier", f"{NHS_NUMBER}|{NOBODY}")]))
    assert list(ids) == [pid]


def test_unknown_condition_or_postcode_stores_nothing(app, nobody, store):
    r = _opt_in(nobody, condition="qwzxv plorkt")
    assert r.status_code == 422 and "nothing was stored" in r.get_json()["issue"][0]["diagnostics"]
    r = _opt_in(nobody, condition="brain tumour", postcode="ZZ9 9ZZ")
    assert r.status_code == 400 and r.get_json()["resourceType"] == "OperationOutcome"
    assert "ZZ9" not in json.dumps(r.get_json())
    assert nobody.get("/patient/alerts").get_json()["total"] == 0


def test_new_study_near_and_about_the_condition_alerts_once_others_never(app, nobody, store):
    service = app.extensions["gateway.service"]
    flows = app.extensions["gateway.root"].flows()
    # Already recruiting before the opt-in: an anyone-may-join study with no condition (a stub must not "fit" it).
    service.create({"resourceType": "ResearchStudy", "status": "active", "title": "Open to all"})
    r = _opt_in(nobody, condition="brain tumour", postcode="LS6 3HE", distance=50)
    sub = next(e["resource"]["id"] for e in r.get_json()["entry"] if e["resource"]["resourceType"] == "Subscription")
    stats = flows.tick()
    assert stats.alerts == 0 and stats.proposals == 0, stats.summary()
    near = _study(service, "GBM Leeds", "393563007", "Glioblastoma", "LS1 3EX", "Leeds")
    _study(service, "GBM Truro", "393563007", "Glioblastoma", "TR1 3LJ", "Truro")  # Cornwall: > 50 km
    _study(service, "Lung Leeds", "363358000", "Malignant tumor of lung", "LS9 7TF", "Leeds")  # other condition
    _study(service, "GBM Leeds, not yet", "393563007", "Glioblastoma", "LS1 3EX", "Leeds", status="approved")
    stats = flows.tick()
    assert (stats.alerts, stats.proposals) == (1, 0), stats.summary()
    with store.engine.connect() as conn:
        assert [e.focus for e in events.events(conn, sub)] == [f"ResearchStudy/{near}"]
    assert flows.tick().alerts == 0 and flows.full().alerts == 0, "never twice"
    out = nobody.delete("/patient/alerts", headers={"X-CSRF-Token": csrf(nobody)})
    assert out.status_code == 200
    _study(service, "GBM Leeds 2", "393563007", "Glioblastoma", "LS2 9JT", "Leeds")
    assert flows.tick().alerts == 0, "opted out: no more alerts"
    with store.engine.connect() as conn:
        assert len(events.events(conn, sub)) == 1


def test_opt_in_after_the_study_recruits_alerts_for_it(app, nobody, store):
    service = app.extensions["gateway.service"]
    flows = app.extensions["gateway.root"].flows()
    near = _study(service, "GBM Leeds", "393563007", "Glioblastoma", "LS1 3EX", "Leeds")
    _study(service, "GBM Truro", "393563007", "Glioblastoma", "TR1 3LJ", "Truro")
    assert flows.tick().alerts == 0
    r = _opt_in(nobody, condition="brain tumour", postcode="LS6", distance=30)
    sub = next(e["resource"]["id"] for e in r.get_json()["entry"] if e["resource"]["resourceType"] == "Subscription")
    assert flows.tick().alerts == 1
    with store.engine.connect() as conn:
        assert [e.focus for e in events.events(conn, sub)] == [f"ResearchStudy/{near}"]


def test_alerts_only_consent_withdrawn_means_no_alert(app, nobody, store):
    """Consent rules stay: the Subscription alone (consent made inactive by another route) tells no one."""
    service = app.extensions["gateway.service"]
    flows = app.extensions["gateway.root"].flows()
    r = _opt_in(nobody, condition="brain tumour", postcode="LS6", distance=50)
    consent = next(e["resource"] for e in r.get_json()["entry"] if e["resource"]["resourceType"] == "Consent")
    body = {k: v for k, v in store.read("Consent", consent["id"]).resource().items() if k != "meta"}
    service.update("Consent", consent["id"], {**body, "status": "inactive"})
    flows.tick()
    _study(service, "GBM Leeds", "393563007", "Glioblastoma", "LS1 3EX", "Leeds")
    stats = flows.tick()
    assert stats.alerts == 0 and stats.blocked["alert:no-alert-consent"] == 1, stats.summary()



def test_alerts_only_person_is_never_a_candidate(app, nobody, store):
    """The alerts-only Patient holds no clinical data: matching knows it as alerts-only, and $candidates'
    consent gate (also with consent=any, for administrators) refuses it, even for a study anyone may join."""
    from gateway.api.matching_ops import matching_state

    assert _opt_in(nobody, condition="brain tumour", postcode="LS6 3HE", distance=50).status_code == 201
    (stub,) = store.search_ids(parse_search("Patient", [("identifier", f"{NHS_NUMBER}|{NOBODY}")]))
    with app.app_context():
        state = matching_state()
        key = state.person_for_patient(stub)
        assert key is not None and state.alerts_only(key)
        demo_key = next(k for k in state.patients.profiles if k != key) if len(state.patients.profiles) > 1 else None
        assert demo_key is None or not state.alerts_only(demo_key)
