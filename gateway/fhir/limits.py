"""Bounds on search input, checked where every search is parsed (``parse_search``), and NUL characters.

Both databases must answer bad input alike, with a 400 OperationOutcome rather than a driver error:
SQLite refuses LIKE patterns over 50,000 bytes ("LIKE or GLOB pattern too complex"), PostgreSQL refuses
NUL characters in text ("cannot contain NUL (0x00) bytes") and plans a query with hundreds of ANDed
criteria in minutes and gigabytes. So, for every search (REST, ``_search`` forms, conditional requests,
Bundle entries, operations):

- each parameter value is at most ``max_value_length`` characters (GATEWAY_MAX_SEARCH_VALUE_LENGTH,
  default 4,096; never above ``HARD_MAX_VALUE_LENGTH``, which keeps an escaped LIKE pattern under SQLite's
  limit);
- a query has at most ``max_parameters`` parameters (GATEWAY_MAX_SEARCH_PARAMETERS, default 32);
- no name or value contains U+0000.

``configure`` is called once per process at start-up (``gateway.api.auth.init_app``) from the settings.

>>> check_search_items([("name", "a\\x00b")])
Traceback (most recent call last):
...
gateway.fhir.errors.InvalidResource: Search parameter 'name': a NUL character (U+0000) is not allowed
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from gateway.fhir.errors import InvalidResource

HARD_MAX_VALUE_LENGTH = 12_000  # 4 UTF-8 bytes a character at most: a LIKE pattern stays under SQLite's 50,000 bytes
NUL = "\x00"


@dataclass
class SearchLimits:
    max_value_length: int = 4096
    max_parameters: int = 32


LIMITS = SearchLimits()


def configure(max_value_length: int, max_parameters: int) -> None:
    """Set this process's bounds (from GATEWAY_MAX_SEARCH_VALUE_LENGTH and GATEWAY_MAX_SEARCH_PARAMETERS)."""
    LIMITS.max_value_length = max(1, min(max_value_length, HARD_MAX_VALUE_LENGTH))
    LIMITS.max_parameters = max(1, max_parameters)


def _safe_name(name: str) -> str:
    """A parameter name fit to echo in an error: without NULs, at most 64 characters."""
    clean = name.replace(NUL, "")
    return clean if len(clean) <= 64 else clean[:64] + "..."


def check_search_items(items: Iterable[tuple[str, str]]) -> None:
    """InvalidResource (400) for a NUL character, a value over the length bound, or too many parameters.

    Errors name the parameter, never its value (values may be NHS numbers or names).
    """
    count = 0
    limit = LIMITS.max_value_length
    for name, value in items:
        count += 1
        if NUL in name or NUL in value:
            raise InvalidResource(f"Search parameter '{_safe_name(name)}': a NUL character (U+0000) is not allowed",
                                  _safe_name(name))
        if len(value) > limit:
            raise InvalidResource(f"Search parameter '{_safe_name(name)}': the value has {len(value)} characters; "
                                  f"the maximum is {limit} (GATEWAY_MAX_SEARCH_VALUE_LENGTH)", _safe_name(name))
    if count > LIMITS.max_parameters:
        raise InvalidResource(f"The search has {count} parameters; the maximum is {LIMITS.max_parameters} "
                              "(GATEWAY_MAX_SEARCH_PARAMETERS)", "search")


def find_nul(node: object, path: str) -> str | None:
    """The FHIRPath-like location of the first string (or key) containing U+0000 in a JSON value, or None.

    find_nul({"name": [{"family": "a\\x00"}]}, "Patient") -> 'Patient.name[0].family'
    """
    stack: list[tuple[object, str]] = [(node, path)]
    while stack:
        n, where = stack.pop()
        if isinstance(n, str):
            if NUL in n:
                return where
        elif isinstance(n, dict):
            for k, v in n.items():
                if isinstance(k, str) and NUL in k:
                    return f"{where}.{_safe_name(k)}"
                stack.append((v, f"{where}.{k}"))
        elif isinstance(n, list):
            stack.extend((v, f"{where}[{i}]") for i, v in enumerate(n))
    return None
