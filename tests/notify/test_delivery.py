"""Subscription handshakes, notifications and heartbeats through the outbox worker (HTTP mocked with responses)."""

from __future__ import annotations

from dataclasses import replace

import orjson
import pytest
import responses

from gateway.api.app import create_app
from gateway.config import NotifySettings
from gateway.fhir import conventions as cv
from gateway.fhir.conventions import TOPIC_NEW_MATCHING_STUDY
from gateway.fhir.validate import validate_resource
from gateway.notify import delivery, events
from gateway.notify.subscriptions import EXT_FILTER_CRITERIA, EXT_HEARTBEAT_PERIOD, EXT_PAYLOAD_CONTENT
from gateway.outbound import outbox
from gateway.outbound.allowlist import AllowList
from gateway.outbound.settings import OutboundSettings
from gateway.outbound.worker import Worker
from tests.conftest import FHIR_JSON

HOOK = "https://app.example.org/hook"
BASE = "https://gw.example.org/fhir"  # GATEWAY_BASE_URL: notifications name this server


@pytest.fixture
def app(settings):
    application = create_app(replace(
        settings, base_url=BASE,
        outbound=OutboundSettings(allowed_hosts=AllowList.parse("app.example.org"), backoff_base=0, backoff_max=0,
                                  max_attempts=5),
        notify=NotifySettings(subscription_error_after=2)))
    yield application
    application.extensions["gateway.store"].engine.dispose()


@pytest.fixture
def worker(app) -> Worker:
    return app.extensions["gateway.root"].worker(name="test-worker")


def _subscribe(client, content="full-resource", heartbeat=None) -> str:
    channel = {"type": "rest-hook", "endpoint": HOOK, "payload": "application/fhir+json",
               "header": ["Authorization: Bearer app-secret"],
               "_payload": {"extension": [{"url": EXT_PAYLOAD_CONTENT, "valueCode": content}]}}
    if heartbeat:
        channel["extension"] = [{"url": EXT_HEARTBEAT_PERIOD, "valueUnsignedInt": heartbeat}]
    filt = {"url": EXT_FILTER_CRITERIA, "valueString": "ResearchStudy?patient=Patient/p1"}
    sub = {"resourceType": "Subscription", "status": "requested", "reason": "alerts",
           "criteria": TOPIC_NEW_MATCHING_STUDY, "_criteria": {"extension": [filt]}, "channel": channel}
    r = client.post("/fhir/Subscription", json=sub, headers=FHIR_JSON)
    assert r.status_code == 201, r.get_json()
    return r.get_json()["id"]


def _consenting_patient(service, status: str = "active") -> str:
    """Patient/p1 (the subscriptions' filter) with a trial-alerts Consent; -> the Consent id."""
    service.update("Patient", "p1", {"resourceType": "Patient", "id": "p1",
                                     "identifier": [{"system": cv.NHS_NUMBER, "value": "9449306060"}]})
    consent = {"resourceType": "Consent", "status": status,
               "scope": {"coding": [{"system": cv.CONSENT_SCOPE, "code": "research"}]},
               "category": [{"text": "research"}], "patient": {"reference": "Patient/p1"},
               "policyRule": {"text": "alerts"},
               "provision": {"type": "permit", "purpose": [{"system": cv.PURPOSE_TRIAL_ALERTS[0],
                                                            "code": cv.PURPOSE_TRIAL_ALERTS[1]}]}}
    return service.create(consent).stored.id


def _bodies(calls) -> list[dict]:
    return [orjson.loads(c.request.body) for c in calls]


def _kind(bundle: dict) -> str:
    return next(p["valueCode"] for p in bundle["entry"][0]["resource"]["parameter"] if p["name"] == "type")


@responses.activate
def test_handshake_activates_then_events_arrive_in_order(app, worker):
    client, store, service = app.test_client(), app.extensions["gateway.store"], app.extensions["gateway.service"]
    responses.post(HOOK, status=200)
    _consenting_patient(service)
    sid = _subscribe(client)
    assert worker.run_until_idle() == 1
    assert _kind(_bodies(responses.calls)[0]) == "handshake"
    assert responses.calls[0].request.headers["Authorization"] == "Bearer app-secret"
    assert store.read("Subscription", sid).resource()["status"] == "active"

    studies = [service.create({"resourceType": "ResearchStudy", "status": "active", "title": f"S{i}"}).stored.id
               for i in range(3)]
    with store.write() as tx:
        for s in studies:
            delivery.enqueue_event(tx.conn, sid, TOPIC_NEW_MATCHING_STUDY, f"ResearchStudy/{s}", 5)
    worker.run_until_idle()
    notes = [b for b in _bodies(responses.calls) if _kind(b) == "event-notification"]
    assert len(notes) == 3
    for n, bundle in enumerate(notes, 1):
        validate_resource(bundle)
        status = bundle["entry"][0]["resource"]["parameter"]
        event = next(p for p in status if p["name"] == "notification-event")
        assert event["part"][0]["valueString"] == str(n)
        assert bundle["id"] == delivery.notification_id(sid, n)
        assert bundle["entry"][1]["resource"]["id"] == studies[n - 1]


