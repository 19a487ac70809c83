"""Validate response bodies against the official R4 JSON schema, each resource against its own type.

The schema's root ``oneOf`` (and ``ResourceList``, used for Bundle.entry.resource, contained resources
and Parameters) tries every resource type in turn, about 100 times slower than checking one type. So
each type's validator is compiled once with ``ResourceList`` relaxed to "an object with a resourceType",
and nested resources are validated separately against their own type.

>>> assert_valid({"resourceType": "Patient", "gender": "female"})
"""

from __future__ import annotations

import copy
from functools import cache

import orjson
from jsonschema import Draft6Validator

from tests.conftest import DATA

SCHEMA_PATH = DATA / "hl7-examples" / "fhir.schema.json"


@cache
def _schema() -> dict:
    schema = orjson.loads(SCHEMA_PATH.read_bytes())
    schema = copy.deepcopy(schema)
    for key in ("oneOf", "discriminator"):
        schema.pop(key, None)
    schema["definitions"]["ResourceList"] = {"type": "object", "required": ["resourceType"]}
    return schema


@cache
def validator(rtype: str) -> Draft6Validator:
    """The compiled validator for one resource type (KeyError if the schema has no such type)."""
    schema = _schema()
    if rtype not in schema["definitions"]:
        raise KeyError(rtype)
    root = {**schema, "$ref": f"#/definitions/{rtype}"}
    return Draft6Validator(root)


def _nested(resource: dict) -> list[tuple[str, dict]]:
    """(path, resource) for the resources inside ``resource`` that ResourceList stood for."""
    out: list[tuple[str, dict]] = []
    for i, c in enumerate(resource.get("contained") or []):
        out.append((f"contained[{i}]", c))
    if resource.get("resourceType") == "Bundle":
        for i, e in enumerate(resource.get("entry") or []):
            if isinstance(e.get("resource"), dict):
                out.append((f"entry[{i}].resource", e["resource"]))
            outcome = (e.get("response") or {}).get("outcome")
            if isinstance(outcome, dict):
                out.append((f"entry[{i}].response.outcome", outcome))
    if resource.get("resourceType") == "Parameters":
        for i, p in enumerate(resource.get("parameter") or []):
            if isinstance(p.get("resource"), dict):
                out.append((f"parameter[{i}].resource", p["resource"]))
    return out


def schema_errors(resource: dict, path: str = "") -> list[str]:
    """Every schema violation in ``resource`` and the resources nested in it, as readable strings."""
    rtype = resource.get("resourceType")
    where = path or str(rtype)
    if not isinstance(rtype, str):
        return [f"{where}: no resourceType"]
    try:
        v = validator(rtype)
    except KeyError:
        return [f"{where}: '{rtype}' is not an R4 resource type"]
    errors = [f"{_join(where, e.absolute_path)}: {e.message[:300]}"
              for e in v.iter_errors(resource)]
    for sub, nested in _nested(resource):
        errors.extend(schema_errors(nested, f"{where}.{sub}"))
    return errors


def assert_valid(resource: dict) -> dict:
    """Raise AssertionError listing the violations unless ``resource`` is valid R4; return it."""
    errors = schema_errors(resource)
    assert not errors, "R4 JSON schema violations:\n" + "\n".join(errors[:20])
    return resource


def _join(where: str, path) -> str:
    """('Patient', deque(['name', 0, 'family'])) -> 'Patient.name[0].family'."""
    out = where
    for p in path:
        out += f"[{p}]" if isinstance(p, int) else f".{p}"
    return out
