"""HTTP helpers for the FHIR API: content negotiation, body parsing with limits, responses."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from email.utils import format_datetime, parsedate_to_datetime
from http import HTTPStatus

import orjson
from flask import Response, current_app, request

from gateway.fhir.errors import InvalidResource, NotAcceptable, TooLarge, UnsupportedMediaType
from gateway.store.repo import Stored

FHIR_JSON = "application/fhir+json"
_JSON_TYPES = {"application/fhir+json", "application/json", "application/json+fhir"}
_FORMAT_JSON = {"json", "application/json", "application/fhir+json", "application/json+fhir"}
FHIR_VERSIONS = ("4.0", "4.0.1")  # the fhirVersion MIME-type parameter values of R4


def check_accept() -> None:
    """406 unless the client can take JSON (``Accept`` or ``_format``)."""
    fmt = request.args.get("_format")
    if fmt is not None:
        if fmt not in _FORMAT_JSON:
            raise NotAcceptable(f"_format={fmt} cannot be served; this server speaks application/fhir+json",
                                "_format")
        return
    accept = request.headers.get("Accept", "").strip()
    if not accept:
        return
    wrong_version = None
    for part in accept.split(","):
        mime, *params = (p.strip() for p in part.split(";"))
        mime = mime.lower()
        if mime in _JSON_TYPES or mime in ("*/*", "application/*", ""):
            version = _param(params, "fhirversion")
            if version is None or version in FHIR_VERSIONS:
                return
            wrong_version = version
    if wrong_version is not None:
        raise NotAcceptable(f"fhirVersion={wrong_version} cannot be served; this server speaks FHIR R4 "
                            "(fhirVersion=4.0)", "Accept")
    raise NotAcceptable(f"Accept '{accept}' cannot be served; this server speaks application/fhir+json", "Accept")


def _param(params: list[str], name: str) -> str | None:
    """The value of a media-type parameter: (['fhirVersion=4.0'], 'fhirversion') -> '4.0'."""
    for p in params:
        key, eq, value = p.partition("=")
        if eq and key.strip().lower() == name:
            return value.strip().strip('"')
    return None


def check_content_version() -> None:
    """415 for a body declared as another FHIR version (``Content-Type: ...; fhirVersion=5.0``)."""
    _, *params = (p.strip() for p in (request.content_type or "").split(";"))
    version = _param(params, "fhirversion")
    if version is not None and version not in FHIR_VERSIONS:
        raise UnsupportedMediaType(f"A fhirVersion={version} body cannot be accepted; this server speaks FHIR R4 "
                                   "(fhirVersion=4.0)", "Content-Type")


def _depth_ok(node: object, limit: int) -> bool:
    stack = [(node, 1)]
    while stack:
        n, d = stack.pop()
        if d > limit:
            return False
        if isinstance(n, dict):
            stack.extend((v, d + 1) for v in n.values() if isinstance(v, dict | list))
        elif isinstance(n, list):
            stack.extend((v, d + 1) for v in n if isinstance(v, dict | list))
    return True


def read_body() -> bytes:
    """The raw request body, refused with 413 past GATEWAY_MAX_BODY_BYTES (declared or actual length)."""
    limit = current_app.config["SETTINGS"].max_body_bytes
    if request.content_length is not None and request.content_length > limit:
        raise TooLarge(f"Request body of {request.content_length} bytes is over the limit of {limit} "
                       "(GATEWAY_MAX_BODY_BYTES)", "body")
    raw = request.get_data(cache=False)
    if len(raw) > limit:
        raise TooLarge(f"Request body of {len(raw)} bytes is over the limit of {limit} (GATEWAY_MAX_BODY_BYTES)",
                       "body")
    return raw


def json_body() -> object:
    """Parse the request body as FHIR JSON, enforcing media type, size and nesting depth."""
    ctype = (request.mimetype or "").lower()
    if ctype not in _JSON_TYPES:
        raise UnsupportedMediaType(f"Content-Type '{request.content_type or '(none)'}' is not supported; "
                                   "send application/fhir+json", "Content-Type")
    check_content_version()
    return parse_json(read_body())


def parse_json(raw: bytes) -> object:
    """Bytes -> JSON, refused with 400 when empty, malformed or nested past GATEWAY_MAX_JSON_DEPTH."""
    if not raw.strip():
        raise InvalidResource("The request body is empty", "body")
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InvalidResource(f"The body is not valid JSON: {exc}", "body") from None
    depth = current_app.config["SETTINGS"].max_json_depth
    if not _depth_ok(data, depth):
        raise InvalidResource(f"JSON nesting is deeper than {depth} levels (GATEWAY_MAX_JSON_DEPTH)", "body")
    return data


def fhir_response(body: object, status: int | HTTPStatus = HTTPStatus.OK, headers: dict | None = None) -> Response:
    """A FHIR JSON response; ``body`` may be a dict, a JSON str/bytes, or None for no body."""
    if body is None:
        data = b""
    elif isinstance(body, bytes):
        data = body
    elif isinstance(body, str):
        data = body.encode()
    else:
        data = orjson.dumps(body)
    resp = Response(data, status=int(status), mimetype=FHIR_JSON if data else None)
    if data:
        resp.headers["Content-Type"] = f"{FHIR_JSON}; charset=utf-8"
    else:  # an empty 201/204/304 has no content type (Flask's default would say text/html)
        resp.headers.pop("Content-Type", None)
    for k, v in (headers or {}).items():
        resp.headers[k] = v
    return resp


def http_date(iso: str) -> str:
    """'2026-11-23T20:45:01.123456+00:00' -> 'Mon, 23 Nov 2026 20:45:01 GMT'."""
    return format_datetime(datetime.fromisoformat(iso), usegmt=True)


def base_url() -> str:
    configured = current_app.config["SETTINGS"].base_url
    if configured:
        return configured.rstrip("/")
    return request.url_root.rstrip("/") + "/fhir"


def version_headers(st: Stored, location: bool = False) -> dict:
    h = {"ETag": st.etag, "Last-Modified": http_date(st.last_updated)}
    if location:
        h["Location"] = f"{base_url()}/{st.type}/{st.id}/_history/{st.version}"
    return h


def _etag_version(tag: str) -> str:
    """'W/"3"' -> '3'; '"3"' -> '3'; '3' -> '3' (fhirpy sends the bare versionId)."""
    tag = tag.strip()
    if tag.startswith("W/"):
        tag = tag[2:]
    return tag.strip().strip('"')


def not_modified(st: Stored, previous_update: Callable[[], str | None] | None = None) -> bool:
    """Conditional read: True when ``If-None-Match`` names the current version (or is ``*``), or, without
    it, when the resource has not changed since ``If-Modified-Since`` (RFC 9110 13.1.2 and 13.1.3).

    HTTP dates have whole seconds: when the date is the very second of the last change and the version before it
    (``previous_update()``, its lastUpdated) falls in that second too, the client may hold either: the body is sent.
    """
    inm = request.headers.get("If-None-Match")
    if inm is not None:
        tags = [_etag_version(t) for t in inm.split(",")]
        return "*" in tags or str(st.version) in tags
    ims = request.headers.get("If-Modified-Since")
    if ims:
        try:
            since = parsedate_to_datetime(ims)
        except (TypeError, ValueError, IndexError):
            return False  # an unparseable date is ignored, as RFC 9110 says
        if since.tzinfo is None:
            since = since.replace(tzinfo=UTC)
        changed = datetime.fromisoformat(st.last_updated).replace(microsecond=0)
        if changed < since:
            return True
        if changed > since:
            return False
        earlier = previous_update() if previous_update is not None and st.version > 1 else None
        return earlier is None or datetime.fromisoformat(earlier).replace(microsecond=0) < since
    return False


def prefer_return() -> str:
    """The ``return`` preference: minimal | representation | OperationOutcome (default representation)."""
    for part in request.headers.get("Prefer", "").split(";"):
        part = part.strip()
        if part.startswith("return="):
            return part.split("=", 1)[1].strip()
    return "representation"


def prefer_strict() -> bool:
    return "handling=strict" in request.headers.get("Prefer", "").replace(" ", "")
