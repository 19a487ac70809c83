"""CSRF protection for the page forms: Flask-WTF's signed, time-limited tokens (``generate_csrf`` /
``validate_csrf``), applied to this blueprint's POSTs only.

Why Flask-WTF and not ``CSRFProtect``: the FHIR API beside the pages is called by servers with bearer tokens,
not by browsers with cookies, so an app-wide guard would have to exempt every API blueprint (and any added later).
The token is a random value kept in the signed session cookie, sent back signed in a hidden field; a form
without it, with another session's token or older than the limit is refused with a page (400), nothing done.
"""

from __future__ import annotations

import logging
import secrets

from flask import Flask, current_app, request
from flask_wtf.csrf import generate_csrf, validate_csrf
from wtforms import ValidationError

log = logging.getLogger("gateway.web")
FIELD = "csrf_token"
TIME_LIMIT_S = 3600


class CsrfFailed(Exception):
    """The form's CSRF token is missing, expired or not this session's."""


def init_app(app: Flask) -> None:
    """The session secret (``GATEWAY_SESSION_SECRET``) signs the session cookie and the tokens. Without one, a
    random per-process key is used and the log says so: sessions then end at a restart and are not shared by
    several gateway processes (fine for ``gateway serve``, not for production)."""
    settings = app.config["SETTINGS"]
    configured = settings.oidc.session_secret
    if configured and not app.secret_key:
        app.secret_key = configured
    if not app.secret_key:
        app.secret_key = secrets.token_bytes(32)
        log.warning("GATEWAY_SESSION_SECRET is not set: the pages use a random per-process session key")
    app.config.setdefault("WTF_CSRF_TIME_LIMIT", TIME_LIMIT_S)
    app.config["SESSION_COOKIE_HTTPONLY"] = True
    app.config["SESSION_COOKIE_SAMESITE"] = "Lax"
    if (settings.base_url or "").startswith("https://"):
        app.config["SESSION_COOKIE_SECURE"] = True


def token() -> str:
    """The token for this session (created on first use); templates put it in a hidden field."""
    return generate_csrf()


def check() -> None:
    """CsrfFailed unless the POSTed form carries this session's valid token."""
    try:
        validate_csrf(request.form.get(FIELD), time_limit=current_app.config.get("WTF_CSRF_TIME_LIMIT"))
    except ValidationError:
        log.info("form refused: CSRF token missing or invalid")
        raise CsrfFailed from None
