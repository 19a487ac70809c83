"""Search parameters the gateway supports, as data, and the index rows they yield at write time.

Each parameter is (name, kind, element paths). The store calls ``index_rows(resource)`` once per
write, so search never parses stored JSON. Kinds: token, string, reference, date, uri.
``_id`` and ``_lastUpdated`` apply to every type and are served from the resource table itself.
"""

from __future__ import annotations

import functools
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass

from gateway.fhir.conventions import SP_RESEARCHSTUDY_CONDITION as CONDITION_SEARCH_PARAM_URL


@dataclass(frozen=True)
class SearchParam:
    name: str
    kind: str  # token | string | reference | date | uri
    paths: tuple[str, ...]
    targets: tuple[str, ...] = ()  # reference target types (documentation / CapabilityStatement)
    definition: str | None = None  # canonical URL of the SearchParameter, when not the R4 base one

    @property
    def documentation(self) -> str:
        return f"{self.kind} on {', '.join(self.paths)}"


def _p(name: str, kind: str, *paths: str, targets: tuple[str, ...] = (), definition: str | None = None):
    return SearchParam(name, kind, paths, targets, definition)


_CLINICAL = {
    "patient": _p("patient", "reference", "subject", targets=("Patient",)),
    "subject": _p("subject", "reference", "subject", targets=("Patient", "Group")),
    "identifier": _p("identifier", "token", "identifier"),
}

# type -> name -> SearchParam
SEARCH_PARAMS: dict[str, dict[str, SearchParam]] = {
    "Patient": {p.name: p for p in [
        _p("identifier", "token", "identifier"),
        _p("name", "string", "name"),
        _p("family", "string", "name.family"),
        _p("given", "string", "name.given"),
        _p("gender", "token", "gender"),
        _p("birthdate", "date", "birthDate"),
        _p("address-postalcode", "string", "address.postalCode"),
        _p("organization", "reference", "managingOrganization", targets=("Organization",)),
    ]},
    "Condition": {**_CLINICAL, **{p.name: p for p in [
        _p("code", "token", "code"),
        _p("clinical-status", "token", "clinicalStatus"),
        _p("verification-status", "token", "verificationStatus"),
        _p("category", "token", "category"),
    ]}},
    "Observation": {**_CLINICAL, **{p.name: p for p in [
        _p("code", "token", "code"),
        _p("status", "token", "status"),
        _p("category", "token", "category"),
        _p("date", "date", "effectiveDateTime", "effectivePeriod", "effectiveInstant"),
    ]}},
    "Procedure": {**_CLINICAL, **{p.name: p for p in [
        _p("code", "token", "code"),
        _p("status", "token", "status"),
    ]}},
    "MedicationStatement": {**_CLINICAL, **{p.name: p for p in [
        _p("code", "token", "medicationCodeableConcept"),
        _p("status", "token", "status"),
    ]}},
    "MedicationRequest": {**_CLINICAL, **{p.name: p for p in [
        _p("code", "token", "medicationCodeableConcept"),
        _p("status", "token", "status"),
    ]}},
    "ResearchStudy": {p.name: p for p in [
        _p("identifier", "token", "identifier"),
        _p("title", "string", "title"),
        _p("keyword", "token", "keyword"),
        _p("status", "token", "status"),
        _p("condition", "token", "condition", definition=CONDITION_SEARCH_PARAM_URL),
        _p("category", "token", "category"),
        _p("sponsor", "reference", "sponsor", targets=("Organization",)),
        _p("site", "reference", "site", targets=("Location",)),
        _p("enrollment", "reference", "enrollment", targets=("Group",)),
    ]},
    "ResearchSubject": {p.name: p for p in [
        _p("identifier", "token", "identifier"),
        _p("study", "reference", "study", targets=("ResearchStudy",)),
        _p("individual", "reference", "individual", targets=("Patient",)),
        _p("patient", "reference", "individual", targets=("Patient",)),
        _p("status", "token", "status"),
    ]},
    "Group": {p.name: p for p in [
        _p("identifier", "token", "identifier"),
        _p("type", "token", "type"),
        _p("actual", "token", "actual"),
        _p("code", "token", "code"),
        _p("member", "reference", "member.entity"),
    ]},
    "Location": {p.name: p for p in [
        _p("identifier", "token", "identifier"),
        _p("name", "string", "name", "alias"),
        _p("address-postalcode", "string", "address.postalCode"),
        _p("address-city", "string", "address.city"),
        _p("status", "token", "status"),
        _p("organization", "reference", "managingOrganization", targets=("Organization",)),
    ]},
    "Organization": {p.name: p for p in [
        _p("identifier", "token", "identifier"),
        _p("name", "string", "name", "alias"),
        _p("active", "token", "active"),
    ]},
    "Consent": {p.name: p for p in [
        _p("identifier", "token", "identifier"),
        _p("patient", "reference", "patient", targets=("Patient",)),
        _p("status", "token", "status"),
        _p("scope", "token", "scope"),
        _p("category", "token", "category"),
        _p("purpose", "token", "provision.purpose"),
    ]},
    "Subscription": {p.name: p for p in [
        _p("status", "token", "status"),
        _p("criteria", "string", "criteria"),
        _p("type", "token", "channel.type"),
        _p("url", "uri", "channel.endpoint"),
    ]},
    "ConceptMap": {p.name: p for p in [
        _p("identifier", "token", "identifier"),
        _p("url", "uri", "url"),
        _p("name", "string", "name"),
        _p("version", "token", "version"),
        _p("status", "token", "status"),
        _p("source-uri", "uri", "sourceUri", "sourceCanonical"),
        _p("target-uri", "uri", "targetUri", "targetCanonical"),
    ]},
    "CodeSystem": {p.name: p for p in [
        _p("identifier", "token", "identifier"),
        _p("url", "uri", "url"),
        _p("name", "string", "name"),
        _p("version", "token", "version"),
        _p("status", "token", "status"),
    ]},
    # The audit trail (gateway.store.audit). ``agent`` is a token on agent.who.identifier (our clients
    # are not resources), unlike R4's reference-typed agent.
    "AuditEvent": {p.name: p for p in [
        _p("date", "date", "recorded"),
        _p("patient", "reference", "entity.what", targets=("Patient",)),
        _p("entity", "reference", "entity.what"),
        _p("agent", "token", "agent.who.identifier"),
        _p("subtype", "token", "subtype"),
        _p("action", "token", "action"),
        _p("outcome", "token", "outcome"),
    ]},
    # What the outbox writes to a hospital for its research team (gateway.outbound), found again by the
    # contact-request identifier (If-None-Exist), also when a gateway plays the hospital in tests.
    "Task": {p.name: p for p in [
        _p("identifier", "token", "identifier"),
        _p("patient", "reference", "for", targets=("Patient",)),
        _p("status", "token", "status"),
        _p("focus", "reference", "focus"),
    ]},
    "Communication": {p.name: p for p in [
        _p("identifier", "token", "identifier"),
        _p("patient", "reference", "subject", targets=("Patient",)),
        _p("status", "token", "status"),
    ]},
}

