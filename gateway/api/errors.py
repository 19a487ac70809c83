"""Every API error is rendered here, as an OperationOutcome; no stack trace ever reaches a client."""

from __future__ import annotations

import logging
import uuid
from http import HTTPStatus

from flask import Flask, g
from werkzeug.exceptions import HTTPException

from gateway.api.http import fhir_response
from gateway.fhir.errors import FhirError, Issue, operation_outcome

log = logging.getLogger("gateway.api")

_HTTP_CODES = {404: "not-found", 405: "not-supported", 413: "too-costly", 415: "not-supported",
               406: "not-supported", 400: "invalid"}


def init_app(app: Flask) -> None:
    @app.errorhandler(FhirError)
    def _fhir_error(exc: FhirError):
        return fhir_response(exc.outcome(), exc.status, exc.headers)

    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException):
        code = exc.code or 500
        issue = Issue(_HTTP_CODES.get(code, "processing"), exc.description or exc.name)
        return fhir_response(operation_outcome([issue]), code)

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception):
        incident = str(uuid.uuid4())
        log.exception("unhandled error, incident %s, request %s", incident, getattr(g, "request_id", "-"))
        issue = Issue("exception", f"Internal error; quote incident {incident} to the operators")
        return fhir_response(operation_outcome([issue]), HTTPStatus.INTERNAL_SERVER_ERROR)
