"""Delivering Subscription notifications through the outbox (job kinds handed to the worker).

Kinds:
- ``subscription-handshake``: POST a handshake Bundle; on success the Subscription becomes ``active``.
- ``subscription-notification``: deliver every not-yet-delivered event of one subscription, up to the job's
  event number, in event-number order, one notification Bundle per event. The Bundle id is derived from
  (subscription, event number), so a redelivery carries the same notification id.
- ``subscription-heartbeat``: a heartbeat Bundle.
The composition root (gateway/compose.py) binds them to a ``DeliveryConfig`` (``job_kinds``) and hands them to the
worker. After ``GATEWAY_SUBSCRIPTION_ERROR_AFTER`` failed deliveries in a row the Subscription goes to ``error``
(visible in the resource and in ``$status``); events keep being recorded, and ``$events`` fills the gap.
Setting the Subscription back to ``requested`` (PUT) re-runs the handshake and recovers it.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from functools import partial

import orjson
from sqlalchemy import update

from gateway.fhir.conventions import NHS_NUMBER, TOPIC_NEW_MATCHING_STUDY
from gateway.fhir.errors import BusinessRuleViolation, Gone, NotFound
from gateway.fhir.search import parse_search
from gateway.notify import events
from gateway.notify.policy import Policy
from gateway.notify.subscriptions import (
    EXT_HEARTBEAT_PERIOD,
    Event,
    SubscriptionSpec,
    notification_bundle,
    parse_subscription,
)
from gateway.notify.topics import Topic
from gateway.outbound import outbox
from gateway.outbound.errors import ConfigurationError, OutboundError
from gateway.outbound.kinds import DeliverFn, DeliveryContext
from gateway.store import feed
from gateway.store import schema as s
from gateway.store.clock import now_iso
from gateway.store.repo import Store

HANDSHAKE, NOTIFICATION, HEARTBEAT = "subscription-handshake", "subscription-notification", "subscription-heartbeat"
KINDS = (HANDSHAKE, NOTIFICATION, HEARTBEAT)


@dataclass(frozen=True)
class DeliveryConfig:
    """What notification delivery needs from the settings tree, bound once when the worker is built."""

    base_url: str | None  # our FHIR base (GATEWAY_BASE_URL), named in every notification; a worker requires it
    topics: Mapping[str, Topic]  # the topics of <mappings>/topics
    error_after: int = 3  # GATEWAY_SUBSCRIPTION_ERROR_AFTER: failures in a row before the Subscription is 'error'


def job_kinds(config: DeliveryConfig) -> dict[str, DeliverFn]:
    """The notification job kinds, bound to ``config``: kind name -> deliver function (job, context)."""
    return {HANDSHAKE: partial(deliver_handshake, config=config),
            NOTIFICATION: partial(deliver_notification, config=config),
            HEARTBEAT: partial(deliver_heartbeat, config=config)}


def delivered_cursor(subscription_id: str) -> str:
    return f"subscription:{subscription_id}"


def notification_id(subscription_id: str, number: int) -> str:
    """Stable id of the notification of event ``number``: the same on every redelivery."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"subscription/{subscription_id}/event/{number}"))


# -- enqueueing (inside the caller's transaction) -----------------------------------------------------
def enqueue_handshake(conn, subscription_id: str, version: int, max_attempts: int) -> None:
    outbox.enqueue(conn, kind=HANDSHAKE, destination=f"Subscription/{subscription_id}",
                   payload={"subscription": subscription_id}, max_attempts=max_attempts,
                   dedupe_key=f"{HANDSHAKE}:{subscription_id}:{version}",
                   resource=("Subscription", subscription_id, version))


def enqueue_event(conn, subscription_id: str, topic: str, focus: str, max_attempts: int) -> Event:
    """Number an event for the subscription and queue its delivery, in the caller's transaction."""
    ev = events.emit(conn, subscription_id, topic, focus)
    outbox.enqueue(conn, kind=NOTIFICATION, destination=f"Subscription/{subscription_id}",
                   payload={"subscription": subscription_id, "event": ev.number}, max_attempts=max_attempts,
                   dedupe_key=f"{NOTIFICATION}:{subscription_id}:{ev.number}",
                   resource=("Subscription", subscription_id, ev.number))
    return ev


def enqueue_events(conn, items: list[tuple[str, str, str]], max_attempts: int) -> list[Event]:
    """``enqueue_event`` for many (subscription id, topic, focus), in a few statements whatever their number."""
    evs = events.emit_many(conn, items)
    outbox.enqueue_many(conn, [
        {"kind": NOTIFICATION, "destination": f"Subscription/{sid}", "payload": {"subscription": sid,
                                                                               "event": e.number},
         "dedupe_key": f"{NOTIFICATION}:{sid}:{e.number}", "resource": ("Subscription", sid, e.number)}
        for (sid, _, _), e in zip(items, evs, strict=True)], max_attempts)
    return evs


