"""Who is calling: resolved in exactly one place for every request.

A presented bearer token is always verified (401 with an OperationOutcome and WWW-Authenticate when it
does not). Without a token: with clients configured only public endpoints answer; without clients
(development mode) the caller is the local administrator.
"""

from __future__ import annotations

from flask import Request, current_app

from gateway.fhir.errors import Unauthorized
from gateway.security.principal import LOCAL_ADMIN, Caller
from gateway.security.tokens import TokenRejected

__all__ = ["Caller", "LOCAL_ADMIN", "resolve_caller"]

_ANONYMOUS = Caller(client_id="anonymous", role="anonymous", authenticated=False)
# The patient pages and their static files (gateway/web): public, like a website; no bearer token needed.
PAGE_PATHS = frozenset({"/", "/trials"})
PAGE_PREFIXES = ("/trials/", "/static/web/", "/assets/images/")


def _challenge(error: str, description: str) -> dict:
    desc = description.replace('"', "'")
    return {"WWW-Authenticate": f'Bearer realm="fhir", error="{error}", error_description="{desc}"'}


def resolve_caller(request: Request) -> Caller:
    """Request -> Caller; Unauthorized (401) for a bad token, or for no token when clients are configured."""
    from gateway.api.authstate import EXT, PUBLIC_PATHS
    from gateway.api.tokens import issuer

    sec = current_app.extensions.get(EXT)
    header = request.headers.get("Authorization")
    if header is not None:
        scheme, _, token = header.strip().partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise Unauthorized("The Authorization header must be 'Bearer <token>'", "Authorization",
                               headers=_challenge("invalid_request", "expected a Bearer token"))
        if sec is None:
            raise Unauthorized("Tokens cannot be verified: security is not initialised", "Authorization")
        hit = sec.tokens.cached(token.strip())
        if hit is not None:
            return hit
        from gateway.api.http import base_url

        try:
            return sec.tokens.caller_for(token.strip(), issuer(), base_url())
        except TokenRejected as exc:
            raise Unauthorized(f"The bearer token was rejected: {exc}", "Authorization",
                               headers=_challenge("invalid_token", str(exc))) from None
    from gateway.api.signin import SIGN_IN_PATHS, session_caller_for

    patient = session_caller_for(request)  # a signed-in patient's session, on the pages and /patient/ only
    if patient is not None:
        return patient
    if request.path in SIGN_IN_PATHS:
        return _ANONYMOUS  # signing in needs no token (the views check state, nonce and the CSRF token)
    if request.path in PAGE_PATHS or request.path.startswith(PAGE_PREFIXES):
        return _ANONYMOUS  # the public patient pages (gateway/web); they act as the public or the session's patient
    if sec is not None and sec.enabled:
        if request.path in PUBLIC_PATHS:
            return _ANONYMOUS
        raise Unauthorized("This endpoint needs a bearer token (see /fhir/.well-known/smart-configuration)",
                           "Authorization", headers={"WWW-Authenticate": 'Bearer realm="fhir"'})
    return LOCAL_ADMIN
