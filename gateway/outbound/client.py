"""The one outbound FHIR client: requests.Session, timeouts always, typed errors, bounded retries.

Every URL (base, ``next`` links, token endpoints) is checked against the allow-list before a byte
is sent; redirects are not followed. Retries use exponential backoff with full jitter and honour
``Retry-After``; only requests that are safe to repeat are retried on a server error (GET, PUT,
DELETE, and POST with ``If-None-Exist``). Successful responses are parsed and validated as FHIR
before use. Log lines and error messages carry the path only: queries may hold NHS numbers.

>>> c = FhirClient("https://fhir.leeds.example/R4", allowed_hosts=AllowList.parse("fhir.leeds.example"))
>>> c.url("Patient/1")
'https://fhir.leeds.example/R4/Patient/1'
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from urllib.parse import urlsplit

import orjson
import requests

from gateway.fhir.errors import FhirError
from gateway.fhir.validate import prune_empty, validate_resource
from gateway.outbound.allowlist import AllowList
from gateway.outbound.auth import Auth
from gateway.outbound.backoff import backoff_seconds
from gateway.outbound.errors import (
    InvalidResponse,
    OutboundError,
    TokenRefused,
    TooManyRequests,
    TransportError,
    Unauthorized,
    error_for_status,
)

FHIR_JSON = "application/fhir+json"
log = logging.getLogger("gateway.outbound")
SAFE_METHODS = frozenset({"GET", "HEAD", "PUT", "DELETE"})


@dataclass
class Response:
    """A successful (2xx) response: status, headers and the validated resource (None when no body)."""

    status: int
    headers: dict[str, str]
    resource: dict | None

    @property
    def location(self) -> str | None:
        return self.headers.get("Location") or self.headers.get("Content-Location")


class FhirClient:
    """A FHIR R4 server at ``base_url``. Transport settings are injected, never hidden."""

    def __init__(self, base_url: str, *, allowed_hosts: AllowList, auth: Auth | None = None,
                 session: requests.Session | None = None, timeout: tuple[float, float] = (5.0, 30.0),
                 max_retries: int = 2, backoff_base: float = 0.5, backoff_max: float = 30.0,
                 sleep: Callable[[float], None] = time.sleep, jitter: Callable[[], float] = random.random,
                 validate: bool = True, max_pages: int = 100):
        allowed_hosts.check(base_url)
        self.base_url = base_url.rstrip("/")
        self.allowed_hosts = allowed_hosts
        self.auth = auth or Auth()
        self.session = session or requests.Session()
        self.timeout = timeout
        self.max_retries = max_retries
        self.backoff_base = backoff_base
        self.backoff_max = backoff_max
        self.sleep = sleep
        self.jitter = jitter
        self.validate = validate
        self.max_pages = max_pages

    def url(self, path: str) -> str:
        """'Patient/1' -> '<base>/Patient/1'; absolute URLs are kept (they are still allow-list checked)."""
        return path if "://" in path else f"{self.base_url}/{path.lstrip('/')}"

    # -- FHIR interactions -------------------------------------------------------------------
    def read(self, rtype: str, rid: str) -> dict:
        return self._resource(self.request("GET", f"{rtype}/{rid}"), f"GET {rtype}/{rid}")

    def search(self, rtype: str, params: dict[str, str] | list[tuple[str, str]]) -> list[dict]:
        """Search and follow ``next`` links; -> the resources of every page (search.mode 'match')."""
        out: list[dict] = []
        for page in self.search_pages(rtype, params):
            for entry in page.get("entry") or []:
                res = entry.get("resource") if isinstance(entry, dict) else None
                mode = (entry.get("search") or {}).get("mode", "match")
                if isinstance(res, dict) and mode == "match":
                    out.append(res)
        return out

    def search_pages(self, rtype: str, params: dict[str, str] | list[tuple[str, str]]) -> Iterator[dict]:
        resp = self.request("GET", rtype, params=params)
        pages = 0
        while True:
            bundle = self._resource(resp, f"GET {rtype}")
            if bundle.get("resourceType") != "Bundle":
                raise InvalidResponse(f"GET {rtype}: expected a searchset Bundle, got {bundle.get('resourceType')}")
            yield bundle
            pages += 1
            nxt = next((link.get("url") for link in bundle.get("link") or []
                        if isinstance(link, dict) and link.get("relation") == "next"), None)
            if not nxt:
                return
            if pages >= self.max_pages:
                raise InvalidResponse(f"GET {rtype}: more than {self.max_pages} pages; refusing to follow more")
            resp = self.request("GET", nxt)

    def create(self, resource: dict, *, if_none_exist: str | None = None) -> Response:
        """POST; with ``if_none_exist`` ('identifier=system|value') a conditional create, safe to repeat."""
        headers = {"If-None-Exist": if_none_exist} if if_none_exist else {}
        return self.request("POST", resource["resourceType"], json=resource, headers=headers,
                            idempotent=bool(if_none_exist))

    def update(self, resource: dict, *, if_match: str | None = None) -> Response:
        headers = {"If-Match": if_match} if if_match else {}
        return self.request("PUT", f"{resource['resourceType']}/{resource['id']}", json=resource, headers=headers)

    def conditional_update(self, rtype: str, params: dict[str, str], resource: dict) -> Response:
        """PUT Type?search: update the one match, or create when there is none."""
        return self.request("PUT", rtype, params=params, json=resource)

    # -- transport -----------------------------------------------------------------------------
    def request(self, method: str, path: str, *, params=None, json: dict | None = None,
                headers: dict[str, str] | None = None, idempotent: bool | None = None) -> Response:
        """Send with retries; -> Response for 2xx, else raise the typed OutboundError."""
        url = self.url(path)
        self.allowed_hosts.check(url)
        what = f"{method} {urlsplit(url).path}"
        safe = method in SAFE_METHODS if idempotent is None else idempotent
        body = orjson.dumps(json) if json is not None else None
        attempt = 0
        reauthed = False
        while True:
            try:
                return self._send_once(method, url, params, body, headers, what)
            except Unauthorized as exc:
                if reauthed or self.auth.kind != "smart-backend" or isinstance(exc, TokenRefused):
                    raise
                self.auth.invalidate()  # the cached token may have been revoked early
                reauthed = True
                continue
            except OutboundError as exc:
                retry = exc.retryable and (safe or isinstance(exc, TooManyRequests)
                                           or exc.not_sent)
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
        Retry-After.

        None when the server asks us to wait longer than ``backoff_max``: give up now, let the caller
        (the outbox) reschedule.
        """
        if retry_after is not None and retry_after > self.backoff_max:
            return None
        return backoff_seconds(attempt, self.backoff_base, self.backoff_max, retry_after, self.jitter)

    def _send_once(self, method, url, params, body, extra_headers, what) -> Response:
        headers = {"Accept": FHIR_JSON, **self.auth.headers()}
        if body is not None:
            headers["Content-Type"] = f"{FHIR_JSON}; charset=utf-8"
        headers.update(extra_headers or {})
        started = time.monotonic()
        try:
            resp = self.session.request(method, url, params=params, data=body, headers=headers,
                                        timeout=self.timeout, allow_redirects=False)
        except requests.ConnectionError as exc:
            err = TransportError(f"{what}: cannot connect ({_reason(exc)})")
            # Connection refused or DNS failure before sending: nothing reached the server.
            err.not_sent = isinstance(exc, requests.ConnectTimeout) or "refused" in str(exc).lower()
            raise err from None
        except requests.Timeout:
            raise TransportError(f"{what}: timed out after {self.timeout[1]}s") from None
        except requests.RequestException as exc:
            raise TransportError(f"{what}: {type(exc).__name__}") from None
        log.info("%s -> %s in %.0f ms", what, resp.status_code, (time.monotonic() - started) * 1000)
        if resp.status_code >= 400 or 300 <= resp.status_code < 400:
            if 300 <= resp.status_code < 400:
                raise InvalidResponse(f"{what}: redirect {resp.status_code} not followed (allow-list)",
                                      status=resp.status_code)
            raise error_for_status(resp.status_code, what, _json_or_none(resp), _retry_after(resp))
        resource = self._parse(resp, what) if resp.content else None
        return Response(resp.status_code, dict(resp.headers), resource)

    def _parse(self, resp: requests.Response, what: str) -> dict:
        ctype = resp.headers.get("Content-Type", "").split(";")[0].strip().lower()
        if ctype not in (FHIR_JSON, "application/json", "application/json+fhir"):
            raise InvalidResponse(f"{what}: expected {FHIR_JSON}, got '{ctype or 'no Content-Type'}'",
                                  status=resp.status_code)
        try:
            data = orjson.loads(resp.content)
        except orjson.JSONDecodeError:
            raise InvalidResponse(f"{what}: the body is not valid JSON", status=resp.status_code) from None
        if self.validate:
            data = prune_empty(data)  # other servers' empty values ("entry": []) are read as absent, not refused
            try:
                validate_resource(data)
            except FhirError as exc:
                raise InvalidResponse(f"{what}: the response is not a valid FHIR R4 resource: {exc.diagnostics}",
                                      status=resp.status_code) from None
        return data

    @staticmethod
    def _resource(resp: Response, what: str) -> dict:
        if resp.resource is None:
            raise InvalidResponse(f"{what}: the response has no body")
        return resp.resource


def _json_or_none(resp: requests.Response) -> dict | None:
    try:
        data = resp.json()
    except ValueError:
        return None
    return data if isinstance(data, dict) else None


def _retry_after(resp: requests.Response) -> float | None:
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
