"""How the gateway authenticates to a hospital: none, a static bearer token, or SMART Backend Services.

SMART Backend Services (client-credentials grant with a signed JWT assertion, RS384 or ES384):
the assertion's ``iss`` and ``sub`` are the client id, ``aud`` the token endpoint, ``exp`` at most
five minutes ahead, ``jti`` unique. The access token is cached until shortly before it expires.
Secrets come from environment variables named in the hospital file, read when first needed.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import jwt
import requests

from gateway.outbound.allowlist import AllowList
from gateway.outbound.errors import ConfigurationError, TokenRefused, error_for_status
from gateway.outbound.http import HttpClient

ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
ASSERTION_LIFETIME = 300  # seconds; SMART says no more than five minutes
EXPIRY_MARGIN = 30  # renew this many seconds before the token expires


class Auth:
    """No authentication. Subclasses add an Authorization header."""

    kind = "none"

    def headers(self) -> dict[str, str]:
        return {}

    def invalidate(self) -> None:
        """Forget a cached token (after a 401)."""


def _secret(env: Mapping[str, str], name: str, what: str) -> str:
    value = env.get(name)
    if not value:
        raise ConfigurationError(f"{what}: environment variable {name} is not set")
    return value


@dataclass
class BearerTokenAuth(Auth):
    """A static token from the environment variable ``token_env``."""

    token_env: str
    env: Mapping[str, str] = field(default_factory=dict, repr=False)
    kind = "bearer"

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {_secret(self.env, self.token_env, 'bearer token')}"}


@dataclass
class SmartBackendAuth(Auth):
    """SMART Backend Services client credentials; the private key (PEM) from ``key_env``."""

    token_url: str
    client_id: str
    key_env: str
    algorithm: str = "RS384"
    kid: str | None = None
    scope: str = "system/*.rs"
    env: Mapping[str, str] = field(default_factory=dict, repr=False)
    allowed_hosts: AllowList = field(default_factory=AllowList)
    session: requests.Session | None = field(default=None, repr=False)
    timeout: tuple[float, float] = (5.0, 30.0)
    clock: Callable[[], float] = time.time
    kind = "smart-backend"

    def __post_init__(self) -> None:
        if self.algorithm not in ("RS384", "ES384"):
            raise ConfigurationError(f"SMART Backend Services algorithm must be RS384 or ES384, got {self.algorithm}")
        self._token: str | None = None
        self._expires_at = 0.0
        self._lock = threading.Lock()

    def assertion(self) -> str:
        """The signed client assertion (a JWT) for one token request."""
        now = int(self.clock())
        claims = {"iss": self.client_id, "sub": self.client_id, "aud": self.token_url,
                  "exp": now + ASSERTION_LIFETIME, "iat": now, "jti": str(uuid.uuid4())}
        headers = {"typ": "JWT", **({"kid": self.kid} if self.kid else {})}
        key = _secret(self.env, self.key_env, "SMART Backend Services private key")
        try:
            return jwt.encode(claims, key, algorithm=self.algorithm, headers=headers)
        except (ValueError, TypeError, jwt.PyJWTError) as exc:
            raise ConfigurationError(f"cannot sign the client assertion with the key in {self.key_env} "
                                     f"({self.algorithm}): {exc}") from None

    def headers(self) -> dict[str, str]:
        with self._lock:
            if self._token is None or self.clock() >= self._expires_at:
                self._fetch()
            return {"Authorization": f"Bearer {self._token}"}

    def invalidate(self) -> None:
        with self._lock:
            self._token = None

    def _fetch(self) -> None:
        self.allowed_hosts.check(self.token_url)
        form = {"grant_type": "client_credentials", "scope": self.scope,
                "client_assertion_type": ASSERTION_TYPE, "client_assertion": self.assertion()}
        # The one outbound transport (allow-list, timeout, log line); no retries here: the caller's request
        # is retried as a whole, token included.
        http = HttpClient(allowed_hosts=self.allowed_hosts, session=self.session, timeout=self.timeout, max_retries=0)
        resp = http.send("POST", self.token_url, data=form, headers={"Accept": "application/json"}, check=False)
        if resp.status_code >= 400:
            err = error_for_status(resp.status_code, f"POST {self.token_url}", None,
                                   detail=_oauth_error(resp))
            if resp.status_code in (400, 401):  # invalid_client / invalid_grant: our credentials
                raise TokenRefused(err.message, status=resp.status_code)
            raise err
        try:
            body = resp.json()
            token = body["access_token"]
            lifetime = float(body.get("expires_in", 300))
        except (ValueError, KeyError, TypeError):
            raise TokenRefused(f"token endpoint {self.token_url} returned no access_token") from None
        if not isinstance(token, str) or not token:
            raise TokenRefused(f"token endpoint {self.token_url} returned an empty access_token")
        self._token = token
        self._expires_at = self.clock() + max(0.0, lifetime - EXPIRY_MARGIN)


def _oauth_error(resp: requests.Response) -> str:
    try:
        body = resp.json()
    except ValueError:
        return ""
    if isinstance(body, dict):
        return " ".join(str(body.get(k)) for k in ("error", "error_description") if body.get(k))
    return ""
