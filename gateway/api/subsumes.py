"""CodeSystem/$subsumes (R4): is code A a kind of code B, in one code system?

In: system + codeA + codeB (or codingA + codingB); on /CodeSystem/{id}/$subsumes the system is that
CodeSystem's. Out: Parameters {outcome: equivalent | subsumes | subsumed-by | not-subsumed}.
GET /fhir/CodeSystem/$subsumes?system=http://oncotree.mskcc.org&codeA=DIFG&codeB=GB -> subsumes
Answers from the terminology in mappings/terminology, or from a CodeSystem stored through the REST API.
"""

from __future__ import annotations

from flask import Response, current_app

from gateway.api import operations
from gateway.api.http import fhir_response
from gateway.api.params import each_once, operation_params
from gateway.fhir.errors import CodeInvalid, InvalidResource, NotFound
from gateway.fhir.search import parse_search
from gateway.terminology import Terminology, canonical_system, terminology_for

_DEFINITION = "http://hl7.org/fhir/OperationDefinition/CodeSystem-subsumes"


def _code(params: dict, which: str, system: str | None) -> tuple[str | None, str]:
    """('A') -> (system or None, code) from codeA or codingA."""
    code, coding = params.get(f"code{which}"), params.get(f"coding{which}")
    if code is not None and coding is not None:
        raise InvalidResource(f"give code{which} or coding{which}, not both", f"code{which}")
    if code is not None:
        if not isinstance(code, str) or not code.strip():
            raise InvalidResource(f"code{which} must be a non-empty code", f"code{which}")
        return system, code
    if isinstance(coding, dict) and coding.get("code"):
        return coding.get("system") or system, str(coding["code"])
    raise InvalidResource(f"$subsumes needs code{which} (with system) or coding{which}", f"code{which}")


def _stored_codesystem(url: str | None = None, rid: str | None = None) -> dict | None:
    store = current_app.extensions["gateway.store"]
    if rid is not None:
        return store.read("CodeSystem", rid).resource()
    _, rows = store.search(parse_search("CodeSystem", [("url", url), ("_count", "1")], max_count=1))
    return rows[0].resource() if rows else None


def _terminology_for(system: str, shipped: Terminology) -> Terminology:
    """The shipped terminology if it knows ``system``; else one built from a stored CodeSystem."""
    if system in shipped.codesystems:
        return shipped
    cs = _stored_codesystem(url=system)
    if cs is None or not cs.get("concept"):
        raise NotFound(f"CodeSystem '{system}' is not known to this server (no hierarchy loaded or stored)",
                       "system")
    t = Terminology()
    t.add_codesystem(cs)
    return t.finish()


def subsumes_view(rtype: str | None, rid: str | None) -> Response:
    params = each_once(operation_params("$subsumes"))
    shipped = terminology_for(current_app.config["SETTINGS"].mappings_path / "terminology")
    system = params.get("system")
    if rid is not None:
        known = next((url for url, meta in shipped.codesystems.items() if meta.get("id") == rid), None)
        system = known or (_stored_codesystem(rid=rid) or {}).get("url")
    sys_a, code_a = _code(params, "A", system if isinstance(system, str) else None)
    sys_b, code_b = _code(params, "B", system if isinstance(system, str) else None)
    if not sys_a or not sys_b:
        raise InvalidResource("$subsumes needs a system (or codings with a system)", "system")
    sys_a, sys_b = canonical_system(sys_a), canonical_system(sys_b)
    if sys_a != sys_b:
        raise InvalidResource(f"codeA and codeB must be in one code system ({sys_a} vs {sys_b})", "codingB")
    term = _terminology_for(sys_a, shipped)
    for which, code in (("A", code_a), ("B", code_b)):
        if not term.knows(sys_a, code):
            raise CodeInvalid(f"code '{code}' is not known in {term.system_name(sys_a)} ({sys_a})",
                              f"code{which}")
    outcome = term.subsumes(sys_a, code_a, code_b)
    return fhir_response({"resourceType": "Parameters", "parameter": [{"name": "outcome", "valueCode": outcome}]})


operations.register(operations.Operation("subsumes", "CodeSystem", False, subsumes_view, ("GET", "POST"),
                                         _DEFINITION))
operations.register(operations.Operation("subsumes", "CodeSystem", True, subsumes_view, ("GET", "POST"),
                                         _DEFINITION))
