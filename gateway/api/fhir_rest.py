"""The FHIR R4 REST API at /fhir: thin views over gateway.store.interactions."""

from __future__ import annotations

from http import HTTPStatus
from urllib.parse import parse_qsl, urlencode

import orjson
from flask import Blueprint, current_app, g, request

from gateway.api import operations, visibility
from gateway.api.capability import capability_statement
from gateway.api.http import (
    base_url,
    check_accept,
    fhir_response,
    json_body,
    not_modified,
    prefer_return,
    prefer_strict,
    version_headers,
)
from gateway.api.opdefs import operation_definition
from gateway.api.patch import apply_patch
from gateway.fhir.errors import (
    InvalidResource,
    Issue,
    MethodNotAllowed,
    NotFound,
    NotSupported,
    UnsupportedMediaType,
    information_outcome,
    operation_outcome,
)
from gateway.fhir.interaction import parse_interaction
from gateway.fhir.models import R4_ONLY_TYPES, SUPPORTED_TYPES
from gateway.fhir.search import SUMMARY_MODES, Include, SearchQuery, iterate_limit, parse_search, split_values
from gateway.fhir.search_params import reference_params
from gateway.fhir.subsetting import subset
from gateway.store import study_search
from gateway.store.clock import now_iso
from gateway.store.interactions import FhirService, new_id
from gateway.store.repo import Store, Stored, WriteResult

bp = Blueprint("fhir", __name__, url_prefix="/fhir")


def store() -> Store:
    return current_app.extensions["gateway.store"]


def service() -> FhirService:
    return current_app.extensions["gateway.service"]


@bp.before_request
def _negotiate():
    check_accept()


def _check_type(rtype: str) -> None:
    if rtype in R4_ONLY_TYPES:
        raise NotFound(f"{rtype} is an R4 type this gateway does not support (no R4B model)", rtype)
    if rtype not in SUPPORTED_TYPES:
        raise NotFound(f"Unknown resource type '{rtype}'", rtype)


# -- capability --------------------------------------------------------------------------------
@bp.get("/metadata")
def metadata():
    return fhir_response(capability_statement(base_url(), current_app.config["STARTED_AT"]))


@bp.route("/metadata", methods=["POST", "PUT", "DELETE", "PATCH"])
def metadata_other():
    raise MethodNotAllowed(f"{request.method} /metadata is not allowed: the CapabilityStatement is read with GET",
                           "metadata", headers={"Allow": "GET, HEAD, OPTIONS"})


@bp.get("/")
@bp.get("")
def system_root():
    """``GET [base]``: not an interaction here (no system-wide search); say what to use instead."""
    raise NotSupported("GET /fhir is not supported: read the CapabilityStatement at /fhir/metadata, or search one "
                       "resource type, e.g. /fhir/ResearchStudy?status=active", "request.url")


# -- system level ------------------------------------------------------------------------------
@bp.post("/")
@bp.post("")
def system_bundle():
    body = json_body()
    visibility.check_bundle(body)
    include = prefer_return() == "representation"
    result = service().process_bundle(body, include_resources=include, read=_read_for_bundle)
    return fhir_response(visibility.filter_bundle_response(result))


@bp.get("/_history")
def system_history():
    return _history(None, None)


