"""Structured logs: one JSON object a line, with the request id, and never a patient value or a token.

Every process (``gateway serve``, gunicorn, ``gateway worker``, the CLI) calls ``configure()`` once; every
logger (ours, werkzeug's, gunicorn's) then writes through ``JsonFormatter``:

    {"ts": "2026-12-04T15:45:34.120Z", "level": "info", "logger": "gateway.request", "event": "request",
     "request_id": "5f0c...", "method": "GET", "path": "/fhir/Patient?identifier=<redacted>", "status": 200}

Privacy: request paths are logged by ``redact_target`` (query values replaced, identifier-like path segments
replaced), and every message and string field also passes ``scrub`` (NHS numbers, postcodes, dates, bearer
tokens and JWTs, e-mail addresses, query values in URLs). Names cannot be recognised by a pattern: the rule is
that no log call passes a resource's content; ``scrub`` is the net under that rule, not a licence to log data.
"""

from __future__ import annotations

import contextvars
import logging
import re
import sys
import traceback
import uuid
from datetime import UTC, datetime
from typing import IO, Any
from urllib.parse import quote

import orjson
from werkzeug.serving import WSGIRequestHandler

REDACTED = "<redacted>"
# The request (or job) this thread is working for; set by the web layer and the worker.
request_id_var: contextvars.ContextVar[str | None] = contextvars.ContextVar("request_id", default=None)

_REQUEST_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:\-]{0,127}$")
_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = (
    # bearer tokens and JWTs (three base64url parts, the first one starting like '{"')
    (re.compile(r"(?i)\bbearer\s+[A-Za-z0-9._~+/=\-]+"), f"Bearer {REDACTED}"),
    (re.compile(r"\beyJ[A-Za-z0-9_\-]*\.[A-Za-z0-9_\-]+\.[A-Za-z0-9_\-]*"), REDACTED),
    # query values in URLs or request targets: ?a=1&b=2 -> ?a=<redacted>&b=<redacted>
    (re.compile(r"([?&][^=&#\s'\"]{1,64}=)[^&#\s'\"]*"), rf"\g<1>{REDACTED}"),
    # NHS numbers (10 digits, optionally 3-3-4) and other long digit runs
    (re.compile(r"(?<![\w.])\d{3}[ -]?\d{3}[ -]?\d{4}(?![\w.])"), REDACTED),
    # UK postcodes, full (LS6 2AB) or outward code with a district digit (LS6, M20)
    (re.compile(r"\b[A-Z]{1,2}\d[A-Z\d]?\s*\d[A-Z]{2}\b"), REDACTED),
    # calendar dates (birth dates): 1980-04-17, 17/04/1980; timestamps of our own go in "ts", not in messages
    (re.compile(r"\b(?:18|19|20)\d{2}-[01]\d-[0-3]\d\b"), REDACTED),
    (re.compile(r"\b[0-3]?\d/[01]?\d/(?:18|19|20)\d{2}\b"), REDACTED),
    (re.compile(r"[\w.+\-]+@[A-Za-z][\w\-]*\.[A-Za-z][\w.\-]*"), REDACTED),  # e-mail addresses
)
_SEGMENT_ID = re.compile(r"^\d{6,}$")  # a path segment that looks like a number a person is known by
_RESERVED = frozenset(vars(logging.LogRecord("x", 0, "x", 0, "x", None, None)).keys()) | {"message", "asctime"}


def scrub(text: str) -> str:
    """Replace patient values and secrets that a pattern can recognise.

    >>> scrub("GET /fhir/Patient?identifier=https://fhir.nhs.uk/Id/nhs-number|9000000009 from LS6 2AB")
    'GET /fhir/Patient?identifier=<redacted> from <redacted>'
    """
    for pattern, replacement in _PATTERNS:
        text = pattern.sub(replacement, text)
    return text


def redact_target(path: str, query: str | bytes = "") -> str:
    """The request target as logged: the path with each query VALUE replaced (names kept for operators).

    >>> redact_target("/fhir/Patient", "identifier=https://fhir.nhs.uk/Id/nhs-number|9000000009&_count=5")
    '/fhir/Patient?identifier=<redacted>&_count=<redacted>'
    """
    segments = [REDACTED if _SEGMENT_ID.match(s) else s for s in path.split("/")]
    out = quote("/".join(segments)[:512], safe="/$:@!*,;_-.~<>")
    if isinstance(query, bytes):
        query = query.decode("latin-1")
    if query:
        names = []
        for part in query.split("&")[:50]:
            name = part.split("=", 1)[0]
            shown = quote(name[:64], safe=":_-.")
            names.append(f"{shown}={REDACTED}" if "=" in part else shown)
        out += "?" + "&".join(names)
    return scrub(out)


