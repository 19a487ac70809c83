"""Security wiring for the HTTP API: bearer tokens, /auth/token, SMART discovery, per-request
authorization of the route, rate limit, audit trail, erasure and the development-mode warnings.

Every request's caller is resolved by ``gateway.api.caller.resolve_caller``; ``_authorize_route``
then checks the interaction the URL names (read, search, create, ``$operation`` ...) through
``gateway.security.policy.Access``, so views added later are covered too. Views filter what they
return with ``access()``; writes are checked inside the store transaction by ``Access.write_hook``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from http import HTTPStatus
from urllib.parse import urlsplit

import orjson
from flask import Blueprint, Flask, Response, current_app, g, jsonify, request

from gateway.api.http import base_url, fhir_response
from gateway.fhir.errors import (
    FhirError,
    Forbidden,
    Gone,
    InvalidResource,
    Issue,
    NotFound,
    TooManyRequests,
    operation_outcome,
)
from gateway.fhir.limits import NUL, find_nul
from gateway.fhir.limits import configure as configure_search_limits
from gateway.fhir.search import SearchQuery
from gateway.security.audit import AuditWriter, audit_event, write_audit
from gateway.security.clients import ClientConfigError, ClientRegistry, load_clients
from gateway.security.erasure import check_nhs_number, erase_person
from gateway.security.policy import Access, current_access, iter_patient_refs_in_params, kind_of
from gateway.security.principal import Caller
from gateway.security.ratelimit import RateLimiter
from gateway.security.tokens import ASSERTION_ALGS, NotConfigured, OAuthError, TokenService
from gateway.store.repo import Store, Stored

log = logging.getLogger("gateway.security")
EXT = "gateway.security"
INSECURE_WARNING = '199 - "insecure development mode: no client authentication (GATEWAY_INSECURE_DEV)"'
PUBLIC_PATHS = frozenset({"/healthz", "/readyz", "/fhir/metadata", "/fhir/.well-known/smart-configuration",
                          "/auth/token", "/auth/jwks", "/fhir/metadata/"})

bp = Blueprint("auth", __name__)
# Operations whose results are people chosen by their own rules (consent, study ownership checked above).
TRUSTED_RESULTS = frozenset({("ResearchStudy", "candidates")})


@dataclass
class SecurityState:
    registry: ClientRegistry
    tokens: TokenService
    limiter: RateLimiter
    audit: bool
    insecure_dev: bool
    audit_writer: AuditWriter

    @property
    def enabled(self) -> bool:
        """Clients configured: every non-public request needs a token."""
        return bool(self.registry)


def state() -> SecurityState:
    return current_app.extensions[EXT]


def access() -> Access:
    """This request's Access (the caller's view of the store)."""
    acc = g.get("access")
    if acc is None:
        acc = g.access = Access(g.get("caller") or _anonymous(), current_app.extensions["gateway.store"])
    return acc


def _anonymous() -> Caller:
    return Caller(client_id="anonymous", role="anonymous", authenticated=False)


def init_app(app: Flask) -> None:
    settings = app.config["SETTINGS"]
    store: Store = app.extensions["gateway.store"]
    try:
        registry = load_clients(settings.clients_path)  # a configured folder must exist and be readable
    except ClientConfigError:
        store.engine.dispose()  # the app is not built: release its database connections
        raise
    configure_search_limits(settings.max_search_value_length, settings.max_search_parameters)
    audit_on = settings.audit == "on" or (settings.audit == "auto" and bool(registry))
    app.extensions[EXT] = SecurityState(
        registry=registry,
        tokens=TokenService(registry, store.engine, signing_pem=settings.token_signing_key,
                            idp_jwks_url=settings.idp_jwks_url, idp_jwks_file=settings.idp_jwks_file,
                            idp_issuer=settings.idp_issuer, idp_audience=settings.idp_audience,
                            nhs_number_claim=settings.idp_nhs_number_claim),
        limiter=RateLimiter(settings.rate_limit), audit=audit_on, insecure_dev=settings.insecure_dev,
        audit_writer=AuditWriter(store))
    if not registry:
        log.warning("no clients configured (GATEWAY_CLIENTS_PATH=%s): development mode, every caller without a "
                    "token is the local administrator", settings.clients_path)
    # First hook: a write the caller may not make rolls back before anything else is queued.
    app.extensions["gateway.service"].hooks.insert(0, _guard_write)
    # Before any If-Match check: another's resource is answered like a missing one (no existence oracle).
    app.extensions["gateway.service"].guards.append(_guard_existing)
    # Conditional searches (If-None-Exist, conditional update/delete) match only what the caller may see.
    app.extensions["gateway.service"].visibility = _caller_view
    app.before_request_funcs.setdefault(None, []).append(_before)
    app.after_request_funcs.setdefault(None, []).insert(0, _after)
    app.teardown_request_funcs.setdefault(None, []).append(_teardown)
    app.register_blueprint(bp)


def _guard_write(tx, result, resource) -> None:
    acc = current_access.get()
    if acc is not None:
        acc.write_hook(tx, result, resource)


def _caller_view():
    """This request's visibility predicate for conditional searches; None for administrators (see all)."""
    acc = current_access.get()
    return None if acc is None or acc.caller.is_admin else acc.can_see


