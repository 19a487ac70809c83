"""The audit trail of API requests: which responses are recorded (patient data, writes, refusals, operations,
administration) and the AuditEvent handed to the background writer (``gateway.store.audit``)."""

from __future__ import annotations

from flask import Response, g, request

from gateway.api.authstate import PUBLIC_PATHS, anonymous, state
from gateway.security.policy import Access, kind_of
from gateway.store.audit import audit_event


def record(resp: Response) -> None:
    """Audit this request when it touched patient data, wrote, was refused, ran an operation or administered."""
    acc: Access | None = g.get("access")
    path = request.path
    if g.get("audited"):
        return
    if not path.startswith(("/fhir", "/admin", "/patient/")) or path in PUBLIC_PATHS:  # /patient: api/patient.py
        return
    interaction = g.get("interaction") or "unknown"
    rtype = g.get("rtype")
    patient_data = bool(acc and (acc.touched or acc.people)) or (
        rtype is not None and kind_of(rtype) in ("patient", "subscription"))
    if not (patient_data or request.method != "GET" or resp.status_code in (401, 403)
            or interaction == "operation" or path.startswith("/admin")):
        return
    caller = acc.caller if acc else anonymous()
    if interaction == "search" and rtype == "AuditEvent":
        return  # reading the audit trail is not itself audited per page (administrators only)
    event = audit_event(interaction=interaction, status=resp.status_code, client_id=caller.client_id,
                        role=caller.role, request_id=g.get("request_id", ""),
                        people=sorted(acc.people) if acc else (), resources=sorted(acc.touched) if acc else ())
    state().audit_writer.submit(event)
