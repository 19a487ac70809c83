"""Hospital EHR integration in the API: contact requests, and pulling a record for ``$match``.

Contact requests: POST /fhir/ResearchSubject (status=candidate) stored and queued for the hospital.

A contact request is a ResearchSubject with status ``candidate`` whose ``study`` references a
ResearchStudy held here. A duplicate request (same person, same study) returns the existing ResearchSubject with 200 and
queues nothing: the gateway's copy carries the same keyed contact-request identifier and is
created with If-None-Exist on it. Status changes (PUT with If-Match, by the hospital, the research
team or the patient withdrawing) go through the ordinary /fhir routes; the outbox hook queues
each change for the hospital in the same transaction.
"""

from __future__ import annotations

from http import HTTPStatus

from flask import Blueprint, Flask, current_app, g, request

from gateway.api.fhir_rest import _as_dict, _write_response, service, store
from gateway.api.http import check_accept, json_body
from gateway.fhir.conventions import CONTACT_REQUEST_ID, NHS_NUMBER
from gateway.fhir.errors import BusinessRuleViolation, FhirError, Forbidden, Gone, InvalidResource, NotFound
from gateway.fhir.validate import validate_resource
from gateway.outbound import errors as outbound_errors
from gateway.outbound.contact import plan_route, with_contact_identifier
from gateway.outbound.destinations import Destinations
from gateway.outbound.pull import pull_patient_bundle

bp = Blueprint("contact", __name__, url_prefix="/fhir")


def destinations() -> Destinations:
    return current_app.extensions["gateway.outbound"]


def init_app(app: Flask) -> None:
    """Register the contact and admin routes (the hospitals and the outbox hook come from gateway/compose.py)."""
    from gateway.api import outbox

    app.register_blueprint(bp)
    app.register_blueprint(outbox.bp)


def _read(rtype: str, rid: str) -> dict | None:
    try:
        return store().read(rtype, rid).resource()
    except (NotFound, Gone):
        return None


@bp.post("/ResearchSubject")
def create_research_subject():
    check_accept()
    resource = validate_resource(_as_dict(json_body(), "ResearchSubject"), "ResearchSubject")
    if resource.get("status") != "candidate" or not (resource.get("study") or {}).get("reference"):
        # Not a contact request to route: e.g. a hospital's own record, or a copy written to a gateway that
        # plays a hospital (study by identifier only). Stored like any resource.
        result = service().create(resource, if_none_exist=request.headers.get("If-None-Exist"), validated=True)
        return _write_response(result, HTTPStatus.CREATED if result.created else HTTPStatus.OK)
    dest = destinations()
    # A person's own request: their hospital may be unconfigured (or they may be named by NHS number only) as long
    # as a research team of one of the study's sites can be reached (docs/patient-actions.md).
    route = plan_route(resource, _read, dest, dest.settings.contact_id_key, sites_only_ok=True)
    resource = with_contact_identifier(resource, route.contact_id)
    result = service().create(resource, if_none_exist=f"identifier={CONTACT_REQUEST_ID}|{route.contact_id}",
                              validated=True)
    return _write_response(result, HTTPStatus.CREATED if result.created else HTTPStatus.OK)


class PreconditionRequired(FhirError):
    """428: this update must say which version it changes (If-Match)."""

    status = HTTPStatus.PRECONDITION_REQUIRED
    code = "business-rule"


@bp.put("/ResearchSubject/<rid>")
def update_research_subject(rid: str):
    """Status changes of a contact request need If-Match (the hospital, the research team and the patient may
    change it concurrently); its contact-request identifier is kept whatever the body says."""
    check_accept()
    resource = _as_dict(json_body(), "ResearchSubject")
    current = _read("ResearchSubject", rid)
    marked = next((i for i in (current or {}).get("identifier") or []
                   if isinstance(i, dict) and i.get("system") == CONTACT_REQUEST_ID), None)
    if marked is not None:
        if not request.headers.get("If-Match"):
            raise PreconditionRequired("A contact request is changed with If-Match: the version you read "
                                       "(its ETag), so that concurrent changes are not lost", "If-Match")
        resource = with_contact_identifier(resource, marked["value"])
    result = service().update("ResearchSubject", rid, resource, if_match=request.headers.get("If-Match"))
    return _write_response(result, HTTPStatus.CREATED if result.created else HTTPStatus.OK)


# -- pulling a patient's record from their hospital (for $match patient-identifier + hospital) ---------
class UpstreamFailed(FhirError):
    """The hospital's server failed or refused us (502); the OperationOutcome says which and why."""

    status = HTTPStatus.BAD_GATEWAY
    code = "transient"


class UpstreamTimeout(UpstreamFailed):
    status = HTTPStatus.GATEWAY_TIMEOUT
    code = "timeout"


def _check_may_pull(hospital_ods: set[str], nhs_number: str) -> None:
    """Who may have a record pulled from a hospital: administrators; a patient app for its own person; a
    hospital from its own EHR (its tenant ODS code). Nobody else, and before any traffic."""
    caller = g.get("caller")
    role = getattr(caller, "role", "anonymous")
    if role == "admin":
        return
    if role == "patient-app" and getattr(caller, "nhs_number", None) == nhs_number:
        return
    if role == "hospital" and getattr(caller, "tenant", None) in hospital_ods:
        return
    raise Forbidden(f"A {role} client may not pull this patient's record from this hospital", "patient-identifier")


def pulled_bundle(params: dict[str, list[object]]) -> dict:
    """$match parameters ``patient-identifier`` (NHS number, 'system|value' or bare) and ``hospital`` (file
    name or ODS code) -> the patient's collection Bundle, pulled from the hospital now.

    Configuration problems (unknown hospital, host not allow-listed, missing secret) are 422 and send nothing;
    a hospital failure is 502 (504 when it did not answer).
    """
    ident = str((params.get("patient-identifier") or [""])[0] or "")
    system, bar, value = ident.rpartition("|")
    if not value or (bar and system not in ("", NHS_NUMBER)):
        raise InvalidResource(f"patient-identifier must be an NHS number ('{NHS_NUMBER}|<number>')",
                              "patient-identifier")
    hospital_name = str((params.get("hospital") or [""])[0] or "")
    if not hospital_name:
        raise InvalidResource("patient-identifier needs hospital: the hospital file name or ODS code", "hospital")
    dest = destinations()
    hospital = dest.hospitals.by_name.get(hospital_name) or dest.hospitals.by_ods(hospital_name)
    if hospital is None:
        raise BusinessRuleViolation(f"Unknown hospital '{hospital_name}' (known: "
                                    f"{', '.join(sorted(dest.hospitals.by_name)) or 'none configured'})", "hospital")
    _check_may_pull(hospital.ods_codes, value)
    try:
        return pull_patient_bundle(hospital, value, destinations=dest)
    except (outbound_errors.ConfigurationError, outbound_errors.DestinationNotAllowed) as exc:
        raise BusinessRuleViolation(f"Hospital '{hospital.name}': {exc.message}", "hospital") from None
    except outbound_errors.PatientNotFound:
        raise NotFound(f"Hospital '{hospital.name}' has no active Patient with this NHS number",
                       "patient-identifier") from None
    except outbound_errors.TransportError as exc:
        raise UpstreamTimeout(f"Hospital '{hospital.name}' did not answer: {exc.message}", "hospital") from None
    except outbound_errors.OutboundError as exc:
        raise UpstreamFailed(f"Hospital '{hospital.name}': {exc.message}", "hospital") from None
