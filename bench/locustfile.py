"""Locust users for the load test (bench/run_load.py starts the gateway, loads the data and runs this headless).

Four kinds of request, named for the figures: ``$match`` (a stored person, by id), ``search`` (ResearchStudy by
words, by condition code, near a postcode), ``create`` (one Patient) and ``transaction`` (a Patient with two
Conditions in one transaction Bundle). Every answer other than 2xx counts as an error.

Environment (set by run_load.py): LOAD_PATIENTS (people stored as Patient/bp0..bpN-1), LOAD_CODES (condition codes
'system|code', comma-separated, from the studies stored), LOAD_SEED.
"""

from __future__ import annotations

import os
import random
import uuid

from locust import FastHttpUser, between, task

FHIR = {"Content-Type": "application/fhir+json", "Accept": "application/fhir+json"}
PATIENTS = int(os.environ.get("LOAD_PATIENTS", "1000"))
CODES = [c for c in os.environ.get("LOAD_CODES", "").split(",") if c]
WORDS = ["breast cancer", "glioblastoma", "lung cancer", "melanoma", "leukaemia", "lymphoma", "prostate",
         "colorectal cancer", "brain tumour", "myeloma"]
POSTCODES = ["LS6", "M13", "B15", "NE1", "BS2", "SW1A", "CB2", "OX3", "S10", "NG7"]
SNOMED = "http://snomed.info/sct"
_rng = random.Random(int(os.environ.get("LOAD_SEED", "11")))


def _condition(pid_ref: str, system_code: str) -> dict:
    system, _, code = system_code.partition("|")
    return {"resourceType": "Condition", "subject": {"reference": pid_ref},
            "clinicalStatus": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-clinical",
                                           "code": "active"}]},
            "verificationStatus": {"coding": [{
                "system": "http://terminology.hl7.org/CodeSystem/condition-ver-status", "code": "confirmed"}]},
            "code": {"coding": [{"system": system, "code": code}]}}


def _patient() -> dict:
    return {"resourceType": "Patient", "gender": _rng.choice(["male", "female"]),
            "birthDate": f"{_rng.randint(1935, 2005)}-{_rng.randint(1, 12):02d}-15",
            "identifier": [{"system": "https://load.example.org/mrn", "value": uuid.uuid4().hex}],
            "address": [{"postalCode": _rng.choice(POSTCODES)}]}


class GatewayUser(FastHttpUser):
    """A mix of hospital and app traffic: mostly reads ($match, search), some writes."""

    wait_time = between(0.0, 0.05)

    @task(4)
    def match(self) -> None:
        self.client.get(f"/fhir/ResearchStudy/$match?patient-id=bp{_rng.randrange(PATIENTS)}", headers=FHIR,
                        name="$match")

    @task(4)
    def search(self) -> None:
        kind = _rng.randrange(3)
        if kind == 0:
            params = {"_text": _rng.choice(WORDS), "_count": "20"}
        elif kind == 1 and CODES:
            params = {"condition": _rng.choice(CODES), "_count": "20"}
        else:
            params = {"postcode": _rng.choice(POSTCODES), "distance": "50", "_count": "20"}
        self.client.get("/fhir/ResearchStudy", params=params, headers=FHIR, name="search")

    @task(1)
    def create(self) -> None:
        self.client.post("/fhir/Patient", json=_patient(), headers=FHIR, name="create")

    @task(1)
    def transaction(self) -> None:
        ref = f"urn:uuid:{uuid.uuid4()}"
        codes = _rng.sample(CODES, 2) if len(CODES) >= 2 else [f"{SNOMED}|254837009", f"{SNOMED}|372244006"]
        entries = [{"fullUrl": ref, "resource": _patient(), "request": {"method": "POST", "url": "Patient"}}]
        entries += [{"resource": _condition(ref, c), "request": {"method": "POST", "url": "Condition"}} for c in codes]
        self.client.post("/fhir", json={"resourceType": "Bundle", "type": "transaction", "entry": entries},
                         headers=FHIR, name="transaction")