@responses.activate
def test_failures_put_subscription_in_error_and_nothing_is_lost(app, worker):
    client, store, service = app.test_client(), app.extensions["gateway.store"], app.extensions["gateway.service"]
    responses.post(HOOK, status=200)
    _consenting_patient(service)
    sid = _subscribe(client, content="id-only")
    worker.run_until_idle()
    responses.replace(responses.POST, HOOK, status=503)
    study = service.create({"resourceType": "ResearchStudy", "status": "active"}).stored.id
    with store.write() as tx:
        delivery.enqueue_event(tx.conn, sid, TOPIC_NEW_MATCHING_STUDY, f"ResearchStudy/{study}", 5)
    worker.run_once()
    worker.run_once()
    sub = store.read("Subscription", sid).resource()
    assert sub["status"] == "error"
    assert "503" in sub["error"]
    status = client.get(f"/fhir/Subscription/{sid}/$status").get_json()
    assert {p["name"]: p for p in status["entry"][0]["resource"]["parameter"]}["status"]["valueCode"] == "error"

    responses.replace(responses.POST, HOOK, status=200)
    worker.run_until_idle()
    delivered = [b for b in _bodies(responses.calls) if _kind(b) == "event-notification"]
    numbers = {next(p for p in b["entry"][0]["resource"]["parameter"]
                    if p["name"] == "notification-event")["part"][0]["valueString"] for b in delivered}
    assert numbers == {"1"}, "the same event, same id, retried until delivered"
    assert len({b["id"] for b in delivered}) == 1
    assert store.read("Subscription", sid).resource()["status"] == "active", "recovered on delivery"


@responses.activate
def test_dead_subscription_job_when_endpoint_refuses(app, worker):
    client, store = app.test_client(), app.extensions["gateway.store"]
    responses.post(HOOK, status=410)
    sid = _subscribe(client)
    worker.run_until_idle()
    _, jobs = outbox.list_jobs(store, state="dead")
    assert [j.kind for j in jobs] == [delivery.HANDSHAKE]
    with store.engine.connect() as conn:
        assert events.get(conn, sid).consecutive_failures == 1


@responses.activate
def test_heartbeats_follow_the_period(app, worker):
    client, store = app.test_client(), app.extensions["gateway.store"]
    responses.post(HOOK, status=200)
    _subscribe(client, heartbeat=60)
    worker.run_until_idle()
    assert delivery.enqueue_due_heartbeats(store, 5, now=1_000_000) == 1
    assert delivery.enqueue_due_heartbeats(store, 5, now=1_000_030) == 0, "not yet due"
    assert delivery.enqueue_due_heartbeats(store, 5, now=1_000_061) == 1
    worker.run_until_idle()
    assert [_kind(b) for b in _bodies(responses.calls)] == ["handshake", "heartbeat", "heartbeat"]


@responses.activate
def test_consent_withdrawn_before_delivery_withholds_the_alert(app, worker):
    client, store, service = app.test_client(), app.extensions["gateway.store"], app.extensions["gateway.service"]
    responses.post(HOOK, status=200)
    cid = _consenting_patient(service)
    sid = _subscribe(client)
    worker.run_until_idle()
    study = service.create({"resourceType": "ResearchStudy", "status": "active"}).stored.id
    with store.write() as tx:
        delivery.enqueue_event(tx.conn, sid, TOPIC_NEW_MATCHING_STUDY, f"ResearchStudy/{study}", 5)
    consent = store.read("Consent", cid).resource()
    service.update("Consent", cid, {**consent, "status": "inactive"})
    worker.run_until_idle()
    assert [_kind(b) for b in _bodies(responses.calls)] == ["handshake"], "nothing sent after withdrawal"
    with store.engine.connect() as conn:
        assert events.events(conn, sid) == []
