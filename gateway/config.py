"""Configuration, read only from the environment (GATEWAY_*). No secret has a default."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

DEFAULT_INSTANCE = Path(os.environ.get("GATEWAY_INSTANCE_PATH", "instance"))


def _int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise SystemExit(f"{name} must be an integer, got {raw!r}") from None


def _bool(name: str, default: bool = False) -> bool:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    return raw.strip().lower() in {"1", "true", "yes", "on"}


def _secret(name: str) -> str | None:
    """A secret from ``NAME`` or from the file named by ``NAME_FILE`` (container secrets); no default."""
    raw = os.environ.get(name)
    if raw:
        return raw
    path = os.environ.get(f"{name}_FILE")
    if path:
        try:
            return Path(path).read_text()
        except OSError as exc:
            raise SystemExit(f"{name}_FILE={path!r} cannot be read: {exc.strerror}") from None
    return None


def _clients_path() -> Path | None:
    """GATEWAY_CLIENTS_PATH when set (a folder that must exist: checked at start-up, never a silent
    development mode); unset: ``mappings/clients`` if that folder exists, else None (development mode)."""
    raw = os.environ.get("GATEWAY_CLIENTS_PATH")
    if raw:
        return Path(raw)
    default = Path("mappings/clients")
    return default if default.is_dir() else None


@dataclass
class Settings:
    """Everything that varies by deployment. ``Settings.from_env()`` is the only reader of os.environ."""

    database_url: str = ""
    read_database_url: str | None = None  # a streaming replica for GET searches, reads, $match, $candidates
    instance_path: Path = field(default_factory=lambda: DEFAULT_INSTANCE)
    base_url: str | None = None  # public base of the FHIR endpoint, e.g. https://gw.example.org/fhir
    max_body_bytes: int = 10 * 1024 * 1024
    max_bundle_entries: int = 1000
    max_json_depth: int = 64
    default_count: int = 20
    max_count: int = 1000
    max_search_value_length: int = 4096  # characters in one search parameter value (gateway/fhir/limits.py)
    max_search_parameters: int = 32  # search criteria in one query (each one joins the index once)
    mappings_path: Path = Path("mappings")
    insecure_dev: bool = False
    sql_echo: bool = False
    # security (gateway/security): no clients_path = development mode (no clients, local administrator)
    clients_path: Path | None = None
    token_signing_key: str | None = None  # PEM private key (RSA or EC P-384) for the access tokens we issue
    idp_jwks_url: str | None = None
    idp_jwks_file: Path | None = None
    idp_issuer: str | None = None
    idp_audience: str | None = None
    idp_nhs_number_claim: str = "nhs_number"
    rate_limit: int = 600  # requests per minute per authenticated client; 0 = off
    audit: str = "auto"  # auto (on when clients are configured) | on | off
    # patient sign-in with OpenID Connect (NHS login in production) and patient actions (docs/patient-actions.md)
    oidc_issuer: str | None = None  # e.g. https://auth.login.nhs.uk (discovery: <issuer>/.well-known/...)
    oidc_client_id: str | None = None
    oidc_client_secret: str | None = None  # client_secret_basic; or oidc_private_key (private_key_jwt, NHS login)
    oidc_private_key: str | None = None  # PEM private key for private_key_jwt client authentication
    oidc_private_key_alg: str = "RS512"  # NHS login asks for RS512
    oidc_redirect_uri: str | None = None  # the gateway's /patient/callback URL as registered with the provider
    oidc_scopes: str = "openid profile"
    oidc_vtr: str | None = None  # NHS login vector of trust, e.g. ["P9.Cp.Cd"]; sent as the vtr parameter
    session_secret: str | None = None  # signs the patient session cookie
    session_cookie_secure: bool = True  # Secure cookie flag; off only for plain-http development and tests
    patient_session_minutes: int = 30
    patient_alert_endpoint: str | None = None  # rest-hook standing for e-mail / NHS App push of trial alerts
    patient_alert_header: str | None = None  # one 'Name: value' header sent with each alert (a channel secret)
    # operations (gateway/observability): JSON logs at this level; the worker's own /metrics port (0 = none)
    log_level: str = "INFO"
    worker_metrics_port: int = 0
    worker_metrics_host: str = "127.0.0.1"

    @classmethod
    def from_env(cls) -> Settings:
        instance = Path(os.environ.get("GATEWAY_INSTANCE_PATH", "instance"))
        url = os.environ.get("GATEWAY_DATABASE_URL") or f"sqlite:///{(instance / 'gateway.sqlite3').resolve()}"
        return cls(
            database_url=url,
            read_database_url=os.environ.get("GATEWAY_READ_DATABASE_URL") or None,
            instance_path=instance,
            base_url=os.environ.get("GATEWAY_BASE_URL") or None,
            max_body_bytes=_int("GATEWAY_MAX_BODY_BYTES", 10 * 1024 * 1024),
            max_bundle_entries=_int("GATEWAY_MAX_BUNDLE_ENTRIES", 1000),
            max_json_depth=_int("GATEWAY_MAX_JSON_DEPTH", 64),
            default_count=_int("GATEWAY_DEFAULT_COUNT", 20),
            max_count=_int("GATEWAY_MAX_COUNT", 1000),
            max_search_value_length=_int("GATEWAY_MAX_SEARCH_VALUE_LENGTH", 4096),
            max_search_parameters=_int("GATEWAY_MAX_SEARCH_PARAMETERS", 32),
            mappings_path=Path(os.environ.get("GATEWAY_MAPPINGS_PATH", "mappings")),
            insecure_dev=_bool("GATEWAY_INSECURE_DEV"),
            sql_echo=_bool("GATEWAY_SQL_ECHO"),
            clients_path=_clients_path(),
            token_signing_key=_secret("GATEWAY_TOKEN_SIGNING_KEY"),
            idp_jwks_url=os.environ.get("GATEWAY_IDP_JWKS_URL") or None,
            idp_jwks_file=Path(os.environ["GATEWAY_IDP_JWKS_FILE"]) if os.environ.get("GATEWAY_IDP_JWKS_FILE")
            else None,
            idp_issuer=os.environ.get("GATEWAY_IDP_ISSUER") or None,
            idp_audience=os.environ.get("GATEWAY_IDP_AUDIENCE") or None,
            idp_nhs_number_claim=os.environ.get("GATEWAY_IDP_NHS_NUMBER_CLAIM") or "nhs_number",
            rate_limit=_int("GATEWAY_RATE_LIMIT", 600),
            audit=(os.environ.get("GATEWAY_AUDIT") or "auto").strip().lower(),
            oidc_issuer=(os.environ.get("GATEWAY_OIDC_ISSUER") or "").rstrip("/") or None,
            oidc_client_id=os.environ.get("GATEWAY_OIDC_CLIENT_ID") or None,
            oidc_client_secret=_secret("GATEWAY_OIDC_CLIENT_SECRET"),
            oidc_private_key=_secret("GATEWAY_OIDC_PRIVATE_KEY"),
            oidc_private_key_alg=os.environ.get("GATEWAY_OIDC_PRIVATE_KEY_ALG") or "RS512",
            oidc_redirect_uri=os.environ.get("GATEWAY_OIDC_REDIRECT_URI") or None,
            oidc_scopes=os.environ.get("GATEWAY_OIDC_SCOPES") or "openid profile",
            oidc_vtr=os.environ.get("GATEWAY_OIDC_VTR") or None,
            session_secret=_secret("GATEWAY_SESSION_SECRET"),
            session_cookie_secure=_bool("GATEWAY_SESSION_COOKIE_SECURE", True),
            patient_session_minutes=_int("GATEWAY_PATIENT_SESSION_MINUTES", 30),
            patient_alert_endpoint=os.environ.get("GATEWAY_PATIENT_ALERT_ENDPOINT") or None,
            patient_alert_header=_secret("GATEWAY_PATIENT_ALERT_HEADER"),
            log_level=(os.environ.get("GATEWAY_LOG_LEVEL") or "INFO").strip().upper(),
            worker_metrics_port=_int("GATEWAY_WORKER_METRICS_PORT", 0),
            worker_metrics_host=os.environ.get("GATEWAY_WORKER_METRICS_HOST") or "127.0.0.1",
        )
