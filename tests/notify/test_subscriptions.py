"""Subscription checks against topics, and the notification Bundles' shape (valid R4)."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.fhir.conventions import TOPIC_NEW_MATCHING_STUDY, TOPIC_RESEARCH_SUBJECT_STATUS
from gateway.fhir.errors import BusinessRuleViolation
from gateway.fhir.validate import validate_resource
from gateway.notify.subscriptions import (
    EXT_FILTER_CRITERIA,
    EXT_HEARTBEAT_PERIOD,
    EXT_PAYLOAD_CONTENT,
    Event,
    notification_bundle,
    parse_subscription,
)
from gateway.notify.topics import TopicFileError, load_topic_file, load_topics
from gateway.outbound.allowlist import AllowList

ROOT = Path(__file__).resolve().parents[2]
TOPICS = load_topics(ROOT / "mappings" / "topics")
HOSTS = AllowList.parse("app.example.org").allows


def subscription(**over) -> dict:
    sub = {
        "resourceType": "Subscription",
        "status": "requested",
        "reason": "Tell me about trials I may fit",
        "criteria": TOPIC_NEW_MATCHING_STUDY,
        "_criteria": {"extension": [{"url": EXT_FILTER_CRITERIA, "valueString": "ResearchStudy?patient=Patient/123"}]},
        "channel": {
            "type": "rest-hook",
            "endpoint": "https://app.example.org/notify",
            "payload": "application/fhir+json",
            "_payload": {"extension": [{"url": EXT_PAYLOAD_CONTENT, "valueCode": "full-resource"}]},
            "extension": [{"url": EXT_HEARTBEAT_PERIOD, "valueUnsignedInt": 3600}],
        },
    }
    sub.update(over)
    return sub


def test_topics_are_the_conventional_urls():
    assert set(TOPICS) == {TOPIC_NEW_MATCHING_STUDY, TOPIC_RESEARCH_SUBJECT_STATUS}
    assert TOPICS[TOPIC_NEW_MATCHING_STUDY].filter("patient").required


def test_valid_subscription_parses_and_is_valid_r4():
    sub = subscription()
    validate_resource(sub)
    spec = parse_subscription(sub, TOPICS, HOSTS)
    assert spec.filters == {"patient": ["Patient/123"]}
    assert (spec.content, spec.heartbeat_period, spec.payload) == ("full-resource", 3600, "application/fhir+json")


@pytest.mark.parametrize(("change", "expression", "words"), [
    ({"criteria": "https://elsewhere.example/topic"}, "Subscription.criteria", "not a topic"),
    ({"_criteria": None}, "Subscription.criteria", "requires the filter 'patient'"),
    ({"_criteria": {"extension": [{"url": EXT_FILTER_CRITERIA, "valueString": "ResearchStudy?colour=blue"}]}},
     "Subscription.criteria.extension[0]", "'colour' is not a filter"),
    ({"_criteria": {"extension": [{"url": EXT_FILTER_CRITERIA, "valueString": "Patient?patient=Patient/1"}]}},
     "Subscription.criteria.extension[0]", "topic"),
])
def test_bad_criteria_are_422_with_expression(change, expression, words):
    with pytest.raises(BusinessRuleViolation) as err:
        parse_subscription(subscription(**change), TOPICS, HOSTS)
    assert any(expression in i.expression and words in i.diagnostics for i in err.value.issues), err.value.issues


def test_endpoint_must_be_allow_listed_and_channel_rest_hook():
    sub = subscription()
    sub["channel"] = {**sub["channel"], "endpoint": "https://evil.example.net/x", "type": "websocket"}
    with pytest.raises(BusinessRuleViolation) as err:
        parse_subscription(sub, TOPICS, HOSTS)
    text = err.value.diagnostics
    assert "GATEWAY_ALLOWED_HOSTS" in text and "rest-hook" in text


def test_notification_bundle_is_valid_r4_and_numbered():
    events = [Event(7, "2026-11-23T20:00:00+00:00", "ResearchStudy/abc",
                    {"resourceType": "ResearchStudy", "id": "abc", "status": "active"})]
    bundle = notification_bundle("3f1c2d9e-0000-4000-8000-000000000001", "http://gw/fhir", "sub1",
                                 TOPIC_NEW_MATCHING_STUDY, "active", "event-notification", 7, events,
                                 content="full-resource", timestamp="2026-11-23T20:00:01+00:00")
    validate_resource(bundle)
    status = bundle["entry"][0]["resource"]
    params = {p["name"]: p for p in status["parameter"]}
    assert params["events-since-subscription-start"]["valueString"] == "7"
    parts = {p["name"]: p for p in params["notification-event"]["part"]}
    assert parts["event-number"]["valueString"] == "7"
    assert parts["focus"]["valueReference"]["reference"] == "ResearchStudy/abc"
    assert bundle["entry"][1]["resource"]["id"] == "abc"
    again = notification_bundle("3f1c2d9e-0000-4000-8000-000000000001", "http://gw/fhir", "sub1",
                                TOPIC_NEW_MATCHING_STUDY, "active", "event-notification", 7, events,
                                content="full-resource", timestamp="2026-11-23T20:00:01+00:00")
    assert again == bundle, "redelivery sends the same notification"


def test_id_only_and_handshake_bundles():
    ev = [Event(1, "2026-11-23T20:00:00+00:00", "ResearchStudy/abc")]
    idonly = notification_bundle("b1", "http://gw/fhir", "s", TOPIC_NEW_MATCHING_STUDY, "active",
                                 "event-notification", 1, ev, content="id-only")
    assert "resource" not in idonly["entry"][1] and idonly["entry"][1]["fullUrl"].endswith("ResearchStudy/abc")
    hs = notification_bundle("b2", "http://gw/fhir", "s", TOPIC_NEW_MATCHING_STUDY, "requested", "handshake", 0)
    validate_resource(hs)
    assert len(hs["entry"]) == 1


def test_broken_topic_file_names_file_and_field(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("url: https://x.example/t\ntitle: T\nresource: ResearchStudy\ntriggers: [explode]\n")
    with pytest.raises(TopicFileError) as err:
        load_topic_file(bad)
    assert str(bad) in str(err.value) and "triggers[0]: Must be one of" in str(err.value)
