"""Patient actions, for a person the gateway may hold no record of: contact requests, withdrawal, trial alerts.

Service functions (the pages call these in process; each takes the Caller and goes through the one
authorization path, ``gateway.security.authorize`` and the write guard of ``Access``):
``request_contact``, ``withdraw_contact``, ``contact_requests``, ``opt_in_alerts``, ``alerts``, ``opt_out_alerts``.

API for apps (bearer token of a ``patient-app`` client, or the signed-in session plus its CSRF token):
``POST /patient/contact-requests`` (Parameters: study), ``GET /patient/contact-requests``,
``DELETE /patient/contact-requests/<id>`` (withdraw), ``GET|POST|DELETE /patient/alerts``.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from datetime import UTC, datetime
from http import HTTPStatus
from urllib.parse import urlencode

from flask import Blueprint, Flask, current_app, g, has_request_context, request

from gateway.api.http import fhir_response, json_body
from gateway.api.params import first, parameters_of
from gateway.fhir import conventions as cv
from gateway.fhir.errors import BusinessRuleViolation, Forbidden, Gone, InvalidResource, NotFound, Unauthorized
from gateway.matching.geo import outward_code, postcode_position
from gateway.notify.flows import ALERTS_ONLY_TAG
from gateway.notify.subscriptions import EXT_FILTER_CRITERIA, EXT_PAYLOAD_CONTENT
from gateway.outbound.contact import NotConfigured, patient_ods, plan_route, with_contact_identifier
from gateway.outbound.destinations import Destinations
from gateway.security import Access, Caller, authorize, current_access, record_automatic
from gateway.security.policy import _PEOPLE_CACHE  # evicted when the gateway makes the caller's alerts-only Patient
from gateway.store.interactions import FhirService
from gateway.store.repo import Store

OWNER_ID = f"{cv.BASE}/Id/patient-action-owner"  # keyed hash of the NHS number: finds a person's own requests
EXT_ALERT_SUBSCRIPTION = f"{cv.BASE}/StructureDefinition/alert-subscription"  # on the Consent: its Subscription
EXT_ALERT_INTEREST = f"{cv.BASE}/StructureDefinition/alert-interest"  # on the Subscription: condition, area
CLOSED = ("withdrawn", "ineligible", "not-registered", "off-study")

bp = Blueprint("patient", __name__, url_prefix="/patient")


# -- plumbing -----------------------------------------------------------------------------------------
def _store() -> Store:
    return current_app.extensions["gateway.store"]


def _service() -> FhirService:
    return current_app.extensions["gateway.service"]


def _dest() -> Destinations:
    return current_app.extensions["gateway.outbound"]


@dataclass
class _Acting:
    """The caller's Access, set as the write guard's current access for the length of a service call (so the
    guard also holds when a page calls a service outside a /fhir request)."""

    caller: Caller

    def __enter__(self) -> Access:
        if self.caller.role != "patient-app" or not self.caller.nhs_number:
            raise Forbidden("Patient actions are for a signed-in patient (or a patient app acting for one)",
                            "caller")
        shared = g.get("access") if has_request_context() else None  # the request's own: audited with it
        self.access = shared if shared is not None and shared.caller == self.caller else Access(self.caller,
                                                                                                 _store())
        self.token = current_access.set(self.access)
        return self.access

    def __exit__(self, *exc) -> None:
        current_access.reset(self.token)


def owner_key(nhs_number: str, *, required: bool = True) -> str | None:
    """Keyed hash of the person (GATEWAY_CONTACT_ID_KEY), so their requests are found without the NHS number.

    Without the key nothing can have been recorded: reads get None (nothing to list), writes a NotConfigured.
    """
    key = _dest().settings.contact_id_key
    if not key:
        if not required:
            return None
        raise NotConfigured("GATEWAY_CONTACT_ID_KEY is not set: patient actions cannot be recorded", "identifier")
    return hmac.new(key.encode(), f"person|{nhs_number}".encode(), hashlib.sha256).hexdigest()


def _read(rtype: str, rid: str) -> dict | None:
    try:
        return _store().read(rtype, rid).resource()
    except (NotFound, Gone):
        return None


def _own_patients(acc: Access) -> list[dict]:
    ids = sorted(r.removeprefix("Patient/") for r in acc.own_people() if r.startswith("Patient/"))
    return [p for p in (_read("Patient", i) for i in ids) if p]


def _search(rtype: str, items: list[tuple[str, str]]) -> list[dict]:
    from gateway.fhir.search import parse_search

    q = parse_search(rtype, items, default_count=1000)
    return [st.resource() for st in _store().search(q)[1] if st.content]


def _today() -> str:
    return datetime.now(UTC).date().isoformat()


# -- contact requests ---------------------------------------------------------------------------------
@dataclass
class ContactResult:
    subject: dict  # the gateway's ResearchSubject (status candidate)
    created: bool  # False: the same person had already asked about this study (nothing new was queued)
    hospital: str | None  # the patient's own hospital told, if configured
    sites: list[str]  # research teams of the study's sites told


def request_contact(caller: Caller, study_id: str) -> ContactResult:
    """The caller's person asks to be contacted about ResearchStudy/<study_id>.

    Routed to the person's hospital when one of their records names a configured hospital (its ResearchSubject,
    as before), and to the research team of every study site reachable through mappings/hospitals
    (``site-contact``: a Task naming the person by NHS number and the study by identifier). No route at all:
    422 and nothing is stored.
    """
    with _Acting(caller) as acc:
        study = _read("ResearchStudy", study_id)
        if study is None:
            raise NotFound(f"ResearchStudy/{study_id} is not known", "study")
        authorize(acc, "read", "ResearchStudy", {**study, "id": study_id})
        dest = _dest()
        individual: dict = {"identifier": {"system": cv.NHS_NUMBER, "value": caller.nhs_number}}
        for p in _own_patients(acc):  # a record at a configured hospital lets that hospital be told too
            if dest.hospitals.by_ods(patient_ods(p, _read)) is not None:
                individual = {"reference": f"Patient/{p['id']}"}
                break
        subject = {"resourceType": "ResearchSubject", "status": "candidate", "period": {"start": _today()},
                   "identifier": [{"system": OWNER_ID, "value": owner_key(str(caller.nhs_number))}],
                   "study": {"reference": f"ResearchStudy/{study_id}"}, "individual": individual}
        authorize(acc, "create", "ResearchSubject", subject)
        route = plan_route(subject, _read, dest, dest.settings.contact_id_key, sites_only_ok=True)
        subject = with_contact_identifier(subject, route.contact_id)
        result = _service().create(subject, if_none_exist=f"identifier={cv.CONTACT_REQUEST_ID}|{route.contact_id}")
        return ContactResult(result.stored.resource(), result.created,
                             route.hospital.name if route.hospital else None, [h.name for h in route.site_hospitals])


def contact_requests(caller: Caller) -> list[dict]:
    """The caller's own contact requests (ResearchSubjects the gateway made for them), newest first."""
    with _Acting(caller) as acc:
        owner = owner_key(str(caller.nhs_number), required=False)
        if owner is None:
            return []
        found = _search("ResearchSubject", [("identifier", f"{OWNER_ID}|{owner}")])
        mine = [r for r in found if acc.can_see(r)]
        return sorted(mine, key=lambda r: (r.get("meta") or {}).get("lastUpdated", ""), reverse=True)


