"""Evaluate one study against one patient profile: per-criterion met / not-met / unknown, a sentence, a score.

An inclusion not met or an exclusion the patient has -> not a match (a near miss, with why). Unknowns
lower the score: score = (met + 1) / (met + unknown + 1), in (0, 1]; 1 when everything is known and met.

Two entry points share one decision per criterion: ``evaluate`` (every criterion with its sentence) and
``screen`` (the same decisions, score and distance, without a sentence). Each criterion function decides
first and writes its sentence only when asked (``explain``), so the two cannot drift apart. Screening
thousands of candidate studies and explaining only the page returned is what keeps ``$match`` fast for
someone who matches thousands of studies (a person with no active condition and healthy-volunteer studies).
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


@dataclass(slots=True)
class Screened:
    """One study x patient decided without sentences: enough to keep, count, score and order it.

    ``score``, ``distance_km`` and ``not_met`` (how many findings are not met) equal those of the
    MatchResult ``evaluate`` gives for the same arguments; ``evaluate`` then writes the explanation.
    """

    study_id: str
    patient_key: str
    score: float = 0.0
    not_met: int = 0
    distance_km: float | None = None
    met: int = 0
    unknown: int = 0

    @property
    def is_match(self) -> bool:
        return self.not_met == 0


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


# Each criterion function decides first; with ``explain=False`` it returns the result code alone (met |
# not-met | unknown), otherwise the Finding with its sentence. One decision, two outputs.

def _condition(crit: Criterion, p: PatientProfile, term: Terminology, hv: bool | None,
               explain: bool = True) -> Finding | str:
    for alt in crit.alternatives:
        hit = _kind_of(p, alt)
        if hit:
            if not explain:
                return NOT_MET if crit.exclude else MET
            found, same = hit
            if crit.exclude:
                return Finding(_name(crit), NOT_MET, f"Condition {found} {_verb(same, alt)}, which the study "
                                                      "excludes")
            return Finding(_name(crit), MET, f"Condition {found} {_verb(same, alt)} required by the study")
    if crit.exclude:
        if not explain:
            return MET
        wanted = " or ".join(a.label for a in crit.alternatives)
        return Finding(_name(crit), MET, f"No active, confirmed condition is a kind of {wanted}, which the "
                                         "study excludes")
    if hv and not p.conditions:
        # Only someone with no active condition on record can be a healthy volunteer; whether they
        # really are healthy is for the research team to confirm, hence unknown rather than met.
        if not explain:
            return UNKNOWN
        wanted = " or ".join(a.label for a in crit.alternatives)
        return Finding(_name(crit), UNKNOWN, f"No active condition is recorded and the study accepts healthy "
                                             f"volunteers as well as people with {wanted}")
    if not explain:
        return NOT_MET
    wanted = " or ".join(a.label for a in crit.alternatives)
    return Finding(_name(crit), NOT_MET, f"No active, confirmed condition is a kind of {wanted} required by "
                                         "the study")


def _age(crit: Criterion, p: PatientProfile, today: date, explain: bool = True) -> Finding | str:
    unit = crit.unit or "a"
    age = p.age(unit, today)
    if age is None:
        result = UNKNOWN
    else:
        inside = _in_range(age, crit.low, crit.high)
        result = MET if inside != crit.exclude else NOT_MET
    if not explain:
        return result
    words = AGE_UNITS.get(unit, "years")
    want = _range_text(crit.low, crit.high, words)
    if age is None:
        return Finding(_name(crit), UNKNOWN, f"Age is unknown (no birth date); the study requires {want}")
    verb = "is within" if inside else "is outside"
    return Finding(_name(crit), result, f"Age {age} {words} {verb} {want} "
                   f"{'excluded' if crit.exclude else 'required'} by the study")


def _sex(crit: Criterion, p: PatientProfile, explain: bool = True) -> Finding | str:
    if p.sex is None:
        result = UNKNOWN
    else:
        ok = (p.sex in crit.values) != crit.exclude
        result = MET if ok else NOT_MET
    if not explain:
        return result
    want = " or ".join(crit.values)
    if p.sex is None:
        return Finding(_name(crit), UNKNOWN, f"Sex is unknown; the study requires {want}")
    return Finding(_name(crit), result,
                   f"Sex {p.sex} {'is' if ok else 'is not'} accepted by the study ({'not ' if crit.exclude else ''}"
                   f"{want})")


def _observation(crit: Criterion, p: PatientProfile, term: Terminology, explain: bool = True) -> Finding | str:
    fact = None
    for k in crit.obs_codes:
        fact = p.observations.get(k)
        if fact:
            break
    if fact is None:
        if not explain:
            return UNKNOWN
        return Finding(_name(crit), UNKNOWN, f"No {crit.label} observation is recorded; the study "
                                             f"{'excludes' if crit.exclude else 'requires'} {_want(crit)}")
    holds: bool | None
    if crit.alternatives:
        alt = crit.alternatives[0]
        holds = any(w in term.ancestors(s, c) for s, c in fact.codes for w in alt.codes) if fact.codes else None
    elif crit.flag is not None:
        holds = None if fact.flag is None else fact.flag == crit.flag
    elif fact.number is None:
        holds = None
    elif crit.comparator in ("<", "<=", ">", ">="):
        holds = {"<": fact.number < crit.low, "<=": fact.number <= crit.low, ">": fact.number > crit.low,
                 ">=": fact.number >= crit.low}[crit.comparator]
    else:
        holds = _in_range(fact.number, crit.low, crit.high)
    result = UNKNOWN if holds is None else MET if holds != crit.exclude else NOT_MET
    if not explain:
        return result
    when = f" ({fact.when[:10]})" if fact.when else ""
    if crit.alternatives:
        shown = "coded " + ", ".join(c for _, c in fact.codes) if fact.codes else "not coded"
    elif crit.flag is not None:
        shown = str(fact.flag).lower() if fact.flag is not None else "not a yes/no value"
    else:
        shown = _fmt(fact.number) + (f" {fact.unit}" if fact.unit else "") if fact.number is not None else "not numeric"
    if holds is None:
        return Finding(_name(crit), UNKNOWN, f"{crit.label} is {shown}{when}; the study "
                                             f"{'excludes' if crit.exclude else 'requires'} {_want(crit)}")
    rel = "meets" if holds else "does not meet"
    return Finding(_name(crit), result,
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


def _therapy(crit: Criterion, p: PatientProfile, term: Terminology, explain: bool = True) -> Finding | str:
    alt = crit.alternatives[0]
    for codes, label in p.therapies:
        if any(w in term.ancestors(s, c) or w == (s, c) for s, c in codes for w in alt.codes):
            if not explain:
                return NOT_MET if crit.exclude else MET
            if crit.exclude:
                return Finding(_name(crit), NOT_MET, f"Therapy {label} is recorded; the study excludes prior "
                                                     f"{alt.label}")
            return Finding(_name(crit), MET, f"Therapy {label} is recorded, as the study requires")
    if not explain:
        return MET if crit.exclude else UNKNOWN
    if crit.exclude:
        return Finding(_name(crit), MET, f"No record of prior {alt.label}, which the study excludes")
    return Finding(_name(crit), UNKNOWN, f"No record of prior {alt.label}, which the study requires")


def _name(crit: Criterion) -> str:
    return f"Exclusion: {crit.label}" if crit.exclude else crit.label


def _decide(crit: Criterion, p: PatientProfile, term: Terminology, today: date, hv: bool | None,
            explain: bool) -> Finding | str:
    kind = crit.kind
    if kind == "condition" or kind == "diagnosis":
        return _condition(crit, p, term, hv, explain)
    if kind == "age":
        return _age(crit, p, today, explain)
    if kind == "sex":
        return _sex(crit, p, explain)
    if kind == "therapy":
        return _therapy(crit, p, term, explain)
    return _observation(crit, p, term, explain)


def evaluate_criterion(crit: Criterion, p: PatientProfile, term: Terminology, today: date,
                       hv: bool | None = None) -> Finding:
    """One criterion -> Finding."""
    f = _decide(crit, p, term, today, hv, True)
    assert isinstance(f, Finding)
    return f


def criterion_result(crit: Criterion, p: PatientProfile, term: Terminology, today: date,
                     hv: bool | None = None) -> str:
    """One criterion -> met | not-met | unknown, exactly ``evaluate_criterion(...).result`` without the sentence."""
    r = _decide(crit, p, term, today, hv, False)
    assert isinstance(r, str)
    return r


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



def _score(met: int, unknown: int) -> float:
    return round((met + 1) / (met + unknown + 1), 4)


def tally(study: StudyCriteria, p: PatientProfile, term: Terminology, today: date,
          stop_early: bool = False) -> Screened:
    """The study's criteria (and a deceased patient) decided without sentences, before any distance."""
    res = Screened(study.study_id, p.key)
    met = unknown = not_met = 0
    if p.deceased:
        not_met = 1
        if stop_early:
            res.not_met = 1
            return res
    hv = study.healthy_volunteers
    for crit in study.criteria:
        r = _decide(crit, p, term, today, hv, False)
        if r == MET:
            met += 1
        elif r == UNKNOWN:
            unknown += 1
        else:
            not_met += 1
            if stop_early:
                res.not_met = not_met
                return res
    res.met, res.unknown, res.not_met = met, unknown, not_met
    res.score = _score(met, unknown)
    return res


