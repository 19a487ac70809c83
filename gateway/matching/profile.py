"""Patient profile: what matching knows about one person, built from FHIR JSON from any number of hospitals.

Records with the same NHS number (several trusts) are one person; records without an NHS number are one
person per Patient resource. Only active, confirmed Conditions count.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date

from gateway.fhir import conventions as cv
from gateway.matching import geo
from gateway.matching.terms import Code, Terminology, codings, concept_label

ACTIVE_CLINICAL = frozenset({"active", "recurrence", "relapse"})
OBS_STATUSES = frozenset({"final", "amended", "corrected", "preliminary", "registered"})
THERAPY_TYPES = ("MedicationStatement", "MedicationRequest", "MedicationAdministration", "Procedure")
# LOINC answer codes for ECOG grades (LL529-9): an ECOG Observation may carry the grade as a code.
ECOG_ANSWERS = {"LA9622-7": 0, "LA9623-5": 1, "LA9624-3": 2, "LA9625-0": 3, "LA9626-8": 4, "LA9627-6": 5}


@dataclass(frozen=True, slots=True)
class ConditionFact:
    codes: tuple[Code, ...]
    text: str  # normalised text, for studies whose condition is text only
    label: str  # "'Glioblastoma multiforme' (SNOMED CT 393563007)"
    ancestors: frozenset[Code] = frozenset()  # of all its codes, themselves included (precomputed: hot path)
    secondary: bool = False  # a metastasis ("secondary malignant neoplasm of ...")


@dataclass(frozen=True, slots=True)
class ObservationFact:
    number: float | None
    codes: tuple[Code, ...]  # valueCodeableConcept
    flag: bool | None  # valueBoolean
    unit: str | None
    when: str  # ISO date(time) or ""
    label: str


@dataclass(slots=True)
class PatientProfile:
    key: str  # 'nhs:9449306060' or 'Patient/<id>'
    patient_ids: tuple[str, ...] = ()
    nhs_number: str | None = None
    birth_date: date | None = None
    sex: str | None = None
    deceased: bool = False
    conditions: list[ConditionFact] = field(default_factory=list)
    observations: dict[Code, ObservationFact] = field(default_factory=dict)
    therapies: list[tuple[tuple[Code, ...], str]] = field(default_factory=list)
    position: geo.LatLon | None = None
    position_source: str | None = None
    consents: list[dict] = field(default_factory=list)
    ancestors: frozenset[Code] = frozenset()  # every (system, code) the conditions are a kind of
    texts: frozenset[str] = frozenset()

    def age(self, unit: str, today: date) -> int | None:
        """Completed age in UCUM unit a | mo | wk | d; None when the birth date is unknown."""
        b = self.birth_date
        if b is None:
            return None
        if unit == "d":
            return (today - b).days
        if unit == "wk":
            return (today - b).days // 7
        months = (today.year - b.year) * 12 + today.month - b.month - (1 if today.day < b.day else 0)
        return months if unit == "mo" else months // 12


def person_key(patient: dict) -> str:
    """Patient -> 'nhs:<number>' when it has an NHS number, else 'Patient/<id>'."""
    nhs = nhs_number(patient)
    return f"nhs:{nhs}" if nhs else f"Patient/{patient.get('id')}"


def nhs_number(patient: dict) -> str | None:
    for ident in patient.get("identifier") or []:
        if ident.get("system") == cv.NHS_NUMBER and ident.get("value"):
            return str(ident["value"]).replace(" ", "")
    return None


def _parse_date(value: str | None) -> date | None:
    if not value or len(value) < 4:
        return None
    try:
        parts = value[:10].split("-")
        return date(int(parts[0]), int(parts[1]) if len(parts) > 1 else 1, int(parts[2]) if len(parts) > 2 else 1)
    except (ValueError, IndexError):
        return None


def counts(condition: dict) -> bool:
    """Only active (or recurrent/relapsed), confirmed conditions count for matching."""
    clinical = {c.get("code") for c in (condition.get("clinicalStatus") or {}).get("coding") or []}
    verified = {c.get("code") for c in (condition.get("verificationStatus") or {}).get("coding") or []}
    return bool(clinical & ACTIVE_CLINICAL) and "confirmed" in verified


def _when(resource: dict) -> str:
    for key in ("effectiveDateTime", "effectiveInstant", "issued", "occurrenceDateTime", "performedDateTime",
                "effectiveDate", "dateAsserted", "authoredOn", "recordedDate"):
        if isinstance(resource.get(key), str):
            return resource[key]
    for key in ("effectivePeriod", "performedPeriod"):
        p = resource.get(key)
        if isinstance(p, dict):
            return p.get("start") or p.get("end") or ""
    return ""


# Performance scores outside their scale (e.g. -1 for 'not assessed' in some extracts) are unknown, not values.
SCALES = {cv.ECOG: (0, 5), cv.KARNOFSKY: (0, 100)}


def _obs_fact(holder: dict, when: str, label: str, is_ecog: bool,
              scale: tuple[int, int] | None = None) -> ObservationFact | None:
    number, unit, codes, flag = None, None, (), None
    if isinstance(holder.get("valueQuantity"), dict) and isinstance(holder["valueQuantity"].get("value"),
                                                                    int | float):
        q = holder["valueQuantity"]
        number, unit = float(q["value"]), q.get("code") or q.get("unit")
    elif isinstance(holder.get("valueInteger"), int) and not isinstance(holder.get("valueInteger"), bool):
        number = float(holder["valueInteger"])
    elif isinstance(holder.get("valueCodeableConcept"), dict):
        codes = tuple(codings(holder["valueCodeableConcept"]))
        if is_ecog:
            grades = [ECOG_ANSWERS[c] for s, c in codes if s == cv.LOINC and c in ECOG_ANSWERS]
            number = float(grades[0]) if grades else None
    elif isinstance(holder.get("valueBoolean"), bool):
        flag = holder["valueBoolean"]
    else:
        return None
    if number is not None and scale and not scale[0] <= number <= scale[1]:
        number = None
    return ObservationFact(number, codes, flag, unit, when, label)


def _add_observation(obs: dict, facts: dict[Code, ObservationFact], term: Terminology | None) -> None:
    if obs.get("status") not in OBS_STATUSES:
        return
    when = _when(obs)
    parts = [obs] + [c for c in obs.get("component") or [] if isinstance(c, dict)]
    for part in parts:
        keys = codings(part.get("code"))
        if not keys:
            continue
        scale = next((SCALES[k] for k in keys if k in SCALES), None)
        fact = _obs_fact(part, when, concept_label(part.get("code"), term), cv.ECOG in keys, scale)
        if fact is None:
            continue
        for k in keys:
            old = facts.get(k)
            if old is None or fact.when >= old.when:  # the latest observation wins
                facts[k] = fact


def build_profile(resources: list[dict], term: Terminology, *, key: str | None = None) -> PatientProfile:
    """Patient(s) + their Conditions, Observations, therapies and Consents -> one PatientProfile.

    Every resource in ``resources`` is taken to be about the same person (the caller groups them).
    """
    patients = sorted((r for r in resources if r.get("resourceType") == "Patient"), key=lambda p: p.get("id") or "")
    prof = PatientProfile(key=key or (person_key(patients[0]) if patients else "Patient/unknown"))
    prof.patient_ids = tuple(p["id"] for p in patients if p.get("id"))
    for p in patients:
        prof.nhs_number = prof.nhs_number or nhs_number(p)
        prof.birth_date = prof.birth_date or _parse_date(p.get("birthDate"))
        if p.get("gender") in ("male", "female", "other") and prof.sex is None:
            prof.sex = p["gender"]
        if p.get("deceasedBoolean") is True or isinstance(p.get("deceasedDateTime"), str):
            prof.deceased = True
        if prof.position is None:
            for addr in p.get("address") or []:
                if isinstance(addr, dict) and addr.get("use") not in ("old", "billing"):
                    found = geo.address_position(addr)
                    if found:
                        prof.position, prof.position_source = found
                        break
    ancestors: set[Code] = set()
    texts: set[str] = set()
    for r in resources:
        rtype = r.get("resourceType")
        if rtype == "Condition" and counts(r):
            codes = tuple(codings(r.get("code")))
            text = term.normalise_text((r.get("code") or {}).get("text") or "") if (r.get("code") or {}).get(
                "text") else ""
            anc: frozenset[Code] = frozenset().union(*(term.ancestors(s, c) for s, c in codes))
            secondary = any(term.is_secondary(s, c) for s, c in codes)
            prof.conditions.append(ConditionFact(codes, text, concept_label(r.get("code"), term), anc, secondary))
            ancestors |= anc
            for s, c in codes:
                d = term.display(s, c)
                if d:
                    texts.add(term.normalise_text(d))
            for c in (r.get("code") or {}).get("coding") or []:
                if c.get("display"):
                    texts.add(term.normalise_text(c["display"]))
            if text:
                texts.add(text)
        elif rtype == "Observation":
            _add_observation(r, prof.observations, term)
        elif rtype in THERAPY_TYPES:
            concept = r.get("medicationCodeableConcept") or r.get("code")
            if isinstance(concept, dict) and r.get("status") not in ("entered-in-error", "not-done"):
                prof.therapies.append((tuple(codings(concept)), concept_label(concept, term)))
        elif rtype == "Consent":
            prof.consents.append(r)
    prof.ancestors = frozenset(ancestors)
    prof.texts = frozenset(t for t in texts if t)
    return prof


def group_by_person(resources: list[dict]) -> dict[str, list[dict]]:
    """Patients and the resources that reference them -> {person key: resources}.

    Clinical resources are attached through ``subject`` / ``patient`` references 'Patient/<id>' or a
    Bundle's 'urn:uuid:...' fullUrl (pass fullUrl in the '_fullUrl' key).
    """
    owner: dict[str, str] = {}
    groups: dict[str, list[dict]] = {}
    for r in resources:
        if r.get("resourceType") == "Patient":
            k = person_key(r)
            groups.setdefault(k, []).append(r)
            if r.get("id"):
                owner[f"Patient/{r['id']}"] = k
            if r.get("_fullUrl"):
                owner[r["_fullUrl"]] = k
    for r in resources:
        if r.get("resourceType") == "Patient":
            continue
        ref = subject_ref(r)
        if ref and ref in owner:
            groups[owner[ref]].append(r)
    return groups


def subject_ref(resource: dict) -> str | None:
    """The 'Patient/<id>' (or urn) a clinical resource or Consent is about."""
    for key in ("subject", "patient"):
        ref = (resource.get(key) or {}).get("reference") if isinstance(resource.get(key), dict) else None
        if ref:
            ref = ref.split("/_history")[0]
            if not ref.startswith("urn:") and "Patient/" in ref:
                ref = "Patient/" + ref.rsplit("Patient/", 1)[1]  # absolute URL -> relative
            return ref
    return None
