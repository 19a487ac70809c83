"""Administration: erasing one person (``POST /admin/erasure``, ``?dryRun=true`` to preview)."""

from __future__ import annotations

from flask import Blueprint, current_app, g, request

from gateway.api.authstate import access
from gateway.api.http import fhir_response, json_body
from gateway.api.params import first, parameters_of
from gateway.fhir.errors import InvalidResource
from gateway.security.erasure import check_nhs_number, erase_person
from gateway.store.audit import audit_event, write_audit
from gateway.store.repo import Store

bp = Blueprint("erasure", __name__)


@bp.post("/admin/erasure")
def erasure():
    """Erase one person: a Parameters body with nhsNumber (valueString) or patient (valueReference).

    ``?dryRun=true`` reports what would be removed. Answers a Parameters report (ids and counts only).
    """
    g.interaction = "erase"
    params = parameters_of(json_body(), "/admin/erasure")
    given, ref = first(params, "nhsNumber"), first(params, "patient")
    nhs = check_nhs_number(given) if isinstance(given, str) else None
    patient = None
    if isinstance(ref, dict):
        text = str(ref.get("reference", ""))
        patient = text.removeprefix("Patient/") if text.startswith("Patient/") else None
        if not patient:
            raise InvalidResource("patient must reference Patient/<id>", "Parameters.parameter.valueReference")
    dry = request.args.get("dryRun", "false").lower() == "true"
    if dry:
        g.interaction = "erase-preview"
    store: Store = current_app.extensions["gateway.store"]
    report = erase_person(store, nhs_number=nhs, patient_id=patient, dry_run=dry)
    acc = access()
    acc.people.update(report.patients)
    if not dry:
        # The erasure is recorded even when routine auditing is off: the record is the proof it happened.
        caller = acc.caller
        event = audit_event(interaction="erase", status=200, client_id=caller.client_id, role=caller.role,
                            request_id=g.get("request_id", ""), people=report.patients,
                            detail=f"erased {sum(report.removed.values())} resources, {report.versions} versions")
        write_audit(store, event)
        g.audited = True
    out = report.to_parameters()
    out["parameter"].insert(0, {"name": "dryRun", "valueBoolean": dry})
    return fhir_response(out)
