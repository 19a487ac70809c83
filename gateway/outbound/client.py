"""The one outbound FHIR client, on the one outbound transport (``gateway.outbound.http.HttpClient``).

Every URL (base, ``next`` links, token endpoints) is checked against the allow-list before a byte
is sent; redirects are not followed. Retries use the one back-off and honour ``Retry-After``; only
requests that are safe to repeat are retried on a server error (GET, PUT, DELETE, and POST with
``If-None-Exist``). Successful responses are parsed and validated as FHIR before use. Log lines and
error messages carry the path only: queries may hold NHS numbers.

>>> c = FhirClient("https://fhir.leeds.example/R4", allowed_hosts=AllowList.parse("fhir.leeds.example"))
>>> c.url("Patient/1")
'https://fhir.leeds.example/R4/Patient/1'
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from urllib.parse import urlsplit

import orjson
import requests

from gateway.fhir.errors import FhirError
from gateway.fhir.validate import prune_empty, validate_resource
from gateway.outbound.allowlist import AllowList
from gateway.outbound.auth import Auth
from gateway.outbound.errors import InvalidResponse, TokenRefused, Unauthorized
from gateway.outbound.http import HttpClient

FHIR_JSON = "application/fhir+json"


@dataclass
class Response:
    """A successful (2xx) response: status, headers and the validated resource (None when no body)."""

    status: int
    headers: dict[str, str]
    resource: dict | None

    @property
    def location(self) -> str | None:
        return self.headers.get("Location") or self.headers.get("Content-Location")


class FhirClient(HttpClient):
    """A FHIR R4 server at ``base_url``. Transport settings are injected, never hidden."""

    def __init__(self, base_url: str, *, allowed_hosts: AllowList, auth: Auth | None = None,
                 session: requests.Session | None = None, timeout: tuple[float, float] = (5.0, 30.0),
                 max_retries: int = 2, backoff_base: float = 0.5, backoff_max: float = 30.0,
                 sleep: Callable[[float], None] = time.sleep, jitter: Callable[[], float] = random.random,
                 validate: bool = True, max_pages: int = 100):
        allowed_hosts.check(base_url)
        super().__init__(allowed_hosts=allowed_hosts, session=session, timeout=timeout, max_retries=max_retries,
                         backoff_base=backoff_base, backoff_max=backoff_max, sleep=sleep, jitter=jitter)
        self.base_url = base_url.rstrip("/")
        self.auth = auth or Auth()
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
        what = f"{method} {urlsplit(url).path}"
        body = orjson.dumps(json) if json is not None else None

        def fhir_headers() -> dict[str, str]:  # per attempt: the token may be renewed
            out = {"Accept": FHIR_JSON, **self.auth.headers()}
            if body is not None:
                out["Content-Type"] = f"{FHIR_JSON}; charset=utf-8"
            out.update(headers or {})
            return out

        reauthed = False
        while True:
            try:
                resp = self.send(method, url, params=params, data=body, headers=fhir_headers, idempotent=idempotent)
            except Unauthorized as exc:
                if reauthed or self.auth.kind != "smart-backend" or isinstance(exc, TokenRefused):
                    raise
                self.auth.invalidate()  # the cached token may have been revoked early
                reauthed = True
                continue
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
