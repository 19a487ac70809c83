"""Subscriptions over REST: checks on create, topics advertised, $status and $events."""

from __future__ import annotations

from dataclasses import replace

import pytest

from gateway.fhir.conventions import TOPIC_NEW_MATCHING_STUDY
from gateway.notify import events
from gateway.notify.subscriptions import EXT_FILTER_CRITERIA, EXT_PAYLOAD_CONTENT, EXT_TOPIC_CANONICAL
from gateway.outbound.allowlist import AllowList
from gateway.outbound.settings import OutboundSettings
from tests.conftest import FHIR_JSON


@pytest.fixture
def settings(settings):
    """Subscription endpoints must be on the allow-list."""
    return replace(settings, outbound=OutboundSettings(allowed_hosts=AllowList.parse("app.example.org")))


def _sub(patient: str = "Patient/p1", endpoint: str = "https://app.example.org/hook", status: str = "requested"):
    return {"resourceType": "Subscription", "status": status, "reason": "trial alerts",
            "criteria": TOPIC_NEW_MATCHING_STUDY,
            "_criteria": {"extension": [{"url": EXT_FILTER_CRITERIA,
                                         "valueString": f"ResearchStudy?patient={patient}"}]},
            "channel": {"type": "rest-hook", "endpoint": endpoint, "payload": "application/fhir+json",
                        "_payload": {"extension": [{"url": EXT_PAYLOAD_CONTENT, "valueCode": "full-resource"}]}}}


def test_topics_are_advertised_in_metadata(client):
    cs = client.get("/fhir/metadata").get_json()
    sub = next(r for r in cs["rest"][0]["resource"] if r["type"] == "Subscription")
    assert {"url": EXT_TOPIC_CANONICAL, "valueCanonical": TOPIC_NEW_MATCHING_STUDY} in sub["extension"]
    assert {o["name"] for o in sub["operation"]} >= {"status", "events"}


def test_bad_subscription_is_422_and_not_stored(client, store):
    r = client.post("/fhir/Subscription", json=_sub(endpoint="https://evil.example.net/x"), headers=FHIR_JSON)
    assert r.status_code == 422
    assert r.get_json()["issue"][0]["expression"] == ["Subscription.channel.endpoint"]
    r = client.post("/fhir/Subscription", json=_sub(status="active"), headers=FHIR_JSON)
    assert r.status_code == 422 and r.get_json()["issue"][0]["expression"] == ["Subscription.status"]
    assert store.count("Subscription") == 0


def test_status_and_events_operations(client, store, service):
    r = client.post("/fhir/Subscription", json=_sub(), headers=FHIR_JSON)
    assert r.status_code == 201
    sid = r.get_json()["id"]
    study = service.create({"resourceType": "ResearchStudy", "status": "active", "title": "T"}).stored
    with store.write() as tx:
        for _ in range(3):
            events.emit(tx.conn, sid, TOPIC_NEW_MATCHING_STUDY, f"ResearchStudy/{study.id}")

    status = client.get(f"/fhir/Subscription/{sid}/$status").get_json()
    params = {p["name"]: p for p in status["entry"][0]["resource"]["parameter"]}
    assert params["status"]["valueCode"] == "requested"
    assert params["events-since-subscription-start"]["valueString"] == "3"
    assert params["type"]["valueCode"] == "query-status"

    got = client.get(f"/fhir/Subscription/{sid}/$events?eventsSinceNumber=2").get_json()
    assert got["type"] == "history"
    notified = [p for p in got["entry"][0]["resource"]["parameter"] if p["name"] == "notification-event"]
    assert [p["part"][0]["valueString"] for p in notified] == ["2", "3"]
    assert got["entry"][1]["resource"]["id"] == study.id, "full-resource content carries the study"

    bad = client.get(f"/fhir/Subscription/{sid}/$events?eventsSinceNumber=two")
    assert bad.status_code == 400