def withdraw_contact(caller: Caller, subject_id: str) -> dict:
    """Withdraw one of the caller's contact requests: status withdrawn, period ended; the outbox takes the change
    to the hospital's ResearchSubject and its research team's Task, and to every site's Task (cancelled)."""
    with _Acting(caller) as acc:
        try:
            st = _store().read("ResearchSubject", subject_id)
        except (NotFound, Gone):
            raise NotFound(f"ResearchSubject/{subject_id} is not known", "ResearchSubject.id") from None
        current = st.resource()
        authorize(acc, "read", "ResearchSubject", current)  # NotFound when it is not the caller's
        if not any(i.get("system") == cv.CONTACT_REQUEST_ID for i in current.get("identifier") or []):
            raise BusinessRuleViolation(f"ResearchSubject/{subject_id} is not a contact request", "ResearchSubject")
        if current.get("status") in CLOSED:
            return current
        changed = {k: v for k, v in current.items() if k != "meta"}
        changed["status"] = "withdrawn"
        changed["period"] = {**(current.get("period") or {}), "end": _today()}
        authorize(acc, "update", "ResearchSubject", changed)
        return _service().update("ResearchSubject", subject_id, changed, if_match=f'W/"{st.version}"'
                                 ).stored.resource()


# -- trial alerts -------------------------------------------------------------------------------------
def alerts(caller: Caller) -> list[dict]:
    """The caller's active trial-alert opt-ins: their Consent and Subscription resources."""
    with _Acting(caller) as acc:
        out: list[dict] = []
        owner = owner_key(str(caller.nhs_number), required=False)
        if owner is None:
            return out
        for consent in _search("Consent", [("identifier", f"{OWNER_ID}|{owner}"), ("status", "active")]):
            if not acc.can_see(consent):
                continue
            out.append(consent)
            for ext in consent.get("extension") or []:
                ref = (ext.get("valueReference") or {}).get("reference", "") if ext.get(
                    "url") == EXT_ALERT_SUBSCRIPTION else ""
                sub = _read("Subscription", ref.removeprefix("Subscription/")) if ref.startswith(
                    "Subscription/") else None
                if sub is not None and acc.can_see(sub):
                    out.append(sub)
        return out


