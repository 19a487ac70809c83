"""Registry of FHIR operations ($match, $translate, ...), so that routes and the
CapabilityStatement are derived from one list rather than if/elif chains.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from flask import Response


@dataclass(frozen=True)
class Operation:
    name: str  # without the $
    resource_type: str | None  # None: system level
    instance: bool  # invoked on /Type/id/$name
    handler: Callable[..., Response]  # handler(resource_type, resource_id_or_None) -> Response
    methods: tuple[str, ...] = ("POST", "GET")
    definition: str | None = None  # canonical OperationDefinition URL


_REGISTRY: dict[tuple[str | None, str, bool], Operation] = {}


def register(op: Operation) -> Operation:
    _REGISTRY[(op.resource_type, op.name, op.instance)] = op
    return op


def find(resource_type: str | None, name: str, instance: bool) -> Operation | None:
    return _REGISTRY.get((resource_type, name, instance))


def all_operations() -> list[Operation]:
    return sorted(_REGISTRY.values(), key=lambda o: (o.resource_type or "", o.name))