# -- type level --------------------------------------------------------------------------------
@bp.route("/<rtype>", methods=["GET", "POST", "PUT", "DELETE", "PATCH"])
def type_level(rtype: str):
    if rtype.startswith("$"):
        return _operation(None, None, rtype[1:])
    _check_type(rtype)
    if request.method == "GET":
        return _search(rtype, list(request.args.items(multi=True)))
    if request.method == "POST":
        resource = visibility.prepare_write(rtype, json_body())
        result = service().create(_as_dict(resource, rtype), if_none_exist=_if_none_exist(), resource_type=rtype)
        return _write_response(result, HTTPStatus.CREATED if result.created else HTTPStatus.OK)
    if request.method == "PUT":
        query = request.query_string.decode()
        if not query:
            raise MethodNotAllowed(f"PUT /{rtype} needs an id (/{rtype}/id) or search parameters (conditional update)",
                                   rtype)
        resource = visibility.prepare_write(rtype, json_body())
        result = service().conditional_update(rtype, query, _as_dict(resource, rtype),
                                              if_match=request.headers.get("If-Match"))
        return _write_response(result, HTTPStatus.CREATED if result.created else HTTPStatus.OK)
    if request.method == "DELETE":
        query = request.query_string.decode()
        if not query:
            raise MethodNotAllowed(f"DELETE /{rtype} needs an id or search parameters", rtype)
        result = service().conditional_delete(rtype, query)
        if result is None:
            return fhir_response(information_outcome(f"No {rtype} matched '{query}'; nothing deleted"))
        return fhir_response(information_outcome(f"Deleted {rtype}/{result.stored.id}"),
                             headers={"ETag": result.stored.etag})
    raise MethodNotAllowed(f"{request.method} is not supported on /{rtype}", rtype)


@bp.post("/<rtype>/_search")
def type_search_post(rtype: str):
    _check_type(rtype)
    if request.mimetype != "application/x-www-form-urlencoded":
        raise UnsupportedMediaType("POST _search needs an application/x-www-form-urlencoded body", "Content-Type")
    items = list(request.args.items(multi=True)) + list(request.form.items(multi=True))
    return _search(rtype, items)


@bp.get("/<rtype>/_history")
def type_history(rtype: str):
    _check_type(rtype)
    return _history(rtype, None)


# -- instance level ----------------------------------------------------------------------------
@bp.route("/<rtype>/<rid>", methods=["GET", "PUT", "DELETE", "POST", "PATCH"])
def instance(rtype: str, rid: str):
    if rid.startswith("$"):
        return _operation(rtype, None, rid[1:])
    _check_type(rtype)
    if request.method == "GET":
        if rtype == "OperationDefinition" and (od := operation_definition(rid)) is not None:
            return fhir_response(od)
        st = visibility.read(rtype, rid)  # authorization first: a 304 must not reveal another tenant's resource
        if not_modified(st, lambda: _previous_update(st)):
            return fhir_response(None, HTTPStatus.NOT_MODIFIED, headers=version_headers(st))
        return fhir_response(_read_subset(st), headers=version_headers(st))
    if request.method == "PATCH":
        return _patch(rtype, rid)
    if request.method == "PUT":
        resource = visibility.prepare_write(rtype, json_body())
        result = service().update(rtype, rid, _as_dict(resource, rtype), if_match=request.headers.get("If-Match"))
        return _write_response(result, HTTPStatus.CREATED if result.created else HTTPStatus.OK)
    if request.method == "DELETE":
        result = service().delete(rtype, rid, if_match=request.headers.get("If-Match"))
        if result.outcome == "not-found":
            return fhir_response(information_outcome(f"{rtype}/{rid} did not exist or was already deleted"))
        return fhir_response(None, HTTPStatus.NO_CONTENT, headers={"ETag": result.stored.etag})
    raise MethodNotAllowed(f"{request.method} is not supported on /{rtype}/{rid}", f"{rtype}")


@bp.route("/<rtype>/<rid>/<op>", methods=["GET", "POST"])
def instance_operation(rtype: str, rid: str, op: str):
    if op == "_history" and request.method == "GET":
        _check_type(rtype)
        return _history(rtype, rid)
    if op.startswith("$"):
        return _operation(rtype, rid, op[1:])
    raise NotFound(f"Unknown path /{rtype}/{rid}/{op}", f"{rtype}")


@bp.get("/<rtype>/<rid>/_history/<vid>")
def vread(rtype: str, rid: str, vid: str):
    _check_type(rtype)
    if not vid.isdigit():
        raise NotFound(f"Version '{vid}' is not a version number", f"{rtype}.meta.versionId")
    st = visibility.read(rtype, rid, int(vid))
    if not_modified(st):
        return fhir_response(None, HTTPStatus.NOT_MODIFIED, headers=version_headers(st))
    return fhir_response(_read_subset(st), headers=version_headers(st))