def _condition_codes(condition: str) -> list[tuple[str, str]]:
    """'brain tumour' -> [(SNOMED, '126952004')] through the terminology; 'system|code' is taken as given (a
    code the terminology knows). Unrecognised: 422, nothing stored (a filter nothing can meet would be silent)."""
    from gateway.matching.terms import default_terminology

    term = default_terminology()
    system, bar, code = condition.rpartition("|")
    if bar and system.startswith(("http://", "https://", "urn:")) and code:
        found = [term.key(system, code)] if hasattr(term, "key") else [(system, code)]
        if any(len(term.ancestors(*k)) > 1 or term.display(*k) for k in found):
            return found
    else:
        found = term.resolve_text(condition)[:_MAX_CODES]
        if found:
            return found
    raise BusinessRuleViolation("condition: not a condition the gateway's terminology recognises (try another name, "
                                "e.g. 'brain tumour'); nothing was stored", "condition")


_MAX_CODES = 5


def _alerts_only_patient(caller: Caller) -> str:
    """The minimal Patient that stands for a person the gateway holds no record of: the NHS number identifier and
    the alerts-only tag, nothing clinical (the flows never match it against a study's criteria, only against the
    opt-in's own condition and area). Written by the gateway for the signed-in person (a patient app may not
    write Patients); conditional on the identifier, so asking twice makes one. -> its id."""
    nhs = str(caller.nhs_number)
    stub = {"resourceType": "Patient", "meta": {"tag": [{"system": ALERTS_ONLY_TAG[0], "code": ALERTS_ONLY_TAG[1],
                                                          "display": "Created for trial alerts only"}]},
            "identifier": [{"system": cv.NHS_NUMBER, "value": nhs}]}
    token = current_access.set(None)  # the gateway writes it, having checked who the caller is
    try:
        result = _service().create(stub, if_none_exist=f"identifier={cv.NHS_NUMBER}|{nhs}")
    finally:
        current_access.reset(token)
    _PEOPLE_CACHE.get(_store(), {}).pop(nhs, None)  # the caller's own records now include it (this process)
    shared = g.get("access") if has_request_context() else None
    if shared is not None:
        shared._own_people = None  # and the request's Access, looked up before it existed
    record_automatic(_store(), "create", people=[f"Patient/{result.stored.id}"],
                     resources=[f"Patient/{result.stored.id}"], detail="alerts-only Patient for a trial-alerts opt-in")
    return result.stored.id


