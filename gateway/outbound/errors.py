"""Typed errors of outbound FHIR calls: one class per kind of failure, so callers decide by type.

``retryable`` says whether trying again later may succeed (5xx, 408, 429, connection errors);
the outbox moves a job to ``dead`` at once on a non-retryable error.

>>> error_for_status(503, "GET Patient", None).retryable
True
"""

from __future__ import annotations

from http import HTTPStatus


class OutboundError(Exception):
    """Base of every outbound failure. ``status`` is the HTTP status when there was a response."""

    retryable: bool = False
    not_sent: bool = False  # True when the request certainly never reached the server

    def __init__(self, message: str, *, status: int | None = None, outcome: dict | None = None,
                 retry_after: float | None = None):
        super().__init__(message)
        self.message = message
        self.status = status
        self.outcome = outcome  # the OperationOutcome the server sent, if any
        self.retry_after = retry_after  # seconds, from a Retry-After header


class DestinationNotAllowed(OutboundError):
    """The host is not in GATEWAY_ALLOWED_HOSTS; no request was sent."""


class ConfigurationError(OutboundError):
    """A hospital file or a secret it names is missing or wrong; no request was sent."""


class TransportError(OutboundError):
    """Connection refused, reset, DNS failure or timeout: nothing (or nothing usable) came back."""

    retryable = True


class InvalidResponse(OutboundError):
    """The server answered 2xx with something that is not the FHIR JSON we asked for."""

    retryable = True  # a proxy error page in front of a healthy server is usually transient


class Unauthorized(OutboundError):
    """401: the token was refused (expired, revoked or wrong)."""


class TokenRefused(Unauthorized):
    """The token endpoint refused our client credentials (invalid_client, invalid_grant)."""


class Forbidden(OutboundError):
    """403: authenticated but not allowed."""


class NotFound(OutboundError):
    """404 or 410: the resource or endpoint does not exist (any more)."""


class PatientNotFound(NotFound):
    """The hospital has no Patient with this NHS number yet: retried (within the budget), as the
    hospital's record may arrive later."""

    retryable = True


class Conflict(OutboundError):
    """409 or 412: a version conflict or a failed precondition (If-Match, If-None-Exist)."""


class Unprocessable(OutboundError):
    """422 (or another 4xx): the server refused the content."""


class RequestTimeout(OutboundError):
    """408: the server gave up waiting for our request."""

    retryable = True


class TooManyRequests(OutboundError):
    """429: slow down; ``retry_after`` says for how long when the server said so."""

    retryable = True


class ServerError(OutboundError):
    """5xx: the server failed."""

    retryable = True


_BY_STATUS: dict[int, type[OutboundError]] = {
    HTTPStatus.UNAUTHORIZED: Unauthorized,
    HTTPStatus.FORBIDDEN: Forbidden,
    HTTPStatus.NOT_FOUND: NotFound,
    HTTPStatus.GONE: NotFound,
    HTTPStatus.CONFLICT: Conflict,
    HTTPStatus.PRECONDITION_FAILED: Conflict,
    HTTPStatus.UNPROCESSABLE_ENTITY: Unprocessable,
    HTTPStatus.REQUEST_TIMEOUT: RequestTimeout,
    HTTPStatus.TOO_MANY_REQUESTS: TooManyRequests,
}


def error_for_status(status: int, what: str, outcome: dict | None, retry_after: float | None = None,
                     detail: str = "") -> OutboundError:
    """An HTTP error status -> the typed error, with the server's first diagnostics in the message."""
    cls = _BY_STATUS.get(status) or (ServerError if status >= 500 else Unprocessable)
    diag = detail or _diagnostics(outcome)
    try:
        phrase = HTTPStatus(status).phrase
    except ValueError:
        phrase = "HTTP error"
    msg = f"{what}: {status} {phrase}" + (f": {diag}" if diag else "")
    return cls(msg, status=status, outcome=outcome, retry_after=retry_after)


def _diagnostics(outcome: dict | None) -> str:
    if not isinstance(outcome, dict) or outcome.get("resourceType") != "OperationOutcome":
        return ""
    issues = outcome.get("issue") or []
    parts = [str(i.get("diagnostics") or i.get("code") or "") for i in issues if isinstance(i, dict)]
    return "; ".join(p for p in parts if p)[:500]