def _guard_existing(rtype: str, rid: str, current, named: bool) -> None:
    acc = current_access.get()
    if acc is not None:
        acc.check_existing(rtype, rid, current, named=named)


# -- per request -------------------------------------------------------------------------------
def _before() -> None:
    sec = state()
    _refuse_nul()
    caller: Caller = g.get("caller") or _anonymous()
    g.access = Access(caller, current_app.extensions["gateway.store"])
    g.access_token = current_access.set(g.access)
    if caller.authenticated and sec.limiter.capacity > 0:
        wait = sec.limiter.take(caller.client_id)
        if wait > 0:
            raise TooManyRequests(f"Rate limit of {int(sec.limiter.capacity)} requests per minute for client "
                                  f"{caller.client_id} reached (GATEWAY_RATE_LIMIT)", "request",
                                  headers={"Retry-After": RateLimiter.retry_after(wait)})
    if request.path in PUBLIC_PATHS:
        return
    writing = request.method in ("POST", "PUT") and request.path.startswith("/fhir")
    # Parsed for the written type's check (type level) and for tenant stamping (non-administrators); an
    # administrator's transaction at /fhir is checked entry by entry by the view (check_bundle).
    body = _json_body() if writing and (not caller.is_admin or request.path.rstrip("/") != "/fhir") else None
    _authorize_route(g.access, body)
    if writing and not caller.is_admin and isinstance(body, dict):
        _stamp_body(g.access, body)


def _refuse_nul() -> None:
    """A NUL character (U+0000) in the path, a query parameter or a JSON body is 400 before anything reads the
    store (PostgreSQL cannot compare or store text holding one; SQLite would): the same answer on both
    backends. FHIR strings may not hold it either (string datatype: no characters below U+0020 but TAB, CR, LF).
    """
    if NUL in request.path or any(NUL in k or NUL in v for k, v in request.args.items(multi=True)):
        raise InvalidResource("a NUL character (U+0000) is not allowed in the URL", "request.url")
    if request.method in ("POST", "PUT", "PATCH") and (request.mimetype or "").endswith("json"):
        limit = current_app.config["SETTINGS"].max_body_bytes
        if request.content_length is None or request.content_length > limit:
            return  # the view refuses it with the size OperationOutcome
        raw = request.get_data(cache=True)
        if b"\\u0000" not in raw:  # JSON writes U+0000 only as this escape: the usual body stops here
            return
        try:
            data = orjson.loads(raw)
        except orjson.JSONDecodeError:
            return  # the view reports the bad JSON
        root = data.get("resourceType") if isinstance(data, dict) else None
        where = find_nul(data, root.replace(NUL, "") or "body" if isinstance(root, str) else "body")
        if where is not None:
            raise InvalidResource(f"{where}: a NUL character (U+0000) is not allowed", where)


def _json_body() -> object:
    """The request's JSON body, parsed once for the route checks; None when the view will refuse it
    (not JSON, over the size limit, unparseable: the view answers with the matching OperationOutcome)."""
    if not (request.mimetype or "").endswith("json"):
        return None
    limit = current_app.config["SETTINGS"].max_body_bytes
    if request.content_length is None or request.content_length > limit:
        return None
    try:
        return orjson.loads(request.get_data(cache=True))
    except orjson.JSONDecodeError:
        return None


