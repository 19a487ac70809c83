"""The token endpoint (``POST /auth/token``, SMART Backend Services client credentials), the issuer's public
keys (``/auth/jwks``) and SMART discovery (``/fhir/.well-known/smart-configuration``)."""

from __future__ import annotations

import logging
from http import HTTPStatus
from urllib.parse import urlsplit

from flask import Blueprint, Response, current_app, jsonify, request

from gateway.api.authstate import state
from gateway.api.http import base_url, fhir_response
from gateway.fhir.errors import FhirError, Issue, operation_outcome
from gateway.security.tokens import ASSERTION_ALGS, NotConfigured, OAuthError

log = logging.getLogger("gateway.security")
bp = Blueprint("auth", __name__)  # endpoint names auth.token, auth.jwks, auth.smart_configuration


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