# -- delivery ----------------------------------------------------------------------------------------
def _load(ctx: DeliveryContext, subscription_id: str, config: DeliveryConfig) -> tuple[dict, SubscriptionSpec]:
    try:
        sub = ctx.store.read("Subscription", subscription_id).resource()
    except (NotFound, Gone) as exc:  # deleted since the job was queued: nothing to deliver, ever
        raise ConfigurationError(f"Subscription/{subscription_id} is gone: {exc.diagnostics}") from None
    try:
        spec = parse_subscription(sub, dict(config.topics), ctx.settings.allowed_hosts.allows)
    except BusinessRuleViolation as exc:  # e.g. the allow-list changed since the Subscription was accepted
        raise ConfigurationError(f"Subscription/{subscription_id} can no longer be delivered: "
                                 f"{exc.diagnostics}") from None
    return sub, spec


def _post(ctx: DeliveryContext, spec: SubscriptionSpec, bundle: dict) -> int:
    headers = {"Content-Type": f"{spec.payload}; charset=utf-8"}
    for h in spec.headers:
        name, sep, value = h.partition(":")
        if sep:
            headers[name.strip()] = value.strip()
    timeout = float(spec.timeout) if spec.timeout else 10.0
    # the outbound transport: allow-list, timeouts, typed errors, log line; the outbox retries the job
    resp = ctx.destinations.http().send("POST", spec.endpoint, data=orjson.dumps(bundle), headers=headers,
                                        timeout=(5.0, timeout), idempotent=False)
    return resp.status_code


def _set_resource_status(store: Store, subscription_id: str, status: str, error: str | None = None) -> None:
    """Mirror the delivery state in the Subscription resource (what clients read)."""
    current = store.read("Subscription", subscription_id).resource()
    if current.get("status") == status and (error is None or current.get("error") == error):
        return
    updated = {k: v for k, v in current.items() if k != "meta"}
    updated["status"] = status
    if error:
        updated["error"] = error[:500]
    else:
        updated.pop("error", None)
    with store.write() as tx:
        tx.put(updated)
        events.set_status(tx.conn, subscription_id, status, error)


def _failed(ctx: DeliveryContext, subscription_id: str, exc: OutboundError, config: DeliveryConfig) -> None:
    with ctx.store.write() as tx:
        state = events.record_failure(tx.conn, subscription_id, exc.message, config.error_after)
    if state.status == "error":
        _set_resource_status(ctx.store, subscription_id, "error", exc.message)


def deliver_handshake(job: outbox.Job, ctx: DeliveryContext, config: DeliveryConfig) -> str:
    sid = job.payload["subscription"]
    sub, spec = _load(ctx, sid, config)
    with ctx.store.engine.connect() as conn:
        state = events.get(conn, sid)
    since = state.events_since_start if state else 0
    bundle = notification_bundle(str(uuid.uuid4()), _base(config), sid, spec.topic.url, "requested", "handshake", since,
                                 timestamp=now_iso())
    try:
        status = _post(ctx, spec, bundle)
    except OutboundError as exc:
        _failed(ctx, sid, exc, config)
        raise
    _set_resource_status(ctx.store, sid, "active")
    return f"handshake {status}"


def deliver_notification(job: outbox.Job, ctx: DeliveryContext, config: DeliveryConfig) -> str:
    sid, upto = job.payload["subscription"], int(job.payload["event"])
    cursor_name = delivered_cursor(sid)
    done = feed.cursor(ctx.store, cursor_name)
    if done >= upto:
        return f"event {upto} already delivered"
    sub, spec = _load(ctx, sid, config)
    with ctx.store.engine.connect() as conn:
        pending = events.events(conn, sid, since=done + 1, until=upto)
        state = events.get(conn, sid)
    if spec.topic.url == TOPIC_NEW_MATCHING_STUDY and pending and not _may_alert(ctx.store, spec):
        # Consent withdrawn since the event was queued: it takes effect for this delivery too.
        with ctx.store.write() as tx:
            for ev in pending:
                tx.conn.execute(update(s.subscription_events).where(
                    s.subscription_events.c.subscription_id == sid,
                    s.subscription_events.c.event_number == ev.number).values(cancelled=True))
        feed.advance(ctx.store, cursor_name, upto)
        return f"{len(pending)} event(s) withheld: no trial-alerts consent"
    sent = 0
    for ev in pending:
        if spec.content == "full-resource":
            rtype, _, rid = ev.focus.partition("/")
            found = ctx.store.read_many([(rtype, rid)])
            ev = Event(ev.number, ev.timestamp, ev.focus, found[0].resource() if found else None)
        bundle = notification_bundle(notification_id(sid, ev.number), _base(config), sid, spec.topic.url,
                                     state.status if state else "active", "event-notification",
                                     state.events_since_start if state else ev.number, [ev], content=spec.content,
                                     timestamp=ev.timestamp)
        try:
            _post(ctx, spec, bundle)
        except OutboundError as exc:
            _failed(ctx, sid, exc, config)
            raise
        feed.advance(ctx.store, cursor_name, ev.number)
        sent += 1
    with ctx.store.write() as tx:
        events.record_success(tx.conn, sid)
    if state and state.status == "error":
        _set_resource_status(ctx.store, sid, "active")
    feed.advance(ctx.store, cursor_name, upto)  # cancelled events in the range count as done
    return f"{sent} notification(s) up to event {upto}"