def _stamp_body(acc: Access, body: dict) -> None:
    """Stamp the caller's tenant on the body of every FHIR write, whichever view handles it.

    The body is parsed once (``_json_body``) and the stamped bytes put back as the request's cached body, so
    views added later (contact requests, ingest) store stamped content without knowing about tenants.
    """
    if body.get("resourceType") == "Bundle":
        for entry in body.get("entry") or []:
            res = entry.get("resource") if isinstance(entry, dict) else None
            if isinstance(res, dict) and isinstance(res.get("resourceType"), str):
                acc.prepare_write(res["resourceType"], res)
    elif isinstance(body.get("resourceType"), str):
        acc.prepare_write(body["resourceType"], body)
    request._cached_data = orjson.dumps(body)  # werkzeug's body cache, read by every later get_data()


def _teardown(_exc) -> None:
    token = g.pop("access_token", None)
    if token is not None:
        current_access.reset(token)


def _after(resp: Response) -> Response:
    sec = current_app.extensions.get(EXT)
    if sec is None:
        return resp
    if sec.insecure_dev and not sec.enabled:
        resp.headers["Warning"] = INSECURE_WARNING
        log.warning("insecure development mode: %s %s served without authentication", request.method, request.path)
    if resp.status_code == HTTPStatus.UNAUTHORIZED and "WWW-Authenticate" not in resp.headers:
        resp.headers["WWW-Authenticate"] = 'Bearer realm="fhir"'
    if g.get("interaction") == "operation" and resp.status_code == 200:
        _filter_operation_result(resp)
    if sec.audit:
        _audit(resp)
    return resp


def _filter_operation_result(resp: Response) -> None:
    """Safety net for operation results: a Bundle's entries the caller may not see are removed.

    Operation handlers should filter their own results (``filter_rows``); this catches any that do not.
    """
    acc: Access | None = g.get("access")
    if acc is None or acc.caller.is_admin or not (resp.mimetype or "").endswith("json") or resp.is_streamed:
        return
    if g.get("operation") in TRUSTED_RESULTS:
        return
    try:
        body = orjson.loads(resp.get_data())
    except orjson.JSONDecodeError:
        return
    if not isinstance(body, dict) or body.get("resourceType") != "Bundle" or not isinstance(body.get("entry"), list):
        return
    kept = []
    for e in body["entry"]:
        res = e.get("resource") if isinstance(e, dict) else None
        if not isinstance(res, dict) or res.get("resourceType") == "OperationOutcome" or acc.can_see(res):
            kept.append(e)
            if isinstance(res, dict) and res.get("id"):
                acc.note(res.get("resourceType", ""), res["id"], res)
    if len(kept) != len(body["entry"]):
        body["entry"] = kept
        body.pop("total", None)
        resp.set_data(orjson.dumps(body))


def _audit(resp: Response) -> None:
    acc: Access | None = g.get("access")
    path = request.path
    if g.get("audited"):
        return
    if not path.startswith(("/fhir", "/admin", "/patient/")) or path in PUBLIC_PATHS:  # /patient: api/patient.py
        return
    interaction = g.get("interaction") or "unknown"
    rtype = g.get("rtype")
    patient_data = bool(acc and (acc.touched or acc.people)) or (
        rtype is not None and kind_of(rtype) in ("patient", "subscription"))
    if not (patient_data or request.method != "GET" or resp.status_code in (401, 403)
            or interaction == "operation" or path.startswith("/admin")):
        return
    caller = acc.caller if acc else _anonymous()
    if interaction == "search" and rtype == "AuditEvent":
        return  # reading the audit trail is not itself audited per page (administrators only)
    event = audit_event(interaction=interaction, status=resp.status_code, client_id=caller.client_id,
                        role=caller.role, request_id=g.get("request_id", ""),
                        people=sorted(acc.people) if acc else (), resources=sorted(acc.touched) if acc else ())
    state().audit_writer.submit(event)