def opt_in_alerts(caller: Caller, condition: str, postcode: str | None = None, distance_km: int = 50) -> list[dict]:
    """Opt in to alerts of new matching studies: a ``trial-alerts`` Consent and a Subscription on the
    new-matching-study topic (rest-hook to GATEWAY_PATIENT_ALERT_ENDPOINT), in one transaction.

    The Subscription's filter criteria hold ``patient`` (each of the person's Patient records), ``condition``
    (the codes the text resolved to) and, with a postcode, ``postcode`` (its district only) and ``distance``:
    a new study alerts the person only if it is about that condition (or a kind of it) with a recruiting site
    within the distance, and, for a person with records, fits them by the $match rules too. A person with no
    record here gets a minimal alerts-only Patient (NHS number only; docs/patient-actions.md). Opting in again
    replaces the earlier opt-in.
    """
    endpoint = current_app.config["SETTINGS"].notify.patient_alert_endpoint
    if not endpoint:
        raise NotConfigured("GATEWAY_PATIENT_ALERT_ENDPOINT is not set: alerts have no channel", "endpoint")
    condition = (condition or "").strip()
    if not condition or len(condition) > 200:
        raise InvalidResource("condition: say which condition (1 to 200 characters)", "condition")
    if not 1 <= distance_km <= 1000:
        raise InvalidResource("distance: 1 to 1000 km", "distance")
    area = outward_code(postcode) if (postcode or "").strip() else None
    if (postcode or "").strip() and (area is None or postcode_position(area) is None):
        raise InvalidResource("postcode: not a UK postcode (or district) the gateway can place", "postcode")
    codes = _condition_codes(condition)
    with _Acting(caller) as acc:
        patients = _own_patients(acc)
        owner = {"system": OWNER_ID, "value": owner_key(str(caller.nhs_number))}
    if not patients:
        _alerts_only_patient(caller)
    earlier = alerts(caller)
    with _Acting(caller) as acc:
        patients = patients or _own_patients(acc)
        if not patients:
            raise BusinessRuleViolation("Your alerts record could not be made; nothing was stored", "patient")
        interest = [{"url": "condition", "valueString": condition}]
        interest += [{"url": "code", "valueCoding": {"system": s, "code": c}} for s, c in codes]
        if area:
            interest += [{"url": "postcode", "valueString": area}, {"url": "distance", "valueQuantity": {
                "value": distance_km, "unit": "km", "system": "http://unitsofmeasure.org", "code": "km"}}]
        filters = [("patient", f"Patient/{p['id']}") for p in patients]
        filters += [("condition", f"{s}|{c}") for s, c in codes]
        if area:
            filters += [("postcode", area), ("distance", str(distance_km))]
        settings = current_app.config["SETTINGS"]
        channel: dict = {"type": "rest-hook", "endpoint": endpoint, "payload": "application/fhir+json",
                         "_payload": {"extension": [{"url": EXT_PAYLOAD_CONTENT, "valueCode": "id-only"}]}}
        if settings.notify.patient_alert_header:
            channel["header"] = [settings.notify.patient_alert_header.strip()]
        criteria = "ResearchStudy?" + urlencode(filters, safe="/:|")
        sub = {"resourceType": "Subscription", "status": "requested",
               "reason": f"Trial alerts: {condition}" + (f" within {distance_km} km of {area}" if area else ""),
               "criteria": cv.TOPIC_NEW_MATCHING_STUDY,
               "_criteria": {"extension": [{"url": EXT_FILTER_CRITERIA, "valueString": criteria}]},
               "extension": [{"url": EXT_ALERT_INTEREST, "extension": interest}], "channel": channel}
        consent = {"resourceType": "Consent", "status": "active", "identifier": [owner],
                   "scope": {"coding": [{"system": cv.CONSENT_SCOPE, "code": "research"}]},
                   "category": [{"coding": [{"system": "http://loinc.org", "code": "57016-8"}]}],
                   "patient": {"reference": f"Patient/{patients[0]['id']}"}, "dateTime": _now(),
                   "policyRule": {"text": "Trial alerts asked for by the patient"},
                   "provision": {"type": "permit", "period": {"start": _today()},
                                 "purpose": [{"system": cv.PURPOSE_TRIAL_ALERTS[0],
                                              "code": cv.PURPOSE_TRIAL_ALERTS[1]}]},
                   "extension": [{"url": EXT_ALERT_SUBSCRIPTION, "valueReference": {"reference": "urn:uuid:sub"}}]}
        bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [
            {"fullUrl": "urn:uuid:sub", "resource": sub, "request": {"method": "POST", "url": "Subscription"}},
            {"resource": consent, "request": {"method": "POST", "url": "Consent"}},
            *_ending(earlier)]}  # the earlier opt-in ends in the same transaction: never none, never two
        result = _service().process_bundle(bundle, include_resources=True)
        return [e["resource"] for e in result["entry"][:2] if isinstance(e.get("resource"), dict)]


def _ending(current: list[dict]) -> list[dict]:
    """Transaction entries that end these opt-ins: Consent inactive (provision period ended), Subscription off."""
    entries = []
    for r in current:
        changed = {k: v for k, v in r.items() if k != "meta"}
        changed["status"] = "inactive" if r["resourceType"] == "Consent" else "off"
        if r["resourceType"] == "Consent":
            provision = r.get("provision") or {}
            changed["provision"] = {**provision, "period": {**(provision.get("period") or {}), "end": _today()}}
        entries.append({"resource": changed, "request": {"method": "PUT", "url": f"{r['resourceType']}/{r['id']}"}})
    return entries


def opt_out_alerts(caller: Caller) -> int:
    """Opt out in one step: every active alert Consent of the caller becomes inactive and its Subscription off
    (kept, so the record of what was agreed and withdrawn stays). -> how many opt-ins ended."""
    current = alerts(caller)
    if not current:
        return 0
    with _Acting(caller):
        _service().process_bundle({"resourceType": "Bundle", "type": "transaction", "entry": _ending(current)})
        return sum(1 for r in current if r["resourceType"] == "Consent")


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


