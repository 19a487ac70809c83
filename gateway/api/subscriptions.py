"""Topic-based Subscriptions on the REST API: checks on write, topics in the CapabilityStatement,
``Subscription/{id}/$status`` and ``Subscription/{id}/$events`` (R5 Backport IG, R4 form)."""

from __future__ import annotations

from flask import Flask, current_app, request

from gateway.api import operations
from gateway.api.capability import RESOURCE_EXTENSIONS
from gateway.api.http import base_url, fhir_response
from gateway.fhir.errors import BusinessRuleViolation, InvalidResource, NotFound
from gateway.notify import delivery, events
from gateway.notify.subscriptions import (
    EXT_TOPIC_CANONICAL,
    Event,
    notification_bundle,
    parse_subscription,
    payload_content,
    status_parameters,
)
from gateway.notify.topics import Topic, load_topics
from gateway.outbound.settings import OutboundSettings
from gateway.store.interactions import new_id
from gateway.store.repo import Store, Tx, WriteResult

OPERATION_BASE = "http://hl7.org/fhir/uv/subscriptions-backport/OperationDefinition"


def init_app(app: Flask) -> None:
    settings = app.config["SETTINGS"]
    topics = load_topics(settings.mappings_path / "topics")
    outbound = OutboundSettings.from_env(settings.mappings_path)
    allow = outbound.allowed_hosts
    app.extensions["gateway.topics"] = topics
    RESOURCE_EXTENSIONS["Subscription"] = [{"url": EXT_TOPIC_CANONICAL, "valueCanonical": url}
                                           for url in sorted(topics)]
    app.extensions["gateway.service"].hooks.append(_subscription_hook(topics, allow.allows, outbound.max_attempts))


def _subscription_hook(topics: dict[str, Topic], endpoint_allowed, max_attempts: int):
    def hook(tx: Tx, result: WriteResult, resource: dict) -> None:
        st = result.stored
        if st.type != "Subscription":
            return
        if result.outcome == "deleted":
            if events.get(tx.conn, st.id) is not None:
                events.set_status(tx.conn, st.id, "off")
            return
        spec = parse_subscription(resource, topics, endpoint_allowed)
        state = events.get(tx.conn, st.id)
        status = resource.get("status")
        if state is None and status not in ("requested", "off"):
            raise BusinessRuleViolation("A new Subscription must have status 'requested' (the server activates it "
                                        "after a successful handshake)", "Subscription.status")
        if state is not None and state.topic != spec.topic.url:
            raise BusinessRuleViolation("A Subscription's topic (criteria) cannot change; create a new one",
                                        "Subscription.criteria")
        if state is None:
            events.ensure(tx.conn, st.id, spec.topic.url, status)
        elif status != state.status:
            events.set_status(tx.conn, st.id, status)
        if status == "requested" and (state is None or state.status != "requested"):
            # Activation (or recovery from error): the worker sends a handshake; success makes it active.
            delivery.enqueue_handshake(tx.conn, st.id, st.version, max_attempts)

    return hook


def _store() -> Store:
    return current_app.extensions["gateway.store"]


def _subscription(rid: str) -> tuple[dict, events.State]:
    sub = _store().read("Subscription", rid).resource()
    with _store().engine.connect() as conn:
        state = events.get(conn, rid)
    if state is None:
        raise NotFound(f"Subscription/{rid} is not a topic-based subscription", "Subscription.criteria")
    return sub, state


def _params() -> dict[str, str]:
    """Operation parameters from the query string or a Parameters body (primitive values only)."""
    out = {k: v for k, v in request.args.items()}
    if request.method == "POST" and request.content_length:
        body = request.get_json(silent=True) or {}
        if body.get("resourceType") != "Parameters":
            raise InvalidResource("The operation body must be a Parameters resource", "Parameters")
        for p in body.get("parameter") or []:
            for k, v in p.items():
                if k.startswith("value"):
                    out[p.get("name", "")] = str(v)
    return out


def status_op(_rtype: str | None, rid: str | None):
    sub, state = _subscription(rid or "")
    params = status_parameters(f"{base_url()}/Subscription/{rid}", state.topic, state.status, "query-status",
                               state.events_since_start, error=state.last_error)
    bundle = {"resourceType": "Bundle", "id": new_id(), "type": "searchset", "total": 1,
              "entry": [{"fullUrl": f"urn:uuid:{new_id()}", "resource": params, "search": {"mode": "match"}}]}
    return fhir_response(bundle)


def events_op(_rtype: str | None, rid: str | None):
    sub, state = _subscription(rid or "")
    params = _params()

    def number(name: str) -> int | None:
        raw = params.get(name)
        if raw is None:
            return None
        if not raw.isdigit():
            raise InvalidResource(f"{name} must be a whole number, got '{raw}'", name)
        return int(raw)

    since, until = number("eventsSinceNumber"), number("eventsUntilNumber")
    content = params.get("content") or payload_content(sub)
    if content not in ("empty", "id-only", "full-resource"):
        raise InvalidResource(f"content must be empty, id-only or full-resource, got '{content}'", "content")
    with _store().engine.connect() as conn:
        found = events.events(conn, rid or "", since, until)
    if content == "full-resource":
        current = {f"{r.type}/{r.id}": r.resource() for r in _store().read_many(
            [tuple(e.focus.split("/", 1)) for e in found])}
        found = [Event(e.number, e.timestamp, e.focus, current.get(e.focus)) for e in found]
    bundle = notification_bundle(new_id(), base_url(), rid or "", state.topic, state.status, "query-event",
                                 state.events_since_start, found, content=content)
    return fhir_response(bundle)


operations.register(operations.Operation("status", "Subscription", True, status_op, ("GET", "POST"),
                                         f"{OPERATION_BASE}/backport-subscription-status"))
operations.register(operations.Operation("events", "Subscription", True, events_op, ("GET", "POST"),
                                         f"{OPERATION_BASE}/backport-subscription-events"))
