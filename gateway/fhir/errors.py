"""One error hierarchy, rendered as FHIR OperationOutcome by the API layer.

Each error carries the HTTP status, the issue ``code`` from the FHIR issue-type value set
(http://hl7.org/fhir/valueset-issue-type.html) and, where known, the FHIRPath ``expression``
of the offending element, e.g. ``Bundle.entry[3].resource.status``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from http import HTTPStatus


def printable(text: str) -> str:
    """A FHIR string (no control characters but CR, LF, TAB; not blank): an error message may quote what the
    client sent, e.g. '\x0c' -> '\\x0c'."""
    if text.isprintable():
        return text or "-"
    out = "".join(c if c.isprintable() or c in "\r\n\t" else repr(c)[1:-1] for c in text)
    return out if out.strip() else repr(text)


@dataclass
class Issue:
    """One OperationOutcome.issue."""

    code: str
    diagnostics: str
    expression: list[str] = field(default_factory=list)
    severity: str = "error"

    def to_fhir(self) -> dict:
        out: dict = {"severity": self.severity, "code": self.code, "diagnostics": printable(self.diagnostics)}
        if self.expression:
            out["expression"] = [printable(e) for e in self.expression]
        return out

    def prefixed(self, prefix: str) -> Issue:
        """Re-anchor the expression under ``prefix`` (``Patient.x`` -> ``Bundle.entry[2].resource.x``)."""
        exprs = []
        for e in self.expression or [""]:
            rest = e.split(".", 1)[1] if "." in e else ""
            exprs.append(f"{prefix}.{rest}" if rest else prefix)
        return Issue(self.code, self.diagnostics, exprs, self.severity)


class FhirError(Exception):
    """Base for every error that becomes an OperationOutcome."""

    status: HTTPStatus = HTTPStatus.BAD_REQUEST
    code: str = "processing"

    def __init__(self, diagnostics: str, expression: str | list[str] | None = None,
                 issues: list[Issue] | None = None, headers: dict | None = None):
        super().__init__(diagnostics)
        self.diagnostics = diagnostics
        if issues is None:
            expr = [expression] if isinstance(expression, str) else list(expression or [])
            issues = [Issue(self.code, diagnostics, expr)]
        self.issues = issues
        self.headers = headers or {}

    def outcome(self) -> dict:
        return operation_outcome(self.issues)

    def prefixed(self, prefix: str) -> FhirError:
        """The same error with every expression re-anchored under ``prefix``."""
        issues = [i.prefixed(prefix) for i in self.issues]
        diag = "; ".join(f"{(i.expression or [prefix])[0]}: {i.diagnostics}" for i in issues)
        err = type(self)(diag, issues=issues, headers=self.headers)
        return err


class InvalidResource(FhirError):
    """Unparseable or structurally invalid content (400)."""

    status = HTTPStatus.BAD_REQUEST
    code = "structure"


class BusinessRuleViolation(FhirError):
    """Parses, but breaks a rule: a code outside its required value set, a business rule (422)."""

    status = HTTPStatus.UNPROCESSABLE_ENTITY
    code = "business-rule"


class CodeInvalid(BusinessRuleViolation):
    code = "code-invalid"


class NotFound(FhirError):
    status = HTTPStatus.NOT_FOUND
    code = "not-found"


class Gone(FhirError):
    status = HTTPStatus.GONE
    code = "deleted"


class MethodNotAllowed(FhirError):
    status = HTTPStatus.METHOD_NOT_ALLOWED
    code = "not-supported"


class NotSupported(FhirError):
    status = HTTPStatus.BAD_REQUEST
    code = "not-supported"


class PreconditionFailed(FhirError):
    """Stale If-Match, or a conditional interaction that matched more than one resource (412)."""

    status = HTTPStatus.PRECONDITION_FAILED
    code = "conflict"


class Conflict(FhirError):
    status = HTTPStatus.CONFLICT
    code = "conflict"


class TooLarge(FhirError):
    status = HTTPStatus.REQUEST_ENTITY_TOO_LARGE
    code = "too-costly"


class UnsupportedMediaType(FhirError):
    status = HTTPStatus.UNSUPPORTED_MEDIA_TYPE
    code = "not-supported"


class NotAcceptable(FhirError):
    status = HTTPStatus.NOT_ACCEPTABLE
    code = "not-supported"


class Unauthorized(FhirError):
    status = HTTPStatus.UNAUTHORIZED
    code = "login"


class Forbidden(FhirError):
    status = HTTPStatus.FORBIDDEN
    code = "forbidden"


class TooManyRequests(FhirError):
    status = HTTPStatus.TOO_MANY_REQUESTS
    code = "throttled"


def operation_outcome(issues: list[Issue]) -> dict:
    """Issues -> an OperationOutcome resource (dict)."""
    return {"resourceType": "OperationOutcome", "issue": [i.to_fhir() for i in issues]}


def information_outcome(text: str, code: str = "informational") -> dict:
    return operation_outcome([Issue(code, text, severity="information")])
