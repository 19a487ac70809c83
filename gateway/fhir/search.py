"""Parse FHIR search query parameters into a SearchQuery the store can run.

``parse_search("Condition", [("code", "http://snomed.info/sct|393563007")])`` ->
SearchQuery(criteria=[Criterion(name="code", kind="token", values=["http://snomed.info/sct|393563007"])]).
Repeated parameters are ANDed; comma-separated values within one are ORed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from urllib.parse import urlencode

from gateway.fhir.errors import InvalidResource, NotSupported
from gateway.fhir.search_params import COMMON_PARAMS, CONTROL_PARAMS, INCLUDES, SearchParam, params_for

_MODIFIERS = {"token": {None}, "string": {None, "exact", "contains"}, "reference": {None},
              "date": {None}, "uri": {None}}
_DATE_PREFIX = re.compile(r"^(eq|ne|lt|gt|le|ge|sa|eb)?(\d{4}(-\d{2}(-\d{2}(T[\d:.]+(Z|[+-]\d{2}:\d{2})?)?)?)?)$")


@dataclass
class Criterion:
    name: str
    kind: str
    values: list[str]
    modifier: str | None = None
    param: SearchParam | None = None  # None for _id / _lastUpdated

    @property
    def key(self) -> str:
        return self.name


@dataclass
class SearchQuery:
    resource_type: str | None
    criteria: list[Criterion] = field(default_factory=list)
    count: int = 20
    offset: int = 0
    includes: list[str] = field(default_factory=list)
    summary_count: bool = False
    unknown: list[str] = field(default_factory=list)
    raw: list[tuple[str, str]] = field(default_factory=list)  # the accepted params, for self/next links

    def link_query(self, offset: int) -> str:
        params = [(k, v) for k, v in self.raw if k not in ("_count", "_offset")]
        params += [("_count", str(self.count)), ("_offset", str(offset))]
        return urlencode(params)


def split_values(raw: str) -> list[str]:
    """'a,b\\,c' -> ['a', 'b,c'] (FHIR escapes commas in values with a backslash)."""
    if "\\" not in raw:  # the usual case: no escapes, so a plain split gives the same answer
        return [v for v in raw.split(",") if v != ""]
    out, cur, esc = [], "", False
    for ch in raw:
        if esc:
            cur += ch
            esc = False
        elif ch == "\\":
            esc = True
        elif ch == ",":
            out.append(cur)
            cur = ""
        else:
            cur += ch
    out.append(cur)
    return [v for v in out if v != ""]


def parse_search(resource_type: str | None, items: list[tuple[str, str]], *, default_count: int = 20,
                 max_count: int = 1000, strict: bool = False) -> SearchQuery:
    q = SearchQuery(resource_type, count=default_count)
    known = params_for(resource_type) if resource_type else {}
    for key, raw in items:
        name, _, modifier = key.partition(":")
        modifier = modifier or None
        if name in CONTROL_PARAMS:
            _control(q, name, raw, modifier, max_count, strict)
            if name in ("_include", "_summary"):
                q.raw.append((key, raw))
            continue
        if name in COMMON_PARAMS:
            kind = "token" if name == "_id" else "date"
            sp = None
        elif name in known:
            sp = known[name]
            kind = sp.kind
        else:
            if strict:
                raise InvalidResource(f"Unknown search parameter '{key}' for {resource_type or 'system search'}",
                                      f"{resource_type}.{key}" if resource_type else key)
            q.unknown.append(key)
            continue
        if modifier not in _MODIFIERS[kind]:
            raise NotSupported(f"Modifier ':{modifier}' is not supported on {kind} parameter '{name}'", key)
        values = split_values(raw)
        if not values:
            raise InvalidResource(f"Search parameter '{key}' has no value", key)
        if kind == "date":
            for v in values:
                if not _DATE_PREFIX.match(v):
                    raise InvalidResource(f"'{v}' is not a valid date search value for '{name}' "
                                          "(expected [prefix]YYYY[-MM[-DD[Thh:mm:ss]]])", key)
        q.criteria.append(Criterion(name, kind, values, modifier, sp))
        q.raw.append((key, raw))
    return q


def _control(q: SearchQuery, name: str, raw: str, modifier: str | None, max_count: int, strict: bool) -> None:
    if name in ("_count", "_offset"):
        try:
            n = int(raw)
        except ValueError:
            raise InvalidResource(f"{name} must be a non-negative integer, got '{raw}'", name) from None
        if n < 0:
            raise InvalidResource(f"{name} must be a non-negative integer, got '{raw}'", name)
        if name == "_count":
            q.count = min(n, max_count)
            if n > max_count and strict:
                raise InvalidResource(f"_count {n} is above the maximum {max_count}", name)
        else:
            q.offset = n
    elif name == "_include":
        allowed = INCLUDES.get(q.resource_type or "", ())
        for v in split_values(raw):
            if v not in allowed:
                raise NotSupported(f"_include={v} is not supported (supported: {', '.join(allowed) or 'none'})",
                                   "_include")
            q.includes.append(v)
    elif name == "_summary":
        if raw == "count":
            q.summary_count = True
        elif raw != "false":
            raise NotSupported(f"_summary={raw} is not supported (supported: count, false)", "_summary")
    elif name == "_elements":
        # _format is content negotiation (handled by the API); _total: totals are always exact here.
        q.unknown.append(name)


def parse_token(value: str) -> tuple[str | None, str | None, bool]:
    """'sys|code' -> ('sys', 'code', True); '|code' -> (None, 'code', True) meaning no system;
    'code' -> (None, 'code', False) meaning any system; 'sys|' -> ('sys', None, True)."""
    if "|" in value:
        system, code = value.split("|", 1)
        return (system or None), (code or None), True
    return None, value, False


def parse_date(value: str) -> tuple[str, str]:
    """'ge2020-01-01' -> ('ge', '2020-01-01'); '2020' -> ('eq', '2020')."""
    m = _DATE_PREFIX.match(value)
    assert m is not None  # checked in parse_search
    return (m.group(1) or "eq"), m.group(2)
