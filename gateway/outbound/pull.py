"""Pull a patient's record from their hospital: Patient, active Conditions, recent Observations.

The result is a ``collection`` Bundle, Patient first, with ``fullUrl``s on the hospital's base so
the hospital's own references resolve inside it: ready for ``ResearchStudy/$match``.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from gateway.fhir.conventions import NHS_NUMBER
from gateway.outbound.client import FhirClient
from gateway.outbound.destinations import Destinations
from gateway.outbound.errors import Conflict, PatientNotFound
from gateway.outbound.hospitals import Hospital


def find_patient(client: FhirClient, nhs_number: str) -> dict:
    """The hospital's one Patient with this NHS number; PatientNotFound when none, Conflict when several."""
    found = [p for p in client.search("Patient", {"identifier": f"{NHS_NUMBER}|{nhs_number}"})
             if p.get("resourceType") == "Patient" and p.get("active", True) is not False]
    if not found:
        raise PatientNotFound("the hospital has no active Patient with this NHS number")
    if len(found) > 1:
        raise Conflict(f"the hospital has {len(found)} active Patients with this NHS number")
    return found[0]


def pull_patient_bundle(hospital: Hospital | str, nhs_number: str, *, destinations: Destinations,
                        client: FhirClient | None = None, now: datetime | None = None) -> dict:
    """('leeds', '9434765919') -> Bundle(collection: Patient, Condition*, Observation*).

    ``destinations``: the configured hospital files and allow-list; a hospital not configured or not
    allow-listed raises before any request is sent.
    """
    if isinstance(hospital, str):
        hospital = destinations.hospitals.get(hospital)
    client = client or destinations.client(hospital)
    patient = find_patient(client, nhs_number)
    pid = patient["id"]
    page = str(hospital.pull.get("page_size", 100))
    since = ((now or datetime.now(UTC)) - timedelta(days=int(hospital.pull.get("observation_days", 365))))
    conditions = client.search("Condition", [("patient", f"Patient/{pid}"), ("clinical-status", "active"),
                                             ("_count", page)])
    observations = client.search("Observation", [("patient", f"Patient/{pid}"),
                                                 ("date", f"ge{since.date().isoformat()}"), ("_count", page)])
    base = client.base_url
    entries = [{"fullUrl": f"{base}/Patient/{pid}", "resource": patient}]
    seen = {("Patient", pid)}
    for res in conditions + observations:
        key = (res.get("resourceType"), res.get("id"))
        if key in seen:
            continue
        seen.add(key)
        entries.append({"fullUrl": f"{base}/{key[0]}/{key[1]}", "resource": res})
    return {"resourceType": "Bundle", "type": "collection", "timestamp": (now or datetime.now(UTC)).isoformat(),
            "entry": entries}
