"""Evaluate one study against one patient profile: per-criterion met / not-met / unknown, a sentence, a score.

An inclusion not met or an exclusion the patient has -> not a match (a near miss, with why). Unknowns
lower the score: score = (met + 1) / (met + unknown + 1), in (0, 1]; 1 when everything is known and met.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date

from gateway.matching import geo
from gateway.matching.criteria import AGE_UNITS, Alternative, Criterion, Site, StudyCriteria
from gateway.matching.profile import PatientProfile
from gateway.matching.terms import Terminology

MET, NOT_MET, UNKNOWN = "met", "not-met", "unknown"


@dataclass(frozen=True, slots=True)
class Finding:
    criterion: str  # 'Condition', 'Age', 'Exclusion: Diagnosis ...'
    result: str  # met | not-met | unknown
    text: str  # the human sentence


@dataclass(slots=True)
class MatchResult:
    study_id: str
    patient_key: str
    findings: list[Finding] = field(default_factory=list)
    score: float = 0.0
    nearest: Site | None = None
    distance_km: float | None = None

    @property
    def is_match(self) -> bool:
        return all(f.result != NOT_MET for f in self.findings)

    def reasons_not(self) -> list[str]:
        return [f.text for f in self.findings if f.result == NOT_MET]


def _fmt(v: float | None) -> str:
    if v is None:
        return ""
    return str(int(v)) if float(v).is_integer() else f"{v:g}"


def _range_text(low: float | None, high: float | None, unit: str | None = None) -> str:
    u = f" {unit}" if unit else ""
    if low is not None and high is not None:
        return f"{_fmt(low)}-{_fmt(high)}{u}"
    if low is not None:
        return f"at least {_fmt(low)}{u}"
    if high is not None:
        return f"at most {_fmt(high)}{u}"
    return "any value"


def _in_range(v: float, low: float | None, high: float | None) -> bool:
    return (low is None or v >= low) and (high is None or v <= high)


def _kind_of(profile: PatientProfile, alt: Alternative) -> tuple[str, bool] | None:
    """(label of the patient's condition that is a kind of ``alt``, same code?), or None."""
    for cond in profile.conditions:
        for want in alt.codes:
            # "brain metastases" is not "brain tumour": a secondary requirement needs a secondary
            # condition, whatever a hierarchy says.
            if want in cond.ancestors and (want not in alt.secondary or cond.secondary):
                return cond.label, want in cond.codes
    if not alt.codes and alt.text and alt.text in profile.texts:
        named = [c.label for c in profile.conditions if c.text == alt.text]
        return (named[0] if named else f"'{alt.text}'"), False
    return None


def _verb(same: bool, alt: Alternative) -> str:
    if not alt.codes:
        return f"matches the study's condition text {alt.label} (no code could be bridged)"
    return "is the condition" if same else f"is a kind of {alt.label}"


def _condition(crit: Criterion, p: PatientProfile, term: Terminology, hv: bool | None) -> Finding:
    for alt in crit.alternatives:
        hit = _kind_of(p, alt)
        if hit:
            found, same = hit
            if crit.exclude:
                return Finding(_name(crit), NOT_MET, f"Condition {found} {_verb(same, alt)}, which the study "
                                                      "excludes")
            return Finding(_name(crit), MET, f"Condition {found} {_verb(same, alt)} required by the study")
    wanted = " or ".join(a.label for a in crit.alternatives)
    if crit.exclude:
        return Finding(_name(crit), MET, f"No active, confirmed condition is a kind of {wanted}, which the "
                                         "study excludes")
    if hv and not p.conditions:
        # Only someone with no active condition on record can be a healthy volunteer; whether they
        # really are healthy is for the research team to confirm, hence unknown rather than met.
        return Finding(_name(crit), UNKNOWN, f"No active condition is recorded and the study accepts healthy "
                                             f"volunteers as well as people with {wanted}")
    return Finding(_name(crit), NOT_MET, f"No active, confirmed condition is a kind of {wanted} required by "
                                         "the study")


def _age(crit: Criterion, p: PatientProfile, today: date) -> Finding:
    unit = crit.unit or "a"
    words = AGE_UNITS.get(unit, "years")
    want = _range_text(crit.low, crit.high, words)
    age = p.age(unit, today)
    if age is None:
        return Finding(_name(crit), UNKNOWN, f"Age is unknown (no birth date); the study requires {want}")
    inside = _in_range(age, crit.low, crit.high)
    ok = inside != crit.exclude
    verb = "is within" if inside else "is outside"
    return Finding(_name(crit), MET if ok else NOT_MET, f"Age {age} {words} {verb} {want} "
                   f"{'excluded' if crit.exclude else 'required'} by the study")


def _sex(crit: Criterion, p: PatientProfile) -> Finding:
    want = " or ".join(crit.values)
    if p.sex is None:
        return Finding(_name(crit), UNKNOWN, f"Sex is unknown; the study requires {want}")
    ok = (p.sex in crit.values) != crit.exclude
    return Finding(_name(crit), MET if ok else NOT_MET,
                   f"Sex {p.sex} {'is' if ok else 'is not'} accepted by the study ({'not ' if crit.exclude else ''}"
                   f"{want})")


def _observation(crit: Criterion, p: PatientProfile, term: Terminology) -> Finding:
    fact = None
    for k in crit.obs_codes:
        fact = p.observations.get(k)
        if fact:
            break
    if fact is None:
        return Finding(_name(crit), UNKNOWN, f"No {crit.label} observation is recorded; the study "
                                             f"{'excludes' if crit.exclude else 'requires'} {_want(crit)}")
    when = f" ({fact.when[:10]})" if fact.when else ""
    holds: bool | None
    if crit.alternatives:
        alt = crit.alternatives[0]
        holds = any(w in term.ancestors(s, c) for s, c in fact.codes for w in alt.codes) if fact.codes else None
        shown = "coded " + ", ".join(c for _, c in fact.codes) if fact.codes else "not coded"
    elif crit.flag is not None:
        holds = None if fact.flag is None else fact.flag == crit.flag
        shown = str(fact.flag).lower() if fact.flag is not None else "not a yes/no value"
    else:
        if fact.number is None:
            holds = None
        elif crit.comparator in ("<", "<=", ">", ">="):
            holds = {"<": fact.number < crit.low, "<=": fact.number <= crit.low, ">": fact.number > crit.low,
                     ">=": fact.number >= crit.low}[crit.comparator]
        else:
            holds = _in_range(fact.number, crit.low, crit.high)
        shown = _fmt(fact.number) + (f" {fact.unit}" if fact.unit else "") if fact.number is not None else "not numeric"
    if holds is None:
        return Finding(_name(crit), UNKNOWN, f"{crit.label} is {shown}{when}; the study "
                                             f"{'excludes' if crit.exclude else 'requires'} {_want(crit)}")
    ok = holds != crit.exclude
    rel = "meets" if holds else "does not meet"
    return Finding(_name(crit), MET if ok else NOT_MET,
                   f"{crit.label} {shown}{when} {rel} {_want(crit)} "
                   f"{'excluded' if crit.exclude else 'required'} by the study")


def _want(crit: Criterion) -> str:
    if crit.alternatives:
        return crit.alternatives[0].label
    if crit.flag is not None:
        return str(crit.flag).lower()
    if crit.comparator:
        return f"{crit.comparator} {_fmt(crit.low)}" + (f" {crit.unit}" if crit.unit else "")
    return _range_text(crit.low, crit.high, crit.unit)


def _therapy(crit: Criterion, p: PatientProfile, term: Terminology) -> Finding:
    alt = crit.alternatives[0]
    for codes, label in p.therapies:
        if any(w in term.ancestors(s, c) or w == (s, c) for s, c in codes for w in alt.codes):
            if crit.exclude:
                return Finding(_name(crit), NOT_MET, f"Therapy {label} is recorded; the study excludes prior "
                                                     f"{alt.label}")
            return Finding(_name(crit), MET, f"Therapy {label} is recorded, as the study requires")
    if crit.exclude:
        return Finding(_name(crit), MET, f"No record of prior {alt.label}, which the study excludes")
    return Finding(_name(crit), UNKNOWN, f"No record of prior {alt.label}, which the study requires")


def _name(crit: Criterion) -> str:
    return f"Exclusion: {crit.label}" if crit.exclude else crit.label


def evaluate_criterion(crit: Criterion, p: PatientProfile, term: Terminology, today: date,
                       hv: bool | None = None) -> Finding:
    """One criterion -> Finding."""
    if crit.kind in ("condition", "diagnosis"):
        return _condition(crit, p, term, hv)
    if crit.kind == "age":
        return _age(crit, p, today)
    if crit.kind == "sex":
        return _sex(crit, p)
    if crit.kind == "therapy":
        return _therapy(crit, p, term)
    return _observation(crit, p, term)


def nearest_site(study: StudyCriteria, p: PatientProfile) -> tuple[Site | None, float | None]:
    if p.position is None:
        return None, None
    best: tuple[Site | None, float | None] = (None, None)
    for site in study.sites:
        if site.position is None:
            continue
        d = geo.haversine_km(p.position, site.position)
        if best[1] is None or d < best[1]:
            best = (site, d)
    return best


def evaluate(study: StudyCriteria, p: PatientProfile, term: Terminology, today: date | None = None,
             max_distance_km: float | None = None, stop_early: bool = False) -> MatchResult:
    """StudyCriteria x PatientProfile -> MatchResult with one Finding per criterion and a score.

    ``stop_early``: return at the first criterion not met (the caller only wants matches), which keeps
    screening many studies cheap; the result then lists only the findings up to that one.
    """
    today = today or date.today()
    res = MatchResult(study.study_id, p.key)
    if p.deceased:
        res.findings.append(Finding("Patient", NOT_MET, "The patient's record says the patient has died"))
        if stop_early:
            return res
    for crit in study.criteria:
        f = evaluate_criterion(crit, p, term, today, study.healthy_volunteers)
        res.findings.append(f)
        if stop_early and f.result == NOT_MET:
            return res
    res.nearest, res.distance_km = nearest_site(study, p)
    if max_distance_km is not None:
        if res.distance_km is None:
            why = "the patient's location is unknown" if p.position is None else "no site has a known position"
            res.findings.append(Finding("Distance", UNKNOWN, f"Distance to a site is unknown: {why}"))
        else:
            ok = res.distance_km <= max_distance_km
            site = res.nearest.name if res.nearest else "site"
            res.findings.append(Finding("Distance", MET if ok else NOT_MET,
                                        f"Nearest site '{site}' is {res.distance_km:.1f} km away "
                                        f"({p.position_source}); the limit asked for is {_fmt(max_distance_km)} km"))
    met = sum(f.result == MET for f in res.findings)
    unknown = sum(f.result == UNKNOWN for f in res.findings)
    res.score = round((met + 1) / (met + unknown + 1), 4)
    return res

