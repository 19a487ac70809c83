"""Study criteria: ResearchStudy + eligibility Group + site Locations (FHIR JSON) -> StudyCriteria.

What the study requires, in plain data that the engine evaluates and the indexes are keyed on.
Conventions: ARCHITECTURE.md "Eligibility Group"; characteristic codes in gateway.fhir.conventions, section
"extracted eligibility" (docs/eligibility.md): an extracted characteristic carries its source criterion, rule
and confidence (``criterion-source``) and may carry a look-back window (``criterion-lookback``); criteria the
extractor could not structure travel as ``unstructured-criterion`` on the Group and become ``not-checked``
findings. docs/matching.md says how each kind is judged.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable
from dataclasses import dataclass, field, fields, replace

import orjson

from gateway.fhir import conventions as cv
from gateway.matching import drugs, geo, units
from gateway.matching.terms import Code, Terminology, codings, concept_label, concept_words

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

    kind: str  # condition | diagnosis | age | sex | observation | therapy | hormone-receptor | ...
    label: str
    exclude: bool = False
    alternatives: tuple[Alternative, ...] = ()  # condition / diagnosis / therapy / coded observation value
    obs_codes: tuple[Code, ...] = ()  # observation: the Observation.code to look for
    low: float | None = None
    high: float | None = None
    comparator: str | None = None  # observation valueQuantity: <, <=, >=, > (None: equal)
    unit: str | None = None
    values: tuple[str, ...] = ()  # sex: accepted administrative genders; stage: AJCC stage groups
    flag: bool | None = None  # observation valueBoolean
    # extracted criteria (criterion-source): the criterion's own words, and how sure the extractor was;
    # a sponsor-supplied or registry-field characteristic has no source and counts as high confidence.
    source: str = ""
    section: str = ""  # inclusion | exclusion
    confidence: str = "high"  # high | medium
    lookback_days: float | None = None  # criterion-lookback (None: the kind's default window, if any)
    qualifiers: tuple[str, ...] = ()  # e.g. CNS metastases 'active', 'untreated', 'symptomatic'
    genes: tuple[str, ...] = ()  # variant: HGNC id and symbol, lower case
    variant: str = ""  # variant: normalised descriptor ('l858r', 'exon 19 deletion'); '' any variant of the gene
    variants: tuple[str, ...] = ()  # variant: every alternative the characteristic names ('exon 19 deletion', 'l858r')
    others: tuple[Code, ...] = ()  # other-malignancy: the study's own condition codes (not "other")
    # the hash, computed once: a criterion is a key of the index's sharing and memo tables, hashed for every study
    # stating it (a stored index of 70,000 studies is built in a second or two)
    _hash: int = field(default=0, init=False, repr=False, compare=False)

    def __hash__(self) -> int:
        h = self._hash
        if not h:
            h = hash(tuple(getattr(self, name) for name in _CRIT_FIELDS)) or 1
            object.__setattr__(self, "_hash", h)
        return h


@dataclass(frozen=True, slots=True)
class Unstructured:
    """A criterion left as text (``unstructured-criterion``): always ``not-checked`` for a patient."""

    text: str
    section: str = ""
    reason: str = ""


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
    unstructured: tuple[Unstructured, ...] = ()  # criteria left as text: not checked
    # set by StudyIndex (engine.tally's memo keys): one key per criterion, shared by the studies stating it;
    # ``blank_keys`` also shares condition criteria whatever their codes (for a person with no condition)
    memo_keys: tuple = ()
    blank_keys: tuple = ()
    version: int = 0  # the ResearchStudy version the criteria were extracted from (stored rows; 0: not known)

    @property
    def total(self) -> int:
        """How many criteria the study has: structured ones and those left as text (coverage's denominator)."""
        return len(self.criteria) + len(self.unstructured)

    def index_keys(self) -> tuple[set[Code], set[str]] | None:
        """The codes / texts a patient must have one of to possibly match; None: open to anyone.

        Keyed on the first condition-like inclusion criterion (they are all required, so any one of
        them is a necessary condition), which keeps the index small. A study that also accepts healthy
        volunteers is keyed the same way; the indexes add it for people with no active condition.
        """
        for c in self.criteria:
            # only a high-confidence criterion can fail a patient, so only such a one is a necessary condition
            # and history counts only for history-qualified ones, which the index (active conditions) cannot key
            if c.kind in ("condition", "diagnosis") and not c.exclude and c.confidence == "high" \
                    and "history" not in c.qualifiers and c.lookback_days is None:
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


def _sub(ext: dict, name: str) -> object:
    for sub in ext.get("extension") or []:
        if isinstance(sub, dict) and sub.get("url") == name:
            for k, v in sub.items():
                if k.startswith("value"):
                    return v
    return None


def _ext(holder: dict, url: str) -> list[dict]:
    return [e for e in holder.get("extension") or [] if isinstance(e, dict) and e.get("url") == url]


def _provenance(char: dict) -> dict:
    """criterion-source, criterion-lookback and qualifier extensions -> Criterion keyword arguments."""
    out: dict = {}
    for ext in _ext(char, cv.EXT_CRITERION_SOURCE)[:1]:
        text, section, conf = _sub(ext, "text"), _sub(ext, "section"), _sub(ext, "confidence")
        out["source"] = text.strip() if isinstance(text, str) else ""
        out["section"] = section if isinstance(section, str) else ""
        # anything but an explicit 'high' is treated as medium: it may lower a score, never exclude
        out["confidence"] = cv.CONFIDENCE_HIGH if conf == cv.CONFIDENCE_HIGH else cv.CONFIDENCE_MEDIUM
    for ext in _ext(char, cv.EXT_CRITERION_LOOKBACK)[:1]:
        d = ext.get("valueDuration") or {}
        if isinstance(d.get("value"), int | float) and d["value"] >= 0:
            days = units.convert(float(d["value"]), d.get("code") or d.get("unit") or "d", "d")
            if days is not None:
                out["lookback_days"] = round(days, 4)
    quals = tuple(sorted({e["valueCode"] for e in _ext(char, cv.EXT_CHARACTERISTIC_QUALIFIER)
                          if isinstance(e.get("valueCode"), str)}))
    if quals:
        out["qualifiers"] = quals
    return out


def _genes(char: dict) -> tuple[str, ...]:
    genes: set[str] = set()
    for ext in _ext(char, cv.EXT_CHARACTERISTIC_GENE):
        genes |= concept_words(ext.get("valueCodeableConcept"))
    return tuple(sorted(drugs.gene_names(genes))) if genes else ()


def _variants(char: dict) -> tuple[str, ...]:
    """Every variant the characteristic names, normalised: several are alternatives ('exon 19 deletion or L858R')."""
    from gateway.matching.profile import normalise_variant

    out = [normalise_variant(ext["valueString"]) for ext in _ext(char, cv.EXT_CHARACTERISTIC_VARIANT)
           if isinstance(ext.get("valueString"), str) and ext["valueString"].strip()]
    return tuple(dict.fromkeys(out))


def receptor_codes() -> tuple[tuple[Code, ...], tuple[Code, ...]]:
    """The Observation codes read as the oestrogen and as the progesterone receptor status."""
    return _obs_keys([cv.ER_STATUS]), _obs_keys([cv.PR_STATUS])


def _obs_keys(keys: list[Code]) -> tuple[Code, ...]:
    """The characteristic's codes plus the LOINC codes the analyte lexicon accepts as the same analyte."""
    out = list(keys)
    for s, c in keys:
        if s == cv.LOINC:
            out += [(cv.LOINC, x) for x in drugs.analyte_codes(c) if (cv.LOINC, x) not in out]
    return tuple(out)


def characteristic_criterion(char: dict, term: Terminology, unresolved: list[str]) -> Criterion | None:
    """One Group.characteristic -> Criterion; None when it has no code we can evaluate."""
    crit = _characteristic_criterion(char, term, unresolved)
    if crit is None:
        return None
    prov = _provenance(char)
    if not prov:
        return crit
    if crit.kind == "other-malignancy" and "active" in prov.get("qualifiers", ()) and "lookback_days" not in prov:
        # 'another malignancy requiring treatment': only one active now counts, not every cancer in the history
        prov["lookback_days"] = 0.0
    return replace(crit, **prov)


def _characteristic_criterion(char: dict, term: Terminology, unresolved: list[str]) -> Criterion | None:
    keys = codings(char.get("code"))
    exclude = char.get("exclude") is True
    label = concept_label(char.get("code"), term)
    if cv.GENETIC_VARIANT in keys and _genes(char):
        cc = char.get("valueCodeableConcept")
        absent = isinstance(cc, dict) and cv.VARIANT_ABSENT in codings(cc)
        genes = _genes(char)
        alts = _variants(char)
        var = " or ".join(a.upper() for a in alts)
        name = next((g.upper() for g in genes if not g.startswith("hgnc:")), genes[0].upper())
        return Criterion("variant", f"{name} {var or 'variant'}", exclude, genes=genes,
                         variant=alts[0] if alts else "", variants=alts, flag=not absent)
    if cv.HORMONE_RECEPTOR in keys:
        # HR+ ('ER and/or PR positive'): judged on the ER and PR results together (engine._hormone_receptor)
        cc = char.get("valueCodeableConcept")
        if not isinstance(cc, dict):
            return None
        answers = set(codings(cc))
        want = True if answers & {cv.SCT_POSITIVE} else False if answers & {cv.SCT_NEGATIVE} else None
        if want is None:
            return None
        er, pr = receptor_codes()
        label = "Hormone receptor (ER or PR) positive" if want else "Hormone receptor negative (ER and PR)"
        return Criterion("hormone-receptor", label, exclude, obs_codes=er + pr, flag=want)
    if cv.PREGNANCY in keys or cv.BREASTFEEDING in keys:
        kind = "pregnancy" if cv.PREGNANCY in keys else "breastfeeding"
        want = char.get("valueBoolean") is not False
        return Criterion(kind, "Pregnancy" if kind == "pregnancy" else "Breastfeeding", exclude, flag=want)
    if cv.STAGE_GROUP in keys and isinstance(char.get("valueCodeableConcept"), dict):
        stages = tuple(sorted({c for s, c in codings(char["valueCodeableConcept"]) if s == cv.AJCC_STAGE_CS}))
        if not stages:
            return None
        return Criterion("stage", "Cancer stage", exclude, values=stages)
    if cv.OTHER_MALIGNANCY in keys:
        cc = char.get("valueCodeableConcept") if isinstance(char.get("valueCodeableConcept"), dict) else \
            {"coding": [{"system": cv.MALIGNANCY[0], "code": cv.MALIGNANCY[1]}]}
        alt = _alternative(cc, term, [])
        return Criterion("other-malignancy", "Other malignancy", exclude, alternatives=(alt,))
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
    obs = _obs_keys(keys)
    if "valueRange" in char:
        low, high, unit = _range(char)
        return Criterion("observation", label, exclude, obs_codes=obs, low=low, high=high, unit=unit)
    if isinstance(char.get("valueQuantity"), dict) and isinstance(char["valueQuantity"].get("value"), int | float):
        q = char["valueQuantity"]
        v = float(q["value"])
        return Criterion("observation", label, exclude, obs_codes=obs, low=v, high=v,
                         comparator=q.get("comparator"), unit=q.get("code") or q.get("unit"))
    if isinstance(char.get("valueCodeableConcept"), dict):
        alt = _alternative(char["valueCodeableConcept"], term, [])
        return Criterion("observation", label, exclude, obs_codes=obs, alternatives=(alt,))
    if isinstance(char.get("valueBoolean"), bool):
        return Criterion("observation", label, exclude, obs_codes=obs, flag=char["valueBoolean"])
    return None


def unstructured_criteria(group: dict | None) -> tuple[Unstructured, ...]:
    """The Group's ``unstructured-criterion`` extensions -> Unstructured (text, section, reason)."""
    out = []
    for ext in _ext(group or {}, cv.EXT_UNSTRUCTURED_CRITERION):
        text = _sub(ext, "text")
        if isinstance(text, str) and text.strip():
            section, reason = _sub(ext, "section"), _sub(ext, "reason")
            out.append(Unstructured(" ".join(text.split()), section if isinstance(section, str) else "",
                                    reason if isinstance(reason, str) else ""))
    return tuple(out)


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
            if crit.kind == "other-malignancy" and alts:
                crit = replace(crit, others=tuple(c for a in alts for c in a.codes))
            sc.criteria.append(crit)
        elif _ext(char, cv.EXT_CRITERION_SOURCE):
            # an extracted characteristic of a shape we cannot judge is still a criterion of the study
            src = _provenance(char)
            sc.unstructured += (Unstructured(src.get("source") or concept_label(char.get("code"), term),
                                             src.get("section", ""), "not-judged"),)
    sc.unstructured = unstructured_criteria(group) + sc.unstructured
    for ref in study.get("site") or []:
        lid = _ref_id(ref, "Location")
        loc = locations.get(lid) if lid else None
        if loc is not None and not geo.site_recruits(loc, study.get("status")):
            continue  # only recruiting sites are offered (nearest site, distance): issue #14
        name = (loc or {}).get("name") or (ref or {}).get("display") or (lid or "site")
        sc.sites.append(Site(lid, name, geo.location_position(loc) if loc else None))
    return sc


# -- stored criteria (schema.match_studies, gateway.matching.studies) ------------------------------------------
# A study's StudyCriteria as compact JSON, so that a process builds its StudyIndex from stored rows instead of
# re-extracting every ResearchStudy, Group and Location at start. Each criterion is its own JSON text inside the
# row, so that a reader decodes a criterion stated by thousands of studies once and shares the object (Decoder).
# Bump DOC_FORMAT whenever extraction or this encoding changes: rows of another format are re-derived.
DOC_FORMAT = 3
_CRIT_FIELDS = tuple(f.name for f in fields(Criterion) if f.init)
_CODE_FIELDS = frozenset({"obs_codes", "others"})
_TUPLE_FIELDS = frozenset({"values", "qualifiers", "genes", "variants"})


def _enc_codes(codes) -> list:
    return [[s, c] for s, c in codes]


def _enc_field(name: str, v: object) -> object:
    if name == "alternatives":
        return [[_enc_codes(a.codes), a.text, a.label, sorted(_enc_codes(a.secondary))] for a in v]
    if name in _CODE_FIELDS:
        return _enc_codes(v)
    if name in _TUPLE_FIELDS:
        return list(v)
    return v


_ENC_DEFAULTS = tuple(_enc_field(n, getattr(Criterion("", ""), n)) for n in _CRIT_FIELDS)


def _enc_criterion(c: Criterion) -> str:
    """A Criterion as a JSON list of its fields in declaration order, trailing defaults left out."""
    out = [_enc_field(name, getattr(c, name)) for name in _CRIT_FIELDS]
    while len(out) > 2 and out[-1] == _ENC_DEFAULTS[len(out) - 1]:
        out.pop()
    return orjson.dumps(out).decode()


def criteria_doc(sc: StudyCriteria) -> str:
    """StudyCriteria -> the JSON text of its ``match_studies`` row (what the StudyIndex needs, nothing else)."""
    doc: dict = {"t": sc.title, "s": sc.status, "c": [_enc_criterion(c) for c in sc.criteria]}
    if sc.phases:
        doc["p"] = sorted(sc.phases)
    if sc.healthy_volunteers is not None:
        doc["hv"] = sc.healthy_volunteers
    if sc.unresolved:
        doc["u"] = sc.unresolved
    if sc.group_id:
        doc["g"] = sc.group_id
    if sc.location_ids:
        doc["l"] = list(sc.location_ids)
    if sc.unstructured:
        doc["x"] = [[u.text, u.section, u.reason] for u in sc.unstructured]
    if sc.sites:
        doc["st"] = [[s.location_id, s.name, *(s.position or (None, None))] for s in sc.sites]
    return orjson.dumps(doc).decode()


def blank_signature(sc: StudyCriteria) -> str:
    """What decides a study for a person with no condition on record (all but the condition codes), as text: the
    studies of one signature are screened once for such a person (StudyIndex.blank_groups). Stored with the row of
    an open or healthy-volunteer study, so that a process groups it without decoding its criteria."""
    crits = [["condition", c.exclude, c.confidence, list(c.qualifiers), c.lookback_days]
             if c.kind in ("condition", "diagnosis") else _enc_criterion(c) for c in sc.criteria]
    return orjson.dumps([sc.status, sorted(sc.phases), sc.healthy_volunteers, crits, len(sc.unstructured)]).decode()


def index_keys_doc(sc: StudyCriteria) -> str:
    """What the StudyIndex files a study under, as JSON [codes, texts, kind]: ``sc.index_keys()`` ([[system,
    code], ...], [text, ...]; both null: open to anyone) and, for an open or healthy-volunteer study, its
    ``blank_signature`` (else null). Stored beside the criteria so that a process files a study without decoding
    them (StudyIndex.add_stored)."""
    keys = sc.index_keys()
    blank = blank_signature(sc) if keys is None or sc.healthy_volunteers else None
    if keys is None:
        return orjson.dumps([None, None, blank]).decode()
    return orjson.dumps([sorted(_enc_codes(keys[0])), sorted(keys[1]), blank]).decode()


def index_keys_of(text: str) -> tuple[tuple[tuple[Code, ...], tuple[str, ...]] | None, str | None]:
    """``index_keys_doc`` -> (index keys, None: open to anyone; the blank signature or None)."""
    codes, texts, blank = orjson.loads(text)
    return (None if codes is None else (_dec_codes(codes), tuple(texts))), blank


class Decoder:
    """Stored rows -> StudyCriteria, sharing what studies have in common: one Criterion object per distinct
    criterion text, one Unstructured per distinct text, one string per distinct status, phase, kind, label ...
    Keep one Decoder per StudyIndex so that equal criteria stay the same object across refreshes."""

    def __init__(self) -> None:
        self._crit: dict[str, Criterion] = {}
        self._text: dict[tuple, Unstructured] = {}
        self._phases: dict[tuple, frozenset[str]] = {}

    def criterion(self, text: str) -> Criterion:
        c = self._crit.get(text)
        if c is None:
            c = self._crit[text] = _dec_criterion(orjson.loads(text))
        return c

    def forget(self, keep: Iterable[Criterion]) -> None:
        """Drop the criteria no study states any more (after removals), keeping ``keep``."""
        alive = {id(c) for c in keep}
        self._crit = {k: c for k, c in self._crit.items() if id(c) in alive}

    def study(self, study_id: str, version: int, doc: str | bytes) -> StudyCriteria:
        d = orjson.loads(doc)
        p = tuple(d.get("p") or ())
        phases = self._phases.get(p)
        if phases is None:
            phases = self._phases[p] = frozenset(sys.intern(x) for x in p)
        sc = StudyCriteria(study_id, d["t"], sys.intern(d["s"]), phases, [self.criterion(c) for c in d["c"]])
        sc.version = version
        if "hv" in d:
            sc.healthy_volunteers = d["hv"]
        if "u" in d:
            sc.unresolved = d["u"]
        lids = tuple(d.get("l") or ())
        sc.group_id = d.get("g")
        sc.location_ids = lids
        same = {lid: lid for lid in lids}  # one string per location id (the sites hold the same ones)
        if "x" in d:
            out = []
            for t, section, reason in d["x"]:
                key = (t, section, reason)
                u = self._text.get(key)
                if u is None:
                    u = self._text[key] = Unstructured(t, sys.intern(section), sys.intern(reason))
                out.append(u)
            sc.unstructured = tuple(out)
        if "st" in d:
            sc.sites = [Site(same.get(lid, lid), name, (lat, lon) if lat is not None and lon is not None else None)
                         for lid, name, lat, lon in d["st"]]
        return sc


_CODES: dict[tuple[str, str], Code] = {}  # one tuple per (system, code) the stored criteria name


def _dec_codes(items) -> tuple[Code, ...]:
    out = []
    for s, c in items:
        key = (s, c)
        code = _CODES.get(key)
        if code is None:
            code = _CODES[key] = (sys.intern(s), c)
        out.append(code)
    return tuple(out)


_ALT, _CODES_AT, _TUPLES_AT = (_CRIT_FIELDS.index("alternatives"),
                                 tuple(_CRIT_FIELDS.index(n) for n in _CODE_FIELDS),
                                 tuple(_CRIT_FIELDS.index(n) for n in _TUPLE_FIELDS))


def _dec_criterion(items: list) -> Criterion:
    """The JSON list of ``_enc_criterion`` -> Criterion (fields by position; the trailing ones default)."""
    n = len(items)
    if n > _ALT:
        items[_ALT] = tuple(Alternative(_dec_codes(codes), text, label, frozenset(_dec_codes(sec)))
                            for codes, text, label, sec in items[_ALT])
    for i in _CODES_AT:
        if i < n:
            items[i] = _dec_codes(items[i])
    for i in _TUPLES_AT:
        if i < n:
            items[i] = tuple(items[i])
    items[0] = sys.intern(items[0])
    return Criterion(*items)