COMMON_PARAMS = ("_id", "_lastUpdated")
# Result parameters and control parameters the gateway understands.
CONTROL_PARAMS = frozenset({"_count", "_offset", "_include", "_revinclude", "_summary", "_format", "_total",
                            "_elements", "_sort"})


def params_for(resource_type: str) -> dict[str, SearchParam]:
    return SEARCH_PARAMS.get(resource_type, {})


def reference_params(resource_type: str) -> dict[str, SearchParam]:
    """The reference search parameters of a type: each can be chained, _include'd and _revinclude'd."""
    return {n: sp for n, sp in params_for(resource_type).items() if sp.kind == "reference"}


def includes_of(resource_type: str) -> list[str]:
    """CapabilityStatement searchInclude: 'ResearchStudy:site', ... (and 'Type:*')."""
    names = [f"{resource_type}:{n}" for n in sorted(reference_params(resource_type))]
    return names + [f"{resource_type}:*"] if names else []


def revincludes_of(resource_type: str) -> list[str]:
    """CapabilityStatement searchRevInclude: every 'Source:param' that may refer to ``resource_type``."""
    return [f"{src}:{n}" for src in sorted(SEARCH_PARAMS) for n, sp in sorted(reference_params(src).items())
            if not sp.targets or resource_type in sp.targets]


# _include values supported per type ("Type:param"), derived from the reference parameters.
INCLUDES: dict[str, tuple[str, ...]] = {t: tuple(includes_of(t)) for t in SEARCH_PARAMS if reference_params(t)}


def normalise_string(value: str) -> str:
    """Case- and accent-insensitive form used for string search: 'Müller ' -> 'muller'."""
    if value.isascii():  # nothing to decompose: the common case, at a fraction of the cost
        return value.casefold().strip()
    decomposed = unicodedata.normalize("NFKD", value)
    return "".join(c for c in decomposed if not unicodedata.combining(c)).casefold().strip()