# -- route -> interaction ----------------------------------------------------------------------
def _authorize_route(acc: Access, body: object = None) -> None:
    """The interaction the URL names, checked for this caller; ``body``: a write's parsed JSON body, whose
    resourceType is the type written (and checked) -- a mismatch with the URL is 400 before any scope check."""
    path = request.path
    if path.startswith("/admin") or path == "/metrics":  # /metrics: operations data, like the outbox view
        g.interaction = "admin"
        if not acc.caller.is_admin:
            raise Forbidden("Administrators only", path)
        return
    if path.startswith("/ingest"):
        g.interaction = "ingest"
        if acc.caller.role not in ("admin", "sponsor", "hospital"):
            raise Forbidden(f"A {acc.caller.role} client may not ingest records", path)
        return
    if not path.startswith("/fhir"):
        return
    if acc.caller.role == "anonymous":
        raise Forbidden("A token is needed", path)
    parts = [p for p in path[len("/fhir"):].split("/") if p]
    method = request.method
    if not parts:
        g.interaction = "transaction"  # each entry is checked by the view (entry_check)
        return
    head = parts[0]
    if head == "_history":
        g.interaction = "history-system"
        acc.check_history(None)
        return
    if head.startswith("$"):
        _operation(acc, None, head[1:], None)
        return
    rtype = g.rtype = head
    if len(parts) == 1:
        interaction = {"GET": "search", "POST": "create", "PUT": "update", "DELETE": "delete",
                       "PATCH": "update"}.get(method)
    elif len(parts) == 2 and parts[1] == "_search":
        interaction = "search"
    elif len(parts) == 2 and parts[1] == "_history":
        g.interaction = "history-type"
        acc.check_history(rtype)
        return
    elif len(parts) == 2 and parts[1].startswith("$"):
        _operation(acc, rtype, parts[1][1:], None)
        return
    elif len(parts) == 2:
        interaction = {"GET": "read", "PUT": "update", "PATCH": "update", "DELETE": "delete"}.get(method)
    elif len(parts) == 3 and parts[2].startswith("$"):
        _operation(acc, rtype, parts[2][1:], parts[1])
        return
    elif len(parts) in (3, 4) and parts[2] == "_history":
        interaction = "history-instance" if len(parts) == 3 else "vread"
    else:
        interaction = None
    if interaction is None:
        return  # the view answers 404/405
    g.interaction = interaction
    if interaction in ("create", "update") and method in ("POST", "PUT"):
        acc.check_write(interaction, rtype, body)
    else:
        acc.check(interaction, rtype)


def _operation(acc: Access, rtype: str | None, name: str, rid: str | None) -> None:
    g.interaction = "operation"
    body: object = None
    if request.method == "POST" and (request.mimetype or "").endswith("json"):
        limit = current_app.config["SETTINGS"].max_body_bytes
        if request.content_length is not None and request.content_length <= limit:
            try:
                body = orjson.loads(request.get_data(cache=True))
            except orjson.JSONDecodeError:
                body = None  # the operation reports the bad body itself
    refs = list(iter_patient_refs_in_params(request.args.items(multi=True), body))
    acc.check_operation(rtype, name, rid, refs)
    g.operation = (rtype, name)
    if (rtype, name) == ("ResearchStudy", "candidates") and not acc.caller.is_admin \
            and request.args.get("consent", "").lower() == "any":
        # Proposing people without their research consent rests on a configured legal basis, not a parameter.
        raise Forbidden("consent=any is for administrators; research teams see consenting candidates only",
                        "consent")


# -- token endpoint and discovery --------------------------------------------------------------
def _root() -> str:
    """The public root URL: GATEWAY_BASE_URL without its /fhir, else the request's root."""
    configured = current_app.config["SETTINGS"].base_url
    if configured:
        parts = urlsplit(configured.rstrip("/"))
        path = parts.path[: -len("/fhir")] if parts.path.endswith("/fhir") else parts.path
        return f"{parts.scheme}://{parts.netloc}{path}"
    return request.url_root.rstrip("/")


def token_url() -> str:
    return f"{_root()}/auth/token"


def issuer() -> str:
    return f"{_root()}/auth"


def _oauth_error(exc: OAuthError) -> Response:
    """RFC 6749 section 5.2: {"error", "error_description"}; 401 invalid_client carries WWW-Authenticate."""
    log.info("token refused: %s", exc.description)
    resp = jsonify({"error": exc.error, "error_description": exc.description})
    resp.status_code = int(exc.status)
    resp.headers["Cache-Control"] = "no-store"
    resp.headers["Pragma"] = "no-cache"
    if exc.status == HTTPStatus.UNAUTHORIZED:
        resp.headers["WWW-Authenticate"] = 'Bearer realm="token", error="invalid_client"'
    return resp


@bp.errorhandler(FhirError)
def _token_endpoint_errors(exc: FhirError):
    """Errors raised before the token view runs (a bad Authorization header, the rate limit) answer in the
    token endpoint's own RFC 6749 form; every other route of this blueprint keeps its OperationOutcome."""
    if request.endpoint != "auth.token":
        return fhir_response(exc.outcome(), exc.status, exc.headers)
    if exc.status == HTTPStatus.UNAUTHORIZED:
        return _oauth_error(OAuthError("invalid_client", exc.diagnostics, HTTPStatus.UNAUTHORIZED))
    resp = _oauth_error(OAuthError("invalid_request", exc.diagnostics, exc.status))
    resp.headers.update(exc.headers)
    return resp


