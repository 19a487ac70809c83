"""HTTP helpers for the FHIR API: content negotiation, body parsing with limits, responses."""

from __future__ import annotations

from datetime import datetime
from email.utils import format_datetime
from http import HTTPStatus

import orjson
from flask import Response, current_app, request

from gateway.fhir.errors import InvalidResource, NotAcceptable, TooLarge, UnsupportedMediaType
from gateway.store.repo import Stored

FHIR_JSON = "application/fhir+json"
_JSON_TYPES = {"application/fhir+json", "application/json", "application/json+fhir"}
_FORMAT_JSON = {"json", "application/json", "application/fhir+json", "application/json+fhir"}


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
    for part in accept.split(","):
        mime = part.split(";")[0].strip().lower()
        if mime in _JSON_TYPES or mime in ("*/*", "application/*", ""):
            return
    raise NotAcceptable(f"Accept '{accept}' cannot be served; this server speaks application/fhir+json", "Accept")


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
    raw = read_body()
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


def prefer_return() -> str:
    """The ``return`` preference: minimal | representation | OperationOutcome (default representation)."""
    for part in request.headers.get("Prefer", "").split(";"):
        part = part.strip()
        if part.startswith("return="):
            return part.split("=", 1)[1].strip()
    return "representation"


def prefer_strict() -> bool:
    return "handling=strict" in request.headers.get("Prefer", "").replace(" ", "")
