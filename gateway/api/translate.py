"""ConceptMap/$translate (R4): over the ConceptMaps in mappings/** and those stored through the REST API.

In: code + system (or coding, or codeableConcept), optional url / conceptMap, target, targetsystem.
Out: Parameters {result, message, match[{equivalence, concept, source}]}.
GET /fhir/ConceptMap/$translate?code=ONC-GBM&system=https://...&targetsystem=http://snomed.info/sct
"""

from __future__ import annotations

from flask import Response, current_app

from gateway.api import operations
from gateway.api.http import fhir_response
from gateway.api.params import one, operation_params
from gateway.fhir.errors import InvalidResource
from gateway.fhir.search import parse_search
from gateway.fhir.validate import validate_resource
from gateway.terminology.conceptmap import ConceptMapIndex, Translation

_STORED_LIMIT = 1000  # ConceptMaps read from the store per call (see docs/readme/mapping.md)


def _codings(params: dict) -> list[tuple[str, str]]:
    code, system = one(params, "code"), one(params, "system")
    if code is not None:
        if not system:
            raise InvalidResource("'system' is required with 'code'", "system")
        return [(str(system), str(code))]
    coding = one(params, "coding")
    if isinstance(coding, dict):
        return [(str(coding.get("system")), str(coding.get("code")))]
    cc = one(params, "codeableConcept")
    if isinstance(cc, dict):
        return [(str(c.get("system")), str(c.get("code"))) for c in cc.get("coding") or [] if isinstance(c, dict)]
    raise InvalidResource("$translate needs code and system, a coding, or a codeableConcept", "code")


def _index(params: dict, instance_id: str | None) -> ConceptMapIndex:
    store = current_app.extensions["gateway.store"]
    inline = one(params, "conceptMap")
    if isinstance(inline, dict):
        return ConceptMapIndex([validate_resource(inline, "ConceptMap")])
    if instance_id is not None:
        return ConceptMapIndex([store.read("ConceptMap", instance_id).resource()])
    registry = current_app.extensions["gateway.mappings"]
    maps = list(registry.conceptmap_resources)
    url = one(params, "url")
    items = [("_count", str(_STORED_LIMIT))] + ([("url", str(url))] if url else [])
    _, rows = store.search(parse_search("ConceptMap", items, max_count=_STORED_LIMIT))
    maps += [r.resource() for r in rows]
    return ConceptMapIndex(maps)


def _match(t: Translation) -> dict:
    concept = {"system": t.system, "code": t.code}
    if t.display:
        concept["display"] = t.display
    return {"name": "match", "part": [{"name": "equivalence", "valueCode": t.equivalence},
                                      {"name": "concept", "valueCoding": concept},
                                      {"name": "source", "valueUri": t.source}]}


def translate_view(rtype: str | None, rid: str | None) -> Response:
    params = operation_params("$translate")
    if one(params, "reverse") in (True, "true"):
        raise InvalidResource("reverse=true is not supported by this server", "reverse")
    index = _index(params, rid)
    url, target = one(params, "url"), one(params, "target")
    target_system = one(params, "targetsystem")
    found: list[Translation] = []
    for system, code in _codings(params):
        for t in index.translate(code, system, target_system=str(target_system) if target_system else None,
                                 url=str(url) if url else None):
            cm = index.maps.get(t.source) or {}
            if target and target not in (cm.get("targetUri"), cm.get("targetCanonical"), t.system):
                continue
            if t not in found:
                found.append(t)
    matches = [t for t in found if t.is_match]
    out = [{"name": "result", "valueBoolean": bool(matches)}]
    if not matches:
        out.append({"name": "message", "valueString": "no translation found" if not found else
                    "only unmatched/disjoint equivalences found"})
    out += [_match(t) for t in found]
    return fhir_response({"resourceType": "Parameters", "parameter": out})


operations.register(operations.Operation("translate", "ConceptMap", False, translate_view, ("GET", "POST"),
                                         "http://hl7.org/fhir/OperationDefinition/ConceptMap-translate"))
operations.register(operations.Operation("translate", "ConceptMap", True, translate_view, ("GET", "POST"),
                                         "http://hl7.org/fhir/OperationDefinition/ConceptMap-translate"))