@bp.post("/auth/token")
def token():
    if request.mimetype != "application/x-www-form-urlencoded":
        return _oauth_error(OAuthError("invalid_request", "the token request must be an "
                                       "application/x-www-form-urlencoded form (RFC 6749 section 4.4)"))
    try:
        body = state().tokens.issue(request.form.to_dict(flat=False), token_url(), issuer(), base_url())
    except NotConfigured as exc:
        return fhir_response(operation_outcome([Issue("not-supported", str(exc))]), HTTPStatus.SERVICE_UNAVAILABLE)
    except OAuthError as exc:
        return _oauth_error(exc)
    resp = jsonify(body)
    resp.headers["Cache-Control"] = "no-store"
    resp.headers["Pragma"] = "no-cache"
    return resp


@bp.get("/auth/jwks")
def jwks():
    return jsonify(state().tokens.public_jwks())


@bp.get("/fhir/.well-known/smart-configuration")
def smart_configuration():
    return jsonify({
        "issuer": issuer(),
        "jwks_uri": f"{_root()}/auth/jwks",
        "token_endpoint": token_url(),
        "token_endpoint_auth_methods_supported": ["private_key_jwt"],
        "token_endpoint_auth_signing_alg_values_supported": list(ASSERTION_ALGS),
        "grant_types_supported": ["client_credentials"],
        "scopes_supported": ["system/*.cruds", "patient/*.cruds"],
        "capabilities": ["client-confidential-asymmetric", "permission-v2"],
    })


# -- administration: erasure -------------------------------------------------------------------
@bp.post("/admin/erasure")
def erasure():
    """Erase one person: a Parameters body with nhsNumber (valueString) or patient (valueReference).

    ``?dryRun=true`` reports what would be removed. Answers a Parameters report (ids and counts only).
    """
    from gateway.api.http import json_body

    g.interaction = "erase"
    body = json_body()
    if not isinstance(body, dict) or body.get("resourceType") != "Parameters":
        raise InvalidResource("POST /admin/erasure needs a Parameters resource", "Parameters")
    nhs = patient = None
    for p in body.get("parameter") or []:
        if not isinstance(p, dict):
            continue
        if p.get("name") == "nhsNumber" and isinstance(p.get("valueString"), str):
            nhs = check_nhs_number(p["valueString"])
        elif p.get("name") == "patient" and isinstance(p.get("valueReference"), dict):
            ref = str(p["valueReference"].get("reference", ""))
            patient = ref.removeprefix("Patient/") if ref.startswith("Patient/") else None
            if not patient:
                raise InvalidResource("patient must reference Patient/<id>", "Parameters.parameter.valueReference")
    dry = request.args.get("dryRun", "false").lower() == "true"
    if dry:
        g.interaction = "erase-preview"
    store: Store = current_app.extensions["gateway.store"]
    report = erase_person(store, nhs_number=nhs, patient_id=patient, dry_run=dry)
    acc = access()
    acc.people.update(report.patients)
    if not dry:
        # The erasure is recorded even when routine auditing is off: the record is the proof it happened.
        caller = acc.caller
        event = audit_event(interaction="erase", status=200, client_id=caller.client_id, role=caller.role,
                            request_id=g.get("request_id", ""), people=report.patients,
                            detail=f"erased {sum(report.removed.values())} resources, {report.versions} versions")
        write_audit(store, event)
        g.audited = True
    out = report.to_parameters()
    out["parameter"].insert(0, {"name": "dryRun", "valueBoolean": dry})
    return fhir_response(out)


# -- helpers the FHIR views call (one line each) -----------------------------------------------
def see(st):
    """A stored version the caller asked for by id: returned if visible, else NotFound (no existence leak)."""
    acc = access()
    res = st.resource() if st.content else None
    if not acc.can_see(res):
        raise NotFound(f"{st.type}/{st.id} is not known", f"{st.type}.id")
    acc.note(st.type, st.id, res)
    return st


def read(rtype: str, rid: str, version: int | None = None):
    """read / vread as the caller: NotFound (not Gone) when the caller may not see the resource, so a
    deleted resource of someone else does not reveal that its id once existed. A vread is authorized on the
    resource before its versions are looked at: another's resource answers like a missing one, whichever
    version is asked for."""
    store: Store = current_app.extensions["gateway.store"]
    if version is not None and not access().caller.is_admin:
        _visible_or_not_found(store, rtype, rid)
    try:
        return see(store.read(rtype, rid) if version is None else store.vread(rtype, rid, version))
    except Gone:
        if not access().caller.is_admin:
            _visible_or_not_found(store, rtype, rid)
        raise


