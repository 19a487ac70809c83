"""R4 topic-based Subscriptions (HL7 Subscriptions R5 Backport IG): what a Subscription asks for,
checked against the topics the gateway offers, and the notification Bundles sent to subscribers.

>>> spec = parse_subscription(sub_json, topics, AllowList.parse("app.example.org").allows)
>>> spec.filters
{'patient': ['Patient/123']}
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import parse_qsl, urlsplit

from gateway.fhir.errors import BusinessRuleViolation, Issue
from gateway.notify.topics import Topic

BACKPORT = "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition"
EXT_FILTER_CRITERIA = f"{BACKPORT}/backport-filter-criteria"
EXT_HEARTBEAT_PERIOD = f"{BACKPORT}/backport-heartbeat-period"
EXT_TIMEOUT = f"{BACKPORT}/backport-timeout"
EXT_MAX_COUNT = f"{BACKPORT}/backport-max-count"
EXT_PAYLOAD_CONTENT = f"{BACKPORT}/backport-payload-content"
EXT_TOPIC_CANONICAL = f"{BACKPORT}/capabilitystatement-subscriptiontopic-canonical"
PROFILE_SUBSCRIPTION = f"{BACKPORT}/backport-subscription"
PROFILE_STATUS = f"{BACKPORT}/backport-subscription-status-r4"
PROFILE_NOTIFICATION = f"{BACKPORT}/backport-subscription-notification-r4"

CONTENT_LEVELS = ("empty", "id-only", "full-resource")
PAYLOAD_TYPES = ("application/fhir+json", "application/json")
NOTIFICATION_TYPES = ("handshake", "heartbeat", "event-notification", "query-status", "query-event")


@dataclass
class SubscriptionSpec:
    """A validated Subscription: what to send, where, and how often to say 'still here'."""

    topic: Topic
    filters: dict[str, list[str]]
    endpoint: str
    payload: str
    content: str
    heartbeat_period: int | None = None
    timeout: int | None = None
    max_count: int | None = None
    headers: list[str] = field(default_factory=list)


def _ext(element: dict | None, url: str) -> list[dict]:
    return [e for e in ((element or {}).get("extension") or []) if e.get("url") == url]


def filters_of(sub: dict) -> dict[str, set[str]]:
    """A stored Subscription's backport-filter-criteria as {name: values}, e.g. {'patient': {'Patient/1'}}."""
    out: dict[str, set[str]] = {}
    for ext in _ext(sub.get("_criteria"), EXT_FILTER_CRITERIA):
        for name, value in parse_qsl((ext.get("valueString") or "").partition("?")[2]):
            out.setdefault(name, set()).add(value)
    return out


def payload_content(sub: dict) -> str:
    """The backport-payload-content level of a Subscription (id-only when not given)."""
    found = _ext((sub.get("channel") or {}).get("_payload"), EXT_PAYLOAD_CONTENT)
    return found[0].get("valueCode") if found else "id-only"


def _fail(issues: list[Issue]) -> None:
    if issues:
        raise BusinessRuleViolation("; ".join(f"{i.expression[0]}: {i.diagnostics}" for i in issues),
                                    issues=issues)