def person_consents(store: Store, patient_refs: list[str]) -> list[dict]:
    """Every Consent of the person behind ``patient_refs`` (all their Patient records, joined by NHS number)."""
    ids = [r.split("/", 1)[1] for r in patient_refs if r.startswith("Patient/")]
    patients = [st.resource() for st in store.read_many([("Patient", i) for i in ids])]
    nhs = {i.get("value") for p in patients for i in p.get("identifier") or [] if i.get("system") == NHS_NUMBER}
    for number in nhs:
        _, more = store.search(parse_search("Patient", [("identifier", f"{NHS_NUMBER}|{number}"), ("_count", "100")]))
        ids += [st.id for st in more]
    if not ids:
        return []
    refs = ",".join(f"Patient/{i}" for i in dict.fromkeys(ids))
    _, rows = store.search(parse_search("Consent", [("patient", refs), ("_count", "1000")]))
    return [st.resource() for st in rows]


def _may_alert(store: Store, spec: SubscriptionSpec) -> bool:
    return Policy().may_alert(person_consents(store, spec.filters.get("patient", []))).allowed


def deliver_heartbeat(job: outbox.Job, ctx: DeliveryContext, config: DeliveryConfig) -> str:
    sid = job.payload["subscription"]
    sub, spec = _load(ctx, sid, config)
    with ctx.store.engine.connect() as conn:
        state = events.get(conn, sid)
    bundle = notification_bundle(str(uuid.uuid4()), _base(config), sid, spec.topic.url, state.status if state else
                                 "active", "heartbeat", state.events_since_start if state else 0, timestamp=now_iso())
    try:
        status = _post(ctx, spec, bundle)
    except OutboundError as exc:
        _failed(ctx, sid, exc, config)
        raise
    return f"heartbeat {status}"


def enqueue_due_heartbeats(store: Store, max_attempts: int, now: float | None = None) -> int:
    """Queue a heartbeat for each active subscription whose period has passed since its last one."""
    now = now or time.time()
    queued = 0
    offset = 0
    while True:
        _, subs = store.search(parse_search("Subscription", [("status", "active"), ("_count", "1000"),
                                                             ("_offset", str(offset))]))
        for st in subs:
            queued += _heartbeat_if_due(store, st.id, st.resource(), now, max_attempts)
        if len(subs) < 1000:
            break
        offset += 1000
    return queued


def _heartbeat_if_due(store: Store, sid: str, sub: dict, now: float, max_attempts: int) -> int:
    period = next((e.get("valueUnsignedInt") for e in (sub.get("channel") or {}).get("extension") or []
                   if e.get("url") == EXT_HEARTBEAT_PERIOD), None)
    name = f"heartbeat:{sid}"
    if not period or now - feed.cursor(store, name) < period:
        return 0
    with store.write() as tx:
        outbox.enqueue(tx.conn, kind=HEARTBEAT, destination=f"Subscription/{sid}", payload={"subscription": sid},
                       dedupe_key=f"{HEARTBEAT}:{sid}:{int(now // period)}", max_attempts=max_attempts)
    feed.advance(store, name, int(now))  # the time of the last heartbeat, in seconds
    return 1


def _base(config: DeliveryConfig) -> str:
    """Our FHIR base for references in notifications (GATEWAY_BASE_URL). A worker does not start without it;
    a context built without it (a test, a tool) cannot deliver notifications: the job is dead, saying why."""
    if not config.base_url:
        raise ConfigurationError("GATEWAY_BASE_URL is not set: a notification must name this server")
    return config.base_url.rstrip("/")