# -- the API --------------------------------------------------------------------------------------------
def init_app(app: Flask) -> None:
    from gateway.api import signin

    signin.init_app(app)
    app.register_blueprint(bp)


def _caller() -> Caller:
    """The request's caller, resolved once (bearer token or signed-in session); a session-authenticated change
    needs the session's CSRF token, so a cross-site form cannot make it."""
    caller = g.get("caller")
    if caller is None or caller.role != "patient-app" or not caller.nhs_number:
        if caller is None or not caller.authenticated:
            raise Unauthorized("Sign in (GET /patient/login) or send a patient app's bearer token", "Authorization")
        raise Forbidden(f"Patient actions are for patients; a {caller.role} client may not use them", "caller")
    if request.method != "GET" and "Authorization" not in request.headers:
        from gateway.api.signin import check_csrf

        check_csrf()
    return caller


def _bundle(resources: list[dict], btype: str = "searchset") -> dict:
    return {"resourceType": "Bundle", "type": btype, "total": len(resources),
            "entry": [{"fullUrl": f"{r['resourceType']}/{r['id']}", "resource": r} for r in resources]}


@bp.post("/contact-requests")
def post_contact_request():
    """Parameters {study: valueReference ResearchStudy/<id>} -> the ResearchSubject (201 new, 200 known)."""
    caller = _caller()
    g.interaction, g.rtype = "create", "ResearchSubject"
    ref = first(parameters_of(json_body(), "/patient/contact-requests"), "study")
    study = (ref or {}).get("reference", "") if isinstance(ref, dict) else ""
    if not study.startswith("ResearchStudy/") or len(study) <= len("ResearchStudy/"):
        raise InvalidResource("study: valueReference to ResearchStudy/<id>", "Parameters.parameter[study]")
    res = request_contact(caller, study.removeprefix("ResearchStudy/"))
    return fhir_response(res.subject, HTTPStatus.CREATED if res.created else HTTPStatus.OK)


@bp.get("/contact-requests")
def get_contact_requests():
    caller = _caller()
    g.interaction, g.rtype = "search", "ResearchSubject"
    return fhir_response(_bundle(contact_requests(caller)))


@bp.delete("/contact-requests/<rid>")
def delete_contact_request(rid: str):
    """Withdraw (the record stays, status withdrawn, so every copy can follow)."""
    caller = _caller()
    g.interaction, g.rtype = "update", "ResearchSubject"
    return fhir_response(withdraw_contact(caller, rid))


@bp.get("/alerts")
def get_alerts():
    caller = _caller()
    g.interaction, g.rtype = "search", "Consent"
    return fhir_response(_bundle(alerts(caller)))


@bp.post("/alerts")
def post_alerts():
    """Parameters {condition: valueString, postcode: valueString?, distance: valueInteger?} -> the opt-in."""
    caller = _caller()
    g.interaction, g.rtype = "create", "Consent"
    params = parameters_of(json_body(), "/patient/alerts")
    condition, postcode, distance = first(params, "condition"), first(params, "postcode"), first(params, "distance")
    if not isinstance(condition, str):
        raise InvalidResource("condition: valueString", "Parameters.parameter[condition]")
    if postcode is not None and not isinstance(postcode, str):
        raise InvalidResource("postcode: valueString", "Parameters.parameter[postcode]")
    if distance is not None and (not isinstance(distance, int) or isinstance(distance, bool)):
        raise InvalidResource("distance: valueInteger (km)", "Parameters.parameter[distance]")
    made = opt_in_alerts(caller, condition, postcode, distance if isinstance(distance, int) else 50)
    return fhir_response(_bundle(made, "collection"), HTTPStatus.CREATED)


@bp.delete("/alerts")
def delete_alerts():
    """Opt out of every alert in one step; 200 with an OperationOutcome saying how many ended."""
    caller = _caller()
    g.interaction, g.rtype = "update", "Consent"
    n = opt_out_alerts(caller)
    return fhir_response({"resourceType": "OperationOutcome", "issue": [
        {"severity": "information", "code": "informational",
         "diagnostics": f"Opted out: {n} alert subscription{'s' if n != 1 else ''} ended"}]})


__all__ = ["ContactResult", "alerts", "bp", "contact_requests", "init_app", "opt_in_alerts", "opt_out_alerts",
           "request_contact", "withdraw_contact"]
