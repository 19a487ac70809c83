"""SMART App Launch v2 scopes: ``system/ResearchStudy.cruds``, ``patient/*.rs`` (v1 ``.read``/``.write`` too).

>>> Scope.parse("patient/Observation.rs")
Scope(context='patient', resource_type='Observation', permissions=frozenset({'r', 's'}))
>>> allows({"system/ResearchStudy.cruds"}, "ResearchStudy", "c")
True
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache

_SCOPE = re.compile(r"^(patient|user|system)/(\*|[A-Z][A-Za-z]+)\.(\*|read|write|c?r?u?d?s?)$")
_V1 = {"read": "rs", "write": "cud", "*": "cruds"}


class ScopeError(ValueError):
    """A scope string that is not a SMART v2 (or v1) resource scope."""


@dataclass(frozen=True)
class Scope:
    context: str  # patient | user | system
    resource_type: str  # a FHIR type or *
    permissions: frozenset[str]

    @staticmethod
    def parse(text: str) -> Scope:
        """'system/ResearchStudy.cruds' -> Scope; granular query scopes (``?category=``) are not supported."""
        m = _SCOPE.match(text.strip())
        if not m or m.group(3) == "":
            raise ScopeError(f"'{text}' is not a SMART scope like system/ResearchStudy.cruds or patient/*.rs")
        perms = _V1.get(m.group(3), m.group(3))
        return Scope(m.group(1), m.group(2), frozenset(perms))

    def covers(self, resource_type: str, permission: str) -> bool:
        return self.resource_type in ("*", resource_type) and permission in self.permissions


def is_resource_scope(text: str) -> bool:
    try:
        Scope.parse(text)
    except ScopeError:
        return False
    return True


@lru_cache(maxsize=4096)
def _parsed(scopes: frozenset[str]) -> tuple[Scope, ...]:
    return tuple(Scope.parse(s) for s in scopes if is_resource_scope(s))


def allows(scopes: Iterable[str], resource_type: str, permission: str) -> bool:
    """Does any scope grant ``permission`` (one of c r u d s) on ``resource_type``?"""
    return any(s.covers(resource_type, permission) for s in _parsed(frozenset(scopes)))


def narrow(requested: Iterable[str], allowed: Iterable[str]) -> frozenset[str]:
    """The requested scopes a client may have: each one kept with the permissions some allowed scope grants.

    narrow({"system/Patient.cruds"}, {"system/*.rs"}) -> {"system/Patient.rs"}
    """
    allowed_p = _parsed(frozenset(allowed))
    out = set()
    for text in requested:
        if not is_resource_scope(text):
            continue
        want = Scope.parse(text)
        for a in allowed_p:
            if a.context != want.context or want.resource_type not in ("*", a.resource_type) and a.resource_type != "*":
                continue
            perms = want.permissions & a.permissions
            rtype = a.resource_type if want.resource_type == "*" else want.resource_type
            if perms:
                out.add(f"{want.context}/{rtype}.{''.join(c for c in 'cruds' if c in perms)}")
    return frozenset(out)
