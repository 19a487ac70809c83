"""The store's write hook of topic-based Subscriptions: a Subscription written on any path is checked against the
topics, its delivery state kept beside it, and its handshake queued in the same transaction.
Installed by the composition root (gateway/compose.py, ``WRITE_HOOKS``)."""

from __future__ import annotations

from collections.abc import Callable

from gateway.fhir.errors import BusinessRuleViolation
from gateway.notify import delivery, events
from gateway.notify.subscriptions import parse_subscription
from gateway.notify.topics import Topic
from gateway.store.repo import Tx, WriteResult


def subscription_hook(topics: dict[str, Topic], endpoint_allowed: Callable[[str], bool], max_attempts: int):
    """-> the write hook (tx, result, resource) for these topics, allow-list and outbox attempt budget."""

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
