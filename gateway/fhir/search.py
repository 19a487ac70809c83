"""Parse FHIR search query parameters into a SearchQuery the store can run.

``parse_search("Condition", [("code", "http://snomed.info/sct|393563007")])`` ->
SearchQuery(criteria=[Criterion(name="code", kind="token", values=["http://snomed.info/sct|393563007"])]).
Repeated parameters are ANDed; comma-separated values within one are ORed.

Besides criteria: ``_sort``, ``_elements``, ``_summary``, ``_include`` / ``_revinclude`` (``:iterate``) and
chained parameters of one level (``ResearchSubject?study.identifier=x``, ``subject:Patient.identifier=x``).
What is not applied never widens a result silently: lenient handling records a warning (``q.warnings``)
and leaves it out of the ``self`` link; ``strict`` (``Prefer: handling=strict``) raises 400.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from urllib.parse import urlencode

from gateway.fhir.errors import InvalidResource, Issue, NotSupported
from gateway.fhir.limits import check_search_items
from gateway.fhir.models import SUPPORTED_TYPES
from gateway.fhir.search_params import (
    COMMON_PARAMS,
    CONTROL_PARAMS,
    SearchParam,
    params_for,
    reference_params,
)
from gateway.fhir.valuesets import check_code

# kind -> modifiers the store applies; a reference parameter also takes a type (``subject:Patient``).
# Other helpers extend this table for their parameters (e.g. ``condition:below``).
_MODIFIERS: dict[str, set[str | None]] = {"token": {None}, "string": {None, "exact", "contains"},
                                          "reference": {None}, "date": {None}, "uri": {None}}
_DATE_PREFIX = re.compile(r"^(eq|ne|lt|gt|le|ge|sa|eb)?(\d{4}(-\d{2}(-\d{2}(T[\d:.]+(Z|[+-]\d{2}:\d{2})?)?)?)?)$")
SUMMARY_MODES = ("true", "text", "data", "count", "false")
SORTABLE_KINDS = ("string", "date", "token", "uri", "reference")
_ITERATE_LIMIT = 3  # rounds of _include:iterate / _revinclude:iterate


@dataclass(frozen=True)
class Chain:
    """The target side of a chained parameter: ``study.identifier`` -> Chain(("ResearchStudy",), <criterion>)."""

    targets: tuple[str, ...]
    criterion: Criterion
    # Set by the caller's Access (gateway.security.policy.Access.limit_chains): the 'Type/id' of the matching
    # targets the caller may read; the chain then follows only these. None: every matching target (admins,
    # and target types everyone may read).
    allowed: tuple[str, ...] | None = None


@dataclass
class Criterion:
    name: str
    kind: str
    values: list[str]
    modifier: str | None = None
    param: SearchParam | None = None  # None for _id / _lastUpdated
    chain: Chain | None = None  # a chained parameter: name is the reference parameter followed
    match_nothing: bool = False  # every value was an invalid code (reported in warnings)

    @property
    def key(self) -> str:
        return self.name


@dataclass(frozen=True)
class Include:
    """``_include=ResearchStudy:site[:Location]`` / ``_revinclude=ResearchSubject:study``: the resources
    of type ``source`` and their reference parameter ``param`` (``*``: every one), optionally to ``target``."""

    source: str
    param: str
    target: str | None = None
    iterate: bool = False

    def text(self) -> str:
        return ":".join(p for p in (self.source, self.param, self.target) if p)


@dataclass(frozen=True)
class SortKey:
    name: str  # _id | _lastUpdated | a search parameter of the type
    descending: bool = False
    param: SearchParam | None = None


@dataclass
class SearchQuery:
    resource_type: str | None
    criteria: list[Criterion] = field(default_factory=list)
    count: int = 20
    offset: int = 0
    includes: list[Include] = field(default_factory=list)
    revincludes: list[Include] = field(default_factory=list)
    sort: list[SortKey] = field(default_factory=list)
    elements: list[str] | None = None  # _elements: top-level element names kept (None: all)
    elements_exclude: bool = False  # _elements=-a,b: those left out instead
    summary: str | None = None  # _summary mode (true | text | data | count | false)
    unknown: list[str] = field(default_factory=list)  # parameters not applied
    warnings: list[tuple[str, str]] = field(default_factory=list)  # (parameter, what was not applied and why)
    raw: list[tuple[str, str]] = field(default_factory=list)  # the applied params, for self/next links

    @property
    def summary_count(self) -> bool:
        return self.summary == "count"

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


class _Parser:
    def __init__(self, q: SearchQuery, strict: bool, max_count: int):
        self.q = q
        self.strict = strict
        self.max_count = max_count

    def refuse(self, key: str, message: str, error: type[InvalidResource] | type[NotSupported] = NotSupported):
        """Strict: 400. Lenient: a warning, and the parameter stays out of the self link."""
        if self.strict:
            raise error(message, key)
        self.q.unknown.append(key)
        self.q.warnings.append((key, message))


def parse_search(resource_type: str | None, items: list[tuple[str, str]], *, default_count: int = 20,
                 max_count: int = 1000, strict: bool = False) -> SearchQuery:
    check_search_items(items)  # NUL, value length, parameter count: 400 before any database sees them
    q = SearchQuery(resource_type, count=default_count)
    p = _Parser(q, strict, max_count)
    known = params_for(resource_type) if resource_type else {}
    for key, raw in items:
        head, dot, chained = key.partition(".")
        name, _, modifier = head.partition(":")
        modifier = modifier or None
        if dot and name not in CONTROL_PARAMS:
            _chain(p, key, name, modifier, chained, raw)
            continue
        if name in CONTROL_PARAMS:
            _control(p, key, name, raw, modifier)
            continue
        if name in COMMON_PARAMS:
            kind = "token" if name == "_id" else "date"
            sp = None
        elif name in known:
            sp = known[name]
            kind = sp.kind
        else:
            p.refuse(key, f"Search parameter '{key}' is not supported for {resource_type or 'system search'} and "
                          "was not applied" + _did_you_mean(resource_type, name), InvalidResource)
            continue
        crit = _criterion(p, resource_type, key, name, kind, modifier, sp, raw)
        if crit is not None:
            q.criteria.append(crit)
    return q


def _did_you_mean(rtype: str | None, name: str) -> str:
    names = sorted(params_for(rtype)) if rtype else []
    close = [n for n in names if n.startswith(name[:3])] if len(name) >= 3 else []
    return f" (did you mean {' or '.join(close)}?)" if close else (
        f" (supported: {', '.join(names)})" if names else "")


def _criterion(p: _Parser, rtype: str | None, key: str, name: str, kind: str, modifier: str | None,
               sp: SearchParam | None, raw: str, record: bool = True) -> Criterion | None:
    """One parameter -> a Criterion, or None when it is not applied (warned, or raised when strict)."""
    if modifier not in _MODIFIERS.get(kind, {None}) and not (
            kind == "reference" and sp is not None and _type_modifier(sp, modifier)):
        raise NotSupported(f"Modifier ':{modifier}' is not supported on {kind} parameter '{name}'", key)
    values = split_values(raw)
    if not values:
        raise InvalidResource(f"Search parameter '{key}' has no value", key)
    if kind == "date":
        for v in values:
            if not _DATE_PREFIX.match(v):
                raise InvalidResource(f"'{v}' is not a valid date search value for '{name}' "
                                      "(expected [prefix]YYYY[-MM[-DD[Thh:mm:ss]]])", key)
    crit = Criterion(name, kind, values, modifier, sp)
    if kind == "token" and rtype and not modifier:
        problems = [m for m in (check_code(rtype, name, v) for v in values) if m]
        if problems:
            if p.strict:  # 400, with the issue type FHIR has for it
                raise InvalidResource("; ".join(problems), key,
                                      issues=[Issue("code-invalid", m, [key]) for m in problems])
            good = [v for v in values if not check_code(rtype, name, v)]
            p.q.warnings.extend((key, m) for m in problems)
            if not good:
                # Matching nothing is what the code means (no resource can carry it); dropping it would widen.
                p.q.warnings.append((key, f"{key}={raw} matches no {rtype}; no results are returned for it"))
                crit.match_nothing = True
                return crit
            crit.values = good
            raw = ",".join(v.replace(",", "\\,") for v in good)
    if record:
        p.q.raw.append((key, raw))
    return crit


def _type_modifier(sp: SearchParam, modifier: str | None) -> bool:
    """``subject:Patient``: a resource type the reference parameter may point at."""
    return modifier is not None and modifier in SUPPORTED_TYPES and (not sp.targets or modifier in sp.targets)


def _chain(p: _Parser, key: str, name: str, modifier: str | None, chained: str, raw: str) -> None:
    q = p.q
    rtype = q.resource_type
    sp = params_for(rtype).get(name) if rtype else None
    if sp is None or sp.kind != "reference":
        p.refuse(key, f"'{key}' is not a chain: '{name}' is not a reference search parameter of "
                      f"{rtype or 'system search'}", InvalidResource)
        return
    if "." in chained:
        p.refuse(key, f"'{key}': chains of more than one level are not supported")
        return
    inner_name, _, inner_mod = chained.partition(":")
    if modifier is not None:
        if not _type_modifier(sp, modifier):
            raise NotSupported(f"'{modifier}' is not a resource type '{name}' may refer to", key)
        targets: tuple[str, ...] = (modifier,)
    else:
        targets = tuple(t for t in sp.targets if inner_name in params_for(t) or inner_name in COMMON_PARAMS)
        if not sp.targets:
            p.refuse(key, f"'{name}' may refer to any type: name one ('{name}:Patient.{chained}')")
            return
    if not targets:
        p.refuse(key, f"{key}: '{inner_name}' is not a search parameter of {' or '.join(sp.targets)}",
                 InvalidResource)
        return
    # Each target type must know the chained parameter with one kind.
    inner_sp = None
    kinds = set()
    for t in targets:
        if inner_name in COMMON_PARAMS:
            kinds.add("token" if inner_name == "_id" else "date")
        elif inner_name in params_for(t):
            inner_sp = params_for(t)[inner_name]
            kinds.add(inner_sp.kind)
        else:
            p.refuse(key, f"{key}: '{inner_name}' is not a search parameter of {t}", InvalidResource)
            return
    if len(kinds) != 1:
        p.refuse(key, f"{key}: '{inner_name}' has different types on {', '.join(targets)}: name one")
        return
    kind = kinds.pop()
    inner = _criterion(p, targets[0], key, inner_name, kind, inner_mod or None, inner_sp, raw, record=False)
    if inner is None:
        return
    q.criteria.append(Criterion(name, "reference", inner.values, modifier, sp, chain=Chain(targets, inner),
                                match_nothing=inner.match_nothing))
    if not inner.match_nothing:
        q.raw.append((key, ",".join(v.replace(",", "\\,") for v in inner.values)))


def _control(p: _Parser, key: str, name: str, raw: str, modifier: str | None) -> None:
    q = p.q
    if name in ("_count", "_offset"):
        try:
            n = int(raw)
        except ValueError:
            raise InvalidResource(f"{name} must be a non-negative integer, got '{raw}'", name) from None
        if n < 0:
            raise InvalidResource(f"{name} must be a non-negative integer, got '{raw}'", name)
        if name == "_count":
            q.count = min(n, p.max_count)
            if n > p.max_count and p.strict:
                raise InvalidResource(f"_count {n} is above the maximum {p.max_count}", name)
        else:
            q.offset = n
    elif name in ("_include", "_revinclude"):
        if modifier not in (None, "iterate", "recurse", "recursive"):
            raise NotSupported(f"{key}: the only modifier is :iterate", key)
        for v in split_values(raw):
            inc = _include(q.resource_type, name, v, modifier is not None)
            if isinstance(inc, str):
                p.refuse(key, inc)
            else:
                (q.includes if name == "_include" else q.revincludes).append(inc)
                q.raw.append((key, v))
    elif name == "_summary":
        if raw not in SUMMARY_MODES:
            raise InvalidResource(f"_summary={raw} is not a summary mode (use one of {', '.join(SUMMARY_MODES)})",
                                  "_summary")
        if q.elements is not None and raw != "false":
            raise InvalidResource("_summary and _elements cannot be used together", "_summary")
        q.summary = raw
        q.raw.append((key, raw))
    elif name == "_elements":
        names = [e.strip() for e in split_values(raw) if e.strip()]
        if q.summary not in (None, "false"):
            raise InvalidResource("_summary and _elements cannot be used together", "_elements")
        exclude = bool(names) and all(n.startswith("-") for n in names)
        names = [n.lstrip("-") for n in names]
        bad = [n for n in names if not re.fullmatch(r"[A-Za-z][A-Za-z0-9_]*(\[x\])?", n)]
        if bad:
            raise InvalidResource(f"_elements takes top-level element names; '{bad[0]}' is not one", "_elements")
        q.elements = names
        q.elements_exclude = exclude
        q.raw.append((key, raw))
    elif name == "_sort":
        for v in split_values(raw):
            desc = v.startswith("-")
            sname = v[1:] if desc else v
            sp = params_for(q.resource_type).get(sname) if q.resource_type else None
            if sname in COMMON_PARAMS or (sp is not None and sp.kind in SORTABLE_KINDS):
                q.sort.append(SortKey(sname, desc, sp))
            else:
                p.refuse("_sort", f"_sort={v}: '{sname}' is not a search parameter of "
                                  f"{q.resource_type or 'system search'} that results can be sorted by"
                                  + _did_you_mean(q.resource_type, sname), InvalidResource)
        if q.sort:  # one _sort in the links, with every key applied (also when _sort was given twice)
            q.raw = [(k, v) for k, v in q.raw if k != "_sort"]
            q.raw.append(("_sort", ",".join(("-" if k.descending else "") + k.name for k in q.sort)))
    # _format is content negotiation (handled by the API); _total: totals are always exact here.


def _include(rtype: str | None, name: str, value: str, iterate: bool) -> Include | str:
    """'ResearchStudy:site' -> Include, or why it cannot be done. '*' is every reference of the matches."""
    if value == "*" and rtype:
        value = f"{rtype}:*"
    parts = value.split(":")
    if len(parts) not in (2, 3):
        return f"{name}={value}: expected SourceType:parameter[:TargetType]"
    source, param = parts[0], parts[1]
    target = parts[2] if len(parts) == 3 else None
    if name == "_include" and source != rtype and not iterate:
        return f"_include={value}: the source type must be {rtype} (or use _include:iterate)"
    refs = reference_params(source)
    if param != "*" and param not in refs:
        names = ", ".join(sorted(refs)) or "none"
        return f"{name}={value}: '{param}' is not a reference search parameter of {source} (supported: {names})"
    if target is not None and param != "*" and refs[param].targets and target not in refs[param].targets:
        return f"{name}={value}: {source}.{param} does not refer to {target}"
    if name == "_revinclude" and rtype and not iterate and param != "*" and target is None:
        targets = refs[param].targets
        if targets and rtype not in targets:
            return f"_revinclude={value}: {source}.{param} never refers to {rtype}"
    return Include(source, param, target, iterate)


def iterate_limit() -> int:
    return _ITERATE_LIMIT


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

