"""Validate inbound resources once, at the edge.

``validate_resource(data)`` checks structure with the fhir.resources R4B models, then the
required code bindings the gateway relies on (fhir.resources checks no bindings). It returns the
input dict unchanged: the validated JSON is what the store keeps, so nothing the sender wrote is lost.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

import orjson
from pydantic import ValidationError

from gateway.fhir import models
from gateway.fhir.errors import CodeInvalid, InvalidResource, Issue, NotSupported
from gateway.fhir.limits import find_nul

ID_RE = re.compile(r"^[A-Za-z0-9\-.]{1,64}$")

_CONDITION_CLINICAL = "http://terminology.hl7.org/CodeSystem/condition-clinical"
_CONDITION_VER = "http://terminology.hl7.org/CodeSystem/condition-ver-status"

# type -> [(path, allowed codes, coding system or None for a plain `code` element)]
# Required bindings from the R4 spec that the gateway reasons about.
REQUIRED_BINDINGS: dict[str, list[tuple[str, frozenset[str], str | None]]] = {
    "ResearchStudy": [("status", frozenset(
        "active administratively-completed approved closed-to-accrual closed-to-accrual-and-intervention "
        "completed disapproved in-review temporarily-closed-to-accrual "
        "temporarily-closed-to-accrual-and-intervention withdrawn".split()), None)],
    "ResearchSubject": [("status", frozenset(
        "candidate eligible follow-up ineligible not-registered off-study on-study on-study-intervention "
        "on-study-observation pending-on-study potential-candidate screening withdrawn".split()), None)],
    "Condition": [
        ("clinicalStatus", frozenset("active recurrence relapse inactive remission resolved".split()),
         _CONDITION_CLINICAL),
        ("verificationStatus", frozenset(
            "unconfirmed provisional differential confirmed refuted entered-in-error".split()), _CONDITION_VER),
    ],
    "Observation": [("status", frozenset(
        "registered preliminary final amended corrected cancelled entered-in-error unknown".split()), None)],
    "Consent": [("status", frozenset("draft proposed active rejected inactive entered-in-error".split()), None)],
    "Patient": [("gender", frozenset("male female other unknown".split()), None)],
    "Group": [("type", frozenset("person animal practitioner device medication substance".split()), None)],
    "Location": [("status", frozenset("active suspended inactive".split()), None)],
    "Subscription": [
        ("status", frozenset("requested active error off".split()), None),
        ("channel.type", frozenset("rest-hook websocket email sms message".split()), None),
    ],
    "Procedure": [("status", frozenset(
        "preparation in-progress not-done on-hold stopped completed entered-in-error unknown".split()), None)],
    "MedicationStatement": [("status", frozenset(
        "active completed entered-in-error intended stopped on-hold unknown not-taken".split()), None)],
    "MedicationRequest": [("status", frozenset(
        "active on-hold cancelled completed entered-in-error stopped draft unknown".split()), None)],
}


def _loc_to_expression(resource_type: str, loc: tuple) -> str:
    """('identifier', 0, 'system') -> 'ResearchStudy.identifier[0].system'."""
    out = resource_type
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part in ("resource_type", "__root__"):
            out += ".resourceType" if part == "resource_type" else ""
        else:
            out += f".{part}"
    return out


def _walk(node: object, parts: list[str], expr: str) -> Iterator[tuple[str, object]]:
    if not parts:
        yield expr, node
        return
    if isinstance(node, dict):
        key = parts[0]
        if key in node:
            child = node[key]
            if isinstance(child, list):
                for i, item in enumerate(child):
                    yield from _walk(item, parts[1:], f"{expr}.{key}[{i}]")
            else:
                yield from _walk(child, parts[1:], f"{expr}.{key}")


def check_bindings(resource: dict) -> list[Issue]:
    """Issues for codes outside the required value sets we rely on (empty when all is well)."""
    rtype = resource.get("resourceType", "")
    issues: list[Issue] = []
    for path, allowed, system in REQUIRED_BINDINGS.get(rtype, ()):
        for expr, value in _walk(resource, path.split("."), rtype):
            if system is None:
                if isinstance(value, str) and value not in allowed:
                    issues.append(Issue("code-invalid", f"'{value}' is not a valid code "
                                        f"(expected one of: {', '.join(sorted(allowed))})", [expr]))
            elif isinstance(value, dict):
                for i, coding in enumerate(value.get("coding") or []):
                    if coding.get("system") == system and coding.get("code") not in allowed:
                        issues.append(Issue("code-invalid", f"'{coding.get('code')}' is not a code of {system} "
                                            f"(expected one of: {', '.join(sorted(allowed))})",
                                            [f"{expr}.coding[{i}].code"]))
    return issues


def validate_resource(data: object, expected_type: str | None = None) -> dict:
    """Validate one resource; return it unchanged or raise InvalidResource / CodeInvalid / NotSupported.

    >>> validate_resource({"resourceType": "Patient", "gender": "female"})["gender"]
    'female'
    """
    if not isinstance(data, dict):
        raise InvalidResource("A resource must be a JSON object", "Resource")
    rtype = data.get("resourceType")
    if not isinstance(rtype, str):
        raise InvalidResource("resourceType is missing or not a string", "Resource.resourceType")
    if expected_type and rtype != expected_type:
        raise InvalidResource(f"resourceType '{rtype}' does not match the endpoint type '{expected_type}'",
                              f"{rtype}.resourceType")
    if rtype in models.R4_ONLY_TYPES:
        raise NotSupported(f"{rtype} is an R4 type this gateway cannot validate (no R4B model); "
                           "it is not accepted", f"{rtype}")
    if rtype not in models.SUPPORTED_TYPES:
        raise InvalidResource(f"Unknown resource type '{rtype}'", "Resource.resourceType")
    rid = data.get("id")
    if rid is not None and (not isinstance(rid, str) or not ID_RE.match(rid)):
        raise InvalidResource(f"id '{rid}' is not a valid FHIR id ([A-Za-z0-9-.]{{1,64}})", f"{rtype}.id")
    where = find_nul(data, rtype) if _has_nul(data) else None
    if where is not None:
        raise InvalidResource(f"{where}: a NUL character (U+0000) is not allowed in FHIR content", where)
    if not _json_ok(data):
        where, why = find_empty(data, rtype) or (rtype, "an empty value is not valid")
        raise InvalidResource(f"{where}: {why} (FHIR JSON)", where)
    try:
        models.construct(rtype, data)
    except ValidationError as exc:
        issues = [Issue("structure", str(err.get("msg", "invalid")).split("\n")[0],
                        [_loc_to_expression(rtype, tuple(err.get("loc", ())))])
                  for err in exc.errors(include_url=False)]
        raise InvalidResource(_summary(issues), issues=issues) from None
    except (TypeError, ValueError) as exc:  # fhir.resources raises these for some malformed primitives
        raise InvalidResource(f"{rtype}: {exc}", rtype) from None
    issues = check_bindings(data)
    if issues:
        raise CodeInvalid(_summary(issues), issues=issues)
    return data


def _json_ok(node: object) -> bool:
    """True when no value of ``node`` is null, an empty string, an empty object or an empty array, except the
    nulls FHIR JSON allows: placeholders in a primitive array paired with its ``_name`` array of extensions
    (``"given": [null, "Jo"], "_given": [{...}, null]``). One walk over the parsed JSON, no paths built."""
    if isinstance(node, dict):
        if not node:
            return False
        for k, v in node.items():
            if v is None or (isinstance(v, str) and not v):
                return False
            if isinstance(v, (dict, list)):
                if isinstance(v, list) and None in v:
                    twin = node.get(k[1:] if k.startswith("_") else f"_{k}")
                    if not _paired(v, twin):
                        return False
                    v = [x for x in v if x is not None]
                    if not v:
                        continue
                if not _json_ok(v):
                    return False
        return True
    if isinstance(node, list):
        if not node:
            return False
        for v in node:
            if v is None or (isinstance(v, str) and not v):
                return False
            if isinstance(v, (dict, list)) and not _json_ok(v):
                return False
        return True
    return True


def _paired(items: list, twin: object) -> bool:
    """A null in ``items`` is allowed only where the twin array (``given`` / ``_given``) has a value at the
    same index, and the two arrays have the same length."""
    return isinstance(twin, list) and len(twin) == len(items) and all(
        a is not None or b is not None for a, b in zip(items, twin, strict=True))


def prune_empty(node: object) -> object:
    """``node`` without the empty values FHIR JSON forbids (null, "", {}, []), for content received from other
    servers: a hospital's ``"entry": []`` is read as no entries rather than refused. Writes to this gateway are not
    pruned; they are refused (``validate_resource``). Paired primitive placeholders (``given``/``_given``) are kept.

    >>> prune_empty({"resourceType": "Bundle", "type": "searchset", "entry": [], "total": 0})
    {'resourceType': 'Bundle', 'type': 'searchset', 'total': 0}
    """
    if isinstance(node, dict):
        out = {}
        for k, v in node.items():
            twin = node.get(k[1:] if k.startswith("_") else f"_{k}")
            if isinstance(v, list) and isinstance(twin, list) and len(v) == len(twin):
                kept = [prune_empty(x) if x is not None else None for x in v]  # placeholders stay aligned
                if any(x is not None for x in kept):
                    out[k] = kept
                continue
            pruned = prune_empty(v)
            if pruned is not None and pruned != "" and pruned != {} and pruned != []:
                out[k] = pruned
        return out
    if isinstance(node, list):
        kept = [prune_empty(x) for x in node]
        return [x for x in kept if x is not None and x != "" and x != {} and x != []]
    return node


def find_empty(node: object, path: str) -> tuple[str, str] | None:
    """Where ``_json_ok`` fails, and why: ('ResearchStudy.title', 'null is not a valid value'), or None.

    >>> find_empty({"identifier": [{"value": ""}]}, "Patient")
    ('Patient.identifier[0].value', 'empty strings are not valid')
    """
    if isinstance(node, dict):
        if not node:
            return path, "an object must not be empty"
        for k, v in node.items():
            where = f"{path}.{k}"
            if v is None:
                return where, "null is not a valid value"
            if isinstance(v, list) and None in v:
                twin = node.get(k[1:] if k.startswith("_") else f"_{k}")
                if not _paired(v, twin):
                    i = v.index(None)
                    return f"{where}[{i}]", "null is not a valid value (except as a placeholder paired with " \
                        "the extension array)"
                for i, x in enumerate(v):
                    if x is not None and (hit := find_empty(x, f"{where}[{i}]")):
                        return hit
                continue
            if hit := find_empty(v, where):
                return hit
        return None
    if isinstance(node, list):
        if not node:
            return path, "arrays must not be empty"
        for i, v in enumerate(node):
            if v is None:
                return f"{path}[{i}]", "null is not a valid value"
            if hit := find_empty(v, f"{path}[{i}]"):
                return hit
        return None
    if isinstance(node, str) and not node:
        return path, "empty strings are not valid"
    return None


def _has_nul(data: dict) -> bool:
    """Whether any string of ``data`` holds U+0000 (PostgreSQL cannot store it; SQLite would): a C-speed test
    on the serialised JSON (orjson writes U+0000 as \\u0000) before any Python walk."""
    try:
        return b"\\u0000" in orjson.dumps(data)
    except TypeError:  # not plain JSON data: let the walk decide
        return True


def _summary(issues: list[Issue]) -> str:
    return "; ".join(f"{(i.expression or ['?'])[0]}: {i.diagnostics}" for i in issues[:5]) + (
        f" (and {len(issues) - 5} more)" if len(issues) > 5 else "")
