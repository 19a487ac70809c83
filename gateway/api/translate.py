"""ConceptMap/$translate (R4): over the ConceptMaps in mappings/** and those stored through the REST API.

In: code + system (or coding, or codeableConcept), optional url / conceptMap, target, targetsystem.
Out: Parameters {result, message, match[{equivalence, concept, source}]}.
GET /fhir/ConceptMap/$translate?code=ONC-GBM&system=https://...&targetsystem=http://snomed.info/sct
"""

from __future__ import annotations

from flask import Response, current_app, request

from gateway.api import operations
from gateway.api.http import fhir_response, json_body
from gateway.fhir.errors import InvalidResource
from gateway.fhir.search import parse_search
from gateway.fhir.validate import validate_resource
from gateway.terminology.conceptmap import ConceptMapIndex, Translation

_STORED_LIMIT = 1000  # ConceptMaps read from the store per call (see docs/readme/mapping.md)


def _params() -> dict[str, list[object]]:
    """Query string (GET) or a Parameters body (POST) -> {name: [values]}."""
    out: dict[str, list[object]] = {}
    if request.method == "GET":
        for k, v in request.args.items(multi=True):
            out.setdefault(k, []).append(v)
        return out
    body = json_body()
    if not isinstance(body, dict) or body.get("resourceType") != "Parameters":
        raise InvalidResource("POST $translate needs a Parameters resource", "Parameters")
    for i, p in enumerate(body.get("parameter") or []):
        if not isinstance(p, dict) or not isinstance(p.get("name"), str):
            raise InvalidResource("each parameter needs a name", f"Parameters.parameter[{i}].name")
        value = p.get("resource")
        if value is None:
            value = next((v for k, v in p.items() if k.startswith("value")), None)
        out.setdefault(p["name"], []).append(value)
    return out


def _one(params: dict, name: str) -> object:
    values = params.get(name) or []
    if len(values) > 1:
        raise InvalidResource(f"parameter '{name}' may appear once", f"Parameters.parameter.where(name='{name}')")
    return values[0] if values else None


def _codings(params: dict) -> list[tuple[str, str]]:
    code, system = _one(params, "code"), _one(params, "system")
    if code is not None:
        if not system:
            raise InvalidResource("'system' is required with 'code'", "system")
        return [(str(system), str(code))]
    coding = _one(params, "coding")
    if isinstance(coding, dict):
        return [(str(coding.get("system")), str(coding.get("code")))]
    cc = _one(params, "codeableConcept")
    if isinstance(cc, dict):
        return [(str(c.get("system")), str(c.get("code"))) for c in cc.get("coding") or [] if isinstance(c, dict)]
    raise InvalidResource("$translate needs code and system, a coding, or a codeableConcept", "code")


def _index(params: dict, instance_id: str | None) -> ConceptMapIndex:
    store = current_app.extensions["gateway.store"]
    inline = _one(params, "conceptMap")
    if isinstance(inline, dict):
        return ConceptMapIndex([validate_resource(inline, "ConceptMap")])
    if instance_id is not None:
        return ConceptMapIndex([store.read("ConceptMap", instance_id).resource()])
    registry = current_app.extensions["gateway.mappings"]
    maps = list(registry.conceptmap_resources)
    url = _one(params, "url")
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
    params = _params()
    if _one(params, "reverse") in (True, "true"):
        raise InvalidResource("reverse=true is not supported by this server", "reverse")
    index = _index(params, rid)
    url, target = _one(params, "url"), _one(params, "target")
    target_system = _one(params, "targetsystem")
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
