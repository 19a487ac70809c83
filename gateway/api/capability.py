"""The CapabilityStatement at /fhir/metadata, derived from what is registered, so it lists exactly
what works: interactions, search parameters and result parameters per type, _include/_revinclude, operations
(each once, each definition readable at /fhir/OperationDefinition/<id>) and SMART security."""

from __future__ import annotations

from gateway import __version__
from gateway.api import operations
from gateway.api.opdefs import definition_id
from gateway.fhir.models import SUPPORTED_TYPES
from gateway.fhir.search_params import (
    CONDITION_SEARCH_PARAM_URL,
    SEARCH_PARAMS,
    includes_of,
    reference_params,
    revincludes_of,
)
from gateway.store import study_search

_INTERACTIONS = ["read", "vread", "update", "patch", "delete", "history-instance", "history-type", "create",
                 "search-type"]
SMART_OAUTH_URIS = "http://fhir-registry.smarthealthit.org/StructureDefinition/oauth-uris"
BACKPORT_SUBSCRIPTION = "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/backport-subscription"
# Result parameters every search takes (rest.searchParam): name -> (type, documentation)
RESULT_PARAMS: dict[str, tuple[str, str]] = {
    "_count": ("number", "Page size (default GATEWAY_DEFAULT_COUNT, at most GATEWAY_MAX_COUNT); next/prev links"),
    "_sort": ("string", "Comma-separated sort keys, '-' for descending: _id, _lastUpdated and the type's date, "
                        "string, token, uri and reference parameters; ties are broken by storage order (stable "
                        "pages)"),
    "_elements": ("string", "Top-level elements to return (mandatory ones always); '-a,b' to leave some out; "
                            "results are tagged SUBSETTED"),
    "_summary": ("token", "true | text | data | count | false; subsetted results are tagged SUBSETTED"),
    "_include": ("string", "SourceType:parameter[:TargetType] or SourceType:*, for every reference parameter "
                           "listed; _include:iterate follows included resources too (3 rounds)"),
    "_revinclude": ("string", "SourceType:parameter[:TargetType]: resources that refer to the matches; "
                              ":iterate as for _include"),
}

# Extensions other layers contribute: on the CapabilityStatement itself, and per resource type
# (e.g. the subscription topics on rest.resource[type=Subscription]).
EXTENSIONS: list[dict] = []
RESOURCE_EXTENSIONS: dict[str, list[dict]] = {}
# SMART endpoints other layers add to rest.security (e.g. "authorize" when patients sign in): name -> path under
# the public root ("/auth/authorize").
OAUTH_URIS: dict[str, str] = {"token": "/auth/token"}
SUPPORTED_PROFILES: dict[str, list[str]] = {"Subscription": [BACKPORT_SUBSCRIPTION]}


def _operations(ops: list[operations.Operation], base: str) -> list[dict]:
    """Each operation once (registered at type and instance level, it is still one operation)."""
    out: dict[str, dict] = {}
    for o in ops:
        out.setdefault(o.name, {"name": o.name,
                                "definition": o.definition or f"{base}/OperationDefinition/{o.name}"})
    return list(out.values())


def _root(base: str) -> str:
    return base[: -len("/fhir")] if base.endswith("/fhir") else base


def _security(base: str) -> dict:
    root = _root(base)
    return {
        "cors": True,
        "service": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/restful-security-service",
                                 "code": "SMART-on-FHIR", "display": "SMART-on-FHIR"}],
                     "text": "OAuth2 bearer tokens (SMART Backend Services: client_credentials with a signed "
                             "client assertion)"}],
        "extension": [{"url": SMART_OAUTH_URIS,
                       "extension": [{"url": name, "valueUri": f"{root}{path}"}
                                     for name, path in sorted(OAUTH_URIS.items())]}],
        "description": f"Bearer tokens from {root}/auth/token; discovery at {base}/.well-known/smart-configuration",
    }


