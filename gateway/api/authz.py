"""Per-request security hooks: who may do what the URL names, before any view runs.

``before`` refuses NUL characters, applies the rate limit, authorizes the interaction the URL names
(read, search, create, ``$operation`` ...) through ``gateway.security.policy.Access`` -- so views added later
are covered too -- and stamps the caller's tenant on a write's body. ``after`` adds the development-mode
warning and the bearer challenge, filters operation results and hands the response to the audit trail.
The store's write hooks (``gateway.security.guards``, installed by gateway/compose.py) check writes inside the
transaction.
"""

from __future__ import annotations

import logging
from http import HTTPStatus

import orjson
from flask import Flask, Response, current_app, g, request

from gateway.api import audit
from gateway.api.authstate import EXT, PUBLIC_PATHS, anonymous, state
from gateway.fhir.errors import Forbidden, InvalidResource, TooManyRequests
from gateway.fhir.interaction import parse_interaction
from gateway.fhir.limits import NUL, find_nul
from gateway.security.policy import Access, current_access, iter_patient_refs_in_params
from gateway.security.principal import Caller
from gateway.security.ratelimit import RateLimiter

log = logging.getLogger("gateway.security")
INSECURE_WARNING = '199 - "insecure development mode: no client authentication (GATEWAY_INSECURE_DEV)"'
# Operations whose results are people chosen by their own rules (consent, study ownership checked above).
TRUSTED_RESULTS = frozenset({("ResearchStudy", "candidates")})


def install_request_hooks(app: Flask) -> None:
    """Authorization before every request, its response checks after, the request's Access released."""
    app.before_request_funcs.setdefault(None, []).append(before)
    app.after_request_funcs.setdefault(None, []).insert(0, after)
    app.teardown_request_funcs.setdefault(None, []).append(teardown)


# -- per request -------------------------------------------------------------------------------
def before() -> None:
    sec = state()
    _refuse_nul()
    caller: Caller = g.get("caller") or anonymous()
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
    if "parsed_body" in g:
        return g.parsed_body
    body = None
    limit = current_app.config["SETTINGS"].max_body_bytes
    if (request.mimetype or "").endswith("json") and request.content_length is not None \
            and request.content_length <= limit:
        try:
            body = orjson.loads(request.get_data(cache=True))
        except orjson.JSONDecodeError:
            body = None
    g.parsed_body = body
    return body


def _stamp_body(acc: Access, body: dict) -> None:
    """Stamp the caller's tenant on the body of every FHIR write, whichever view handles it.

    The body is parsed once (``_json_body``) and the stamped bytes put back as the request's cached body, so
    views added later (contact requests, ingest) store stamped content without knowing about tenants.
    """
    acc.prepare_body(body)
    request._cached_data = orjson.dumps(body)  # werkzeug's body cache, read by every later get_data()


def teardown(_exc) -> None:
    token = g.pop("access_token", None)
    if token is not None:
        current_access.reset(token)


def after(resp: Response) -> Response:
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
        audit.record(resp)
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
    it = parse_interaction(request.method, path[len("/fhir"):])
    if it.name == "transaction":
        g.interaction = "transaction"  # each entry is checked by the view (check_bundle)
        return
    if it.rtype is not None:
        g.rtype = it.rtype
    if it.name == "operation":
        _operation(acc, it.rtype, it.operation, it.rid)
        return
    if it.name is None:
        return  # the view answers 404/405
    g.interaction = it.name
    acc.check_interaction(it, body)


def _operation(acc: Access, rtype: str | None, name: str, rid: str | None) -> None:
    g.interaction = "operation"
    body = _json_body() if request.method == "POST" else None  # a bad body: the operation reports it itself
    refs = list(iter_patient_refs_in_params(request.args.items(multi=True), body))
    acc.check_operation(rtype, name, rid, refs)
    g.operation = (rtype, name)
    if (rtype, name) == ("ResearchStudy", "candidates") and not acc.caller.is_admin \
            and request.args.get("consent", "").lower() == "any":
        # Proposing people without their research consent rests on a configured legal basis, not a parameter.
        raise Forbidden("consent=any is for administrators; research teams see consenting candidates only",
                        "consent")
