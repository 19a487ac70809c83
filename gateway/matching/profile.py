"""Patient profile: what matching knows about one person, built from FHIR JSON from any number of hospitals.

Records with the same NHS number (several trusts) are one person; records without an NHS number are one
person per Patient resource. Active, confirmed Conditions are the person's current conditions; confirmed
resolved / inactive / remission ones are kept apart as history ("history of", "other malignancy within N
years"). Every Observation is kept (latest first per code), genomic results as gene + variant facts of one
Observation each, therapies with their dates (never a not-taken statement or a cancelled order), and what
the source says is complete (a List with emptyReason, an explicit "no known ..." record).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import date

from gateway.fhir import conventions as cv
from gateway.matching import drugs, geo
from gateway.matching.terms import Code, Terminology, codings, concept_label, concept_words

ACTIVE_CLINICAL = frozenset({"active", "recurrence", "relapse"})
PAST_CLINICAL = frozenset({"inactive", "remission", "resolved"})
OBS_STATUSES = frozenset({"final", "amended", "corrected", "preliminary", "registered"})
THERAPY_TYPES = ("MedicationStatement", "MedicationRequest", "MedicationAdministration", "Procedure")
# Statuses under which a medication or procedure record is not therapy the person had (R4 value sets).
NOT_THERAPY = frozenset({"not-taken", "entered-in-error", "not-done", "cancelled", "draft", "unknown"})
# Scopes of completeness: a List of this LOINC code with emptyReason, or a "no known ..." record, says the
# person has none of these (so an exclusion of that kind is met, not unknown).
LIST_SCOPES = {"11450-4": "conditions", "11348-0": "conditions", "10160-0": "medications", "29549-3": "medications",
               "47519-4": "procedures", "10157-6": "conditions"}
IPS_ABSENT = "http://hl7.org/fhir/uv/ips/CodeSystem/absent-unknown-uv-ips"
NO_KNOWN = {(IPS_ABSENT, "no-known-problems"): "conditions", (IPS_ABSENT, "no-known-medications"): "medications",
            (IPS_ABSENT, "no-known-procedures"): "procedures",
            ("http://snomed.info/sct", "160245001"): "conditions"}  # SNOMED CT: No current problems or disability
LIST_EMPTY_REASONS = frozenset({"nilknown", "notstarted"})
# Genomics: mCODE / Genomics Reporting IG component codes (LOINC) read as gene and variant descriptors.
GENE_STUDIED = ("http://loinc.org", "48018-6")
VARIANT_COMPONENTS = frozenset({("http://loinc.org", c) for c in (
    "48005-3", "48004-6", "81290-9", "81252-9", "47999-8", "48001-2", "48019-4", "69547-8", "81258-6")})
PRESENT_ANSWERS = frozenset({("http://loinc.org", "LA9633-4"), ("http://snomed.info/sct", "10828004"),
                             ("http://loinc.org", "LA6576-8"), ("http://snomed.info/sct", "52101004")})
ABSENT_ANSWERS = frozenset({("http://loinc.org", "LA9634-2"), ("http://snomed.info/sct", "260385009"),
                            ("http://loinc.org", "LA6577-6"), ("http://snomed.info/sct", "2667000")})
# LOINC answer codes for ECOG grades (LL529-9): an ECOG Observation may carry the grade as a code.
ECOG_ANSWERS = {"LA9622-7": 0, "LA9623-5": 1, "LA9624-3": 2, "LA9625-0": 3, "LA9626-8": 4, "LA9627-6": 5}


@dataclass(frozen=True, slots=True)
class ConditionFact:
    codes: tuple[Code, ...]
    text: str  # normalised text, for studies whose condition is text only
    label: str  # "'Glioblastoma multiforme' (SNOMED CT 393563007)"
    ancestors: frozenset[Code] = frozenset()  # of all its codes, themselves included (precomputed: hot path)
    secondary: bool = False  # a metastasis ("secondary malignant neoplasm of ...")
    active: bool = True  # False: resolved / inactive / remission (history)
    when: str = ""  # the latest date known: abatement, else onset, else recorded ("" unknown)


@dataclass(frozen=True, slots=True)
class ObservationFact:
    number: float | None
    codes: tuple[Code, ...]  # valueCodeableConcept
    flag: bool | None  # valueBoolean
    unit: str | None
    when: str  # ISO date(time) or ""
    label: str
    ref_high: float | None = None  # referenceRange.high (for "x ULN"), in ``ref_unit``
    ref_unit: str | None = None
    text: str = ""  # the coded value's display / text ("Stage IIIA")


@dataclass(frozen=True, slots=True)
class VariantFact:
    """One genomic result: the gene(s) studied and the variant descriptors of ONE Observation, judged together."""

    genes: frozenset[str]  # 'hgnc:3236', 'egfr'
    variants: frozenset[str]  # normalised descriptors: 'l858r', 'exon 19 deletion', 'c.2573t>g'
    present: bool | None  # Present / Absent (None: not stated)
    when: str
    label: str


@dataclass(frozen=True, slots=True)
class TherapyFact:
    codes: tuple[Code, ...]  # the record's codes plus their ingredients and drug classes (lexicon)
    label: str
    when: str  # latest date known ("" unknown)


@dataclass(slots=True)
class PatientProfile:
    key: str  # 'nhs:9449306060' or 'Patient/<id>'
    patient_ids: tuple[str, ...] = ()
    nhs_number: str | None = None
    birth_date: date | None = None
    sex: str | None = None
    deceased: bool = False
    conditions: list[ConditionFact] = field(default_factory=list)
    history: list[ConditionFact] = field(default_factory=list)  # confirmed, no longer active
    observations: dict[Code, list[ObservationFact]] = field(default_factory=dict)  # latest first
    variants: list[VariantFact] = field(default_factory=list)
    therapies: list[TherapyFact] = field(default_factory=list)
    complete: frozenset[str] = frozenset()  # 'conditions' | 'medications' | 'procedures' stated complete
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
    """Only active (or recurrent/relapsed), confirmed conditions count as current conditions."""
    clinical = {c.get("code") for c in (condition.get("clinicalStatus") or {}).get("coding") or []}
    verified = {c.get("code") for c in (condition.get("verificationStatus") or {}).get("coding") or []}
    return bool(clinical & ACTIVE_CLINICAL) and "confirmed" in verified


def past(condition: dict) -> bool:
    """Confirmed and resolved / inactive / in remission: history, for "history of" and "within N years"."""
    clinical = {c.get("code") for c in (condition.get("clinicalStatus") or {}).get("coding") or []}
    verified = {c.get("code") for c in (condition.get("verificationStatus") or {}).get("coding") or []}
    return bool(clinical & PAST_CLINICAL) and "confirmed" in verified and not clinical & ACTIVE_CLINICAL


def _condition_when(r: dict) -> str:
    for key in ("abatementDateTime", "onsetDateTime", "recordedDate"):
        if isinstance(r.get(key), str):
            return r[key]
    for key in ("abatementPeriod", "onsetPeriod"):
        p = r.get(key)
        if isinstance(p, dict) and (p.get("end") or p.get("start")):
            return p.get("end") or p.get("start")
    return ""


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


def _ref_high(holder: dict) -> tuple[float | None, str | None]:
    for rr in holder.get("referenceRange") or []:
        high = (rr or {}).get("high") or {}
        if isinstance(high.get("value"), int | float):
            return float(high["value"]), high.get("code") or high.get("unit")
    return None, None


def _obs_fact(holder: dict, when: str, label: str, is_ecog: bool,
              scale: tuple[int, int] | None = None) -> ObservationFact | None:
    number, unit, codes, flag, text = None, None, (), None, ""
    if isinstance(holder.get("valueQuantity"), dict) and isinstance(holder["valueQuantity"].get("value"),
                                                                    int | float):
        q = holder["valueQuantity"]
        number, unit = float(q["value"]), q.get("code") or q.get("unit")
    elif isinstance(holder.get("valueInteger"), int) and not isinstance(holder.get("valueInteger"), bool):
        number = float(holder["valueInteger"])
    elif isinstance(holder.get("valueCodeableConcept"), dict):
        vcc = holder["valueCodeableConcept"]
        codes = tuple(codings(vcc))
        text = vcc.get("text") or next((c.get("display") for c in vcc.get("coding") or []
                                        if isinstance(c, dict) and c.get("display")), "") or ""
        if is_ecog:
            grades = [ECOG_ANSWERS[c] for s, c in codes if s == cv.LOINC and c in ECOG_ANSWERS]
            number = float(grades[0]) if grades else None
    elif isinstance(holder.get("valueBoolean"), bool):
        flag = holder["valueBoolean"]
    else:
        return None
    if number is not None and scale and not scale[0] <= number <= scale[1]:
        number = None
    high, high_unit = _ref_high(holder)
    return ObservationFact(number, codes, flag, unit, when, label, high, high_unit, text)


_AMINO = {"ala": "a", "arg": "r", "asn": "n", "asp": "d", "cys": "c", "gln": "q", "glu": "e", "gly": "g", "his": "h",
          "ile": "i", "leu": "l", "lys": "k", "met": "m", "phe": "f", "pro": "p", "ser": "s", "thr": "t", "trp": "w",
          "tyr": "y", "val": "v", "ter": "*"}
_AMINO_RE = re.compile(r"(?<![a-z])(" + "|".join(_AMINO) + r")(?=\d|$|[a-z*=])")
_EXON_DEL = re.compile(r"exon\s*(\d+)\s*(?:in[- ]?frame\s*)?(?:del(?:etion)?s?|ex\d+del)")


def normalise_variant(text: str) -> str:
    """'p.Leu858Arg' -> 'l858r'; 'Exon 19 Deletion' -> 'exon 19 deletion'; 'c.2573T>G' -> 'c.2573t>g'."""
    t = " ".join(text.lower().replace("(", "").replace(")", "").split())
    if t.startswith("p."):
        t = _AMINO_RE.sub(lambda m: _AMINO[m.group(1)], t[2:])
    m = _EXON_DEL.search(t) or re.search(r"ex(\d+)del", t)
    if m:
        return f"exon {m.group(1)} deletion"
    return t


def _descriptors(concept_or_value: dict) -> set[str]:
    out: set[str] = set()
    cc = concept_or_value.get("valueCodeableConcept")
    if isinstance(cc, dict):
        for c in cc.get("coding") or []:
            for k in ("code", "display"):
                if isinstance(c.get(k), str):
                    out.add(normalise_variant(c[k]))
        if isinstance(cc.get("text"), str):
            out.add(normalise_variant(cc["text"]))
    if isinstance(concept_or_value.get("valueString"), str):
        out.add(normalise_variant(concept_or_value["valueString"]))
    return out


def _variant_fact(obs: dict, when: str, term: Terminology | None) -> VariantFact | None:
    """An Observation with a 'gene studied' component -> one VariantFact (gene + variant together)."""
    genes: set[str] = set()
    variants: set[str] = set()
    for comp in obs.get("component") or []:
        if not isinstance(comp, dict):
            continue
        keys = set(codings(comp.get("code")))
        if GENE_STUDIED in keys:
            genes |= concept_words(comp.get("valueCodeableConcept"))
        elif keys & VARIANT_COMPONENTS:
            variants |= _descriptors(comp)
    if not genes:
        return None
    value = set(codings(obs.get("valueCodeableConcept")))
    present = True if value & PRESENT_ANSWERS else False if value & ABSENT_ANSWERS else None
    if present is None and variants:
        present = True  # a reported variant with no assessment value is a finding of that variant
    return VariantFact(drugs.gene_names(genes), frozenset(v for v in variants if v), present, when,
                       concept_label(obs.get("code"), term))


def _add_observation(obs: dict, facts: dict[Code, list[ObservationFact]], term: Terminology | None,
                     variants: list[VariantFact] | None = None) -> None:
    if obs.get("status") not in OBS_STATUSES:
        return
    when = _when(obs)
    if variants is not None:
        vf = _variant_fact(obs, when, term)
        if vf is not None:
            variants.append(vf)
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
            facts.setdefault(k, []).append(fact)


def _latest_first(facts: dict[Code, list[ObservationFact]]) -> None:
    for lst in facts.values():
        if len(lst) > 1:
            lst.sort(key=lambda f: f.when, reverse=True)  # stable: equal dates keep their order


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
    complete: set[str] = set()
    for r in resources:
        rtype = r.get("resourceType")
        if rtype in ("Condition", "MedicationStatement", "Procedure") and _no_known(r, complete):
            continue
        if rtype == "Condition" and past(r):
            codes = tuple(codings(r.get("code")))
            anc = frozenset().union(*(term.ancestors(s, c) for s, c in codes))
            prof.history.append(ConditionFact(codes, "", concept_label(r.get("code"), term), anc,
                                              any(term.is_secondary(s, c) for s, c in codes), False,
                                              _condition_when(r)))
        elif rtype == "Condition" and counts(r):
            codes = tuple(codings(r.get("code")))
            text = term.normalise_text((r.get("code") or {}).get("text") or "") if (r.get("code") or {}).get(
                "text") else ""
            if not codes and text:  # only text ('brain tumour', 'GBM'): its concepts through the terminology
                codes = tuple(term.resolve_text(r["code"]["text"]))
            anc: frozenset[Code] = frozenset().union(*(term.ancestors(s, c) for s, c in codes))
            secondary = any(term.is_secondary(s, c) for s, c in codes)
            prof.conditions.append(ConditionFact(codes, text, concept_label(r.get("code"), term), anc, secondary,
                                                 True, _condition_when(r)))
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
            _add_observation(r, prof.observations, term, prof.variants)
        elif rtype in THERAPY_TYPES:
            concept = r.get("medicationCodeableConcept") or r.get("code")
            if isinstance(concept, dict) and r.get("status") not in NOT_THERAPY \
                    and r.get("doNotPerform") is not True and r.get("intent") not in ("proposal", "plan"):
                codes = tuple(codings(concept))
                prof.therapies.append(TherapyFact(drugs.expand(codes), concept_label(concept, term),
                                                  _therapy_when(r)))
        elif rtype == "List":
            _list_complete(r, complete)
        elif rtype == "Consent":
            prof.consents.append(r)
    _latest_first(prof.observations)
    prof.complete = frozenset(complete)
    prof.ancestors = frozenset(ancestors)
    prof.texts = frozenset(t for t in texts if t)
    return prof


def _therapy_when(r: dict) -> str:
    for key in ("effectivePeriod", "performedPeriod"):
        p = r.get(key)
        if isinstance(p, dict) and (p.get("end") or p.get("start")):
            return p.get("end") or p.get("start")
    return _when(r)


def _no_known(r: dict, complete: set[str]) -> bool:
    """An explicit "no known problems / medications / procedures" record: note the scope, True (not a fact)."""
    concept = r.get("medicationCodeableConcept") if r.get("resourceType") == "MedicationStatement" else r.get("code")
    for k in codings(concept):
        scope = NO_KNOWN.get(k)
        if scope and r.get("status") != "entered-in-error" and not _refuted(r):
            complete.add(scope)
            return True
    return False


def _refuted(r: dict) -> bool:
    return any(c.get("code") in ("refuted", "entered-in-error")
               for c in (r.get("verificationStatus") or {}).get("coding") or [])


def _list_complete(r: dict, complete: set[str]) -> None:
    """A current List of a known scope (problem list, medication list, ...) with an emptyReason of 'nil known'."""
    if r.get("status") != "current" or r.get("entry"):
        return
    reasons = {c for _, c in codings(r.get("emptyReason"))}
    if not reasons & LIST_EMPTY_REASONS:
        return
    for s, c in codings(r.get("code")):
        if s == cv.LOINC and c in LIST_SCOPES:
            complete.add(LIST_SCOPES[c])


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


# -- the stored form of a profile (gateway.store.profiles keeps one per person) ------------------------------
def _cond_doc(c: ConditionFact) -> list:
    return [[list(k) for k in c.codes], c.text, c.label, c.secondary, c.active, c.when]


def _cond_of(d: list, term: Terminology) -> ConditionFact:
    codes = tuple((s, c) for s, c in d[0])
    # ancestors are re-derived (they are most of a profile's size): the same terminology gives the same set
    anc = frozenset().union(*(term.ancestors(s, c) for s, c in codes))
    return ConditionFact(codes, d[1], d[2], anc, d[3], d[4], d[5])


def profile_doc(p: PatientProfile) -> dict:
    """PatientProfile -> plain JSON-able dict (``profile_of_doc`` reads it back, equal to ``p``)."""
    return {
        "key": p.key, "ids": list(p.patient_ids), "nhs": p.nhs_number,
        "birth": p.birth_date.isoformat() if p.birth_date else None, "sex": p.sex, "dead": p.deceased,
        "cond": [_cond_doc(c) for c in p.conditions], "hist": [_cond_doc(c) for c in p.history],
        "obs": [[list(k), [[f.number, [list(c) for c in f.codes], f.flag, f.unit, f.when, f.label, f.ref_high,
                            f.ref_unit, f.text] for f in facts]] for k, facts in p.observations.items()],
        "var": [[sorted(v.genes), sorted(v.variants), v.present, v.when, v.label] for v in p.variants],
        "ther": [[[list(c) for c in t.codes], t.label, t.when] for t in p.therapies],
        "complete": sorted(p.complete), "pos": list(p.position) if p.position else None,
        "pos_src": p.position_source, "consents": p.consents, "texts": sorted(p.texts),
    }


def identity_of_doc(d: dict) -> PatientProfile:
    """The stored dict -> a PatientProfile of who the person is, their demographics, position and consents, and no
    clinical fact: what the automatic flows act on for a person whom the database's columns alone showed to fit
    a study (people.decided_by_columns). Never evaluated: its empty conditions would be read as "none"."""
    return PatientProfile(
        key=d["key"], patient_ids=tuple(d["ids"]), nhs_number=d["nhs"], birth_date=_parse_date(d["birth"]),
        sex=d["sex"], deceased=d["dead"], position=tuple(d["pos"]) if d["pos"] else None,  # type: ignore[arg-type]
        position_source=d["pos_src"], consents=d["consents"])


def profile_of_doc(d: dict, term: Terminology) -> PatientProfile:
    """The stored dict -> PatientProfile, with the conditions' ancestors from ``term``."""
    conditions = [_cond_of(c, term) for c in d["cond"]]
    observations = {(k[0], k[1]): [ObservationFact(f[0], tuple((s, c) for s, c in f[1]), f[2], f[3], f[4], f[5],
                                                   f[6], f[7], f[8]) for f in facts] for k, facts in d["obs"]}
    return PatientProfile(
        key=d["key"], patient_ids=tuple(d["ids"]), nhs_number=d["nhs"], birth_date=_parse_date(d["birth"]),
        sex=d["sex"], deceased=d["dead"], conditions=conditions, history=[_cond_of(c, term) for c in d["hist"]],
        observations=observations,
        variants=[VariantFact(frozenset(v[0]), frozenset(v[1]), v[2], v[3], v[4]) for v in d["var"]],
        therapies=[TherapyFact(tuple((s, c) for s, c in t[0]), t[1], t[2]) for t in d["ther"]],
        complete=frozenset(d["complete"]), position=tuple(d["pos"]) if d["pos"] else None,  # type: ignore[arg-type]
        position_source=d["pos_src"], consents=d["consents"],
        ancestors=frozenset().union(*(c.ancestors for c in conditions)), texts=frozenset(d["texts"]))
