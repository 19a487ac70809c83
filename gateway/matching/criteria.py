"""Study criteria: ResearchStudy + eligibility Group + site Locations (FHIR JSON) -> StudyCriteria.

What the study requires, in plain data that the engine evaluates and the indexes are keyed on.
Conventions: ARCHITECTURE.md "Eligibility Group"; characteristic codes in gateway.fhir.conventions.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from gateway.fhir import conventions as cv
from gateway.matching import geo
from gateway.matching.terms import Code, Terminology, codings, concept_label

PRIOR_THERAPY = (cv.ELIGIBILITY_CS, "prior-therapy")
AGE_UNITS = {"a": "years", "mo": "months", "wk": "weeks", "d": "days"}
_AGE_UNIT_WORDS = {"year": "a", "years": "a", "yr": "a", "y": "a", "month": "mo", "months": "mo",
                   "week": "wk", "weeks": "wk", "day": "d", "days": "d"}


@dataclass(frozen=True, slots=True)
class Alternative:
    """One acceptable condition: codes (any of them) or, when none could be resolved, normalised text."""

    codes: tuple[Code, ...]
    text: str
    label: str
    secondary: frozenset[Code] = frozenset()  # those of ``codes`` that are metastases


@dataclass(frozen=True, slots=True)
class Criterion:
    """One requirement. ``exclude`` marks an exclusion criterion (the patient must NOT have the trait)."""

    kind: str  # condition | diagnosis | age | sex | observation | therapy
    label: str
    exclude: bool = False
    alternatives: tuple[Alternative, ...] = ()  # condition / diagnosis / therapy / coded observation value
    obs_codes: tuple[Code, ...] = ()  # observation: the Observation.code to look for
    low: float | None = None
    high: float | None = None
    comparator: str | None = None  # observation valueQuantity: <, <=, >=, > (None: equal)
    unit: str | None = None
    values: tuple[str, ...] = ()  # sex: accepted administrative genders
    flag: bool | None = None  # observation valueBoolean


@dataclass(frozen=True, slots=True)
class Site:
    location_id: str | None
    name: str
    position: geo.LatLon | None


@dataclass(slots=True)
class StudyCriteria:
    study_id: str
    title: str
    status: str
    phases: frozenset[str]
    criteria: list[Criterion] = field(default_factory=list)
    sites: list[Site] = field(default_factory=list)
    healthy_volunteers: bool | None = None
    unresolved: list[str] = field(default_factory=list)  # condition texts no code system knows
    group_id: str | None = None
    location_ids: tuple[str, ...] = ()

    def index_keys(self) -> tuple[set[Code], set[str]] | None:
        """The codes / texts a patient must have one of to possibly match; None: open to anyone.

        Keyed on the first condition-like inclusion criterion (they are all required, so any one of
        them is a necessary condition), which keeps the index small. A study that also accepts healthy
        volunteers is keyed the same way; the indexes add it for people with no active condition.
        """
        for c in self.criteria:
            if c.kind in ("condition", "diagnosis") and not c.exclude:
                codes = {code for a in c.alternatives for code in a.codes}
                texts = {a.text for a in c.alternatives if not a.codes and a.text}
                return codes, texts
        return None


def _ref_id(ref: dict | None, rtype: str) -> str | None:
    """{'reference': 'Group/g1'} -> 'g1' (also absolute URLs); contained or other types -> None."""
    r = (ref or {}).get("reference") or ""
    if f"{rtype}/" not in r:
        return None
    return r.rsplit(f"{rtype}/", 1)[1].split("/")[0] or None


def group_id_of(study: dict) -> str | None:
    for ref in study.get("enrollment") or []:
        gid = _ref_id(ref, "Group")
        if gid:
            return gid
    return None


def location_ids_of(study: dict) -> tuple[str, ...]:
    return tuple(i for i in (_ref_id(r, "Location") for r in study.get("site") or []) if i)


def _alternative(concept: dict, term: Terminology, unresolved: list[str]) -> Alternative:
    codes = tuple(codings(concept))
    text = concept.get("text") or ""
    if not codes and text:
        codes = tuple(term.resolve_text(text))
        if not codes:
            unresolved.append(text)
    return Alternative(codes, term.normalise_text(text) if text else "", concept_label(concept, term),
                       frozenset(c for c in codes if term.is_secondary(*c)))


def _range(char: dict) -> tuple[float | None, float | None, str | None]:
    r = char.get("valueRange") or {}
    low, high = r.get("low") or {}, r.get("high") or {}
    unit = low.get("code") or high.get("code") or low.get("unit") or high.get("unit")
    lv = float(low["value"]) if isinstance(low.get("value"), int | float) else None
    hv = float(high["value"]) if isinstance(high.get("value"), int | float) else None
    return lv, hv, unit


def _age_unit(unit: str | None) -> str:
    if not unit:
        return "a"
    if unit in AGE_UNITS:
        return unit
    return _AGE_UNIT_WORDS.get(unit.lower(), "a")


def characteristic_criterion(char: dict, term: Terminology, unresolved: list[str]) -> Criterion | None:
    """One Group.characteristic -> Criterion; None when it has no code we can evaluate."""
    keys = codings(char.get("code"))
    exclude = char.get("exclude") is True
    label = concept_label(char.get("code"), term)
    if cv.AGE in keys and "valueRange" in char:
        low, high, unit = _range(char)
        return Criterion("age", "Age", exclude, low=low, high=high, unit=_age_unit(unit))
    if cv.SEX in keys:
        vals = tuple(c for _, c in codings(char.get("valueCodeableConcept")))
        return Criterion("sex", "Sex", exclude, values=vals) if vals else None
    if cv.HEALTHY_VOLUNTEERS in keys:
        return None  # a study-level flag, read by study_criteria
    if cv.DIAGNOSIS in keys and isinstance(char.get("valueCodeableConcept"), dict):
        alt = _alternative(char["valueCodeableConcept"], term, unresolved)
        return Criterion("diagnosis", f"Diagnosis {alt.label}", exclude, alternatives=(alt,))
    if PRIOR_THERAPY in keys and isinstance(char.get("valueCodeableConcept"), dict):
        alt = _alternative(char["valueCodeableConcept"], term, [])
        return Criterion("therapy", f"Prior therapy {alt.label}", exclude, alternatives=(alt,))
    if not keys:
        return None
    if "valueRange" in char:
        low, high, unit = _range(char)
        return Criterion("observation", label, exclude, obs_codes=tuple(keys), low=low, high=high, unit=unit)
    if isinstance(char.get("valueQuantity"), dict) and isinstance(char["valueQuantity"].get("value"), int | float):
        q = char["valueQuantity"]
        v = float(q["value"])
        return Criterion("observation", label, exclude, obs_codes=tuple(keys), low=v, high=v,
                         comparator=q.get("comparator"), unit=q.get("code") or q.get("unit"))
    if isinstance(char.get("valueCodeableConcept"), dict):
        alt = _alternative(char["valueCodeableConcept"], term, [])
        return Criterion("observation", label, exclude, obs_codes=tuple(keys), alternatives=(alt,))
    if isinstance(char.get("valueBoolean"), bool):
        return Criterion("observation", label, exclude, obs_codes=tuple(keys), flag=char["valueBoolean"])
    return None


def study_criteria(study: dict, group: dict | None, locations: dict[str, dict], term: Terminology
                   ) -> StudyCriteria:
    """ResearchStudy + its eligibility Group + {location id: Location} -> StudyCriteria."""
    phases = frozenset(c for _, c in codings(study.get("phase")))
    sc = StudyCriteria(study.get("id") or "", study.get("title") or "", study.get("status") or "", phases)
    sc.group_id = group_id_of(study)
    sc.location_ids = location_ids_of(study)
    alts = tuple(_alternative(c, term, sc.unresolved) for c in study.get("condition") or [] if isinstance(c, dict))
    alts = tuple(a for a in alts if a.codes or a.text)
    if alts:
        sc.criteria.append(Criterion("condition", "Condition", alternatives=alts))
    for char in (group or {}).get("characteristic") or []:
        if not isinstance(char, dict):
            continue
        if cv.HEALTHY_VOLUNTEERS in codings(char.get("code")) and isinstance(char.get("valueBoolean"), bool):
            sc.healthy_volunteers = char["valueBoolean"]
            continue
        crit = characteristic_criterion(char, term, sc.unresolved)
        if crit is not None:
            sc.criteria.append(crit)
    for ref in study.get("site") or []:
        lid = _ref_id(ref, "Location")
        loc = locations.get(lid) if lid else None
        name = (loc or {}).get("name") or (ref or {}).get("display") or (lid or "site")
        sc.sites.append(Site(lid, name, geo.location_position(loc) if loc else None))
    return sc