def place(res: Screened, study: StudyCriteria, p: PatientProfile, max_distance_km: float | None,
          distance: bool = True) -> Screened:
    """Add the distance to the nearest site, and the Distance criterion when a limit is asked for.

    Without a limit the distance only orders results of equal score, so ``distance=False`` leaves it to
    be computed later (see index.py) for the few results that need it.
    """
    if max_distance_km is None:
        if distance:
            res.distance_km = nearest_site(study, p)[1]
        return res
    d = res.distance_km = nearest_site(study, p)[1]
    if d is None:
        res.unknown += 1
    elif d <= max_distance_km:
        res.met += 1
    else:
        res.not_met += 1
    res.score = _score(res.met, res.unknown)
    return res


def screen(study: StudyCriteria, p: PatientProfile, term: Terminology, today: date | None = None,
           max_distance_km: float | None = None, stop_early: bool = False, distance: bool = True) -> Screened:
    """``evaluate`` without the sentences: the same decisions, ``not_met`` count, score and distance.

    ``stop_early``: stop at the first criterion not met (the caller only wants matches); ``not_met`` is
    then 1 and the score and distance are not computed, as ``evaluate`` does. ``distance=False``: leave
    ``distance_km`` unset unless a distance limit needs it (see ``place``).
    """
    res = tally(study, p, term, today or date.today(), stop_early)
    if stop_early and res.not_met:
        return res
    return place(res, study, p, max_distance_km, distance)