# -- helpers -----------------------------------------------------------------------------------
def _previous_update(st: Stored) -> str | None:
    """lastUpdated of the version before ``st`` (for If-Modified-Since within one second), or None."""
    _, rows = store().history(st.type, st.id, count=2)
    return next((r.last_updated for r in rows if r.version == st.version - 1), None)


def _read_subset(st: Stored) -> str | dict | None:
    """A read's body: the stored JSON, or the subset ``_summary`` / ``_elements`` ask for."""
    summary = request.args.get("_summary")
    elements = request.args.get("_elements")
    if summary is None and elements is None:
        return st.content
    if summary is not None and summary not in SUMMARY_MODES:
        raise InvalidResource(f"_summary={summary} is not a summary mode (use one of {', '.join(SUMMARY_MODES)})",
                              "_summary")
    names = [e.strip() for e in split_values(elements or "") if e.strip()]
    exclude = bool(names) and all(n.startswith("-") for n in names)
    return subset(st.resource(), summary=summary, elements=[n.lstrip("-") for n in names] or None,
                  exclude=exclude)


def _patch(rtype: str, rid: str):
    """PATCH with a JSON Patch (RFC 6902) or a JSON merge patch (RFC 7386; what fhirpy's ``patch`` sends).

    Authorized as an update, after the caller may see the resource (404 otherwise, before any version
    check); the patched resource is validated and stored as a new version through ``FhirService.update``,
    conditional on the version read (a concurrent write gives 412, never a lost update).
    """
    current = visibility.read(rtype, rid)
    if_match = request.headers.get("If-Match")
    patched = apply_patch(current.resource(), rtype, rid)
    resource = visibility.prepare_write(rtype, patched)
    result = service().update(rtype, rid, _as_dict(resource, rtype), if_match=if_match or current.etag)
    return _write_response(result, HTTPStatus.OK)


def _if_none_exist() -> str | None:
    """The conditional-create criteria: the If-None-Exist header, or else search parameters on the POST URL.

    Some clients (fhirpy's ``get_or_create``) send ``POST /Patient?identifier=x`` instead of the header;
    ignoring those parameters would silently create duplicates. ``_format`` is content negotiation, not
    a criterion. 'POST /Patient?identifier=x' -> 'identifier=x'.
    """
    header = request.headers.get("If-None-Exist")
    if header:
        return header
    params = [(k, v) for k, v in request.args.items(multi=True) if k != "_format"]
    return urlencode(params) if params else None


def _as_dict(resource: object, rtype: str) -> dict:
    if not isinstance(resource, dict):
        raise InvalidResource("The body must be a JSON object (a FHIR resource)", rtype)
    return resource


def _write_response(result: WriteResult, status: HTTPStatus):
    st = result.stored
    headers = version_headers(st, location=True)
    pref = prefer_return()
    if pref == "minimal":
        return fhir_response(None, status, headers)
    if pref == "OperationOutcome":
        return fhir_response(information_outcome(f"{st.type}/{st.id} {result.outcome} (version {st.version})"),
                             status, headers)
    return fhir_response(visibility.see(st).content, status, headers)


def _operation(rtype: str | None, rid: str | None, name: str):
    if rtype is not None:
        _check_type(rtype)
    op = operations.find(rtype, name, rid is not None)
    if op is None:
        where = f"{rtype or ''}{'/' + rid if rid else ''}"
        raise NotFound(f"Operation ${name} is not supported on {where or 'the system'}", f"${name}")
    if request.method not in op.methods:
        raise MethodNotAllowed(f"${name} does not support {request.method}", f"${name}")
    return op.handler(rtype, rid)


