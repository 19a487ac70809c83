"""Patient sign-in for the web pages: OpenID Connect authorization code flow with PKCE, state and nonce (authlib).

Routes: ``GET /patient/login?next=/trials/123`` (to the provider), ``GET /patient/callback`` (back from it),
``POST /patient/logout`` (with the CSRF token). The signed-in person's NHS number (claim ``nhs_number``, as
NHS login names it) is kept in the signed session cookie (HttpOnly, SameSite=Lax, Secure unless configured
off), with a random session id and a CSRF token. Nothing else about the person is kept.

For other code: ``current_patient()`` -> SignedInPatient or None; ``csrf_token()``; ``check_csrf()``;
``session_caller_for(request)`` (used by ``gateway.api.caller.resolve_caller``, the one place callers are
resolved).
"""

from __future__ import annotations

import hmac
import logging
import secrets
import time
from dataclasses import dataclass
from datetime import timedelta
from http import HTTPStatus

from authlib.integrations.base_client.errors import OAuthError
from authlib.integrations.flask_client import FlaskOAuth2App, OAuth
from authlib.oauth2.rfc7523 import PrivateKeyJWT
from flask import Blueprint, Flask, Request, current_app, redirect, request, session
from requests import RequestException

from gateway.config import Settings
from gateway.fhir.errors import FhirError, Forbidden, Unauthorized
from gateway.outbound.errors import OutboundError
from gateway.outbound.http import HttpClient
from gateway.outbound.oauth import OutboundOAuth2Session
from gateway.security.oidc import NoNhsNumber, nhs_number_of, session_caller
from gateway.security.principal import Caller

log = logging.getLogger("gateway.signin")
EXT = "gateway.signin"
SESSION_KEY = "patient"
# Paths where the session cookie stands for the patient (the FHIR API takes bearer tokens only, so a cookie can
# never be replayed cross-site against it).
SESSION_PATHS = ("/patient/", "/trials")
SIGN_IN_PATHS = frozenset({"/patient/login", "/patient/callback", "/patient/logout"})  # answered without a token

bp = Blueprint("signin", __name__, url_prefix="/patient")


class SignInNotConfigured(FhirError):
    """503: GATEWAY_OIDC_* or GATEWAY_SESSION_SECRET is missing; the OperationOutcome names what."""

    status = HTTPStatus.SERVICE_UNAVAILABLE
    code = "not-supported"


class SignInFailed(FhirError):
    """The provider's answer did not sign anybody in (state, nonce, code, ID token or NHS number)."""

    status = HTTPStatus.UNAUTHORIZED
    code = "login"


@dataclass(frozen=True)
class SignedInPatient:
    nhs_number: str
    session_id: str
    csrf_token: str

    @property
    def caller(self) -> Caller:
        return session_caller(self.nhs_number, self.session_id)


class _ProviderApp(FlaskOAuth2App):
    """authlib's Flask client whose provider calls go through the outbound client (gateway.outbound.oauth)."""

    client_cls = OutboundOAuth2Session


def provider_http(s: Settings) -> HttpClient:
    """The outbound client of the provider calls (discovery, JWKS, code exchange): the allow-list is the
    configured issuer's host plus GATEWAY_ALLOWED_HOSTS (a provider whose discovery document names endpoints on
    another host needs them there); the outbound timeouts, retries and log line."""
    return HttpClient(allowed_hosts=s.outbound.allowed_hosts.with_host_of(s.oidc.issuer or ""),
                      timeout=(5.0, 30.0), max_retries=s.outbound.client_retries)


# What a provider call can fail with: the outbound client's typed errors (a host not allowed, a timeout, a
# redirect), requests' (authlib's raise_for_status), authlib's (its error answers), and an unusable document.
_PROVIDER_ERRORS = (OutboundError, RequestException, OAuthError, ValueError, RuntimeError)


def _settings() -> Settings:
    return current_app.config["SETTINGS"]


def missing_settings(s: Settings) -> list[str]:
    """The settings sign-in still needs ([] when it can work)."""
    o = s.oidc
    out = [name for name, value in (("GATEWAY_OIDC_ISSUER", o.issuer), ("GATEWAY_OIDC_CLIENT_ID", o.client_id),
                                    ("GATEWAY_OIDC_REDIRECT_URI", o.redirect_uri),
                                    ("GATEWAY_SESSION_SECRET", o.session_secret)) if not value]
    if not (o.client_secret or o.private_key):
        out.append("GATEWAY_OIDC_CLIENT_SECRET or GATEWAY_OIDC_PRIVATE_KEY")
    return out


def init_app(app: Flask) -> None:
    """Session cookie settings, the OIDC client (when configured) and the routes."""
    s: Settings = app.config["SETTINGS"]
    o = s.oidc
    if o.session_secret and not app.secret_key:
        app.secret_key = o.session_secret
    app.config.update(SESSION_COOKIE_NAME="gateway_session", SESSION_COOKIE_HTTPONLY=True,
                      SESSION_COOKIE_SAMESITE="Lax", SESSION_COOKIE_SECURE=o.session_cookie_secure,
                      PERMANENT_SESSION_LIFETIME=timedelta(minutes=o.session_minutes))
    oauth = OAuth(app)
    client = None
    if not missing_settings(s):
        # authlib builds the provider calls (discovery, keys, code exchange); they are sent by the outbound
        # client: allow-list, timeouts (a slow provider cannot hold a request thread), retries, log line
        kwargs: dict = {"scope": o.scopes, "code_challenge_method": "S256", "outbound": provider_http(s)}
        auth_methods = None
        secret = o.client_secret
        if o.private_key:  # NHS login: private_key_jwt (RS512); the key stays in this process
            kwargs["token_endpoint_auth_method"] = "private_key_jwt"
            auth_methods = [PrivateKeyJWT(alg=o.private_key_alg)]
            secret = o.private_key
        client = oauth.register("patient", client_id=o.client_id, client_secret=secret,
                                server_metadata_url=f"{o.issuer}/.well-known/openid-configuration",
                                client_kwargs=kwargs, client_auth_methods=auth_methods, client_cls=_ProviderApp)
    app.extensions[EXT] = client
    app.register_blueprint(bp)