def _values(node: object, parts: list[str]) -> Iterator[object]:
    if not parts:
        if isinstance(node, list):
            yield from node
        else:
            yield node
        return
    if isinstance(node, list):
        for item in node:
            yield from _values(item, parts)
    elif isinstance(node, dict) and parts[0] in node:
        yield from _values(node[parts[0]], parts[1:])


def _tokens(value: object) -> Iterator[tuple[str | None, str]]:
    if isinstance(value, bool):
        yield None, "true" if value else "false"
    elif isinstance(value, str):
        yield None, value
    elif isinstance(value, dict):
        if "coding" in value or ("text" in value and "value" not in value):  # CodeableConcept
            for coding in value.get("coding") or []:
                if isinstance(coding, dict) and coding.get("code"):
                    yield coding.get("system"), coding["code"]
        elif "value" in value and isinstance(value["value"], str):  # Identifier
            yield value.get("system"), value["value"]
        elif "code" in value:  # Coding
            yield value.get("system"), value["code"]


def _strings(value: object) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):  # HumanName, Address
        for key in ("text", "family", "given", "prefix", "line", "city", "district", "state",
                    "postalCode", "country"):
            v = value.get(key)
            if isinstance(v, str):
                yield v
            elif isinstance(v, list):
                yield from (x for x in v if isinstance(x, str))


def _date_bounds(value: object) -> Iterator[tuple[str, str]]:
    if isinstance(value, str):
        yield date_range(value)
    elif isinstance(value, dict) and ("start" in value or "end" in value):
        lo = date_range(value["start"])[0] if value.get("start") else "0000"
        hi = date_range(value["end"])[1] if value.get("end") else "9999"
        yield lo, hi


def date_range(value: str) -> tuple[str, str]:
    """A FHIR date/dateTime -> (lowest, highest) comparable ISO strings.

    '1974' -> ('1974-01-01T00:00:00', '1974-12-31T23:59:59'); '1974-12-25' -> the whole day.
    """
    v = value.strip()
    if len(v) == 4:
        return f"{v}-01-01T00:00:00", f"{v}-12-31T23:59:59"
    if len(v) == 7:
        return f"{v}-01T00:00:00", f"{v}-31T23:59:59"
    if len(v) == 10:
        return f"{v}T00:00:00", f"{v}T23:59:59"
    core = v[:19]
    return core, core


@functools.cache
def _compiled(rtype: str) -> tuple[tuple[str, SearchParam, tuple[list[str], ...]], ...]:
    """The search parameters of a type with their index key and paths split once, for index_rows."""
    return tuple((f"{rtype}:{name}", sp, tuple(path.split(".") for path in sp.paths))
                 for name, sp in params_for(rtype).items())


def index_rows(resource: dict) -> dict[str, list[tuple]]:
    """Rows for the search index tables, keyed by kind.

    token -> (param, system, code); string -> (param, normalised); reference -> (param, "Type/id");
    date -> (param, low, high); uri -> (param, value). ``param`` is "Type:name".
    """
    rtype = resource.get("resourceType", "")
    out: dict[str, list[tuple]] = {"token": [], "string": [], "reference": [], "date": [], "uri": []}
    for key, sp, paths in _compiled(rtype):
        seen: set = set()
        for parts in paths:
            if parts[0] not in resource:
                continue
            for value in _values(resource, parts):
                if sp.kind == "token":
                    rows = [(key, s, c) for s, c in _tokens(value)]
                elif sp.kind == "string":
                    rows = [(key, normalise_string(s)) for s in _strings(value)]
                elif sp.kind == "reference":
                    ref = value.get("reference") if isinstance(value, dict) else None
                    rows = [(key, normalise_reference(ref))] if isinstance(ref, str) else []
                elif sp.kind == "date":
                    rows = [(key, lo, hi) for lo, hi in _date_bounds(value)]
                else:
                    rows = [(key, value)] if isinstance(value, str) else []
                for row in rows:
                    if row not in seen:
                        seen.add(row)
                        out[sp.kind].append(row)
    return out


def normalise_reference(ref: str) -> str:
    """'http://x/fhir/Patient/1/_history/2' -> 'Patient/1'; 'Patient/1' -> 'Patient/1'."""
    if ref.startswith(("urn:", "#")):
        return ref
    parts = ref.split("/")
    if "_history" in parts:
        parts = parts[: parts.index("_history")]
    if len(parts) >= 2:
        return f"{parts[-2]}/{parts[-1]}"
    return ref
