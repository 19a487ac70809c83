"""Contact requests (ResearchSubject) to hospitals through the outbox: routing, the write hook, delivery.

Routing (documented rule): the ResearchSubject's ``individual`` is a gateway Patient; its NHS
number is the Patient identifier with system https://fhir.nhs.uk/Id/nhs-number; its hospital is the
hospital file whose ODS code matches the Patient's ``managingOrganization`` (the reference's
``identifier`` with the ODS system, or the referenced Organization's ODS identifier).

The copy written to the hospital references the hospital's own Patient (found by NHS number) and
the study by identifier, never gateway ids, and carries the identifier
``CONTACT_REQUEST_ID|HMAC-SHA256(GATEWAY_CONTACT_ID_KEY, nhs|study-system|study-value)``:
stable, so conditional create makes redelivery harmless, and without the NHS number in it.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable
from dataclasses import dataclass, field
from http import HTTPStatus

import orjson
from sqlalchemy import select

from gateway.fhir.conventions import CONTACT_REQUEST_ID, CTGOV, NHS_NUMBER, ODS_ORGANIZATION
from gateway.fhir.errors import BusinessRuleViolation, FhirError, Gone, NotFound
from gateway.fhir.nhs_number import is_valid_nhs_number
from gateway.outbound import outbox
from gateway.outbound.destinations import Destinations
from gateway.outbound.errors import DestinationNotAllowed
from gateway.outbound.hospitals import Hospital
from gateway.outbound.kinds import DeliverFn, DeliveryContext
from gateway.outbound.pull import find_patient
from gateway.outbound.sitelink import TrustLinker
from gateway.store import schema as s
from gateway.store.repo import Tx, WriteResult

KIND = "research-subject"
SITE_KIND = "site-contact"
Reader = Callable[[str, str], dict | None]  # (type, id) -> resource or None


class NotConfigured(FhirError):
    """The server is missing a setting it needs (500, so the operator sees it)."""

    status = HTTPStatus.INTERNAL_SERVER_ERROR
    code = "exception"


@dataclass
class ContactRoute:
    hospital: Hospital | None  # the patient's own hospital; None when it is not configured (sites only)
    nhs_number: str
    study_identifier: dict  # {"system": ..., "value": ...}
    contact_id: str
    study_title: str | None = None
    site_hospitals: list[Hospital] = field(default_factory=list)  # other trusts running the study (site_contact)


def contact_id(key: str, nhs_number: str, study_identifier: dict) -> str:
    """Keyed hash, hex: the same person and study always give the same value; the NHS number is not in it.

    >>> contact_id("k", "9434765919", {"system": "https://clinicaltrials.gov", "value": "NCT01"})[:12]
    '63b7e9575e58'
    """
    msg = f"{nhs_number}|{study_identifier.get('system', '')}|{study_identifier.get('value', '')}"
    return hmac.new(key.encode(), msg.encode(), hashlib.sha256).hexdigest()


def ref_id(ref: object, rtype: str) -> str | None:
    if not isinstance(ref, dict) or not isinstance(ref.get("reference"), str):
        return None
    parts = ref["reference"].rstrip("/").split("/")
    return parts[-1] if len(parts) >= 2 and parts[-2] == rtype else None


def _identifier(resource: dict, system: str) -> str | None:
    for ident in resource.get("identifier") or []:
        if isinstance(ident, dict) and ident.get("system") == system and ident.get("value"):
            return str(ident["value"])
    return None


def study_identifier(study: dict) -> dict | None:
    """The study's identifier to send: ClinicalTrials.gov first, else the first with system and value."""
    idents = [i for i in study.get("identifier") or [] if isinstance(i, dict) and i.get("system") and i.get("value")]
    idents.sort(key=lambda i: i["system"] != CTGOV)
    return {"system": idents[0]["system"], "value": idents[0]["value"]} if idents else None


def patient_ods(patient: dict, read: Reader) -> str | None:
    """The ODS code of a Patient's (or a Location's) managingOrganization, by identifier or by reference."""
    org = patient.get("managingOrganization")
    if not isinstance(org, dict):
        return None
    ident = org.get("identifier")
    if isinstance(ident, dict) and ident.get("system") == ODS_ORGANIZATION and ident.get("value"):
        return str(ident["value"])
    oid = ref_id(org, "Organization")
    if oid:
        found = read("Organization", oid)
        if found:
            return _identifier(found, ODS_ORGANIZATION)
    return None


def _individual_nhs(subject: dict) -> str | None:
    """individual = {"identifier": {NHS number}} (a person the gateway may hold no record of) -> the number."""
    ident = (subject.get("individual") or {}).get("identifier")
    if isinstance(ident, dict) and ident.get("system") == NHS_NUMBER and isinstance(ident.get("value"), str):
        return ident["value"]
    return None