def _entry(st: Stored, mode: str = "match", q: SearchQuery | None = None) -> dict:
    resource: object = orjson.Fragment(st.content)
    if q is not None and (q.summary in ("true", "text", "data") or q.elements is not None):
        resource = subset(st.resource(), summary=q.summary, elements=q.elements, exclude=q.elements_exclude)
    hit = g.get("search_hits", {}).get(st.pk) if mode == "match" else None  # score, nearest recruiting site
    return {"fullUrl": f"{base_url()}/{st.type}/{st.id}", "resource": resource,
            "search": study_search.search_element(hit, mode)}


def run_search(rtype: str, items: list[tuple[str, str]]) -> tuple[SearchQuery, int, list[Stored]]:
    settings = current_app.config["SETTINGS"]
    # _text, postcode, near, condition:below ... (gateway.store.study_search) come out before parse_search
    rest, spec, below = study_search.split_params(rtype, visibility.narrow_search(rtype, items))
    q = parse_search(rtype, rest, default_count=settings.default_count,
                     max_count=settings.max_count, strict=prefer_strict())
    q.criteria.extend(below)
    q.raw.extend(spec.raw)
    visibility.limit_chains(q)  # a chain follows only targets the caller may read (no probing through it)
    if spec.active:
        total, rows, g.search_hits = study_search.run(store(), q, spec)
        g.search_more = spec.more  # _total=none|estimate: total may be None (not counted)
    else:
        total, rows = store().search(q)
    return q, total, visibility.filter_rows(rows)


def _search(rtype: str, items: list[tuple[str, str]]):
    q, total, rows = run_search(rtype, items)
    base = base_url()
    bundle: dict = {"resourceType": "Bundle", "id": None, "meta": {"lastUpdated": now_iso()},
                    "type": "searchset", "total": total, "link": []}
    bundle["id"] = new_id()
    bundle["link"].append({"relation": "self", "url": f"{base}/{rtype}?{q.link_query(q.offset)}"})
    if total is None:  # not counted (_total=none|estimate): FHIR lets Bundle.total be left out
        del bundle["total"]
    if not q.summary_count and q.count > 0:
        if g.get("search_more") if total is None else q.offset + q.count < total:
            bundle["link"].append({"relation": "next", "url": f"{base}/{rtype}?{q.link_query(q.offset + q.count)}"})
        if q.offset > 0:
            bundle["link"].append({"relation": "prev",
                                   "url": f"{base}/{rtype}?{q.link_query(max(0, q.offset - q.count))}"})
        entries = [_entry(st, q=q) for st in rows]
        included, capped = _includes(q, rows)
        entries.extend(_entry(st, "include") for st in included)
        if capped:
            q.warnings.append(("_revinclude", f"Only the first {len(included)} included resources are returned"))
        bundle["entry"] = entries
    if q.warnings:
        oo = operation_outcome([Issue("not-supported" if p in q.unknown else "code-invalid" if "R4" in m
                                      else "informational", m, [p], severity="warning") for p, m in q.warnings])
        bundle.setdefault("entry", []).append({"resource": oo, "search": {"mode": "outcome"}})
    if not visibility.show_total(rtype):
        bundle.pop("total", None)  # counted before filtering: would tell a caller how much it may not see
    return fhir_response(bundle)


def _param_keys(inc: Include) -> list[str]:
    names = sorted(reference_params(inc.source)) if inc.param == "*" else [inc.param]
    return [f"{inc.source}:{n}" for n in names]


