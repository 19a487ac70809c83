"""Evaluate one study against one patient profile: one finding per criterion, a sentence, a score, a coverage.

Findings: ``met``, ``not-met``, ``unknown`` (the patient has no datum, or none recent / unit-compatible enough)
and ``not-checked`` (a criterion the study states only as text). Only a high-confidence criterion judged on a
present, recent, unit-compatible datum can be ``not-met``; a medium-confidence one that the data contradict is
``unknown`` with "possible conflict" (``Finding.conflict``), which lowers the score more than a plain unknown.
An exclusion with no datum is unknown, whatever its kind, unless the source says the list is complete (a List
with emptyReason, a "no known ..." record).

score = (met + 1) / (met + unknown + conflicts + not_checked + 1), in (0, 1]: 1 only when every criterion of
the study was checked and met. coverage = evaluated / total: criteria decided from the records (met or not met)
over all the study's criteria, structured or not. Results order by score, then coverage.

Two entry points share one decision per criterion: ``evaluate`` (every criterion with its sentence) and
``screen`` (the same decisions, score, coverage and distance, without a sentence). Each criterion function
decides first and writes its sentence only when asked (``explain``), so the two cannot drift apart.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, timedelta

from gateway.fhir import conventions as cv
from gateway.matching import drugs, geo, units
from gateway.matching.criteria import (
    AGE_UNITS,
    Alternative,
    Criterion,
    Site,
    StudyCriteria,
    Unstructured,
    receptor_codes,
)
from gateway.matching.profile import ABSENT_ANSWERS, PRESENT_ANSWERS, ConditionFact, ObservationFact, PatientProfile
from gateway.matching.terms import Code, Terminology

MET, NOT_MET, UNKNOWN, NOT_CHECKED = "met", "not-met", "unknown", "not-checked"
CONFLICT = "conflict"  # internal: a medium-confidence criterion the data contradict (reported as unknown)

# Default look-back windows (days) where a criterion states none: a performance score or a laboratory value
# older than this says nothing about the patient today (unknown, not met). docs/matching.md lists them.
PERFORMANCE_CODES = frozenset({cv.ECOG, cv.KARNOFSKY, cv.LANSKY})
DEFAULT_WINDOW_PERFORMANCE = 90
DEFAULT_WINDOW_LAB = 90
DEFAULT_WINDOW_PREGNANCY = 30
PREGNANCY_STATUS = frozenset({(cv.LOINC, "82810-3"), (cv.LOINC, "11449-6")})
PREGNANT = frozenset({(cv.LOINC, "LA15173-0"), (cv.SNOMED, "77386006")})
NOT_PREGNANT = frozenset({(cv.LOINC, "LA26683-5"), (cv.SNOMED, "60001007")})
BREASTFEEDING_STATUS = frozenset({(cv.LOINC, "63895-7")})
YES = frozenset({(cv.LOINC, "LA33-6")})
NO = frozenset({(cv.LOINC, "LA32-8")})
# Qualifiers a record cannot confirm ("untreated", "symptomatic", ...): having the condition is then unknown.
HISTORY = cv.QUALIFIER_HISTORY


@dataclass(frozen=True, slots=True)
class Finding:
    criterion: str  # 'Condition', 'Age', 'Exclusion: Diagnosis ...'
    result: str  # met | not-met | unknown | not-checked
    text: str  # the human sentence
    conflict: bool = False  # unknown because a medium-confidence criterion and the data disagree


@dataclass(slots=True)
class MatchResult:
    study_id: str
    patient_key: str
    findings: list[Finding] = field(default_factory=list)
    score: float = 0.0
    nearest: Site | None = None
    distance_km: float | None = None
    evaluated: int = 0  # study criteria decided from the records (met or not met)
    total: int = 0  # study criteria, structured or not

    @property
    def is_match(self) -> bool:
        return all(f.result != NOT_MET for f in self.findings)

    @property
    def coverage(self) -> float:
        return self.evaluated / self.total if self.total else 1.0

    def reasons_not(self) -> list[str]:
        return [f.text for f in self.findings if f.result == NOT_MET]


@dataclass(slots=True)
class Screened:
    """One study x patient decided without sentences: enough to keep, count, score and order it.

    ``score``, ``distance_km``, ``not_met`` (how many findings are not met), ``evaluated`` and ``total`` equal
    those of the MatchResult ``evaluate`` gives for the same arguments; ``evaluate`` then writes the explanation.
    """

    study_id: str
    patient_key: str
    score: float = 0.0
    not_met: int = 0
    distance_km: float | None = None
    met: int = 0
    unknown: int = 0  # unknown and not-checked findings, and conflicts (each counts once more in the score)
    evaluated: int = 0
    total: int = 0
    conflicts: int = 0

    @property
    def is_match(self) -> bool:
        return self.not_met == 0

    @property
    def coverage(self) -> float:
        return self.evaluated / self.total if self.total else 1.0


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


def _cutoff(today: date, days: float | None) -> str | None:
    """The earliest ISO date a datum may have for a window of ``days`` (None: no window)."""
    return None if days is None else (today - timedelta(days=days)).isoformat()


def _recent(when: str, cutoff: str | None) -> bool:
    return cutoff is None or (bool(when) and when[:10] >= cutoff)


def _window_text(days: float) -> str:
    if days >= 365 and days % 365.25 < 1:
        n = round(days / 365.25)
        return f"{n} year{'s' if n != 1 else ''}"
    if days >= 28 and days % 7:
        return f"{_fmt(round(days))} days"
    if days % 7 == 0 and days >= 7:
        n = int(days // 7)
        return f"{n} week{'s' if n != 1 else ''}"
    return f"{_fmt(round(days, 1))} days"


def _kind_of(conds: list[ConditionFact], p: PatientProfile, alt: Alternative) -> tuple[ConditionFact | None, str,
                                                                                        bool] | None:
    """(the patient's condition that is a kind of ``alt``, its label, same code?), or None."""
    for cond in conds:
        for want in alt.codes:
            # "brain metastases" is not "brain tumour": a secondary requirement needs a secondary
            # condition, whatever a hierarchy says.
            if want in cond.ancestors and (want not in alt.secondary or cond.secondary):
                return cond, cond.label, want in cond.codes
    if not alt.codes and alt.text and alt.text in p.texts:
        named = [c.label for c in p.conditions if c.text == alt.text]
        return None, (named[0] if named else f"'{alt.text}'"), False
    return None


def _verb(same: bool, alt: Alternative) -> str:
    if not alt.codes:
        return f"matches the study's condition text {alt.label} (no code could be bridged)"
    return "is the condition" if same else f"is a kind of {alt.label}"


def _unverifiable(crit: Criterion) -> tuple[str, ...]:
    return tuple(q for q in crit.qualifiers if q != HISTORY and not q.startswith(cv.QUALIFIER_UNLESS_PREFIX))


def _waived(crit: Criterion, p: PatientProfile) -> ConditionFact | None:
    """The patient's diagnosis (current or past) for which the study waives this criterion ('excepting Gilbert's
    syndrome': qualifier ``unless-sct-<code>``), or None."""
    if not crit.qualifiers:
        return None
    wanted = {(cv.SNOMED, q[len(cv.QUALIFIER_UNLESS_PREFIX):]) for q in crit.qualifiers
              if q.startswith(cv.QUALIFIER_UNLESS_PREFIX)}
    if not wanted:
        return None
    return next((c for c in [*p.conditions, *p.history] if wanted & c.ancestors), None)


# Each criterion function decides first; with ``explain=False`` it returns the result code alone (met |
# not-met | unknown), otherwise the Finding with its sentence. One decision, two outputs.

def _condition(crit: Criterion, p: PatientProfile, term: Terminology, hv: bool | None, today: date,
               explain: bool = True) -> Finding | str:
    history = HISTORY in crit.qualifiers or crit.lookback_days is not None
    cutoff = _cutoff(today, crit.lookback_days)
    pool = p.conditions
    if history and p.history:
        pool = p.conditions + [h for h in p.history if _recent(h.when, cutoff)]
    undated_past = history and cutoff is not None and any(not h.when for h in p.history)
    for alt in crit.alternatives:
        hit = _kind_of(pool, p, alt)
        if hit:
            vague = _unverifiable(crit)
            result = UNKNOWN if vague else NOT_MET if crit.exclude else MET
            if not explain:
                return result
            _, found, same = hit
            if vague:
                return Finding(_name(crit), UNKNOWN, _quote(crit, f"Condition {found} {_verb(same, alt)}; whether it "
                                                                  f"is {' / '.join(vague)} cannot be checked from "
                                                                  "the records"))
            if crit.exclude:
                return Finding(_name(crit), NOT_MET, _quote(crit, f"Condition {found} {_verb(same, alt)}, which the "
                                                                  "study excludes"))
            return Finding(_name(crit), MET, _quote(crit, f"Condition {found} {_verb(same, alt)} required by the "
                                                          "study"))
    if crit.exclude:
        # no datum is not a datum: clear only when the source says its problem list is complete
        clear = "conditions" in p.complete and not undated_past
        if not explain:
            return MET if clear else UNKNOWN
        wanted = " or ".join(a.label for a in crit.alternatives)
        if clear:
            return Finding(_name(crit), MET, _quote(crit, f"Does not have {wanted}: the records state the problem "
                                                          "list is complete"))
        return Finding(_name(crit), UNKNOWN, _quote(crit, f"No record says whether the patient has {wanted}, which "
                                                          "the study excludes"))
    wanted = " or ".join(a.label for a in crit.alternatives) if explain else ""
    if hv and not p.conditions:
        # Only someone with no active condition on record can be a healthy volunteer; whether they
        # really are healthy is for the research team to confirm, hence unknown rather than met.
        if not explain:
            return UNKNOWN
        return Finding(_name(crit), UNKNOWN, f"No active condition is recorded and the study accepts healthy "
                                             f"volunteers as well as people with {wanted}")
    if not explain:
        return NOT_MET
    return Finding(_name(crit), NOT_MET, _quote(crit, f"No active, confirmed condition is a kind of {wanted} "
                                                      "required by the study"))


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
        return Finding(_name(crit), UNKNOWN, _quote(crit, f"Age is unknown (no birth date); the study requires {want}"))
    verb = "is within" if inside else "is outside"
    return Finding(_name(crit), result, _quote(crit, f"Age {age} {words} {verb} {want} "
                                                     f"{'excluded' if crit.exclude else 'required'} by the study"))


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
        return Finding(_name(crit), UNKNOWN, _quote(crit, f"Sex is unknown; the study requires {want}"))
    return Finding(_name(crit), result,
                   _quote(crit, f"Sex {p.sex} {'is' if ok else 'is not'} accepted by the study "
                                f"({'not ' if crit.exclude else ''}{want})"))


def _facts(crit: Criterion, p: PatientProfile) -> list[ObservationFact]:
    found: list[ObservationFact] = []
    for k in crit.obs_codes:
        lst = p.observations.get(k)
        if lst:
            found.extend(lst)
    if len(found) > 1:
        found.sort(key=lambda f: f.when, reverse=True)
    return found


def _window(crit: Criterion) -> float | None:
    if crit.lookback_days is not None:
        return crit.lookback_days
    if any(k in PERFORMANCE_CODES for k in crit.obs_codes):
        return DEFAULT_WINDOW_PERFORMANCE
    if crit.unit and (crit.unit == cv.UNIT_ULN or not units.unitless(crit.unit)) and not crit.alternatives:
        return DEFAULT_WINDOW_LAB
    return None


def _same_answer(have: Code, want: Code, term: Terminology) -> bool:
    if have == want or want in term.ancestors(*have):
        return True
    return (have in PRESENT_ANSWERS and want in PRESENT_ANSWERS) or (have in ABSENT_ANSWERS and want in ABSENT_ANSWERS)


def _judge(crit: Criterion, fact: ObservationFact, term: Terminology) -> tuple[bool | None, str]:
    """(does the datum meet the criterion's value?, why not decided); None: cannot be judged on this datum."""
    if crit.alternatives:
        alt = crit.alternatives[0]
        if not fact.codes:
            return None, "not coded"
        return any(_same_answer(h, w, term) for h in fact.codes for w in alt.codes), ""
    if crit.flag is not None:
        if fact.flag is not None:
            return fact.flag == crit.flag, ""
        if fact.codes and any(c in PRESENT_ANSWERS | YES for c in fact.codes):
            return crit.flag, ""
        if fact.codes and any(c in ABSENT_ANSWERS | NO for c in fact.codes):
            return not crit.flag, ""
        return None, "not a yes/no value"
    if fact.number is None:
        return None, "not numeric"
    value = fact.number
    if crit.unit == cv.UNIT_ULN:
        if fact.ref_high is None or fact.ref_high <= 0:
            return None, "no upper limit of normal (reference range) is recorded"
        high = units.convert(fact.ref_high, fact.ref_unit or fact.unit, fact.unit)
        if high is None:
            return None, "its reference range is in an incompatible unit"
        value = round(value / high, 6)
    else:
        converted = units.convert(value, fact.unit, crit.unit,
                                  drugs.molar_mass(tuple(c for s, c in crit.obs_codes if s == cv.LOINC)))
        if converted is None:
            return None, f"in {fact.unit or 'no unit'}, not comparable with {crit.unit or 'a plain number'}"
        value = round(converted, 9)
    if crit.comparator in ("<", "<=", ">", ">="):
        return {"<": value < crit.low, "<=": value <= crit.low, ">": value > crit.low,
                ">=": value >= crit.low}[crit.comparator], ""  # type: ignore[operator]
    return _in_range(value, crit.low, crit.high), ""


def _observation(crit: Criterion, p: PatientProfile, term: Terminology, today: date,
                 explain: bool = True) -> Finding | str:
    facts = _facts(crit, p)
    window = _window(crit)
    cutoff = _cutoff(today, window)
    fact, holds, why = None, None, ""
    for f in facts:
        if not _recent(f.when, cutoff):
            break  # latest first: the rest are older still
        holds, why = _judge(crit, f, term)
        fact = f
        if holds is not None:
            break
    result = UNKNOWN if holds is None else MET if holds != crit.exclude else NOT_MET
    if not explain:
        return result
    verb = "excludes" if crit.exclude else "requires"
    if not facts:
        return Finding(_name(crit), UNKNOWN, _quote(crit, f"No {crit.label} result is recorded; the study {verb} "
                                                          f"{_want(crit)}"))
    if fact is None:
        latest = facts[0]
        age = f"from {latest.when[:10]}" if latest.when else "undated"
        return Finding(_name(crit), UNKNOWN, _quote(crit, f"The latest {crit.label} result is {age}, outside the "
                                                          f"{_window_text(window or 0)} the study looks back; the "
                                                          f"study {verb} {_want(crit)}"))
    when = f" ({fact.when[:10]})" if fact.when else ""
    shown = _shown(crit, fact)
    if holds is None:
        return Finding(_name(crit), UNKNOWN, _quote(crit, f"{crit.label} is {shown}{when}, {why}; the study {verb} "
                                                          f"{_want(crit)}"))
    if crit.exclude and result == MET:
        return Finding(_name(crit), MET, _quote(crit, f"Does not have {crit.label} {_want(crit)}: {shown}{when}"))
    rel = "meets" if holds else "does not meet"
    return Finding(_name(crit), result, _quote(crit, f"{crit.label} {shown}{when} {rel} {_want(crit)} "
                                                     f"{'excluded' if crit.exclude else 'required'} by the study"))


def _shown(crit: Criterion, fact: ObservationFact) -> str:
    if crit.alternatives or (crit.flag is not None and fact.codes):
        return (f"'{fact.text}'" if fact.text else "coded " + ", ".join(c for _, c in fact.codes)) \
            if fact.codes else "not coded"
    if crit.flag is not None:
        return str(fact.flag).lower() if fact.flag is not None else "not a yes/no value"
    if fact.number is None:
        return "not numeric"
    out = _fmt(fact.number) + (f" {fact.unit}" if fact.unit else "")
    if crit.unit == cv.UNIT_ULN and fact.ref_high:
        out += f" (upper limit of normal {_fmt(fact.ref_high)}{' ' + fact.ref_unit if fact.ref_unit else ''})"
    return out


def _want(crit: Criterion) -> str:
    if crit.alternatives:
        return crit.alternatives[0].label
    if crit.flag is not None:
        return str(crit.flag).lower()
    unit = "x ULN" if crit.unit == cv.UNIT_ULN else crit.unit
    if crit.comparator:
        return f"{crit.comparator} {_fmt(crit.low)}" + (f" {unit}" if unit else "")
    return _range_text(crit.low, crit.high, unit)


def _therapy(crit: Criterion, p: PatientProfile, term: Terminology, today: date,
             explain: bool = True) -> Finding | str:
    alt = crit.alternatives[0]
    cutoff = _cutoff(today, crit.lookback_days)
    hits = [t for t in p.therapies
            if any(w == code or w in term.ancestors(*code) for code in t.codes for w in alt.codes)]
    recent = [t for t in hits if _recent(t.when, cutoff)]
    undated = cutoff is not None and any(not t.when for t in hits)
    if recent:
        result = NOT_MET if crit.exclude else MET
    elif undated:
        result = UNKNOWN
    elif "medications" in p.complete:
        result = MET if crit.exclude else NOT_MET  # the source says the medication list is complete
    else:
        result = UNKNOWN  # nothing, or only records older than the window: no datum for the window
    if not explain:
        return result
    within = f" in the last {_window_text(crit.lookback_days)}" if crit.lookback_days is not None else ""
    what = f"{alt.label}{within}"
    if recent:
        t = recent[0]
        on = f" ({t.when[:10]})" if t.when else ""
        tail = f"; the study excludes prior {what}" if crit.exclude else \
            f", which is the prior {what} the study requires"
        return Finding(_name(crit), result, _quote(crit, f"Therapy {t.label}{on} is recorded{tail}"))
    if undated:
        return Finding(_name(crit), UNKNOWN, _quote(crit, f"Therapy {hits[0].label} is recorded without a date, so "
                                                          f"whether it was {what} is unknown"))
    if "medications" in p.complete:
        if crit.exclude:
            return Finding(_name(crit), MET, _quote(crit, f"Does not have prior {what}: the records state the "
                                                          "medication list is complete"))
        return Finding(_name(crit), NOT_MET, _quote(crit, f"No prior {what}, which the study requires (the "
                                                          "medication list is stated complete)"))
    verb = "excludes" if crit.exclude else "requires"
    if hits:
        t = hits[0]
        old = f"Therapy {t.label} ({t.when[:10]}) is older than the {_window_text(crit.lookback_days or 0)} window"
        return Finding(_name(crit), UNKNOWN, _quote(crit, f"{old}; no record says whether the patient had {what}, "
                                                          f"which the study {verb}"))
    return Finding(_name(crit), UNKNOWN, _quote(crit, f"No record says whether the patient had {what}, which the "
                                                      f"study {verb}"))


def _variant(crit: Criterion, p: PatientProfile, today: date, explain: bool = True) -> Finding | str:
    """Gene and variant judged together, within one genomic Observation each."""
    cutoff = _cutoff(today, crit.lookback_days)
    genes = set(crit.genes)
    tested = [v for v in p.variants if v.genes & genes and _recent(v.when, cutoff)]
    wanted = set(crit.variants or ((crit.variant,) if crit.variant else ()))  # alternatives: any one of them
    has = next((v for v in tested if v.present and (not wanted or wanted & set(v.variants))), None)
    negative = next((v for v in tested if v.present is False
                     or (v.present and wanted and v.variants and not wanted & set(v.variants))), None)
    if has is not None:
        holds: bool | None = crit.flag is not False
    elif negative is not None:
        holds = crit.flag is False
    else:
        holds = None
    result = UNKNOWN if holds is None else MET if holds != crit.exclude else NOT_MET
    if not explain:
        return result
    want = f"{crit.label} {'detected' if crit.flag is not False else 'not detected'}"
    verb = "excludes" if crit.exclude else "requires"
    if holds is None:
        return Finding(_name(crit), UNKNOWN, _quote(crit, f"No genomic result for {crit.label.split()[0]} is "
                                                          f"recorded; the study {verb} {want}"))
    v = has or negative
    assert v is not None
    shown = sorted(x.upper() if len(x) <= 8 else x for x in v.variants)
    seen = f"{', '.join(shown) or 'a variant'} detected" if v.present else "no variant detected"
    on = f" ({v.when[:10]})" if v.when else ""
    if crit.exclude and result == MET:
        return Finding(_name(crit), MET, _quote(crit, f"Does not have {want}: {v.label} shows {seen}{on}"))
    rel = "meets" if holds else "does not meet"
    return Finding(_name(crit), result, _quote(crit, f"{v.label} shows {seen}{on}, which {rel} {want} "
                                                     f"{'excluded' if crit.exclude else 'required'} by the study"))


def _pregnancy(crit: Criterion, p: PatientProfile, today: date, explain: bool = True) -> Finding | str:
    """Pregnancy or breastfeeding: applies to people who can be pregnant (not to a male patient)."""
    preg = crit.kind == "pregnancy"
    cutoff = _cutoff(today, crit.lookback_days if crit.lookback_days is not None else DEFAULT_WINDOW_PREGNANCY)
    state: bool | None = None
    when = ""
    if p.sex == "male":
        state = False
    else:
        codes = PREGNANCY_STATUS if preg else BREASTFEEDING_STATUS
        facts = sorted((f for k in codes for f in p.observations.get(k, ())), key=lambda f: f.when, reverse=True)
        if preg and crit.lookback_days is not None:
            # a stated window ('pregnant or recently pregnant, up to 30 days after the end of pregnancy'): pregnant
            # at any time inside it counts, not only at the latest record (a 'not pregnant' after the delivery)
            pregnant = next((f for f in facts if _recent(f.when, cutoff) and f.flag is None and set(f.codes) & PREGNANT
                             or _recent(f.when, cutoff) and f.flag is True), None)
            if pregnant is not None:
                facts = [pregnant]
        for f in facts:
            if not _recent(f.when, cutoff):
                break
            vals = set(f.codes)
            if f.flag is not None:
                state = f.flag
            elif vals & (PREGNANT if preg else YES):
                state = True
            elif vals & (NOT_PREGNANT if preg else NO):
                state = False
            if state is not None:
                when = f.when
                break
        if state is None and preg and any(k in PREGNANT for c in p.conditions for k in c.codes):
            state = True
    holds = None if state is None else state == (crit.flag is not False)
    result = UNKNOWN if holds is None else MET if holds != crit.exclude else NOT_MET
    if not explain:
        return result
    what = "pregnant" if preg else "breastfeeding"
    verb = "excludes" if crit.exclude else "requires"
    if state is None:
        return Finding(_name(crit), UNKNOWN, _quote(crit, f"No recent record says whether the patient is {what}; "
                                                          f"the study {verb} people who are"))
    if p.sex == "male":
        return Finding(_name(crit), result, _quote(crit, f"Does not apply: the patient is male (the study {verb} "
                                                         f"people who are {what})"))
    on = f" ({when[:10]})" if when else ""
    if not state:
        return Finding(_name(crit), result, _quote(crit, f"Is not {what}{on}; the study {verb} people who are"))
    return Finding(_name(crit), result, _quote(crit, f"Is recorded as {what}{on}; the study {verb} people who are"))


def _receptor_state(f: ObservationFact) -> bool | None:
    if f.flag is not None:
        return f.flag
    vals = set(f.codes)
    return True if vals & PRESENT_ANSWERS else False if vals & ABSENT_ANSWERS else None


def _hormone_receptor(crit: Criterion, p: PatientProfile, today: date, explain: bool = True) -> Finding | str:
    """HR+ ('ER and/or PR positive'): the latest ER and PR results, each positive or negative. Either positive: the
    patient has it; both negative: has not; otherwise (one missing, or not a positive/negative value) unknown."""
    cutoff = _cutoff(today, crit.lookback_days)
    seen: dict[str, tuple[bool, ObservationFact]] = {}
    er, pr = receptor_codes()
    for name, keys in (("ER", er), ("PR", pr)):
        facts = sorted((f for k in keys for f in p.observations.get(k, ())), key=lambda f: f.when, reverse=True)
        for f in facts:
            if not _recent(f.when, cutoff):
                break
            state = _receptor_state(f)
            if state is not None:
                seen[name] = (state, f)
                break
    positive = [n for n, (st, _) in seen.items() if st]
    has = True if positive else False if len(seen) == 2 else None
    holds = None if has is None else has == (crit.flag is not False)
    result = UNKNOWN if holds is None else MET if holds != crit.exclude else NOT_MET
    if not explain:
        return result
    want = "hormone receptor positive (ER or PR positive)" if crit.flag is not False else \
        "hormone receptor negative (ER and PR negative)"
    verb = "excludes" if crit.exclude else "requires"

    def shown(n: str) -> str:
        st, f = seen[n]
        return f"{n} {'positive' if st else 'negative'}" + (f" ({f.when[:10]})" if f.when else "")
    if has is None:
        missing = " or ".join(n for n in ("ER", "PR") if n not in seen)
        known = f" ({', '.join(shown(n) for n in seen)})" if seen else ""
        return Finding(_name(crit), UNKNOWN, _quote(crit, f"No {missing} result is recorded{known}; the study "
                                                          f"{verb} {want}"))
    facts = ", ".join(shown(n) for n in (positive or ["ER", "PR"]))
    if crit.exclude and result == MET:
        return Finding(_name(crit), MET, _quote(crit, f"Does not have {want}: {facts}"))
    rel = "meets" if holds else "does not meet"
    return Finding(_name(crit), result, _quote(crit, f"{facts} {rel} {want} "
                                                     f"{'excluded' if crit.exclude else 'required'} by the study"))


def _stage(crit: Criterion, p: PatientProfile, today: date, explain: bool = True) -> Finding | str:
    stage, when = None, ""
    cutoff = _cutoff(today, crit.lookback_days)
    facts = sorted((f for k in cv.STAGE_OBSERVATION_CODES for f in p.observations.get(k, ())),
                   key=lambda f: f.when, reverse=True)
    for f in facts:
        if not _recent(f.when, cutoff):
            break
        stage = drugs.stage_of(f.codes, f.text)
        if stage:
            when = f.when
            break
    holds = None if stage is None else bool(set(drugs.stage_ancestors(stage)) & set(crit.values))
    result = UNKNOWN if holds is None else MET if holds != crit.exclude else NOT_MET
    if not explain:
        return result
    want = "stage " + " or ".join(crit.values)
    verb = "excludes" if crit.exclude else "requires"
    if stage is None:
        return Finding(_name(crit), UNKNOWN, _quote(crit, f"No cancer stage is recorded; the study {verb} {want}"))
    on = f" ({when[:10]})" if when else ""
    if crit.exclude and result == MET:
        return Finding(_name(crit), MET, _quote(crit, f"Does not have {want}: stage {stage}{on}"))
    rel = "is" if holds else "is not"
    return Finding(_name(crit), result, _quote(crit, f"Stage {stage}{on} {rel} {want} "
                                                     f"{'excluded' if crit.exclude else 'required'} by the study"))


def _other_malignancy(crit: Criterion, p: PatientProfile, term: Terminology, today: date,
                      explain: bool = True) -> Finding | str:
    """A malignancy other than the study's own condition, active now or recorded within the window."""
    cutoff = _cutoff(today, crit.lookback_days)
    alt = crit.alternatives[0] if crit.alternatives else None
    wanted = set(alt.codes) if alt else {cv.MALIGNANCY}
    others = set(crit.others)
    hit, undated = None, False
    for c in [*p.conditions, *p.history]:
        if c.secondary or not (wanted & c.ancestors) or (others & c.ancestors):
            continue
        if c.active or _recent(c.when, cutoff):
            hit = c
            break
        if not c.when:
            undated = True
    if hit is not None:
        result = NOT_MET if crit.exclude else MET
    elif undated:
        result = UNKNOWN
    elif "conditions" in p.complete:
        result = MET if crit.exclude else NOT_MET  # the source says the problem list is complete
    else:  # nothing, or only older ones: no datum for the window
        result = UNKNOWN
    if not explain:
        return result
    within = "" if crit.lookback_days is None else " (active now)" if crit.lookback_days == 0 else \
        f" within {_window_text(crit.lookback_days)}"
    verb = "excludes" if crit.exclude else "requires"
    if hit is not None:
        state = "active" if hit.active else f"recorded {hit.when[:10]}"
        return Finding(_name(crit), result, _quote(crit, f"Another malignancy, {hit.label} ({state}), is recorded; "
                                                         f"the study {verb} another malignancy{within}"))
    if result == UNKNOWN:
        return Finding(_name(crit), UNKNOWN, _quote(crit, f"No record says whether the patient had another "
                                                          f"malignancy{within}, which the study {verb}"))
    return Finding(_name(crit), result, _quote(crit, f"Does not have another malignancy{within}: the records "
                                                     "state the problem list is complete"))


def _name(crit: Criterion) -> str:
    return f"Exclusion: {crit.label}" if crit.exclude else crit.label


def _quote(crit: Criterion, sentence: str) -> str:
    """The sentence, with the criterion's own words quoted when it came from the study's text."""
    if crit.source:
        return f'{sentence} (the study says: "{crit.source}")'
    return sentence


def _judge_kind(crit: Criterion, p: PatientProfile, term: Terminology, today: date, hv: bool | None,
                explain: bool) -> Finding | str:
    kind = crit.kind
    if kind == "condition" or kind == "diagnosis":
        return _condition(crit, p, term, hv, today, explain)
    if kind == "age":
        return _age(crit, p, today, explain)
    if kind == "sex":
        return _sex(crit, p, explain)
    if kind == "therapy":
        return _therapy(crit, p, term, today, explain)
    if kind == "variant":
        return _variant(crit, p, today, explain)
    if kind in ("pregnancy", "breastfeeding"):
        return _pregnancy(crit, p, today, explain)
    if kind == "stage":
        return _stage(crit, p, today, explain)
    if kind == "hormone-receptor":
        return _hormone_receptor(crit, p, today, explain)
    if kind == "other-malignancy":
        return _other_malignancy(crit, p, term, today, explain)
    return _observation(crit, p, term, today, explain)


def _decide(crit: Criterion, p: PatientProfile, term: Terminology, today: date, hv: bool | None,
            explain: bool) -> Finding | str:
    """The kind's decision, gated by confidence: only a high-confidence criterion can be not met."""
    waived = _waived(crit, p)
    if waived is not None:
        if not explain:
            return MET
        return Finding(_name(crit), MET, _quote(crit, f"Waived: the study makes an exception for {waived.label}, "
                                                      "which the patient has"))
    r = _judge_kind(crit, p, term, today, hv, explain)
    if crit.confidence == cv.CONFIDENCE_HIGH:
        return r
    if isinstance(r, str):
        return CONFLICT if r == NOT_MET else r
    if r.result == NOT_MET:
        return Finding(r.criterion, UNKNOWN, f"Possible conflict (the criterion was read from the text with medium "
                                             f"confidence): {r.text[0].lower()}{r.text[1:]}", conflict=True)
    return r


def decide(crit: Criterion, p: PatientProfile, term: Terminology, today: date, hv: bool | None = None) -> str:
    """One criterion's decision without a sentence: met | not-met | unknown | conflict (medium, contradicted)."""
    r = _decide(crit, p, term, today, hv, False)
    assert isinstance(r, str)
    return r


def unstructured_finding(u: Unstructured) -> Finding:
    """A criterion the study states only as text: not checked."""
    where = "Exclusion" if u.section == "exclusion" else "Inclusion" if u.section == "inclusion" else "Criterion"
    return Finding(f"{where} (text)", NOT_CHECKED, f'Not checked from the records: "{u.text}"; the research team '
                                                   "will check it")


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
    return UNKNOWN if r == CONFLICT else r


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


def _score(met: int, unknown: int, conflicts: int = 0) -> float:
    return round((met + 1) / (met + unknown + conflicts + 1), 4)


def evaluate(study: StudyCriteria, p: PatientProfile, term: Terminology, today: date | None = None,
             max_distance_km: float | None = None, stop_early: bool = False) -> MatchResult:
    """StudyCriteria x PatientProfile -> MatchResult with one Finding per criterion, a score and a coverage.

    ``stop_early``: return at the first criterion not met (the caller only wants matches), which keeps
    screening many studies cheap; the result then lists only the findings up to that one.
    """
    today = today or date.today()
    res = MatchResult(study.study_id, p.key, total=study.total)
    if p.deceased:
        res.findings.append(Finding("Patient", NOT_MET, "The patient's record says the patient has died"))
        if stop_early:
            return res
    for crit in study.criteria:
        f = evaluate_criterion(crit, p, term, today, study.healthy_volunteers)
        res.findings.append(f)
        if f.result in (MET, NOT_MET):
            res.evaluated += 1
        if stop_early and f.result == NOT_MET:
            return res
    res.findings.extend(unstructured_finding(u) for u in study.unstructured)
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
    unknown = sum(f.result in (UNKNOWN, NOT_CHECKED) for f in res.findings)
    res.score = _score(met, unknown, sum(f.conflict for f in res.findings))
    return res


def tally(study: StudyCriteria, p: PatientProfile, term: Terminology, today: date,
          stop_early: bool = False, memo: dict | None = None, blank: bool = False) -> Screened:
    """The study's criteria (and a deceased patient) decided without sentences, before any distance.

    ``memo``: decisions already taken for this person (one ``today``), by the study's ``memo_keys`` (the
    StudyIndex shares one criterion object among the studies stating it); ``blank``: the person has no
    condition, condition text or history, so condition criteria share decisions whatever their codes.
    """
    keys = (study.blank_keys if blank else study.memo_keys) if memo is not None else ()
    if keys and len(keys) == len(study.criteria):
        return _tally_memo(study, p, term, today, stop_early, memo, keys)  # type: ignore[arg-type]
    res = Screened(study.study_id, p.key, total=study.total)
    met = unknown = not_met = conflicts = 0
    if p.deceased:
        not_met = 1
        if stop_early:
            res.not_met = 1
            return res
    hv = study.healthy_volunteers
    for crit in study.criteria:
        if memo is None:
            r = _decide(crit, p, term, today, hv, False)
        else:
            r = memo.get((id(crit), hv))
            if r is None:
                r = memo[(id(crit), hv)] = _decide(crit, p, term, today, hv, False)
        if r == MET:
            met += 1
        elif r == UNKNOWN:
            unknown += 1
        elif r == CONFLICT:
            unknown += 1
            conflicts += 1
        else:
            not_met += 1
            if stop_early:
                res.not_met = not_met
                return res
    res.evaluated = met + not_met - (1 if p.deceased else 0)
    unknown += len(study.unstructured)
    res.met, res.unknown, res.not_met, res.conflicts = met, unknown, not_met, conflicts
    res.score = _score(met, unknown, conflicts)
    return res


def _tally_memo(study: StudyCriteria, p: PatientProfile, term: Terminology, today: date, stop_early: bool,
                memo: dict, keys: tuple) -> Screened:
    """``tally`` by memo look-ups: the same decisions, counted with list methods (the hot path of $match)."""
    res = Screened(study.study_id, p.key, total=len(keys) + len(study.unstructured))
    if p.deceased and stop_early:
        res.not_met = 1
        return res
    try:
        results = [memo[k] for k in keys]
    except KeyError:
        hv = study.healthy_volunteers
        for k, crit in zip(keys, study.criteria, strict=True):
            if k not in memo:
                memo[k] = _decide(crit, p, term, today, hv, False)
        results = [memo[k] for k in keys]
    not_met = results.count(NOT_MET)
    if stop_early and not_met:
        res.not_met = 1
        return res
    met, conflicts = results.count(MET), results.count(CONFLICT)
    unknown = results.count(UNKNOWN) + conflicts + len(study.unstructured)
    res.evaluated = met + not_met
    res.met, res.unknown, res.not_met, res.conflicts = met, unknown, not_met + (1 if p.deceased else 0), conflicts
    res.score = _score(met, unknown, conflicts)
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
    res.score = _score(res.met, res.unknown, res.conflicts)
    return res


def screen(study: StudyCriteria, p: PatientProfile, term: Terminology, today: date | None = None,
           max_distance_km: float | None = None, stop_early: bool = False, distance: bool = True,
           memo: dict | None = None) -> Screened:
    """``evaluate`` without the sentences: the same decisions, ``not_met`` count, score, coverage and distance.

    ``stop_early``: stop at the first criterion not met (the caller only wants matches); ``not_met`` is
    then 1 and the score and distance are not computed, as ``evaluate`` does. ``distance=False``: leave
    ``distance_km`` unset unless a distance limit needs it (see ``place``).
    """
    res = tally(study, p, term, today or date.today(), stop_early, memo)
    if stop_early and res.not_met:
        return res
    return place(res, study, p, max_distance_km, distance)
