"""The one outbound HTTP transport: every call the gateway makes to another server goes through ``HttpClient``.

The allow-list is checked before a byte is sent; timeouts always; redirects are never followed; failures are
typed (``gateway.outbound.errors``); retries are bounded and wait by the one back-off (``backoff_seconds``,
at least ``Retry-After``); only calls safe to repeat are retried on a server error. One log line per call
names the method, the path (never the query: it may hold an NHS number), the status and the time.
``FhirClient`` (FHIR servers) is built on it; JWKS, token endpoints, notifications and the opt-out list use it
directly; patient sign-in's OpenID Connect calls (authlib) reach it through ``gateway.outbound.oauth``.

>>> HttpClient(allowed_hosts=AllowList.parse("idp.example")).send("GET", "https://elsewhere.example/jwks")
Traceback (most recent call last):
...
gateway.outbound.errors.DestinationNotAllowed: Outbound request to 'elsewhere.example' refused: the host is not \
in GATEWAY_ALLOWED_HOSTS (or the URL is not http/https)
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Mapping
from email.utils import parsedate_to_datetime
from urllib.parse import urlsplit

import orjson
import requests

from gateway.outbound.allowlist import AllowList
from gateway.outbound.backoff import backoff_seconds
from gateway.outbound.errors import (
    InvalidResponse,
    OutboundError,
    TooManyRequests,
    TransportError,
    error_for_status,
)

log = logging.getLogger("gateway.outbound")
SAFE_METHODS = frozenset({"GET", "HEAD", "PUT", "DELETE"})
Headers = Mapping[str, str] | Callable[[], Mapping[str, str]]


class HttpClient:
    """Allow-listed, timed, logged HTTP with bounded retries. Transport settings are injected, never hidden."""

    def __init__(self, *, allowed_hosts: AllowList, session: requests.Session | None = None,
                 timeout: tuple[float, float] = (5.0, 30.0), max_retries: int = 2, backoff_base: float = 0.5,
                 backoff_max: float = 30.0, sleep: Callable[[float], None] = time.sleep,
                 jitter: Callable[[], float] = random.random):
        self.allowed_hosts = allowed_hosts
        self.session = session or requests.Session()
        self.timeout = timeout
        self.max_retries = max_retries
        self.backoff_base = backoff_base
        self.backoff_max = backoff_max
        self.sleep = sleep
        self.jitter = jitter

    @classmethod
    def for_configured_url(cls, url: str, **kwargs) -> HttpClient:
        """A client that may reach exactly the host of a URL the operator configured for this purpose (an
        identity provider's keys): that setting is its allow-list, not the hospitals' GATEWAY_ALLOWED_HOSTS."""
        return cls(allowed_hosts=AllowList().with_host_of(url), **kwargs)

    def send(self, method: str, url: str, *, params=None, data: bytes | dict | None = None,
             headers: Headers | None = None, idempotent: bool | None = None, check: bool = True,
             timeout: tuple[float, float] | None = None, auth: requests.auth.AuthBase | None = None
             ) -> requests.Response:
        """Send with retries. ``headers`` may be a callable (evaluated per attempt: a token may be renewed);
        ``check``: a non-2xx status raises its typed error (else the response is returned for the caller to
        read, and only transport failures are retried); ``idempotent`` overrides the method's own safety;
        ``auth``: a requests auth object that signs the prepared request (OAuth client authentication)."""
        self.allowed_hosts.check(url)
        what = f"{method} {urlsplit(url).path}"
        safe = method in SAFE_METHODS if idempotent is None else idempotent
        attempt = 0
        while True:
            try:
                hdrs = dict(headers() if callable(headers) else headers or {})
                return self._send_once(method, url, params, data, hdrs, what, check, timeout or self.timeout, auth)
            except OutboundError as exc:
                retry = exc.retryable and (safe or isinstance(exc, TooManyRequests) or exc.not_sent)
                if not retry or attempt >= self.max_retries:
                    raise
                delay = self.backoff(attempt + 1, exc.retry_after)
                if delay is None:
                    raise
                attempt += 1
                log.info("retrying %s in %.2fs after %s (attempt %d of %d)", what, delay, type(exc).__name__,
                         attempt, self.max_retries)
                self.sleep(delay)

    def backoff(self, attempt: int, retry_after: float | None) -> float | None:
        """Delay before retry ``attempt`` (1-based): the outbound back-off (``backoff_seconds``), at least
        Retry-After. None when the server asks us to wait longer than ``backoff_max``: give up now, let the
        caller (the outbox) reschedule."""
        if retry_after is not None and retry_after > self.backoff_max:
            return None
        return backoff_seconds(attempt, self.backoff_base, self.backoff_max, retry_after, self.jitter)

    def get_json(self, url: str) -> object:
        """GET a JSON document (a JWKS, an OpenID configuration) -> the parsed JSON; InvalidResponse if not JSON."""
        resp = self.send("GET", url, headers={"Accept": "application/json"})
        try:
            return orjson.loads(resp.content)
        except orjson.JSONDecodeError:
            raise InvalidResponse(f"GET {urlsplit(url).path}: the body is not valid JSON",
                                  status=resp.status_code) from None

    def get_text(self, url: str) -> str:
        """GET a text document (e.g. the national data opt-out list)."""
        return self.send("GET", url).text

    def _send_once(self, method, url, params, data, headers, what, check, timeout, auth=None) -> requests.Response:
        started = time.monotonic()
        try:
            resp = self.session.request(method, url, params=params, data=data, headers=headers,
                                        timeout=timeout, allow_redirects=False, auth=auth)
        except requests.ConnectionError as exc:
            err = TransportError(f"{what}: cannot connect ({_reason(exc)})")
            # Connection refused or DNS failure before sending: nothing reached the server.
            err.not_sent = isinstance(exc, requests.ConnectTimeout) or "refused" in str(exc).lower()
            raise err from None
        except requests.Timeout:
            raise TransportError(f"{what}: timed out after {timeout[1]}s") from None
        except requests.RequestException as exc:
            raise TransportError(f"{what}: {type(exc).__name__}") from None
        log.info("%s -> %s in %.0f ms", what, resp.status_code, (time.monotonic() - started) * 1000)
        if 300 <= resp.status_code < 400:
            raise InvalidResponse(f"{what}: redirect {resp.status_code} not followed (allow-list)",
                                  status=resp.status_code)
        if check and resp.status_code >= 400:
            raise error_for_status(resp.status_code, what, json_or_none(resp), retry_after(resp))
        return resp


def json_or_none(resp: requests.Response) -> dict | None:
    try:
        data = resp.json()
    except ValueError:
        return None
    return data if isinstance(data, dict) else None


def retry_after(resp: requests.Response) -> float | None:
    """'120' -> 120.0; an HTTP date -> seconds from now; anything else -> None."""
    raw = resp.headers.get("Retry-After")
    if not raw:
        return None
    raw = raw.strip()
    if raw.isdigit():
        return float(raw)
    try:
        return max(0.0, parsedate_to_datetime(raw).timestamp() - time.time())
    except (TypeError, ValueError):
        return None


def _reason(exc: Exception) -> str:
    text = str(exc)
    for key in ("refused", "Name or service not known", "reset", "timed out"):
        if key.lower() in text.lower():
            return key
    return type(exc).__name__