def plan_route(subject: dict, read: Reader, destinations: Destinations, key: str | None, *,
               sites_only_ok: bool = False) -> ContactRoute:
    """ResearchSubject -> where and how it is delivered; 422/500 errors say what is missing. No traffic.

    ``sites_only_ok`` (a patient's own request): the person may be named by NHS number only, and their own
    hospital may be unconfigured, as long as a research team of one of the study's sites can be reached.
    """
    pid = ref_id(subject.get("individual"), "Patient")
    patient: dict | None = None
    if pid:
        patient = read("Patient", pid)
        if patient is None:
            raise BusinessRuleViolation(f"Patient/{pid} is not known", "ResearchSubject.individual")
        nhs = _identifier(patient, NHS_NUMBER)
        if not nhs:
            raise BusinessRuleViolation(f"Patient/{pid} has no NHS number ({NHS_NUMBER}); the hospital finds the "
                                        "patient by it", "ResearchSubject.individual")
    elif sites_only_ok and _individual_nhs(subject) and is_valid_nhs_number(_individual_nhs(subject) or ""):
        nhs = str(_individual_nhs(subject))
    else:
        raise BusinessRuleViolation("A contact request needs individual = a reference to a Patient (Patient/id)",
                                    "ResearchSubject.individual")
    sid = ref_id(subject.get("study"), "ResearchStudy")
    study = read("ResearchStudy", sid) if sid else None
    if study is None:
        raise BusinessRuleViolation("A contact request needs study = a reference to a known ResearchStudy",
                                    "ResearchSubject.study")
    sident = study_identifier(study)
    if sident is None:
        raise BusinessRuleViolation(f"ResearchStudy/{sid} has no identifier; the hospital knows studies by "
                                    "identifier only", "ResearchSubject.study")
    hospital: Hospital | None = None
    why = "the person is named by NHS number only"
    if patient is not None:
        ods = patient_ods(patient, read)
        hospital = destinations.hospitals.by_ods(ods)
        why = f"ODS code {ods}" if ods else "no managingOrganization ODS code"
        if hospital is not None and not hospital.write_back.get("research_subject", True):
            if not sites_only_ok:
                raise BusinessRuleViolation(f"Hospital '{hospital.name}' does not accept contact requests "
                                            "(write_back.research_subject is false)", "ResearchSubject")
            hospital, why = None, f"hospital '{hospital.name}' does not accept contact requests"
        if hospital is None and not sites_only_ok:
            raise BusinessRuleViolation(f"No hospital endpoint is configured for Patient/{pid} ({why}); see "
                                        "mappings/hospitals", "ResearchSubject.individual")
    if hospital is not None:
        try:
            destinations.settings.allowed_hosts.check(hospital.fhir_base_url)
        except DestinationNotAllowed as exc:
            raise BusinessRuleViolation(f"Hospital '{hospital.name}': {exc.message}", "ResearchSubject") from None
    sites = site_hospitals(study, read, destinations, exclude=hospital.name if hospital else "")
    if hospital is None and not sites:
        who = f"Patient/{pid}" if pid else "this person"
        raise BusinessRuleViolation(f"No hospital endpoint is configured for {who} ({why}) and no research team "
                                    f"of the study's sites can be reached (no trust of its sites has a research-"
                                    f"office route in mappings/hospitals); nothing was stored", "ResearchSubject")
    if not key:
        raise NotConfigured("GATEWAY_CONTACT_ID_KEY is not set: contact requests cannot be given their stable "
                            "identifier; refusing to enqueue", "ResearchSubject.identifier")
    return ContactRoute(hospital, nhs, sident, contact_id(key, nhs, sident), study.get("title"), sites)


def site_hospitals(study: dict, read: Reader, destinations: Destinations, exclude: str = "") -> list[Hospital]:
    """Hospitals (or trusts' research offices) with write_back.site_contact, allowed by GATEWAY_ALLOWED_HOSTS,
    running one of the study's sites: the site Location's managingOrganization ODS code, else the trust the
    site is linked to by name, city and postcode (gateway.outbound.sitelink, the open NHS trust list)."""
    out: dict[str, Hospital] = {}
    linker = TrustLinker.from_file()
    for site in study.get("site") or []:
        lid = ref_id(site, "Location")
        location = read("Location", lid) if lid else None
        if location is None:
            continue
        h = destinations.hospitals.by_ods(patient_ods(location, read) or linker.ods_of(location))
        if h is None or not h.write_back.get("site_contact") or h.name == exclude:
            continue
        if destinations.settings.allowed_hosts.allows(h.fhir_base_url):
            out[h.name] = h
    return list(out.values())