def valid_request_id(value: str | None) -> str | None:
    """The caller's X-Request-ID if it is safe to log and to echo (1-128 of A-Z a-z 0-9 . _ : -), else None."""
    if value and _REQUEST_ID.match(value):
        return value
    return None


def new_request_id() -> str:
    return str(uuid.uuid4())


class JsonFormatter(logging.Formatter):
    """One JSON object a line: ts, level, logger, event, request_id, the record's extra fields, exc."""

    def format(self, record: logging.LogRecord) -> str:
        try:
            message = record.getMessage()
        except (TypeError, ValueError):  # a bad %-format in a log call must not lose the line
            message = f"{record.msg} {record.args}"
        out: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds").replace(
                "+00:00", "Z"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "event": scrub(message),
            "pid": record.process,
        }
        rid = getattr(record, "request_id", None) or request_id_var.get()
        if rid:
            out["request_id"] = rid
        for key, value in record.__dict__.items():
            if key in _RESERVED or key.startswith("_") or key in out:
                continue
            out[key] = scrub(value) if isinstance(value, str) else value
        if record.exc_info and record.exc_info[0] is not None:
            exc_type, exc, tb = record.exc_info
            out["exc_type"] = exc_type.__name__
            out["exc"] = scrub(str(exc))[:1000]
            # frames only (file, line, function, code): the values in a traceback's locals never reach the log
            out["stack"] = [f"{f.filename}:{f.lineno} {f.name}" for f in traceback.extract_tb(tb)[-12:]]
        return orjson.dumps(out, default=str).decode()


_configured: list[logging.Handler] = []


class _StdStream(logging.StreamHandler):
    """Writes to ``sys.stdout`` or ``sys.stderr`` as they are when each record is written (click's test runner
    and pytest swap them; a handler bound to a swapped-out stream would write to a closed file)."""

    def __init__(self, which: str):
        self._which = which
        super().__init__()

    @property
    def stream(self) -> IO[str]:  # type: ignore[override]
        return getattr(sys, self._which)

    @stream.setter
    def stream(self, _value: IO[str]) -> None:
        return None


def configure(level: str | int = "INFO", stream: IO[str] | None = None, *, to: str = "stdout") -> logging.Handler:
    """Send every logger's records as JSON lines to ``stream``, else to sys.stdout (``to="stderr"``: sys.stderr);
    silence the servers' access logs. Idempotent: a second call replaces the handler it installed before.
    """
    root = logging.getLogger()
    for handler in _configured:
        root.removeHandler(handler)
    _configured.clear()
    handler = logging.StreamHandler(stream) if stream is not None else _StdStream(to)
    handler.setFormatter(JsonFormatter())
    root.addHandler(handler)
    _configured.append(handler)
    root.setLevel(level if isinstance(level, int) else level.upper())
    logging.getLogger("gateway").setLevel(root.level)
    # werkzeug writes each request line with its full query string at INFO: ours replaces it
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    logging.getLogger("gunicorn.access").disabled = True
    return handler


def gunicorn_logconfig(level: str = "INFO") -> dict:
    """gunicorn's ``logconfig_dict``: its error log and every other logger as JSON on stdout, no access log."""
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"json": {"()": "gateway.observability.logs.JsonFormatter"}},
        "handlers": {"stdout": {"class": "logging.StreamHandler", "formatter": "json", "stream": "ext://sys.stdout"}},
        "root": {"level": level.upper(), "handlers": ["stdout"]},
        "loggers": {
            "gunicorn.error": {"level": level.upper(), "handlers": [], "propagate": True},
            "gunicorn.access": {"level": "CRITICAL", "handlers": [], "propagate": False},
            "gateway": {"level": level.upper(), "handlers": [], "propagate": True},
            "werkzeug": {"level": "WARNING", "handlers": [], "propagate": True},
        },
    }


class QuietRequestHandler(WSGIRequestHandler):
    """werkzeug's request handler for ``gateway serve``: no access line (the app logs each request, redacted);
    its other messages (bad request lines, TLS errors) go through our logger, scrubbed."""

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        return None

    def log(self, type: str, message: str, *args: Any) -> None:
        logging.getLogger("werkzeug").log(logging.ERROR if type == "error" else logging.WARNING, "%s",
                                          scrub(message % args if args else message))
