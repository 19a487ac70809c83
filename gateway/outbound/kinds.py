"""Job kinds: what a worker can deliver, as a mapping from kind name to deliver function, passed in explicitly.

A deliver function takes (job, context) and returns a short result (e.g. the Location the destination gave) or
raises an ``OutboundError``: retryable ones are retried with backoff, the others move the job to ``dead``. Each
part that uses the outbox exports its kinds (``gateway.outbound.contact.JOB_KINDS``,
``gateway.notify.delivery.job_kinds(config)``); the composition root (gateway/compose.py) joins them and gives
them to the worker, so a worker delivers exactly what it was built with:

>>> kinds: dict[str, DeliverFn] = {"example": lambda job, ctx: "ok"}
>>> kinds["example"](None, None)
'ok'
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from gateway.outbound.destinations import Destinations
from gateway.outbound.settings import OutboundSettings
from gateway.store.repo import Store


@dataclass
class DeliveryContext:
    """What a deliver function may use: the store, the hospital destinations, the settings."""

    store: Store
    destinations: Destinations
    settings: OutboundSettings
    extras: dict[str, Any] = field(default_factory=dict)  # per-kind caches


DeliverFn = Callable[[Any, DeliveryContext], str | None]
