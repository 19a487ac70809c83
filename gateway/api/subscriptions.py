"""Topic-based Subscriptions on the REST API: checks on write, topics in the CapabilityStatement,
``Subscription/{id}/$status`` and ``Subscription/{id}/$events`` (R5 Backport IG, R4 form)."""

from __future__ import annotations

from flask import Flask, current_app, request

from gateway.api import operations
from gateway.api.capability import RESOURCE_EXTENSIONS
from gateway.api.http import base_url, fhir_response, json_body
from gateway.api.params import parameters_of
from gateway.fhir.errors import InvalidResource, NotFound
from gateway.notify import events
from gateway.notify.subscriptions import (
    EXT_TOPIC_CANONICAL,
    Event,
    notification_bundle,
    payload_content,
    status_parameters,
)
from gateway.store.interactions import new_id
from gateway.store.repo import Store

OPERATION_BASE = "http://hl7.org/fhir/uv/subscriptions-backport/OperationDefinition"


def init_app(app: Flask) -> None:
    """Advertise the topics (from gateway/compose.py, which also installs the Subscription write hook)."""
    topics = app.extensions["gateway.topics"]
    RESOURCE_EXTENSIONS["Subscription"] = [{"url": EXT_TOPIC_CANONICAL, "valueCanonical": url}
                                           for url in sorted(topics)]


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
    """Operation parameters from the query string and a POSTed Parameters body (its values win), as text."""
    out = {k: v for k, v in request.args.items()}
    if request.method == "POST" and request.content_length:
        out.update({k: str(v[-1]) for k, v in parameters_of(json_body(), "$events").items()})
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
