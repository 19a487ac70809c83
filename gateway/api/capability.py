"""The CapabilityStatement at /fhir/metadata, derived from what is registered, so it lists exactly
what works."""

from __future__ import annotations

from gateway import __version__
from gateway.api import operations
from gateway.fhir.models import SUPPORTED_TYPES
from gateway.fhir.search_params import CONDITION_SEARCH_PARAM_URL, INCLUDES, SEARCH_PARAMS

_INTERACTIONS = ["read", "vread", "update", "delete", "history-instance", "history-type", "create",
                 "search-type"]

# Extensions other layers contribute: on the CapabilityStatement itself, and per resource type
# (e.g. the subscription topics on rest.resource[type=Subscription]).
EXTENSIONS: list[dict] = []
RESOURCE_EXTENSIONS: dict[str, list[dict]] = {}


def capability_statement(base: str, date: str) -> dict:
    resources = []
    for rtype in sorted(SUPPORTED_TYPES):
        entry: dict = {
            "type": rtype,
            "interaction": [{"code": c} for c in _INTERACTIONS],
            "versioning": "versioned-update",
            "readHistory": True,
            "updateCreate": True,
            "conditionalCreate": True,
            "conditionalUpdate": True,
            "conditionalDelete": "single",
            "searchParam": [
                {"name": "_id", "type": "token"},
                {"name": "_lastUpdated", "type": "date"},
            ],
        }
        for name, sp in SEARCH_PARAMS.get(rtype, {}).items():
            param = {"name": name, "type": sp.kind, "documentation": sp.documentation}
            param["definition"] = sp.definition or f"http://hl7.org/fhir/SearchParameter/{rtype}-{name}"
            entry["searchParam"].append(param)
        if rtype in INCLUDES:
            entry["searchInclude"] = list(INCLUDES[rtype])
        if RESOURCE_EXTENSIONS.get(rtype):
            entry["extension"] = list(RESOURCE_EXTENSIONS[rtype])
        ops = [o for o in operations.all_operations() if o.resource_type == rtype]
        if ops:
            entry["operation"] = [{"name": o.name, "definition": o.definition or f"{base}/OperationDefinition/{o.name}"}
                                  for o in ops]
        resources.append(entry)
    system_ops = [o for o in operations.all_operations() if o.resource_type is None]
    rest: dict = {
        "mode": "server",
        "documentation": "Search parameters listed per type; _count (default 20, max 1000) with next/prev "
                         "links; _summary=count; _include of ResearchStudy:enrollment and ResearchStudy:site. "
                         f"ResearchStudy 'condition' is a custom token parameter ({CONDITION_SEARCH_PARAM_URL}).",
        "resource": resources,
        "interaction": [{"code": "transaction"}, {"code": "batch"}, {"code": "history-system"}],
    }
    if system_ops:
        rest["operation"] = [{"name": o.name, "definition": o.definition or f"{base}/OperationDefinition/{o.name}"}
                             for o in system_ops]
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
        "rest": [rest],
    }
    for ext in EXTENSIONS:
        cs.setdefault("extension", []).append(ext)
    return cs