def _includes(q: SearchQuery, rows: list[Stored]) -> tuple[list[Stored], bool]:
    """_include and _revinclude (with :iterate, up to a few rounds) of the page's matches, as the caller may
    see them; at most GATEWAY_MAX_COUNT resources in all (True when that cut anything off). Each round is
    filtered before it counts or is followed further: what the caller may not read neither fills the cap nor
    leads to more resources (the answer is that of a store without them)."""
    if not (q.includes or q.revincludes) or not rows:
        return [], False
    limit = current_app.config["SETTINGS"].max_count
    seen = {(r.type, r.id) for r in rows}
    out: list[Stored] = []
    frontier = rows
    for round_ in range(iterate_limit() + 1):
        found: list[Stored] = []
        for inc in q.includes:
            if round_ == 0 or inc.iterate:
                src = [r for r in frontier if r.type == inc.source]
                found += store().referenced(src, _param_keys(inc), {inc.target} if inc.target else None)
        for inc in q.revincludes:
            if round_ == 0 or inc.iterate:
                found += _readable_referring(frontier, _param_keys(inc), limit + 1)
        fresh = []
        for st in found:
            if (st.type, st.id) not in seen:
                seen.add((st.type, st.id))
                fresh.append(st)
        fresh = visibility.filter_rows(fresh)
        out += fresh
        if len(out) > limit:
            return out[:limit], True
        frontier = fresh
        if not frontier or not any(i.iterate for i in q.includes + q.revincludes):
            break
    return out, False


def _readable_referring(rows: list[Stored], keys: list[str], limit: int) -> list[Stored]:
    """``Store.referring`` up to ``limit`` resources the caller may read (unreadable ones do not use the cap)."""
    out: list[Stored] = []
    after = 0
    while len(out) < limit:
        batch = store().referring(rows, keys, limit, after_pk=after)
        out += [st for st in batch if visibility.can_see_row(st)]
        if len(batch) < limit:
            break
        after = batch[-1].pk
    return out[:limit]


def _history(rtype: str | None, rid: str | None):
    settings = current_app.config["SETTINGS"]
    items = list(request.args.items(multi=True))
    q = parse_search(None, [(k, v) for k, v in items if k in ("_count", "_offset")],
                     default_count=settings.default_count, max_count=settings.max_count)
    since = request.args.get("_since")
    total, rows = store().history(rtype, rid, count=q.count, offset=q.offset, since=since)
    rows = visibility.filter_history(rtype, rid, rows)
    base = base_url()
    path = "/".join(p for p in (rtype, rid, "_history") if p)
    extra = [(k, v) for k, v in items if k == "_since"]

    def link(offset: int) -> str:
        return f"{base}/{path}?{urlencode(extra + [('_count', q.count), ('_offset', offset)])}"

    bundle: dict = {"resourceType": "Bundle", "id": new_id(), "type": "history", "total": total,
                    "link": [{"relation": "self", "url": link(q.offset)}]}
    if q.offset + q.count < total:
        bundle["link"].append({"relation": "next", "url": link(q.offset + q.count)})
    if q.offset > 0:
        bundle["link"].append({"relation": "prev", "url": link(max(0, q.offset - q.count))})
    entries = []
    for st in rows:
        e: dict = {"fullUrl": f"{base}/{st.type}/{st.id}"}
        if st.content:
            e["resource"] = orjson.Fragment(st.content)
        method = st.method or "PUT"
        e["request"] = {"method": method, "url": f"{st.type}/{st.id}" if method != "POST" else st.type}
        status = "201 Created" if method == "POST" or st.version == 1 else (
            "204 No Content" if st.deleted else "200 OK")
        e["response"] = {"status": status, "etag": st.etag, "lastModified": st.last_updated}
        entries.append(e)
    bundle["entry"] = entries
    if not visibility.show_total(None):
        del bundle["total"]
    return fhir_response(bundle)


def _read_for_bundle(url: str) -> dict:
    it = parse_interaction("GET", url)
    if it.name == "read" and not it.query:
        return visibility.read_for_bundle(store().read(it.rtype, it.rid))
    if it.name == "search" and it.rtype is not None:
        _check_type(it.rtype)
        q, total, rows = run_search(it.rtype, parse_qsl(it.query, keep_blank_values=True))
        out = {"resourceType": "Bundle", "type": "searchset", "total": total,
               "entry": [{"fullUrl": f"{base_url()}/{r.type}/{r.id}", "resource": r.resource(),
                          "search": {"mode": "match"}} for r in rows]}
        if total is None:  # _total=none: not counted
            del out["total"]
        return out
    raise InvalidResource(f"GET entry url '{url}' must be Type/id or Type?search", "request.url")