def capability_statement(base: str, date: str) -> dict:
    all_ops = operations.all_operations()
    resources = []
    for rtype in sorted(SUPPORTED_TYPES):
        entry: dict = {
            "type": rtype,
            "interaction": [{"code": c} for c in _INTERACTIONS],
            "versioning": "versioned-update",
            "readHistory": True,
            "updateCreate": True,
            "conditionalCreate": True,
            "conditionalRead": "full-support",
            "conditionalUpdate": True,
            "conditionalDelete": "single",
            "searchParam": [
                {"name": "_id", "definition": "http://hl7.org/fhir/SearchParameter/Resource-id", "type": "token"},
                {"name": "_lastUpdated", "definition": "http://hl7.org/fhir/SearchParameter/Resource-lastUpdated",
                 "type": "date"},
            ],
        }
        if SUPPORTED_PROFILES.get(rtype):
            entry["supportedProfile"] = list(SUPPORTED_PROFILES[rtype])
        for name, sp in SEARCH_PARAMS.get(rtype, {}).items():
            doc = sp.documentation
            if sp.kind == "reference":
                doc += (f"; chains one level ({name}.identifier=..., {name}:Type.param=...)"
                        if sp.targets else f"; chains one level with a type ({name}:Type.param=...)")
            param = {"name": name, "type": sp.kind, "documentation": doc}
            param["definition"] = sp.definition or f"http://hl7.org/fhir/SearchParameter/{rtype}-{name}"
            entry["searchParam"].append(param)
        entry["searchParam"] += study_search.capability_params(rtype)  # _text, postcode, near (docs/search.md)
        if reference_params(rtype):
            entry["searchInclude"] = includes_of(rtype)
        revs = revincludes_of(rtype)
        if revs:
            entry["searchRevInclude"] = revs
        if RESOURCE_EXTENSIONS.get(rtype):
            entry["extension"] = list(RESOURCE_EXTENSIONS[rtype])
        ops = [o for o in all_ops if o.resource_type == rtype]
        if ops:
            entry["operation"] = _operations(ops, base)
        resources.append(entry)
    system_ops = [o for o in all_ops if o.resource_type is None]
    rest: dict = {
        "mode": "server",
        "documentation": "Search parameters listed per type, with the result parameters listed here; chained "
                         "parameters of one level on reference parameters; unsupported parameters or invalid "
                         "codes are named in a warning (search.mode=outcome) and left out of the self link, or "
                         "refused with 400 under 'Prefer: handling=strict'. Conditional read (If-None-Match, "
                         "If-Modified-Since); PATCH with JSON Patch (application/json-patch+json) or JSON merge "
                         "patch. ResearchStudy 'condition' is a custom token parameter "
                         f"({CONDITION_SEARCH_PARAM_URL}). "
                         f"Operation definitions: {base}/OperationDefinition/<id> ("
                         + ", ".join(sorted({definition_id(o.definition) for o in all_ops if o.definition})) + ").",
        "security": _security(base),
        "resource": resources,
        "interaction": [{"code": "transaction"}, {"code": "batch"}, {"code": "history-system"}],
        "searchParam": [{"name": n, "type": t, "documentation": d} for n, (t, d) in RESULT_PARAMS.items()],
    }
    if system_ops:
        rest["operation"] = _operations(system_ops, base)
    cs: dict = {
        "resourceType": "CapabilityStatement",
        "status": "active",
        "date": date,
        "publisher": "FHIR trial-matching gateway",
        "kind": "instance",
        "software": {"name": "fhir-trial-gateway", "version": __version__},
        "implementation": {"description": "FHIR R4 trial-matching gateway", "url": base},
        "fhirVersion": "4.0.1",
        "format": ["application/fhir+json", "json"],
        "patchFormat": ["application/json-patch+json", "application/merge-patch+json"],
        "rest": [rest],
    }
    for ext in EXTENSIONS:
        cs.setdefault("extension", []).append(ext)
    return cs
