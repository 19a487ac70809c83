"""The OperationDefinitions of the operations the gateway serves, readable at /fhir/OperationDefinition/<id>,
so that every ``definition`` the CapabilityStatement names resolves.

The id of each is the last segment of the canonical URL the operation registers with
(``.../OperationDefinition/ResearchStudy-match`` -> ``ResearchStudy-match``); ``url`` is that canonical.
Parameters are data (name, use, min, max, type, documentation), as each view reads them.
"""

from __future__ import annotations

from functools import cache

from gateway.api import operations

# (name, use, min, max, type or None for a part-less resource, documentation)
_P = tuple[str, str, int, str, str | None, str]

_PARAMS: dict[tuple[str, str], list[_P]] = {
    ("ResearchStudy", "match"): [
        ("patient", "in", 0, "1", "Reference", "A stored Patient to match (Patient/<id>); or give bundle"),
        ("patient-id", "in", 0, "1", "string", "The id of a stored Patient (alternative to patient)"),
        ("patient-identifier", "in", 0, "1", "string",
         "An NHS number: the record is pulled from the patient's hospital now"),
        ("hospital", "in", 0, "1", "string",
         "With patient-identifier: the hospital to pull from (its file name in the hospitals folder or ODS code)"),
        ("bundle", "in", 0, "1", "Bundle", "The records of one patient (Patient, Condition, Observation ...)"),
        ("status", "in", 0, "*", "code", "ResearchStudy.status codes to consider (default: active)"),
        ("phase", "in", 0, "*", "code", "Study phases to consider"),
        ("maxDistanceKm", "in", 0, "1", "decimal", "Only studies with a site within this distance"),
        ("includeNearMisses", "in", 0, "1", "boolean", "Also say why near misses were not returned"),
        ("age", "in", 0, "1", "integer", "Anonymous profile: completed years (0-130); or birthdate; nothing stored"),
        ("birthdate", "in", 0, "1", "date", "Anonymous profile: YYYY, YYYY-MM or YYYY-MM-DD, in the past"),
        ("gender", "in", 0, "1", "code", "Anonymous profile: male | female | other | unknown"),
        ("postcode", "in", 0, "1", "string", "Anonymous profile: UK postcode or district (for distances)"),
        ("condition-text", "in", 0, "*", "string",
         "Anonymous profile: a condition in words, resolved through the terminology ('brain tumour', 'GBM')"),
        ("_count", "in", 0, "1", "integer", "Page size"),
        ("_offset", "in", 0, "1", "integer", "Page start (next / previous links)"),
        ("return", "out", 1, "1", "Bundle", "searchset of ResearchStudy with search.score and explanations"),
    ],
    ("ResearchStudy", "candidates"): [
        ("consent", "in", 0, "1", "code", "required (default) | any (administrators only)"),
        ("maxDistanceKm", "in", 0, "1", "decimal", "Only patients within this distance of a site"),
        ("_count", "in", 0, "1", "integer", "Page size"),
        ("_offset", "in", 0, "1", "integer", "Page start"),
        ("_after", "in", 0, "1", "string", "Where the next page starts: the value of a next link"),
        ("_total", "in", 0, "1", "code", "none | estimate (default) | accurate: how Bundle.total is given"),
        ("return", "out", 1, "1", "Bundle", "searchset of Patient with search.score and explanations"),
    ],
    ("ConceptMap", "translate"): [
        ("url", "in", 0, "1", "uri", "The ConceptMap to use"),
        ("conceptMap", "in", 0, "1", "ConceptMap", "A ConceptMap given inline"),
        ("code", "in", 0, "1", "code", "The code to translate (with system)"),
        ("system", "in", 0, "1", "uri", "The code's system"),
        ("coding", "in", 0, "1", "Coding", "A Coding to translate"),
        ("codeableConcept", "in", 0, "1", "CodeableConcept", "A CodeableConcept to translate"),
        ("target", "in", 0, "1", "uri", "The target value set"),
        ("targetsystem", "in", 0, "1", "uri", "The target code system"),
        ("reverse", "in", 0, "1", "boolean", "Translate from target to source"),
        ("result", "out", 1, "1", "boolean", "Whether a translation was found"),
        ("message", "out", 0, "1", "string", "Why not, when none was found"),
        ("match", "out", 0, "*", None, "A translation: equivalence, concept, source"),
    ],
    ("CodeSystem", "subsumes"): [
        ("codeA", "in", 0, "1", "code", "The first code"),
        ("codeB", "in", 0, "1", "code", "The second code"),
        ("system", "in", 0, "1", "uri", "The code system of codeA and codeB"),
        ("version", "in", 0, "1", "string", "The code system version"),
        ("codingA", "in", 0, "1", "Coding", "The first code as a Coding"),
        ("codingB", "in", 0, "1", "Coding", "The second code as a Coding"),
        ("outcome", "out", 1, "1", "code", "equivalent | subsumes | subsumed-by | not-subsumed"),
    ],
    ("Subscription", "status"): [
        ("return", "out", 1, "1", "Bundle", "A searchset Bundle with the subscription's status Parameters"),
    ],
    ("Subscription", "events"): [
        ("eventsSinceNumber", "in", 0, "1", "string", "The first event number to return"),
        ("eventsUntilNumber", "in", 0, "1", "string", "The last event number to return"),
        ("content", "in", 0, "1", "code", "empty | id-only | full-resource"),
        ("return", "out", 1, "1", "Bundle", "A history Bundle of the events"),
    ],
}


def definition_id(canonical: str) -> str:
    """'https://x/OperationDefinition/ResearchStudy-match' -> 'ResearchStudy-match'."""
    return canonical.rstrip("/").rsplit("/", 1)[-1]


def _param(p: _P) -> dict:
    name, use, lo, hi, typ, doc = p
    out: dict = {"name": name, "use": use, "min": lo, "max": hi, "documentation": doc}
    if typ is not None:
        out["type"] = typ
    else:
        out["part"] = [{"name": "concept", "use": use, "min": 0, "max": "1", "type": "Coding"}]
    return out


@cache
def _definitions() -> dict[str, dict]:
    by_canonical: dict[str, list[operations.Operation]] = {}
    for op in operations.all_operations():
        if op.definition:
            by_canonical.setdefault(op.definition, []).append(op)
    out: dict[str, dict] = {}
    for canonical, ops in by_canonical.items():
        op = ops[0]
        oid = definition_id(canonical)
        out[oid] = {
            "resourceType": "OperationDefinition", "id": oid, "url": canonical,
            "name": oid.replace("-", "_"),
            "title": f"${op.name}" + (f" on {op.resource_type}" if op.resource_type else ""),
            "status": "active", "kind": "operation",
            "description": (operations_doc(op) or f"The ${op.name} operation as this gateway implements it"),
            "affectsState": False, "code": op.name,
            "resource": sorted({o.resource_type for o in ops if o.resource_type}),
            "system": any(o.resource_type is None for o in ops),
            "type": any(not o.instance and o.resource_type for o in ops),
            "instance": any(o.instance for o in ops),
            "parameter": [_param(p) for p in _PARAMS.get((op.resource_type or "", op.name), [])],
        }
        if not out[oid]["resource"]:
            del out[oid]["resource"]
    return out


def operations_doc(op: operations.Operation) -> str | None:
    doc = getattr(op.handler, "__doc__", None)
    return " ".join(doc.split()) if doc else None


def operation_definition(oid: str) -> dict | None:
    """The OperationDefinition with this id, or None (then the store is asked, as for any resource)."""
    return _definitions().get(oid)


def all_definitions() -> list[dict]:
    return list(_definitions().values())