def _visible_or_not_found(store: Store, rtype: str, rid: str) -> None:
    """NotFound ("is not known", as for an id never stored) unless the caller may see the resource: its
    current content, or for a deleted one its last content."""
    current = store.read_many([(rtype, rid)])
    if current:
        last = current[0]
    else:
        try:
            _, rows = store.history(rtype, rid, count=50)
        except NotFound:
            rows = []
        last = next((r for r in rows if r.content), None)
    if last is None or not access().can_see(last.resource()):
        raise NotFound(f"{rtype}/{rid} is not known", f"{rtype}.id")


def filter_rows(rows: list) -> list:
    """Search, _include and history rows -> the ones the caller may see."""
    return access().filter(rows)


def can_see_row(st: Stored) -> bool:
    """May the caller read this stored row (nothing noted for the audit trail: it is not returned yet)?"""
    return access().can_see(st.resource() if st.content else None)


def narrow_search(rtype: str, items: list[tuple[str, str]]) -> list[tuple[str, str]]:
    return access().narrow_search(rtype, items)


def limit_chains(query: SearchQuery) -> None:
    """Chained criteria follow only the targets the caller may read (see ``Access.limit_chains``)."""
    access().limit_chains(query)


def show_total(rtype: str | None) -> bool:
    return access().exact_totals(rtype)


def prepare_write(rtype: str, resource: object) -> object:
    """Stamp the caller's tenant on content about to be written (checked again inside the transaction)."""
    if isinstance(resource, dict):
        access().prepare_write(rtype, resource)
    return resource


def check_bundle(bundle: object) -> None:
    """Every entry of a transaction or batch is checked like the REST call it stands for."""
    if not isinstance(bundle, dict) or not isinstance(bundle.get("entry"), list):
        return
    acc = access()
    for i, entry in enumerate(bundle["entry"]):
        if not isinstance(entry, dict) or not isinstance(entry.get("request"), dict):
            continue
        req = entry["request"]
        method, url = req.get("method"), req.get("url")
        if not isinstance(url, str) or method not in ("GET", "POST", "PUT", "DELETE"):
            continue
        path, _, query = url.partition("?")
        parts = [p for p in path.strip("/").split("/") if p]
        if not parts:
            continue
        try:
            if parts[0] == "_history" or parts[0].startswith("$") or any(p.startswith("$") for p in parts):
                raise Forbidden("History and operations are not allowed inside a Bundle here", "request.url")
            if len(parts) >= 2 and parts[1] == "_history":
                acc.check_history(parts[0])
                continue
            interaction = {"POST": "create", "PUT": "update", "DELETE": "delete"}.get(method) or (
                "read" if len(parts) == 2 and not query else "search")
            if interaction in ("create", "update"):
                acc.check_write(interaction, parts[0], entry.get("resource"), "Bundle.entry.resource.resourceType")
            else:
                acc.check(interaction, parts[0])
        except FhirError as exc:
            raise exc.prefixed(f"Bundle.entry[{i}]") from None
        if method in ("POST", "PUT") and isinstance(entry.get("resource"), dict):
            acc.prepare_write(parts[0], entry["resource"])


def filter_bundle_response(result: dict) -> dict:
    """transaction-response / batch-response: resources the caller may not see are left out."""
    acc = access()
    for e in result.get("entry") or []:
        res = e.get("resource")
        if isinstance(res, dict) and res.get("resourceType") != "Bundle" and not acc.can_see(res):
            e.pop("resource")
    return result


def read_for_bundle(st) -> dict:
    return see(st).resource()



def filter_history(rtype: str | None, rid: str | None, rows: list) -> list:
    """History entries the caller may see; an instance the caller may not see is NotFound."""
    acc = access()
    if acc.caller.is_admin:
        return rows
    if rid is not None and rtype is not None:
        current = current_app.extensions["gateway.store"].read_many([(rtype, rid)])
        shown = current[0] if current else next((r for r in rows if r.content), None)
        if shown is None or not acc.can_see(shown.resource()):
            raise NotFound(f"{rtype}/{rid} is not known", f"{rtype}.id")
        return [r for r in rows if r.content is None or acc.can_see(r.resource())]
    return acc.filter(r for r in rows if r.content)