def with_contact_identifier(subject: dict, value: str) -> dict:
    """Set (or replace) the contact-request identifier on the gateway's ResearchSubject."""
    idents = [i for i in subject.get("identifier") or [] if not (isinstance(i, dict)
                                                                 and i.get("system") == CONTACT_REQUEST_ID)]
    return {**subject, "identifier": [*idents, {"system": CONTACT_REQUEST_ID, "value": value}]}


def _tx_reader(tx: Tx) -> Reader:
    """Reads inside the write transaction, without row locks (Tx.current locks on PostgreSQL: routing only
    reads the Patient, study and sites, and must not serialise unrelated requests on them)."""
    r = s.resources

    def read(rtype: str, rid: str) -> dict | None:
        tx.flush()
        row = tx.conn.execute(select(r.c.content).where(r.c.type == rtype, r.c.id == rid,
                                                        r.c.deleted.is_(False))).first()
        return orjson.loads(row[0]) if row and row[0] else None
    return read


def _previous(tx: Tx, pk: int, version: int) -> dict:
    v = s.resource_versions
    tx.flush()  # the previous version may have been written earlier in this transaction
    row = tx.conn.execute(v.select().where(v.c.res_pk == pk, v.c.version == version - 1)).mappings().first()
    return orjson.loads(row["content"]) if row and row["content"] else {}


def make_hook(destinations: Destinations):
    """A FhirService write hook: a contact request created or changed -> one outbox job, same transaction."""

    def hook(tx: Tx, result: WriteResult, resource: dict) -> None:
        st = result.stored
        if st.type != "ResearchSubject" or result.outcome not in ("created", "updated"):
            return
        marked = _identifier(resource, CONTACT_REQUEST_ID)
        if not marked and result.outcome == "updated":
            marked = _identifier(_previous(tx, st.pk, st.version), CONTACT_REQUEST_ID)
        if not marked or not (resource.get("study") or {}).get("reference"):
            # Not a contact request held here: a hospital's own ResearchSubject, or the copy a gateway stores
            # when it plays the hospital (study by identifier only).
            return
        route = plan_route(resource, _tx_reader(tx), destinations, destinations.settings.contact_id_key,
                           sites_only_ok=True)
        payload = {"op": "create" if result.outcome == "created" else "update", "contact_id": route.contact_id,
                   "nhs_number": route.nhs_number, "study_identifier": route.study_identifier,
                   "study_title": route.study_title, "status": resource.get("status")}
        if route.hospital is not None:
            outbox.enqueue(tx.conn, kind=KIND, destination=route.hospital.name, payload=payload,
                           dedupe_key=f"{KIND}:{route.hospital.name}:ResearchSubject/{st.id}/_history/{st.version}",
                           max_attempts=destinations.settings.max_attempts,
                           resource=("ResearchSubject", st.id, st.version))
        closing = task_status(resource.get("status")) == "cancelled"
        if result.outcome == "created" or closing:
            # The study's sites that asked to hear of requests: told of the request, and of its withdrawal.
            suffix = "" if result.outcome == "created" else f"/_history/{st.version}"
            for site in route.site_hospitals:
                outbox.enqueue(tx.conn, kind=SITE_KIND, destination=site.name, payload=payload,
                               dedupe_key=f"{SITE_KIND}:{site.name}:ResearchSubject/{st.id}{suffix}",
                               max_attempts=destinations.settings.max_attempts,
                               resource=("ResearchSubject", st.id, st.version))

    return hook


def task_status(subject_status: str | None) -> str:
    """The research team's Task status for a contact request's status: a withdrawn (or ended) request cancels
    the Task; anything else leaves it requested (the team moves it on themselves)."""
    return "cancelled" if subject_status in ("withdrawn", "ineligible", "not-registered") else "requested"


def hospital_copy(current: dict, payload: dict, hospital_patient_id: str) -> dict:
    """The ResearchSubject as the hospital stores it: its own Patient, the study by identifier."""
    study: dict = {"identifier": payload["study_identifier"]}
    if payload.get("study_title"):
        study["display"] = payload["study_title"]
    out = {"resourceType": "ResearchSubject",
           "identifier": [{"system": CONTACT_REQUEST_ID, "value": payload["contact_id"]}],
           "status": current.get("status") or payload.get("status") or "candidate",
           "study": study,
           "individual": {"reference": f"Patient/{hospital_patient_id}"}}
    if current.get("period"):
        out["period"] = current["period"]
    return out