def _client():
    client = current_app.extensions.get(EXT)
    if client is None:
        raise SignInNotConfigured("Patient sign-in is not configured: set "
                                  + ", ".join(missing_settings(_settings())), "GATEWAY_OIDC_ISSUER")
    return client


def _why(exc: Exception) -> str:
    """A provider failure for the log: the outbound client's message (host and path, never a query, a body or a
    token), else only the type's name."""
    return exc.message if isinstance(exc, OutboundError) else type(exc).__name__


def _safe_next(value: str | None) -> str:
    """Only a path on this site (never //host or a scheme): no open redirect."""
    if value and value.startswith("/") and not value.startswith("//") and "\\" not in value:
        return value
    return "/"


# -- the current patient ----------------------------------------------------------------------------
def current_patient() -> SignedInPatient | None:
    """The signed-in patient of this request, or None (not signed in, or the session has expired)."""
    data = session.get(SESSION_KEY)
    if not isinstance(data, dict):
        return None
    if time.time() - float(data.get("at", 0)) > _settings().oidc.session_minutes * 60:
        session.pop(SESSION_KEY, None)
        return None
    try:
        return SignedInPatient(str(data["nhs"]), str(data["sid"]), str(data["csrf"]))
    except KeyError:
        return None


def require_patient() -> SignedInPatient:
    """The signed-in patient, or 401 (the pages send people to /patient/login instead)."""
    patient = current_patient()
    if patient is None:
        raise Unauthorized("Sign in first (GET /patient/login)", "session")
    return patient


def csrf_token() -> str | None:
    """The signed-in session's CSRF token (for forms: a hidden field ``csrf_token``), None when signed out."""
    patient = current_patient()
    return patient.csrf_token if patient else None


def check_csrf(req: Request | None = None) -> None:
    """A state-changing request made with the session cookie must carry the session's CSRF token (form field
    ``csrf_token`` or header ``X-CSRF-Token``); 403 otherwise."""
    req = req or request
    patient = current_patient()
    sent = req.headers.get("X-CSRF-Token") or (req.form.get("csrf_token") if req.mimetype in (
        "application/x-www-form-urlencoded", "multipart/form-data") else None)
    if patient is None or not sent or not hmac.compare_digest(sent, patient.csrf_token):
        raise Forbidden("This request needs the page's CSRF token (form field csrf_token or X-CSRF-Token)",
                        "csrf_token")


def session_caller_for(req: Request) -> Caller | None:
    """The Caller of a request carrying a signed-in session on a session path (no bearer token), else None."""
    if not req.path.startswith(SESSION_PATHS) or not current_app.secret_key:
        return None
    patient = current_patient()
    return patient.caller if patient else None


# -- routes ----------------------------------------------------------------------------------------
@bp.get("/login")
def login():
    """Off to the identity provider: authlib makes state, nonce and the PKCE verifier and keeps them in the
    session until the callback."""
    client = _client()
    session["after_sign_in"] = _safe_next(request.args.get("next"))
    o = _settings().oidc
    extra = {"vtr": o.vtr} if o.vtr else {}
    try:
        return client.authorize_redirect(o.redirect_uri, nonce=secrets.token_urlsafe(24), **extra)
    except _PROVIDER_ERRORS as exc:  # discovery document unreachable, refused or unusable
        log.warning("sign-in: the identity provider's metadata cannot be read (%s)", _why(exc))
        raise SignInNotConfigured("The identity provider cannot be reached; try again later", "login") from None


@bp.get("/callback")
def callback():
    """Back from the provider: check state (authlib), exchange the code with the PKCE verifier, verify the ID
    token (signature by the provider's JWKS, iss, aud, exp, nonce), then sign the person in."""
    client = _client()
    try:
        token = client.authorize_access_token()
    except OAuthError as exc:
        raise SignInFailed(f"Sign-in did not complete ({exc.error})", "callback") from None
    except _PROVIDER_ERRORS as exc:
        log.warning("sign-in: token exchange failed (%s)", _why(exc))
        raise SignInFailed("Sign-in did not complete (the identity provider's answer was not usable)",
                           "callback") from None
    claims = dict(token.get("userinfo") or {})
    if not claims:
        raise SignInFailed("Sign-in did not complete (no ID token)", "callback")
    try:
        nhs = nhs_number_of(claims, _settings().security.idp_nhs_number_claim)
    except NoNhsNumber:
        raise Forbidden("Your NHS login has no verified NHS number, which is needed to act on your records",
                        "nhs_number") from None
    after = _safe_next(session.get("after_sign_in"))
    session.clear()  # a fresh session at sign-in: nothing an attacker planted before survives
    session.permanent = True
    session[SESSION_KEY] = {"nhs": nhs, "sid": secrets.token_hex(8), "csrf": secrets.token_urlsafe(32),
                            "at": time.time()}
    log.info("patient signed in")
    return redirect(after, code=HTTPStatus.SEE_OTHER)


@bp.post("/logout")
def logout():
    check_csrf()
    session.clear()
    return redirect(_safe_next(request.form.get("next")), code=HTTPStatus.SEE_OTHER)


__all__ = ["SESSION_PATHS", "SIGN_IN_PATHS", "SignedInPatient", "bp", "check_csrf", "csrf_token", "current_patient",
           "init_app", "require_patient", "session_caller_for"]
