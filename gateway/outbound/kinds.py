"""Job kinds: a registry from kind name to deliver function, so any part can use the outbox.

A deliver function takes (job, context) and returns a short result (e.g. the Location the
destination gave) or raises an ``OutboundError``: retryable ones are retried with backoff, the
others move the job to ``dead``. gateway.notify registers its notification kinds the same way:

>>> register_kind("example", lambda job, ctx: "ok")
>>> get_kind("example")(None, None)
'ok'
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from gateway.outbound.destinations import Destinations
from gateway.outbound.settings import OutboundSettings
from gateway.store.repo import Store

# Modules that register job kinds when imported; a worker imports them all. Add one line per module.
JOB_KIND_MODULES = [
    "gateway.outbound.contact",
    "gateway.notify.delivery",
]


@dataclass
class DeliveryContext:
    """What a deliver function may use: the store, the hospital destinations, the settings."""

    store: Store
    destinations: Destinations
    settings: OutboundSettings
    extras: dict[str, Any] = field(default_factory=dict)  # per-kind caches (e.g. notify's topic registry)


DeliverFn = Callable[[Any, DeliveryContext], str | None]
_KINDS: dict[str, DeliverFn] = {}


def register_kind(name: str, deliver: DeliverFn) -> None:
    _KINDS[name] = deliver


def get_kind(name: str) -> DeliverFn | None:
    return _KINDS.get(name)


def known_kinds() -> list[str]:
    return sorted(_KINDS)


def load_kind_modules() -> None:
    for name in JOB_KIND_MODULES:
        importlib.import_module(name)