def parse_subscription(sub: dict, topics: dict[str, Topic], endpoint_allowed: Callable[[str], bool]
                       ) -> SubscriptionSpec:
    """Check a Subscription against the topics and the outbound allow-list (422 with expressions).

    ``endpoint_allowed`` is the GATEWAY_ALLOWED_HOSTS check (gateway.outbound.allowlist.AllowList.allows).
    """
    issues: list[Issue] = []
    criteria = sub.get("criteria")
    topic = topics.get(criteria) if isinstance(criteria, str) else None
    if topic is None:
        issues.append(Issue("business-rule", f"criteria '{criteria}' is not a topic this server offers "
                            f"(offered: {', '.join(sorted(topics))})", ["Subscription.criteria"]))
        _fail(issues)
    assert topic is not None
    filters: dict[str, list[str]] = {}
    for i, ext in enumerate(_ext(sub.get("_criteria"), EXT_FILTER_CRITERIA)):
        where = f"Subscription.criteria.extension[{i}]"
        value = ext.get("valueString")
        if not isinstance(value, str) or "?" not in value:
            issues.append(Issue("business-rule", "backport-filter-criteria needs a valueString like "
                                f"'{topic.resource}?{topic.filters[0].parameter if topic.filters else 'x'}=...'",
                                [where]))
            continue
        rtype, _, query = value.partition("?")
        if rtype != topic.resource:
            issues.append(Issue("business-rule", f"filter is on {rtype}, but topic {topic.url} is about "
                                f"{topic.resource}", [where]))
            continue
        for name, val in parse_qsl(query, keep_blank_values=True):
            f = topic.filter(name)
            if f is None:
                issues.append(Issue("business-rule", f"'{name}' is not a filter of topic {topic.url} (filters: "
                                    f"{', '.join(x.parameter for x in topic.filters) or 'none'})", [where]))
            elif f.type == "reference" and not val.startswith(f"{f.target}/"):
                issues.append(Issue("business-rule", f"filter '{name}' must reference a {f.target} "
                                    f"({f.target}/id), got '{val}'", [where]))
            else:
                filters.setdefault(name, []).append(val)
    for f in topic.filters:
        if f.required and f.parameter not in filters:
            issues.append(Issue("business-rule", f"topic {topic.url} requires the filter '{f.parameter}' in "
                                "backport-filter-criteria", ["Subscription.criteria"]))
    channel = sub.get("channel") or {}
    if channel.get("type") != "rest-hook":
        issues.append(Issue("not-supported", f"channel.type '{channel.get('type')}' is not supported; use "
                            "rest-hook", ["Subscription.channel.type"]))
    endpoint = channel.get("endpoint")
    parts = urlsplit(endpoint) if isinstance(endpoint, str) else None
    if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
        issues.append(Issue("business-rule", "channel.endpoint must be an absolute http(s) URL",
                            ["Subscription.channel.endpoint"]))
    elif not endpoint_allowed(endpoint):
        issues.append(Issue("business-rule", f"channel.endpoint host '{parts.hostname}' is not in "
                            "GATEWAY_ALLOWED_HOSTS", ["Subscription.channel.endpoint"]))
    payload = channel.get("payload")
    if payload not in PAYLOAD_TYPES:
        issues.append(Issue("business-rule", f"channel.payload must be one of {', '.join(PAYLOAD_TYPES)}, got "
                            f"'{payload}'", ["Subscription.channel.payload"]))
    content = payload_content(sub)
    if content not in CONTENT_LEVELS:
        issues.append(Issue("business-rule", f"backport-payload-content must be one of "
                            f"{', '.join(CONTENT_LEVELS)}, got '{content}'", ["Subscription.channel.payload"]))

    def _uint(url: str, name: str) -> int | None:
        found = _ext(channel, url)
        if not found:
            return None
        v = found[0].get("valueUnsignedInt", found[0].get("valuePositiveInt"))
        if not isinstance(v, int) or isinstance(v, bool) or v < 0:
            issues.append(Issue("business-rule", f"{name} needs a valueUnsignedInt", ["Subscription.channel"]))
            return None
        return v

    heartbeat = _uint(EXT_HEARTBEAT_PERIOD, "backport-heartbeat-period")
    timeout = _uint(EXT_TIMEOUT, "backport-timeout")
    max_count = _uint(EXT_MAX_COUNT, "backport-max-count")
    _fail(issues)
    return SubscriptionSpec(topic, filters, endpoint, payload, content, heartbeat, timeout, max_count,
                            [h for h in channel.get("header") or [] if isinstance(h, str)])


@dataclass(frozen=True)
class Event:
    """One numbered event of one subscription."""

    number: int
    timestamp: str
    focus: str  # "ResearchStudy/123"
    resource: dict | None = None  # the focus resource, for full-resource payloads


def status_parameters(subscription_ref: str, topic_url: str, status: str, kind: str,
                      events_since_start: int, events: list[Event] = (), content: str = "id-only",
                      error: str | None = None) -> dict:
    """The backport SubscriptionStatus in R4 form (a Parameters resource)."""
    params: list[dict] = [
        {"name": "subscription", "valueReference": {"reference": subscription_ref}},
        {"name": "topic", "valueCanonical": topic_url},
        {"name": "status", "valueCode": status},
        {"name": "type", "valueCode": kind},
        {"name": "events-since-subscription-start", "valueString": str(events_since_start)},
    ]
    for ev in events:
        part: list[dict] = [{"name": "event-number", "valueString": str(ev.number)},
                            {"name": "timestamp", "valueInstant": ev.timestamp}]
        if content != "empty":
            part.append({"name": "focus", "valueReference": {"reference": ev.focus}})
        params.append({"name": "notification-event", "part": part})
    if error:
        params.append({"name": "error", "valueCodeableConcept": {"text": error}})
    return {"resourceType": "Parameters", "meta": {"profile": [PROFILE_STATUS]}, "parameter": params}


def notification_bundle(bundle_id: str, base: str, subscription_id: str, topic_url: str, status: str, kind: str,
                        events_since_start: int, events: list[Event] = (), content: str = "id-only",
                        timestamp: str | None = None, error: str | None = None) -> dict:
    """A notification: a ``history`` Bundle led by the status Parameters, then the focus resources.

    ``bundle_id`` is stable for a given (subscription, events) so redelivery sends the same notification id.
    """
    if kind not in NOTIFICATION_TYPES:
        raise ValueError(f"unknown notification type {kind}")
    status_res = status_parameters(f"{base}/Subscription/{subscription_id}", topic_url, status, kind,
                                   events_since_start, events, content, error)
    entries: list[dict] = [{
        "fullUrl": f"urn:uuid:{uuid.uuid5(uuid.NAMESPACE_URL, bundle_id + '/status')}",
        "resource": status_res,
        "request": {"method": "GET", "url": f"Subscription/{subscription_id}/$status"},
        "response": {"status": "200"},
    }]
    if content != "empty":
        for ev in events:
            rtype, _, rid = ev.focus.partition("/")
            entry: dict = {"fullUrl": f"{base}/{ev.focus}",
                           "request": {"method": "PUT", "url": ev.focus},
                           "response": {"status": "200"}}
            if content == "full-resource" and ev.resource is not None:
                entry["resource"] = ev.resource
            entries.append(entry)
    bundle: dict = {"resourceType": "Bundle", "id": bundle_id,
                    "meta": {"profile": [PROFILE_NOTIFICATION]}, "type": "history", "entry": entries}
    if timestamp:
        bundle["timestamp"] = timestamp
    return bundle
