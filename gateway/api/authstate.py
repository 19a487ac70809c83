"""The security state every API module shares: the clients, the token service, the rate limiter and the audit
switch (``SecurityState``, built once per app), the paths open without a token, and this request's ``Access``.

The bottom of the API's security modules: ``authz`` (request hooks), ``tokens`` (token endpoint, discovery),
``audit``, ``erasure`` and ``visibility`` (view helpers) import it, never the other way round.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from flask import current_app, g

from gateway.config import Settings
from gateway.outbound.http import HttpClient
from gateway.security.clients import ClientConfigError, ClientRegistry, load_clients
from gateway.security.policy import Access
from gateway.security.principal import Caller
from gateway.security.ratelimit import RateLimiter
from gateway.security.tokens import TokenService
from gateway.store.audit import AuditWriter
from gateway.store.repo import Store

log = logging.getLogger("gateway.security")
EXT = "gateway.security"
PUBLIC_PATHS = frozenset({"/healthz", "/readyz", "/fhir/metadata", "/fhir/.well-known/smart-configuration",
                          "/auth/token", "/auth/jwks", "/fhir/metadata/"})


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


def build_state(settings: Settings, store: Store, registry: ClientRegistry | None = None) -> SecurityState:
    """The security state from the settings: clients (``registry``, as the composition root loaded them; else
    loaded here: a configured folder must exist and be readable), token service, rate limiter, audit switch.
    On a broken clients folder the store's connections are released (the app is not built) and
    ``ClientConfigError`` is raised."""
    if registry is None:
        try:
            registry = load_clients(settings.security.clients_path)
        except ClientConfigError:
            store.engine.dispose()  # the app is not built: release its database connections
            raise
    sec_settings = settings.security
    audit_on = sec_settings.audit == "on" or (sec_settings.audit == "auto" and bool(registry))
    sec = SecurityState(
        registry=registry,
        tokens=TokenService(registry, store.engine, signing_pem=sec_settings.token_signing_key,
                            idp_jwks_url=sec_settings.idp_jwks_url, idp_jwks_file=sec_settings.idp_jwks_file,
                            idp_issuer=sec_settings.idp_issuer, idp_audience=sec_settings.idp_audience,
                            nhs_number_claim=sec_settings.idp_nhs_number_claim,
                            fetch_json=_idp_keys(sec_settings.idp_jwks_url)),
        limiter=RateLimiter(sec_settings.rate_limit), audit=audit_on, insecure_dev=sec_settings.insecure_dev,
        audit_writer=AuditWriter(store))
    if not registry:
        log.warning("no clients configured (GATEWAY_CLIENTS_PATH=%s): development mode, every caller without a "
                    "token is the local administrator", settings.security.clients_path)
    return sec


def _idp_keys(url: str | None):
    """How the identity provider's JWKS URL is read: the outbound client (timeout, log line), allowed to reach
    that configured host only; no retries (a request waits on it)."""
    return HttpClient.for_configured_url(url, timeout=(5.0, 5.0), max_retries=0).get_json if url else None


def state() -> SecurityState:
    """This app's security state."""
    return current_app.extensions[EXT]


def anonymous() -> Caller:
    """The caller of a request that presented no token on a public path."""
    return Caller(client_id="anonymous", role="anonymous", authenticated=False)


def access() -> Access:
    """This request's Access (the caller's view of the store)."""
    acc = g.get("access")
    if acc is None:
        acc = g.access = Access(g.get("caller") or anonymous(), current_app.extensions["gateway.store"])
    return acc
