"""Operation parameters, read one way for every operation ($match, $candidates, $translate, $subsumes, the
patient actions, erasure): the query string of a GET or a POSTed Parameters resource -> {name: [values]},
and the typed readers of one value (number, whole number, boolean) with a 400 naming the parameter.

>>> parameters_of({"resourceType": "Parameters", "parameter": [{"name": "code", "valueCode": "GB"}]}, "$x")
{'code': ['GB']}
"""

from __future__ import annotations

from flask import request

from gateway.api.http import json_body
from gateway.fhir.errors import InvalidResource

Params = dict[str, list[object]]
_PAGING = ("_count", "_offset")


def parameter_value(p: dict) -> object:
    """One ``Parameters.parameter``'s value: its ``value[x]``, else its ``resource`` (None when it has neither)."""
    for k, v in p.items():
        if k.startswith("value"):
            return v
    return p.get("resource")


def parameters_of(body: object, what: str) -> Params:
    """A Parameters resource -> {name: [values]}; 400 for any other body or a parameter without a name.
    ``what`` names the operation in the message ('$match', '/admin/erasure')."""
    if not isinstance(body, dict) or body.get("resourceType") != "Parameters":
        raise InvalidResource(f"POST {what} needs a Parameters resource in the body", "Parameters")
    out: Params = {}
    for i, p in enumerate(body.get("parameter") or []):
        if not isinstance(p, dict) or not isinstance(p.get("name"), str) or not p["name"]:
            raise InvalidResource("each parameter needs a name", f"Parameters.parameter[{i}].name")
        out.setdefault(p["name"], []).append(parameter_value(p))
    return out


def operation_params(what: str, *, lists: tuple[str, ...] = (), drop_empty: bool = False) -> Params:
    """This request's parameters: a GET's query string (``_format`` left out; the names in ``lists`` are
    comma-separated lists; ``drop_empty``: empty values count as absent), or a POSTed Parameters body, whose
    paging (``_count``, ``_offset``) may also come in the URL (the next link of a POSTed search)."""
    out: Params = {}
    if request.method == "GET":
        for k, v in request.args.items(multi=True):
            if k == "_format":
                continue
            values = v.split(",") if k in lists else [v]
            out.setdefault(k, []).extend(x for x in values if x != "" or not drop_empty)
        return out
    out = parameters_of(json_body(), what)
    for k in _PAGING:  # the body's own values win
        if k not in out and request.args.get(k):
            out[k] = [request.args[k]]
    return out


def first(params: Params, name: str) -> object | None:
    """The first value of ``name``, or None."""
    values = params.get(name) or []
    return values[0] if values else None


def one(params: Params, name: str) -> object | None:
    """The value of a parameter that may appear at most once (400 when repeated), or None."""
    values = params.get(name) or []
    if len(values) > 1:
        raise InvalidResource(f"parameter '{name}' may appear once", name)
    return values[0] if values else None


def each_once(params: Params) -> dict[str, object]:
    """{name: value} for an operation whose every parameter may appear at most once (400 naming a repeat)."""
    return {name: one(params, name) for name in params}


def number(raw: object, name: str) -> float:
    """A non-negative number; 400 naming the parameter otherwise."""
    try:
        v = float(raw)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise InvalidResource(f"Parameter {name} must be a number, got {raw!r}", name) from None
    if v < 0:
        raise InvalidResource(f"Parameter {name} must not be negative", name)
    return v


def whole(raw: object, name: str) -> int:
    """A non-negative whole number; 400 naming the parameter otherwise."""
    try:
        v = int(str(raw))
    except ValueError:
        raise InvalidResource(f"Parameter {name} must be an integer, got {raw!r}", name) from None
    if v < 0:
        raise InvalidResource(f"Parameter {name} must not be negative", name)
    return v


def boolean(raw: object, name: str) -> bool:
    """true / false (a JSON boolean or its text); 400 naming the parameter otherwise."""
    if isinstance(raw, bool):
        return raw
    if str(raw).lower() in ("true", "false"):
        return str(raw).lower() == "true"
    raise InvalidResource(f"Parameter {name} must be true or false, got {raw!r}", name)
