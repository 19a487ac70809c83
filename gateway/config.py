"""The settings tree: every deployment setting, read from the environment once, at process start.

``Settings.from_env()`` is the only reader of ``os.environ`` in the package (a test scans for others). It is
called once by each entry point (``gateway`` CLI, gunicorn's configuration, ``create_app()`` without
arguments); the object is then passed down and never re-read. A value that does not parse stops start-up
with one line naming the variable (``SystemExit``: exit code 1, no traceback). No secret has a default.

The tree: request limits, the public base URL and the data folders on the root (every part reads them); the
branches ``store`` (database), ``security`` (clients, tokens, rate limit, audit), ``oidc`` (patient sign-in and
its session), ``outbound`` (allow-list, hospitals, outbox), ``notify`` (subscriptions, opt-out, patient alerts),
``observability`` and ``server`` (gunicorn). Every branch is frozen: nothing changes a setting after start-up.
To add a setting: a field with its default in its branch, and one line in ``from_env`` naming the variable
(docs/configuration.md lists them all).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import MappingProxyType

from gateway.datafiles import BUNDLED_MAPPINGS
from gateway.outbound.allowlist import AllowList
from gateway.outbound.settings import OutboundSettings


class _Env:
    """Typed reads of one environment snapshot; every error names its variable."""

    def __init__(self, env: Mapping[str, str]):
        self.env = env

    def str(self, name: str, default: str | None = None) -> str | None:
        raw = self.env.get(name)
        return raw if raw else default

    def int(self, name: str, default: int) -> int:
        raw = self.env.get(name)
        if raw is None or raw == "":
            return default
        try:
            return int(raw)
        except ValueError:
            raise SystemExit(f"{name} must be an integer, got {raw!r}") from None

    def num(self, name: str, default: float) -> float:
        raw = self.env.get(name)
        if raw is None or raw == "":
            return default
        try:
            return float(raw)
        except ValueError:
            raise SystemExit(f"{name} must be a number, got {raw!r}") from None

    def bool(self, name: str, default: bool = False) -> bool:
        raw = self.env.get(name)
        if raw is None or raw == "":
            return default
        return raw.strip().lower() in {"1", "true", "yes", "on"}

    def choice(self, name: str, default: str, choices: tuple[str, ...], *, upper: bool = False) -> str:
        raw = (self.env.get(name) or default).strip()
        value = raw.upper() if upper else raw.lower()
        if value not in choices:
            raise SystemExit(f"{name} must be one of {', '.join(choices)}, got {raw!r}")
        return value

    def path(self, name: str) -> Path | None:
        raw = self.env.get(name)
        return Path(raw) if raw else None

    def secret(self, name: str) -> str | None:
        """A secret from ``NAME`` or from the file named by ``NAME_FILE`` (container secrets); no default."""
        raw = self.env.get(name)
        if raw:
            return raw
        path = self.env.get(f"{name}_FILE")
        if path:
            try:
                return Path(path).read_text()
            except OSError as exc:
                raise SystemExit(f"{name}_FILE={path!r} cannot be read: {exc.strerror}") from None
        return None


def _clients_path(env: _Env, mappings: Path) -> Path | None:
    """GATEWAY_CLIENTS_PATH when set (a folder that must exist: checked at start-up, never a silent
    development mode); unset: ``<mappings path>/clients`` (the package's own, or GATEWAY_MAPPINGS_PATH's) if that
    folder exists, else None (development mode). Never relative to the working folder."""
    configured = env.path("GATEWAY_CLIENTS_PATH")
    if configured:
        return configured
    default = mappings / "clients"
    return default if default.is_dir() else None


_LOG_LEVELS = tuple(logging.getLevelNamesMapping())


def child_environment(**overrides: str) -> dict[str, str]:
    """The environment for a child process this one starts (``gateway serve --demo``): this process's own, plus
    ``overrides``. Read here because this module is the only reader of the environment."""
    return {**os.environ, **overrides}


@dataclass(frozen=True)
class StoreSettings:
    """The database (gateway/store)."""

    database_url: str = ""  # GATEWAY_DATABASE_URL
    read_database_url: str | None = None  # a streaming replica for reads (GATEWAY_READ_DATABASE_URL); None: primary
    sql_echo: bool = False  # GATEWAY_SQL_ECHO


@dataclass(frozen=True)
class SecuritySettings:
    """Who may call the API and how tokens are checked (gateway/security)."""

    clients_path: Path | None = None  # no clients_path = development mode (no clients, local administrator)
    token_signing_key: str | None = None  # PEM private key (RSA or EC P-384) for the access tokens we issue
    idp_jwks_url: str | None = None
    idp_jwks_file: Path | None = None
    idp_issuer: str | None = None
    idp_audience: str | None = None
    idp_nhs_number_claim: str = "nhs_number"  # also the claim patient sign-in reads
    rate_limit: int = 600  # requests per minute per authenticated client; 0 = off
    audit: str = "auto"  # auto (on when clients are configured) | on | off
    insecure_dev: bool = False  # GATEWAY_INSECURE_DEV: development mode may bind a public address


@dataclass(frozen=True)
class OidcSettings:
    """Patient sign-in with OpenID Connect (NHS login in production) and its session (gateway/api/signin.py)."""

    issuer: str | None = None  # e.g. https://auth.login.nhs.uk (discovery: <issuer>/.well-known/...)
    client_id: str | None = None
    client_secret: str | None = None  # client_secret_basic; or private_key (private_key_jwt, NHS login)
    private_key: str | None = None  # PEM private key for private_key_jwt client authentication
    private_key_alg: str = "RS512"  # NHS login asks for RS512
    redirect_uri: str | None = None  # the gateway's /patient/callback URL as registered with the provider
    scopes: str = "openid profile"
    vtr: str | None = None  # NHS login vector of trust, e.g. ["P9.Cp.Cd"]; sent as the vtr parameter
    session_secret: str | None = None  # signs the patient session cookie
    session_cookie_secure: bool = True  # Secure cookie flag; off only for plain-http development and tests
    session_minutes: int = 30  # GATEWAY_PATIENT_SESSION_MINUTES


@dataclass(frozen=True)
class NotifySettings:
    """Subscriptions, the automatic flows and patient alerts (gateway/notify, docs/patient-actions.md)."""

    subscription_error_after: int = 3  # failed deliveries in a row before a Subscription shows 'error'
    national_optout: str | None = None  # file path or URL of the national data opt-out list
    patient_alert_endpoint: str | None = None  # rest-hook standing for e-mail / NHS App push of trial alerts
    patient_alert_header: str | None = None  # one 'Name: value' header sent with each alert (a channel secret)


@dataclass(frozen=True)
class ObservabilitySettings:
    """Logs and metrics (gateway/observability)."""

    log_level: str = "INFO"  # JSON logs at this level
    worker_metrics_port: int = 0  # the worker's own /metrics port (0 = none)
    worker_metrics_host: str = "127.0.0.1"
    # prometheus-client's multiprocess folder under gunicorn; the library itself reads it when first imported
    prometheus_multiproc_dir: str | None = None


@dataclass(frozen=True)
class ServerSettings:
    """gunicorn in the container image (gateway/gunicorn_conf.py)."""

    bind: str = "0.0.0.0:8080"
    workers: int = 2
    threads: int = 4


@dataclass(frozen=True)
class Settings:
    """Everything that varies by deployment; build it with ``from_env()`` once, or explicitly (tests). Frozen:
    nothing changes it after start-up (a test derives another with ``dataclasses.replace``)."""

    instance_path: Path = Path("instance")
    base_url: str | None = None  # public base of the FHIR endpoint, e.g. https://gw.example.org/fhir
    max_body_bytes: int = 10 * 1024 * 1024
    max_bundle_entries: int = 1000
    max_json_depth: int = 64
    default_count: int = 20
    max_count: int = 1000
    max_search_value_length: int = 4096  # characters in one search parameter value (gateway/fhir/limits.py)
    max_search_parameters: int = 32  # search criteria in one query (each one joins the index once)
    # mapping files, code systems, lexicons, topics, legal bases, hospitals, geography, clients: the package's
    # own (gateway/data/mappings) unless GATEWAY_MAPPINGS_PATH names another folder
    mappings_path: Path = BUNDLED_MAPPINGS
    # branches
    store: StoreSettings = field(default_factory=StoreSettings)
    security: SecuritySettings = field(default_factory=SecuritySettings)
    oidc: OidcSettings = field(default_factory=OidcSettings)
    outbound: OutboundSettings = field(default_factory=OutboundSettings)
    notify: NotifySettings = field(default_factory=NotifySettings)
    observability: ObservabilitySettings = field(default_factory=ObservabilitySettings)
    server: ServerSettings = field(default_factory=ServerSettings)

    def require_base_url(self, who: str) -> str:
        """GATEWAY_BASE_URL, or SystemExit naming it: for processes that write our URL into what they send."""
        if not self.base_url:
            raise SystemExit(f"{who}: GATEWAY_BASE_URL is required (the public base of the FHIR endpoint, e.g. "
                             "https://gw.example.org/fhir), because notifications name this server")
        return self.base_url.rstrip("/")

    def outbound_settings(self) -> OutboundSettings:
        """The outbound branch with the hospital files' folder resolved (default: <mappings_path>/hospitals)."""
        if self.outbound.hospitals_path is not None:
            return self.outbound
        return replace(self.outbound, hospitals_path=self.mappings_path / "hospitals")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Read and check every setting from ``environ`` (default: this process's environment)."""
        env = _Env(MappingProxyType(dict(os.environ if environ is None else environ)))
        instance = Path(env.str("GATEWAY_INSTANCE_PATH", "instance"))
        url = env.str("GATEWAY_DATABASE_URL") or f"sqlite:///{(instance / 'gateway.sqlite3').resolve()}"
        mappings = env.path("GATEWAY_MAPPINGS_PATH") or BUNDLED_MAPPINGS
        return cls(
            instance_path=instance,
            base_url=env.str("GATEWAY_BASE_URL"),
            max_body_bytes=env.int("GATEWAY_MAX_BODY_BYTES", 10 * 1024 * 1024),
            max_bundle_entries=env.int("GATEWAY_MAX_BUNDLE_ENTRIES", 1000),
            max_json_depth=env.int("GATEWAY_MAX_JSON_DEPTH", 64),
            default_count=env.int("GATEWAY_DEFAULT_COUNT", 20),
            max_count=env.int("GATEWAY_MAX_COUNT", 1000),
            max_search_value_length=env.int("GATEWAY_MAX_SEARCH_VALUE_LENGTH", 4096),
            max_search_parameters=env.int("GATEWAY_MAX_SEARCH_PARAMETERS", 32),
            mappings_path=mappings,
            store=StoreSettings(
                database_url=url,
                read_database_url=env.str("GATEWAY_READ_DATABASE_URL"),
                sql_echo=env.bool("GATEWAY_SQL_ECHO"),
            ),
            security=SecuritySettings(
                clients_path=_clients_path(env, mappings),
                token_signing_key=env.secret("GATEWAY_TOKEN_SIGNING_KEY"),
                idp_jwks_url=env.str("GATEWAY_IDP_JWKS_URL"),
                idp_jwks_file=env.path("GATEWAY_IDP_JWKS_FILE"),
                idp_issuer=env.str("GATEWAY_IDP_ISSUER"),
                idp_audience=env.str("GATEWAY_IDP_AUDIENCE"),
                idp_nhs_number_claim=env.str("GATEWAY_IDP_NHS_NUMBER_CLAIM", "nhs_number"),
                rate_limit=env.int("GATEWAY_RATE_LIMIT", 600),
                audit=env.choice("GATEWAY_AUDIT", "auto", ("auto", "on", "off")),
                insecure_dev=env.bool("GATEWAY_INSECURE_DEV"),
            ),
            oidc=OidcSettings(
                issuer=(env.str("GATEWAY_OIDC_ISSUER") or "").rstrip("/") or None,
                client_id=env.str("GATEWAY_OIDC_CLIENT_ID"),
                client_secret=env.secret("GATEWAY_OIDC_CLIENT_SECRET"),
                private_key=env.secret("GATEWAY_OIDC_PRIVATE_KEY"),
                private_key_alg=env.str("GATEWAY_OIDC_PRIVATE_KEY_ALG", "RS512"),
                redirect_uri=env.str("GATEWAY_OIDC_REDIRECT_URI"),
                scopes=env.str("GATEWAY_OIDC_SCOPES", "openid profile"),
                vtr=env.str("GATEWAY_OIDC_VTR"),
                session_secret=env.secret("GATEWAY_SESSION_SECRET"),
                session_cookie_secure=env.bool("GATEWAY_SESSION_COOKIE_SECURE", True),
                session_minutes=env.int("GATEWAY_PATIENT_SESSION_MINUTES", 30),
            ),
            outbound=OutboundSettings(
                allowed_hosts=AllowList.parse(env.str("GATEWAY_ALLOWED_HOSTS")),
                hospitals_path=env.path("GATEWAY_HOSPITALS_PATH"),  # None: <mappings_path>/hospitals
                contact_id_key=env.str("GATEWAY_CONTACT_ID_KEY"),
                max_attempts=env.int("GATEWAY_OUTBOX_MAX_ATTEMPTS", 8),
                backoff_base=env.num("GATEWAY_OUTBOX_BACKOFF_BASE", 2.0),
                backoff_max=env.num("GATEWAY_OUTBOX_BACKOFF_MAX", 600.0),
                lease_seconds=env.num("GATEWAY_OUTBOX_LEASE_SECONDS", 60.0),
                poll_seconds=env.num("GATEWAY_WORKER_POLL_SECONDS", 0.25),
                client_retries=env.int("GATEWAY_OUTBOUND_RETRIES", 2),
                # hospital files name the variables holding their secrets (tokens, keys): looked up in this
                # snapshot when a request needs them, so they never reach the database or logs
                env=env.env,
            ),
            notify=NotifySettings(
                subscription_error_after=env.int("GATEWAY_SUBSCRIPTION_ERROR_AFTER", 3),
                national_optout=env.str("GATEWAY_NATIONAL_OPTOUT"),
                patient_alert_endpoint=env.str("GATEWAY_PATIENT_ALERT_ENDPOINT"),
                patient_alert_header=env.secret("GATEWAY_PATIENT_ALERT_HEADER"),
            ),
            observability=ObservabilitySettings(
                log_level=env.choice("GATEWAY_LOG_LEVEL", "INFO", _LOG_LEVELS, upper=True),
                worker_metrics_port=env.int("GATEWAY_WORKER_METRICS_PORT", 0),
                worker_metrics_host=env.str("GATEWAY_WORKER_METRICS_HOST", "127.0.0.1"),
                prometheus_multiproc_dir=env.str("PROMETHEUS_MULTIPROC_DIR"),
            ),
            server=ServerSettings(
                bind=env.str("GATEWAY_BIND", "0.0.0.0:8080"),
                workers=env.int("GATEWAY_WORKERS", 2),
                threads=env.int("GATEWAY_THREADS", 4),
            ),
        )
