"""``_summary`` and ``_elements``: a resource cut down to some of its elements, tagged SUBSETTED as FHIR asks
(http://hl7.org/fhir/R4/search.html#summary), so no client mistakes it for the whole resource or writes it back.

Which elements are "summary" and which are mandatory comes from the R4B models' element metadata (the
``isSummary`` and ``min=1`` flags of the specification), so no per-type list is kept by hand.
``subset({"resourceType": "Patient", "id": "1", "gender": "f", "photo": [...]}, summary="true")`` ->
``{"resourceType": "Patient", "id": "1", "meta": {"tag": [SUBSETTED]}, "gender": "f"}``.
"""

from __future__ import annotations

from functools import cache

from gateway.fhir.models import model_class

SUBSETTED = {"system": "http://terminology.hl7.org/CodeSystem/v3-ObservationValue", "code": "SUBSETTED",
             "display": "subsetted"}
_ALWAYS = ("resourceType", "id", "meta")


@cache
def _flags(rtype: str) -> tuple[frozenset[str], frozenset[str]]:
    """(summary elements, mandatory elements) of a type, by JSON name ('effectiveDateTime', ...)."""
    try:
        fields = model_class(rtype).model_fields
    except KeyError:
        return frozenset(), frozenset()
    summary, mandatory = set(), set()
    for name, info in fields.items():
        extra = info.json_schema_extra if isinstance(info.json_schema_extra, dict) else {}
        alias = info.alias or name
        if extra.get("summary_element_property"):
            summary.add(alias)
        if info.is_required() or extra.get("element_required") or extra.get("one_of_many_required"):
            mandatory.add(alias)
    return frozenset(summary), frozenset(mandatory)


def summary_elements(rtype: str) -> frozenset[str]:
    return _flags(rtype)[0]


def mandatory_elements(rtype: str) -> frozenset[str]:
    return _flags(rtype)[1]


def _keep(rtype: str, summary: str | None, elements: list[str] | None, exclude: bool) -> frozenset[str] | None:
    """The top-level elements kept, or None when the whole resource is returned."""
    mandatory = mandatory_elements(rtype)
    if summary == "true":
        return summary_elements(rtype) | mandatory
    if summary == "text":
        return frozenset({"text"}) | mandatory
    if summary == "data":
        return None  # everything but text: handled by the caller
    if elements is not None and not exclude:
        wanted = {e[:-3] if e.endswith("[x]") else e for e in elements}
        return frozenset(wanted) | mandatory
    return None


def _kept(name: str, keep: frozenset[str], choice: frozenset[str]) -> bool:
    return name in keep or any(name.startswith(e) and name[len(e):][:1].isupper() for e in choice)


def subset(resource: dict, *, summary: str | None = None, elements: list[str] | None = None,
           exclude: bool = False) -> dict:
    """The resource as ``_summary`` / ``_elements`` ask, tagged SUBSETTED when anything was left out."""
    if summary in (None, "false", "count") and not elements:
        return resource
    rtype = resource.get("resourceType", "")
    keep = _keep(rtype, summary, elements, exclude)
    if summary == "data":
        out = {k: v for k, v in resource.items() if k != "text"}
    elif keep is None:  # _elements=-a,b: everything but those (mandatory elements stay)
        drop = set(elements or ()) - mandatory_elements(rtype) - set(_ALWAYS)
        out = {k: v for k, v in resource.items() if k not in drop}
    else:
        choice = frozenset(elements or ())  # _elements=value keeps valueQuantity (a choice element)
        out = {k: v for k, v in resource.items() if k in _ALWAYS or _kept(k.lstrip("_"), keep, choice)}
    if len(out) == len(resource):
        return resource
    meta = dict(out.get("meta") or {})
    tags = [t for t in meta.get("tag") or [] if not (isinstance(t, dict) and t.get("code") == "SUBSETTED")]
    meta["tag"] = [*tags, SUBSETTED]
    out["meta"] = meta
    # keep the resource's own element order, meta in its usual place
    return {"resourceType": out["resourceType"], **({"id": out["id"]} if "id" in out else {}), "meta": meta,
            **{k: v for k, v in out.items() if k not in _ALWAYS}}
