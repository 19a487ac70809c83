"""Small FHIR JSON builders for matching tests (valid R4, following ARCHITECTURE.md conventions)."""

from __future__ import annotations

import json
from pathlib import Path

from gateway.fhir import conventions as cv

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "fixtures" / "demo"


def coding(system_code: tuple[str, str], display: str | None = None) -> dict:
    c = {"system": system_code[0], "code": system_code[1]}
    if display:
        c["display"] = display
    return c


def concept(system_code: tuple[str, str], display: str | None = None) -> dict:
    return {"coding": [coding(system_code, display)]}


def patient(pid: str, *, nhs: str | None = None, birth: str | None = "1981-05-14", gender: str | None = "female",
            postcode: str | None = None, deceased: bool = False) -> dict:
    p: dict = {"resourceType": "Patient", "id": pid}
    if nhs:
        p["identifier"] = [{"system": cv.NHS_NUMBER, "value": nhs}]
    if birth:
        p["birthDate"] = birth
    if gender:
        p["gender"] = gender
    if postcode:
        p["address"] = [{"postalCode": postcode}]
    if deceased:
        p["deceasedBoolean"] = True
    return p


def condition(cid: str, pid: str, code: tuple[str, str], *, clinical: str = "active", verified: str = "confirmed",
              text: str | None = None) -> dict:
    cc = concept(code)
    if text:
        cc["text"] = text
    return {"resourceType": "Condition", "id": cid,
            "clinicalStatus": concept((cv.CONDITION_CLINICAL, clinical)),
            "verificationStatus": concept((cv.CONDITION_VER_STATUS, verified)),
            "code": cc, "subject": {"reference": f"Patient/{pid}"}}


def observation(oid: str, pid: str, code: tuple[str, str], value: float, when: str = "2026-10-01") -> dict:
    return {"resourceType": "Observation", "id": oid, "status": "final", "code": concept(code),
            "subject": {"reference": f"Patient/{pid}"}, "effectiveDateTime": when, "valueInteger": int(value)}


def age_char(low: float | None, high: float | None, exclude: bool = False) -> dict:
    rng = {}
    if low is not None:
        rng["low"] = {"value": low, "system": cv.UCUM, "code": "a", "unit": "years"}
    if high is not None:
        rng["high"] = {"value": high, "system": cv.UCUM, "code": "a", "unit": "years"}
    return {"code": concept(cv.AGE), "valueRange": rng, "exclude": exclude}


def diagnosis_char(code: tuple[str, str], exclude: bool = False) -> dict:
    return {"code": concept(cv.DIAGNOSIS), "valueCodeableConcept": concept(code), "exclude": exclude}


def sex_char(gender: str) -> dict:
    return {"code": concept(cv.SEX), "valueCodeableConcept": concept((cv.ADMIN_GENDER, gender)), "exclude": False}


def range_char(code: tuple[str, str], low: float | None, high: float | None, exclude: bool = False) -> dict:
    rng = {}
    if low is not None:
        rng["low"] = {"value": low}
    if high is not None:
        rng["high"] = {"value": high}
    return {"code": concept(code), "valueRange": rng, "exclude": exclude}


def group(gid: str, chars: list[dict]) -> dict:
    return {"resourceType": "Group", "id": gid, "type": "person", "actual": False, "characteristic": chars}


def study(sid: str, conditions: list[tuple[str, str]] | None = None, *, group_id: str | None = None,
          sites: list[str] = (), status: str = "active", texts: list[str] = (), phase: str | None = None) -> dict:
    s: dict = {"resourceType": "ResearchStudy", "id": sid, "status": status, "title": f"Study {sid}"}
    conds = [concept(c) for c in conditions or []] + [{"text": t} for t in texts]
    if conds:
        s["condition"] = conds
    if group_id:
        s["enrollment"] = [{"reference": f"Group/{group_id}"}]
    if sites:
        s["site"] = [{"reference": f"Location/{lid}"} for lid in sites]
    if phase:
        s["phase"] = concept((cv.RESEARCH_STUDY_PHASE, phase))
    return s


def location(lid: str, lat: float, lon: float, name: str = "Site") -> dict:
    return {"resourceType": "Location", "id": lid, "name": name, "position": {"latitude": lat, "longitude": lon}}


def consent(cid: str, pid: str, *, status: str = "active", ptype: str = "permit",
            purposes: list[tuple[str, str]] = (), start: str | None = None, end: str | None = None,
            when: str = "2026-01-01T00:00:00Z") -> dict:
    prov: dict = {"type": ptype}
    if purposes:
        prov["purpose"] = [coding(p) for p in purposes]
    if start or end:
        prov["period"] = {k: v for k, v in (("start", start), ("end", end)) if v}
    return {"resourceType": "Consent", "id": cid, "status": status, "dateTime": when,
            "scope": concept((cv.CONSENT_SCOPE, "research")),
            "category": [concept(("http://loinc.org", "59284-0"))], "patient": {"reference": f"Patient/{pid}"},
            "policyRule": concept(("http://terminology.hl7.org/CodeSystem/v3-ActCode", "OPTIN")), "provision": prov}


def demo_bundle(name: str) -> dict:
    return json.loads((DEMO / name).read_text())