def research_team_task(payload: dict, hospital_patient_id: str, subject_location: str | None) -> dict:
    """A Task asking the hospital's research team to contact the patient (write_back.task)."""
    task = {"resourceType": "Task",
            "identifier": [{"system": CONTACT_REQUEST_ID, "value": payload["contact_id"]}],
            "status": "requested", "intent": "proposal", "priority": "routine",
            "description": "The patient asked to be contacted about a clinical trial"
                           + (f": {payload['study_title']}" if payload.get("study_title") else ""),
            "for": {"reference": f"Patient/{hospital_patient_id}"}}
    if subject_location:
        rel = subject_location.split("/_history")[0]
        parts = rel.rstrip("/").split("/")
        if len(parts) >= 2:
            task["focus"] = {"reference": f"{parts[-2]}/{parts[-1]}"}
    return task


def research_team_communication(payload: dict, hospital_patient_id: str, subject_location: str | None) -> dict:
    """A Communication to the hospital's research team about the request (write_back.communication)."""
    task = research_team_task(payload, hospital_patient_id, subject_location)
    comm = {"resourceType": "Communication", "identifier": task["identifier"], "status": "completed",
            "subject": task["for"], "payload": [{"contentString": task["description"]}]}
    if "focus" in task:
        comm["about"] = [task["focus"]]
    return comm


def deliver(job: outbox.Job, ctx: DeliveryContext) -> str:
    """Write the current state of the contact request to the hospital (conditional, so repeatable)."""
    p = job.payload
    hospital = ctx.destinations.hospitals.get(job.destination)
    try:
        current = ctx.store.read("ResearchSubject", job.resource_id or "").resource()
    except (Gone, NotFound):
        return "skipped: the contact request was deleted at the gateway"
    client = ctx.destinations.client(hospital, retries=0)  # the outbox does the retrying, attempt by attempt
    patient = find_patient(client, p["nhs_number"])
    copy = hospital_copy(current, p, patient["id"])
    ident = f"{CONTACT_REQUEST_ID}|{p['contact_id']}"
    if p.get("op") == "create":
        resp = client.create(copy, if_none_exist=f"identifier={ident}")
    else:
        resp = client.conditional_update("ResearchSubject", {"identifier": ident}, copy)
    result = f"{resp.status} {resp.location or ''}".strip()
    if p.get("op") == "create" and hospital.write_back.get("task"):
        t = client.create(research_team_task(p, patient["id"], resp.location), if_none_exist=f"identifier={ident}")
        result += f"; Task {t.status}"
    if p.get("op") != "create" and hospital.write_back.get("task") and task_status(current.get("status")) \
            == "cancelled":  # the withdrawal reaches the research team's Task too
        task = {**research_team_task(p, patient["id"], resp.location), "status": "cancelled"}
        t = client.conditional_update("Task", {"identifier": ident}, task)
        result += f"; Task {t.status} cancelled"
    if p.get("op") == "create" and hospital.write_back.get("communication"):
        c = client.create(research_team_communication(p, patient["id"], resp.location),
                          if_none_exist=f"identifier={ident}")
        result += f"; Communication {c.status}"
    return result


def site_task(payload: dict) -> dict:
    """A Task for a study site's research team: the person by NHS number, the study by identifier (the site
    may hold no record of the patient, so there is no local reference to make)."""
    study: dict = {"identifier": payload["study_identifier"]}
    if payload.get("study_title"):
        study["display"] = payload["study_title"]
    return {"resourceType": "Task",
            "identifier": [{"system": CONTACT_REQUEST_ID, "value": payload["contact_id"]}],
            "status": "requested", "intent": "proposal", "priority": "routine",
            "description": "A patient asked to be contacted about a clinical trial run at this site"
                           + (f": {payload['study_title']}" if payload.get("study_title") else ""),
            "for": {"identifier": {"system": NHS_NUMBER, "value": payload["nhs_number"]}},
            "focus": study}


def deliver_site_contact(job: outbox.Job, ctx: DeliveryContext) -> str:
    """Tell a study site's research team about a contact request (conditional create of a Task), or that it was
    withdrawn (conditional update of the same Task to ``cancelled``)."""
    hospital = ctx.destinations.hospitals.get(job.destination)
    client = ctx.destinations.client(hospital, retries=0)
    ident = f"{CONTACT_REQUEST_ID}|{job.payload['contact_id']}"
    if job.payload.get("op") == "create":
        resp = client.create(site_task(job.payload), if_none_exist=f"identifier={ident}")
        return f"Task {resp.status} {resp.location or ''}".strip()
    task = {**site_task(job.payload), "status": task_status(job.payload.get("status"))}
    resp = client.conditional_update("Task", {"identifier": ident}, task)
    return f"Task {resp.status} {task['status']}"


# The job kinds of contact requests, given to the worker by the composition root (gateway/compose.py).
JOB_KINDS: dict[str, DeliverFn] = {KIND: deliver, SITE_KIND: deliver_site_contact}

__all__ = ["ContactRoute", "contact_id", "deliver", "hospital_copy", "make_hook", "plan_route"]
