"""PATCH bodies -> the patched resource (http://hl7.org/fhir/R4/http.html#patch).

- ``application/json-patch+json``: a JSON Patch (RFC 6902) document, applied with the ``jsonpatch`` library;
- ``application/merge-patch+json``, and a plain JSON object sent as ``application/json`` or
  ``application/fhir+json`` (what fhirpy's ``patch()`` sends): a JSON merge patch (RFC 7386).
A FHIRPath Patch (a ``Parameters`` body) is refused with 415. The patch may not change ``resourceType`` or
``id``; the result is validated by the update that stores it.
"""

from __future__ import annotations

import copy

import jsonpatch
from flask import request

from gateway.api.http import check_content_version, parse_json, read_body
from gateway.fhir.errors import BusinessRuleViolation, InvalidResource, UnsupportedMediaType

JSON_PATCH = "application/json-patch+json"
MERGE_PATCH = "application/merge-patch+json"
_PLAIN_JSON = ("application/json", "application/fhir+json", "application/json+fhir")


def apply_patch(current: dict, rtype: str, rid: str) -> dict:
    """The request's patch applied to ``current`` (a stored resource); 400 for a malformed patch, 422 when it
    cannot be applied (a failed ``test``, a path that does not exist)."""
    mime = (request.mimetype or "").lower()
    if mime not in (JSON_PATCH, MERGE_PATCH, *_PLAIN_JSON):
        raise UnsupportedMediaType(f"PATCH needs {JSON_PATCH} (or {MERGE_PATCH}); got "
                                   f"'{request.content_type or '(none)'}'", "Content-Type")
    check_content_version()
    body = parse_json(read_body())
    base = {k: v for k, v in current.items() if k != "meta"} | (
        {"meta": {k: v for k, v in current["meta"].items() if k not in ("versionId", "lastUpdated")}}
        if isinstance(current.get("meta"), dict) else {})
    if not base.get("meta"):
        base.pop("meta", None)
    if mime == JSON_PATCH:
        result = _json_patch(base, body)
    else:
        if isinstance(body, dict) and body.get("resourceType") == "Parameters":
            raise UnsupportedMediaType("FHIRPath Patch (a Parameters body) is not supported; send a JSON Patch as "
                                       f"{JSON_PATCH}", "Content-Type")
        if not isinstance(body, dict):
            raise InvalidResource(f"A merge patch is a JSON object; send a JSON Patch array as {JSON_PATCH}",
                                  "body")
        result = _merge(copy.deepcopy(base), body)
    if not isinstance(result, dict):
        raise BusinessRuleViolation("The patch does not leave a resource (a JSON object)", rtype)
    if result.get("resourceType") != rtype or result.get("id") != rid:
        raise BusinessRuleViolation(f"A patch may not change resourceType or id of {rtype}/{rid}", f"{rtype}.id")
    where = _null_member(result, rtype)
    if where is not None:
        raise BusinessRuleViolation(f"The patch leaves {where} null; FHIR JSON has no nulls (remove the element "
                                    "instead)", where)
    return result


def _null_member(node: object, path: str) -> str | None:
    """The path of the first object member whose value is null ('ResearchStudy.title'), or None."""
    stack = [(node, path)]
    while stack:
        n, p = stack.pop()
        if isinstance(n, dict):
            for k, v in n.items():
                if v is None:
                    return f"{p}.{k}"
                stack.append((v, f"{p}.{k}"))
        elif isinstance(n, list):
            stack.extend((v, f"{p}[{i}]") for i, v in enumerate(n) if isinstance(v, dict | list))
    return None


def _json_patch(base: dict, body: object) -> object:
    if not isinstance(body, list):
        raise InvalidResource("A JSON Patch document is a JSON array of operations (RFC 6902)", "body")
    try:  # the constructor checks every operation: a malformed document is the client's error (400)
        patch = jsonpatch.JsonPatch(body)
    except (jsonpatch.InvalidJsonPatch, jsonpatch.JsonPointerException, TypeError, KeyError, AttributeError) as exc:
        raise InvalidResource(f"Not a valid JSON Patch document: {exc}", "body") from None
    try:  # a well-formed patch that does not fit this resource: 422, as FHIR says for a patch that fails
        return patch.apply(base)
    except jsonpatch.JsonPatchTestFailed as exc:
        raise BusinessRuleViolation(f"JSON Patch test failed: {exc}", "body") from None
    except (jsonpatch.JsonPatchConflict, jsonpatch.JsonPointerException, jsonpatch.InvalidJsonPatch, TypeError,
            KeyError, IndexError) as exc:
        raise BusinessRuleViolation(f"JSON Patch cannot be applied to this resource: {exc}", "body") from None


def _merge(target: object, patch: object) -> object:
    """RFC 7386: objects merge member by member, ``null`` removes, anything else replaces."""
    if not isinstance(patch, dict):
        return patch
    out = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = _merge(out.get(key), value)
    return out
