"""Criteria text -> per-criterion findings with polarity and confidence (pure: no Flask, no database).

>>> ex = extract("Inclusion Criteria:\\n* ECOG 0-1\\n\\nExclusion Criteria:\\n* Known brain metastases")
>>> [(f.kind, f.value, f.exclude, f.confidence) for r in ex.results for f in r.findings]
[('ecog', (0, 1), False, 'high'), ('cns', 'present', True, 'high')]
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field, replace
from functools import lru_cache

from gateway.mapping.eligibility.context import Context, compile_rules
from gateway.mapping.eligibility.recognise import HIGH, KEYWORDS, MEDIUM, NOT_CHECKABLE, RECOGNISERS, Finding, clean
from gateway.mapping.eligibility.split import Criterion, split_criteria
from gateway.terminology.lexicons import Lexicons, default_lexicons

log = logging.getLogger(__name__)

# Bump when a change to the extractor changes its output: cached results of older versions are not reused.
EXTRACTOR_VERSION = "12"

# Kinds whose recogniser reads the status itself ('EGFR-negative', 'not detected'): only negation triggers
# standing before the mention ('no', 'without', 'negative for', 'must not') come from context.
_STATUS_KINDS = frozenset({"variant", "receptor", "msi", "mmr", "pdl1"})
# A clause that permits rather than requires ('prior radiotherapy is allowed'): nothing hard can come of it.
_PERMISSION = re.compile(r"(?<!not\s)(?<!never\s)\b(?:allowed|permitted|eligible|acceptable|"
                         r"may\s+(?:be\s+)?(?:participate|enrolled|"
                         r"included|enter|receive)|may\s+have\s+(?:undergone|received|had|been)|can\s+(?:be\s+)?(?:enrolled|included|participate)|"
                         r"are\s+not\s+excluded|is\s+not\s+excluded|will\s+not\s+be\s+excluded)\b")
# 'With bone marrow involvement: platelets >= 30,000' holds for some patients only.
_CONDITION_PREFIX = re.compile(r"^\W*(?:with|without|for|in|if|when|patients\s+with|participants\s+with|"
                               r"subjects\s+with|"
                               r"phase|part|cohort|arm|group|stratum|dose|[a-z0-9-]+\s+(?:specific|only))\b"
                               r"[^:.;]{0,80}:")
# 'Patients with glioblastoma must have KPS >= 60': a rule for one subgroup of the study's patients.
_SUBGROUP = re.compile(r"^\W*(?:patients?|participants?|subjects?|women|men|those)\s+(?:with|who\s+have|who\s+are|"
                       r"who\s+(?:received|had|were|underwent|have\s+been|has\s+been)|aged|older|younger|under|over|"
                       r">|<|≥|≤)\s+[^.;]{2,120}?\b(?P<must>must|should|need\s+to|are\s+required|is\s+required|"
                       r"will\s+need)\b")
# 'Pregnant or recently pregnant ...', 'Pregnant women at 24-28 weeks', 'Currently breastfeeding': the criterion states
# the participant's status as its subject. Only such a line, under a heading the text states ("Inclusion Criteria"),
# requires the status; elsewhere pregnancy and breastfeeding are never requirements (a mis-sectioned exclusion would
# exclude everyone else).
_STATUS_REQUIRED = re.compile(r"^\W*(?:(?:currently|confirmed|documented|viable|singleton|healthy)\s+)*"
                              r"(?:pregnan\w*|lactating|breast[\s-]*feeding)\b|"
                              r"^\W*(?:(?:healthy|adult)\s+)?(?:women|females?|participants?|persons?|people|patients?|"
                              r"subjects?|mothers?)\s+(?:who\s+are\s+)?(?:currently\s+)?(?:pregnant|lactating|"
                              r"breast[\s-]*feeding)\b")
# ... and no line that also names the other status ('Pregnant or lactating women.': an exclusion listed under the
# wrong heading, in every corpus case read) or carries negation or prohibition wording anywhere.
_PREGNANT_WORD = re.compile(r"pregnan")
_LACTATING_WORD = re.compile(r"lactat|breast[\s-]*feed|nursing")
_NOT_REQUIRED = re.compile(r"\b(?:not|no|non|cannot|can't|never|exclu\w*|inelig\w*|prohibit\w*|unable|avoid\w*|"
                           r"prevent\w*|plan\w*|intend\w*|test\w*|contracept\w*)\b")
# Course words beside a stage: 'stage III or recurrent' admits stage-less recurrent disease too. 'Metastatic' is
# stage IV (the recogniser adds it to 'stage III or metastatic'); 'advanced (stage IIIB-IV)' defines 'advanced'.
_COURSE = re.compile(r"\b(?:recurren\w*|unresectable|relapsed|refractory|progressi\w*|persistent|"
                     r"inoperable|or\s+higher|or\s+greater|or\s+above)\b")
_TNM_AFTER = re.compile(r"\s*\(?\s*(?:by\s+virtue\s+of\s+|with\s+)?(?:c|p|y)?[tnm](?:[0-4x]|is)\b")
_COURSE_UNLESS_STAGED = re.compile(r"\b(?:metasta\w*|advanced)\b")
# Kinds whose high-confidence precision fell below 0.95 on the held-out set (development + held-out together:
# lab 23/26, stage 0/1): emitted at medium confidence at most, so they never exclude anyone
# (scripts/eval_extraction.py; docs/eligibility.md, "Measured").
MEDIUM_KINDS: frozenset[str] = frozenset()
# Laboratory thresholds whose unit the text does not state ('platelets >= 100'): the unit is guessed from the
# magnitude, so never high.
MEDIUM_RULES: frozenset[str] = frozenset({"lab-unit-inferred"})
# Prior therapy: every held-out miss was radiotherapy ('cancer requiring chemotherapy or radiation within 5 years')
# and the broad classes read the same way; named drugs and specific classes (CDK4/6, EGFR TKI, anti-PD-1 ...) had none.
# Classes added to the lexicon after the gold sets were labelled (anti-LAG-3, PRMT5 inhibitors): not measured, so
# medium until a labelled set measures them (the gold labels predate them and are kept as they are).
MEDIUM_CONCEPTS: frozenset[tuple[str, str]] = frozenset(
    ("prior-therapy", c) for c in ("radiotherapy", "chemotherapy", "anticancer-therapy", "endocrine-therapy",
                                   "anti-lag-3", "prmt5-inhibitor")) | {("stage", "figo-stage"), ("stage", "ann-arbor")}


@dataclass(frozen=True)
class CriterionResult:
    """One criterion and what became of it: findings, or the reason it stays text."""

    criterion: Criterion
    findings: tuple[Finding, ...] = ()
    reason: str | None = None  # not-recognised | not-checkable | conditional | low-confidence (when no findings)


@dataclass
class Extraction:
    """Everything extracted from one eligibility text."""

    text: str
    results: list[CriterionResult] = field(default_factory=list)
    version: str = EXTRACTOR_VERSION

    @property
    def total(self) -> int:
        return len(self.results)

    @property
    def structured(self) -> int:
        return sum(1 for r in self.results if r.findings)


def _lines(text: str) -> list[tuple[int, int]]:
    out, pos = [], 0
    for line in text.split("\n"):
        if line.strip():
            out.append((pos, pos + len(line)))
        pos += len(line) + 1
    return out


_SHORT_PARENS = re.compile(r"\([^()]{0,14}\)")


def _clause(text: str, start: int, end: int) -> str:
    text = _SHORT_PARENS.sub(lambda m: " " * len(m.group(0)), text)  # '(HCV)' does not end a clause
    s = max(text.rfind(". ", 0, start), text.rfind(";", 0, start), text.rfind("(", 0, start), -1) + 1
    ends = [i for i in (text.find(". ", end), text.find(";", end), text.find(")", end), text.find("(", end))
            if i >= 0]
    return text[s:min(ends) if ends else len(text)]


def recognise_criterion(crit: Criterion, lx: Lexicons) -> CriterionResult:
    """Run every recogniser on each line of the criterion; decide polarity and confidence from context."""
    low = clean(crit.text)
    rules = lx.__dict__.get("_context_index")
    if rules is None:
        rules = lx.__dict__["_context_index"] = compile_rules(lx.context)
    first_line_end = low.find("\n") if "\n" in low else len(low)
    parent_ctx: list[Context] = []

    def parent() -> Context:
        if not parent_ctx:
            parent_ctx.append(Context.for_text(low[:first_line_end], rules))
        return parent_ctx[0]
    findings: list[Finding] = []
    dropped_conditional = unparsed = False
    for ls, le in _lines(low):
        line, original = low[ls:le], crit.text[ls:le]
        found_in_line: list[tuple[str, Finding]] = []
        for kind, rec in RECOGNISERS.items():
            words = KEYWORDS.get(kind)
            if words is not None and not any(w in line for w in words):
                continue
            try:
                found_in_line += [(kind, f) for f in rec(line, original, lx)]
            except (ValueError, KeyError, IndexError, TypeError, AttributeError, re.error) as exc:
                # a recogniser's bug must never reject the study: this kind stays unread for this line
                log.warning("eligibility: recogniser %s failed on a criterion (%s: %s)", kind, type(exc).__name__, exc)
                unparsed = True
        if not found_in_line:
            continue
        ctx = Context.for_text(_NOT_LIMITED.sub(lambda m: " " * len(m.group(0)), line), rules)
        whole = ctx.whole() | (parent().whole() if ls > 0 else set())
        subgroup = _SUBGROUP.match(line)
        if subgroup:  # 'Patients who received chemotherapy must ...': what defines the subgroup is no requirement
            kept = [(k, f) for k, f in found_in_line if f.start >= subgroup.start("must")]
            dropped_conditional = dropped_conditional or len(kept) < len(found_in_line)
            found_in_line = kept
        waived = _diagnosis_exceptions(ctx, line, original)
        if waived is not None:
            # every exception of the line names a diagnosis ('(excepting Gilbert's syndrome)', '(<= 3 x ULN for
            # subjects with Gilbert's disease)'): not wording the records cannot judge, but an exception the matching
            # side checks. It qualifies the finding just before it; findings inside it are the exception's own words.
            kept = [(k, f) for k, f in found_in_line if not any(t0 <= f.start < t1 for t0, t1, _ in waived)]
            targets = []
            for t0, _, keys in waived:
                before = [i for i, (_, f) in enumerate(kept) if f.end <= t0]
                if not before:
                    break
                targets.append((max(before, key=lambda j: kept[j][1].end), keys))
            else:
                for i, keys in targets:
                    k, f = kept[i]
                    kept[i] = (k, replace(f, exceptions=tuple(dict.fromkeys(f.exceptions + keys))))
                found_in_line = kept
                whole = (ctx.whole() - {"EXCEPTION", "CONDITIONAL"}) | (parent().whole() if ls > 0 else set())
        if _CONDITION_PREFIX.match(low[:first_line_end]) or _CONDITION_PREFIX.match(line) or \
                _SUBGROUP.match(low[:first_line_end]) or _SUBGROUP.match(line):
            whole = whole | {"CONDITIONAL"}
        listed_negation = _listed_negation(found_in_line, ctx, line)
        for kind, f in found_in_line:
            if True:
                if f.value is None:
                    unparsed = True
                    continue
                cats = ctx.categories(f.start, f.end)
                if kind in _STATUS_KINDS:
                    before = {t.category for t in ctx.triggers if t.end <= f.start and t.direction == "FORWARD"}
                    cats = (cats - {"NEGATED_EXISTENCE"}) | (cats & before)
                if id(f) in listed_negation:
                    cats = cats | {"NEGATED_EXISTENCE"}
                if "FAMILY" in cats:
                    continue
                if _PERMISSION.search(_clause(line, f.start, f.end)):
                    dropped_conditional = True
                    continue
                negated = f.negated != ("NEGATED_EXISTENCE" in cats)
                exclude = (crit.section == "exclusion") != negated
                if "PROHIBITION" in cats and not negated:
                    exclude = True  # 'X is not allowed': excluded whichever section it stands in
                reasons = list(f.reasons)
                if f.rule == "pregnancy-negative-test":
                    exclude = True  # 'negative pregnancy test' (or 'without a negative test') excludes in any section
                    negated = True
                elif kind in ("pregnancy", "breastfeeding") and not exclude and crit.stated and \
                        _STATUS_REQUIRED.match(line) and not negated and \
                        f.rule in ("pregnancy", "pregnancy-kind", "breastfeeding") and not _NOT_REQUIRED.search(low) \
                        and not (_PREGNANT_WORD.search(low) and _LACTATING_WORD.search(low)):
                    pass  # 'Pregnant or recently pregnant at enrolment' under an inclusion heading: a requirement
                elif kind in ("pregnancy", "breastfeeding", "infection", "diagnosis") and not exclude:
                    # 'must agree to contraception', 'HBV carriers must be on antivirals': never a requirement to be
                    # pregnant or infected; left as text
                    dropped_conditional = True
                    continue
                if f.rule == "pregnancy-kind" and exclude:
                    # 'High-risk pregnancy', 'to attempt pregnancy': a kind of pregnancy the records cannot tell
                    # apart; excluding it does not exclude every pregnant patient. Left as text.
                    continue
                if whole:
                    reasons.append(" / ".join(sorted(c.lower() for c in whole)))
                if cats & {"HYPOTHETICAL", "POSSIBLE_EXISTENCE"}:
                    reasons.append("hypothetical")
                if kind == "stage" and "HISTORICAL" in cats:
                    reasons.append("the stage of a past cancer")  # 'history of a prior stage III carcinoma'
                if kind == "stage" and exclude and _TNM_AFTER.match(line, f.end):
                    reasons.append("stage narrowed by TNM")  # 'Stage IIIB N3' excludes only N3 disease of IIIB

                if crit.alternatives:
                    reasons.append("alternatives")
                if crit.cohort:
                    reasons.append("one cohort only")
                if f.rule == "prior-therapy-washout":
                    exclude = True  # a wash-out ('> 21 days before') excludes recent therapy in either section
                if crit.section == "exclusion" and negated and not f.negated and f.rule != "pregnancy-negative-test":
                    reasons.append("negated exclusion")
                reasons += _kind_reasons(f, line)
                if kind in _STATUS_KINDS:
                    reasons += _status_reasons(f, line, original, low, ls, exclude)
                if kind == "prior-therapy":
                    reasons += _therapy_reasons(f, line, low, ls, exclude)
                if kind == "cns":
                    reasons += _cns_reasons(f, line, low, ls, exclude)
                if kind in ("infection", "other-malignancy"):
                    reasons += _condition_reasons(f, line, low, ls, exclude)
                if kind == "lab":
                    reasons += _lab_reasons(f, line)
                if kind == "diagnosis" and "\n" in low.strip():
                    # a diagnosis inside a long nested list ('Medical Conditions' + 12 items): read at medium (on a
                    # reading of corpus findings, these were the ones whose sense could not be confirmed)
                    reasons.append("inside a nested list")
                if kind == "diagnosis" and ls > 0 and (_parent_qualifies(low[:first_line_end]) or
                                                      _parent_qualifies(_heading_above(low, ls))):
                    # 'Uncontrolled intercurrent illness including:' + items: the parent's words qualify each item
                    reasons.append("qualified by the parent line")
                if f.window is not None and re.search(r"(?:prior\s+to|before)\s+(?:the\s+)?(?:initial\s+)?diagnos",
                                                      line[f.end:]):
                    reasons.append("window counted from the diagnosis")
                f = replace(f, start=f.start + ls, end=f.end + ls, negated=negated,
                            exclude=exclude,
                            confidence=MEDIUM if reasons or kind in MEDIUM_KINDS or f.rule in MEDIUM_RULES or
                            (kind, f.concept) in MEDIUM_CONCEPTS else HIGH,
                            reasons=tuple(reasons))
                findings.append(f)
    findings = _therapy_lists(_joint_reasons(_merge_stages(_dedupe(findings)), low), low, lx)
    if findings:
        return CriterionResult(crit, tuple(_dedupe(findings)))
    if NOT_CHECKABLE.search(crit.text):
        return CriterionResult(crit, (), "not-checkable")
    if dropped_conditional:
        return CriterionResult(crit, (), "conditional")
    return CriterionResult(crit, (), "low-confidence" if unparsed else "not-recognised")


# What may stand around the diagnosis an exception names: '(excepting Gilbert's syndrome)', 'unless the patient has
# known Gilbert's disease', 'except for participants with Gilbert syndrome'. Anything else ('in which case ...', a
# second condition 'or liver metastasis') leaves the exception as wording the records cannot judge.
_EXCEPTION_FILLER = (r"(?:\s|[()\[\]'’,.:-]|\b(?:for|in|of|the|a|an|patients?|participants?|subjects?|those|persons?|"
                     r"people|cases?|individuals?|with|who|have|has|having|had|known|documented|confirmed|established|"
                     r"diagnosed|diagnosis|prior|syndrome|disease|at|screening|baseline)\b)")
# ... and, when the clause sets the excepted patients' own limit ('<= 3 x ULN for subjects with Gilbert's disease',
# 'who may be included if the total bilirubin is <= 3.0 x ULN'), that limit: it is not written (a patient with the
# diagnosis is not judged on the criterion), the rest of the patients are judged exactly.
_OWN_LIMIT = (r"(?:[<>≤≥=]|\d+(?:\.\d+)?|\b(?:x|times|uln|upper|limits?|normal|institutional|mg/dl|umol/l|µmol/l|"
              r"total|serum|direct|conjugated|unconjugated|bilirubin|is|are|be|may|up|to|included|enrolled|eligible|"
              r"permitted|allowed|if|or|and|less|than|equal|maximum|allowable|×)\b|×|/)")
_EXCEPTION_ONLY = re.compile(rf"^{_EXCEPTION_FILLER}*$")
_EXCEPTION_WITH_LIMIT = re.compile(rf"^(?:{_EXCEPTION_FILLER}|{_OWN_LIMIT})*$")
_FOR_THOSE_WITH = re.compile(r"^(?:for|in)\s+(?:patients|participants|subjects|those|individuals)\s+with$")


def _diagnosis_exceptions(ctx: Context, line: str, original: str) -> list[tuple[int, int, tuple[str, ...]]] | None:
    """[(start, end of the exception's words, diagnosis keys)] when every EXCEPTION trigger of the line, and every
    'for patients with <diagnosis>' condition, names only a known diagnosis (and perhaps the excepted patients' own
    limit); None otherwise (no exception, or one that is not a diagnosis)."""
    from gateway.mapping.eligibility.diagnoses import find_diagnoses

    triggers = [t for t in ctx.triggers if t.category in ("EXCEPTION", "CONDITIONAL")]
    if not any(t.category == "EXCEPTION" or _FOR_THOSE_WITH.match(line[t.start:t.end]) for t in triggers):
        return None
    out: list[tuple[int, int, tuple[str, ...]]] = []
    for t in triggers:
        if any(s <= t.start < e for s, e, _ in out):
            continue  # 'except for participants with Gilbert's syndrome who may be included if ...': the same exception
        word = line[t.start:t.end]
        if t.category == "CONDITIONAL" and not _FOR_THOSE_WITH.match(word):
            return None  # 'if', 'when', 'provided that' on their own: a condition, not a named exception
        if word in ("allowed", "permitted", "eligible", "exception", "exceptions"):
            return None
        ends = [i for i in (line.find(")", t.end), line.find("]", t.end), line.find(";", t.end),
                            line.find(". ", t.end)) if i >= 0]
        end = min(ends) if ends else len(line)
        opens = [i for i in (line.rfind("(", 0, t.start), line.rfind("[", 0, t.start)) if i >= 0]
        begin = max(opens) + 1 if opens and max(opens) > max(line.rfind(")", 0, t.start), line.rfind("]", 0, t.start)) \
            else t.start
        if t.category == "CONDITIONAL":
            # 'X for patients with D' alone limits X to D's patients (no exception); only a clause that sets D's own
            # limit excepts D from X: '(<= 3 x ULN for subjects with Gilbert's)', 'or <= 3 x ULN for patients with ...'
            if begin == t.start and line[max(0, t.start - 2):t.start].strip() not in ("(", "["):
                alt = list(re.finditer(r"\bor\b", line[max(0, t.start - 40):t.start]))
                if not alt:
                    return None
                begin = max(0, t.start - 40) + alt[-1].start()
            if not re.search(r"\d", line[begin:t.start] + line[t.end:end]):
                return None
        found = find_diagnoses(line[t.end:end], original[t.end:end])
        if not found:
            return None
        rest_after = line[t.end:end]
        for s, e, _ in sorted(found, key=lambda x: -x[0]):
            rest_after = rest_after[:s] + " " + rest_after[e:]
        rest = line[begin:t.start] + " " + rest_after
        if not (_EXCEPTION_ONLY.match(rest) or _EXCEPTION_WITH_LIMIT.match(rest)):
            return None
        out.append((min(begin, t.start), end, tuple(d.key for _, _, d in found)))
    return out or None


# '(including but not limited to)': no negation and no end of a negation's scope ('must not have other known
# alterations, such as (but not limited to) EGFR ..., ALK ...'); ConText reads its 'but' and 'not' as both
_NOT_LIMITED = re.compile(r"\bbut\s+(?:is\s+|are\s+)?not\s+limited\s+to\b")

# Negations that state what a patient must not have received: they govern the whole list that follows them.
_THERAPY_NEGATION = re.compile(r"\b(?:not|never)(?:\s+(?:have|has|had|been|received|receive|previously))*$|"
                               r"\bna[iï]ve\s+to$")
_LIST_GAP = re.compile(r"(?:[^.;:\s]+\s+){0,8}?[^.;:]*?(?:,|\bor\b|\band\b|\band/or\b|\bnor\b)[^.;:]*")


def _listed_negation(found: list[tuple[str, Finding]], ctx: Context, line: str) -> set[int]:
    """'should not have received any prior therapy with A (including B) and/or C': a 'must not have received'
    negation reaches every item of the list it stands before, however long the list (ConText's scope stops after a
    fixed number of words). The ids of the findings that inherit the negation of the item before them."""
    out: set[int] = set()
    triggers = [t for t in ctx.triggers if t.category == "NEGATED_EXISTENCE" and t.direction == "FORWARD" and
                _THERAPY_NEGATION.search(line[t.start:t.end])]
    if not triggers:
        return out
    items = sorted((f for _, f in found if f.value is not None and f.kind in ("prior-therapy", "variant")),
                   key=lambda f: f.start)
    negated_prev: Finding | None = None
    for f in items:
        negated = "NEGATED_EXISTENCE" in ctx.categories(f.start, f.end)
        if not negated and negated_prev is not None:
            gap = line[negated_prev.end:f.start]
            if len(gap.split()) <= 10 and _LIST_GAP.fullmatch(gap) and \
                    not any(negated_prev.end <= t.start < f.start for t in ctx.triggers):
                out.add(id(f))
                negated = True
        negated_prev = f if negated and any(t.end <= f.start for t in triggers) else None
    return out


def _heading_above(text: str, pos: int) -> str:
    """The nearest line above ``pos`` that ends with ':' (the sub-heading of a nested list), or ''."""
    for line in reversed(text[:pos].split("\n")):
        if line.strip().endswith(":"):
            return line
    return ""


def _parent_qualifies(first_line: str) -> bool:
    from gateway.mapping.eligibility.recognise import _DIAGNOSIS_EXAMPLE, _DIAGNOSIS_QUALIFIER

    return bool(_DIAGNOSIS_QUALIFIER.search(first_line) or _DIAGNOSIS_EXAMPLE.search(first_line) or
                re.search(r"\b(?:examples?|such\s+as|including|includes|e\.g\.)", first_line))


# HR+ ('ER and/or PR positive', 'HR+/HER2-') read over the corpus (docs/eligibility.md, "Measured"): the words are
# often no requirement of the study's patients but the setting of a therapy ('at least one prior line of therapy for
# HR-positive, HER2-negative disease'), one tumour type of a list, cohort or labelled item ('solid tumors including
# NSCLC, HR+ and HER2- breast cancer, TNBC, ...', 'HR+/HER2- BC: Participants must ...'), a subgroup ('Female
# participants with HR+/HER2- BC will be required to ...'), or one of two statuses ('hormone receptor-negative or
# hormone receptor-positive'). Any of these makes it medium. ER, PR and HER2 were then read the same way over the
# corpus (2026-12-06), which added: a therapy named before the status ('Use of antibody drug conjugate (HER2+ breast
# cancer)'), a subgroup named after it ('ER+ patients must have progressed on ...'), the list the item of a nested
# list belongs to ('... of the following subtypes:' + '* Triple-negative breast cancer.'), and in exclusions the
# combinations one characteristic per receptor cannot state ('Has TNBC with PD-L1 CPS >= 10' excludes no ER-negative,
# HER2-positive patient).
_HR_SETTING = re.compile(r"\bfor\b[^.;:()]{0,80}$")
_THERAPY_BEFORE = re.compile(r"\b(?:therap(?:y|ies)|treatments?|treated|regimens?|use\s+of|conjugates?|inhibitors?|"
                             r"agents?|drugs?|antibod(?:y|ies)|vaccines?|targets?|targeting)\b[^.;:]{0,60}$")
_COHORT_WORDS = re.compile(r"\b(?:(?:tumou?r|cancer|disease|histolog\w*)\s+(?:sub)?types?|subtypes?|cohorts?|groups?|"
                           r"phases?\s*(?:[0-9]|i\b|ii\b|one|two)|(?:parts?|arms?)\s+(?:[0-9]{1,2}[a-z]?|[a-z]|i{1,3}|iv)\b|"
                           r"steps?\s*[0-9]|(?:modules?|substud(?:y|ies))\s+[a-z0-9]{1,2}\b|strat(?:um|a))")
# A label before a colon names a cohort when it names a tumour type ('NSCLC: ...', 'HR-positive breast cancer: ...');
# 'Histology: ...' or 'Disease indication: ...' is only a heading
_COLON_LABEL = re.compile(r"(?:^|[.;]\s)([^.;:]{1,80}):")
# Tumour-type abbreviations every tumour-list regex below names (each adds its own further words)
_TUMOUR_ABBR = r"nsclc|sclc|crc|hcc|rcc|hnscc|pdac|btc"
_COHORT_LABEL = re.compile(rf"\b(?:{_TUMOUR_ABBR}|scchn|escc|mpm|gej|tnbc|bc|mcrpc|crpc|"
                           r"cancers?|carcinomas?|tumou?rs?|melanoma|lymphomas?|leuka?emias?|myelomas?|sarcomas?|"
                           r"mesothelioma|gliomas?|glioblastoma|adenocarcinoma|specific|only|expansion|escalation)\b")
_COHORT_ABOVE = re.compile(r"\b(?:tumou?r\s+types?|subtypes?|cohorts?|groups?|phase\s*[0-9i]|parts?\s+[a-z0-9]|arms?|"
                           r"(?:modules?|substud(?:y|ies))\s+[a-z0-9]{1,2})\b")
_EXAMPLE_WORDS = re.compile(r"\b(?:following|including|includes?|such\s+as|e\.g)\b")
# ... and above a nested item: lists of tumour types or cohorts, not 'meeting the following criteria:' nor 'Step 1'
_LIST_ABOVE = re.compile(r"\bfollowing\s+(?:[\w-]+\s+){0,3}?(?:tumou?rs?|cancers?|types?|subtypes?|histolog\w*|"
                         r"diseases?|malignancies|indications?|cohorts?|groups?|parts?)\b|\b(?:including|includes?|"
                         r"such\s+as|e\.g|types?|subtypes?|cohorts?|groups?|phase\s*[0-9i]|parts?\s+[a-z0-9]|arms?)\b|"
                         r"\b(?:one|any|either)\s+of\s+the\s+following\b")
# 'HR+/HER2- BC: Participants must ...', 'Triple Negative Breast Cancer (TNBC) - Progressed after ...': a label; not
# 'HER2+ solid tumor, including but not limited to:' nor 'HER2-positive, defined as follows:'
_HR_LABEL = re.compile(r"(?![^.;:,]*\b(?:including|such\s+as|e\.g|following|follows|defined|below)\b)"
                       r"[^.;:,]{0,50}?(?::|\s-\s?(?=[a-z]))")
_LABEL_START = re.compile(r"^\W*(?:[a-z0-9]{1,4}[.)]\s*)?(?:[\w/+-]+\s+){0,3}$")  # a label starts its line
_HR_SUBGROUP = re.compile(r"\b(?:participants?|patients?|subjects?|women|men|those|individuals?)\s+"
                          r"(?:who|with|whose)\b|\btumou?rs?\s+(?:that|which|with)\b")
_SUBGROUP_RULE = re.compile(r"\b(?:must|should|will\s+(?:be\s+required|need|have\s+to)|(?:are|is)\s+required|"
                            r"need\s+to)\b")
_SUBGROUP_AFTER = re.compile(r"\s*(?:\([^()]*\)\s*)?(?:[a-z/+-]+\s+){0,3}?(?:patients|participants|subjects|women|"
                             r"men|cases)\b[^.;]{0,80}?" + _SUBGROUP_RULE.pattern)
_HR_OTHER_SIGN = re.compile(r"\btnbc\b|triple[\s-]+negative|\b(?:hr|hormone[\s-]+receptors?)\s*(?:\(hr\)\s*)?[\s-]*"
                            r"(?:negative|-)(?![a-z0-9])")
# A receptor status stated positive in the same sentence ('TNBC or HR+/HER2- BC'): TNBC is then one of two phenotypes
_POSITIVE_SIGN = re.compile(r"(?<![a-z0-9])(?:hr|er|pr|her2|her-2|her\s2|hormone[\s-]+receptors?|"
                            r"estrogen[\s-]+receptors?|progesterone[\s-]+receptors?)\s*(?:\((?:hr|er|pr|her2)\)\s*)?[\s-]*(?:positive|\+)"
                            r"|her-?2[\s-]*(?:low|expressing|overexpress\w*|amplified)")
# Another tumour type named in the sentence ('metastatic triple negative breast cancer, ovarian cancer, anal cancer')
_OTHER_TUMOUR = re.compile(rf"\b(?:{_TUMOUR_ABBR}|scchn|mcrpc|crpc|escc|mpm|gej|cscc|"
                           r"melanoma|lymphomas?|leuka?emias?|myelomas?|sarcomas?|mesothelioma|gliomas?|"
                           r"glioblastoma|(?:lung|ovarian|ovary|colorectal|colon|rectal|gastric|pancrea\w*|prostate|"
                           r"bladder|urothelial|cervical|endometrial|head\s+and\s+neck|esophageal|oesophageal|liver|"
                           r"kidney|renal|thyroid|anal|biliary)\b[^.;,]{0,20}?\b(?:cancers?|carcinomas?|tumou?rs?))\b")
# 'HER2 positive or negative', 'HER2-positive or HER2-expressing tumors': either status
_EITHER_AFTER = re.compile(r"\s*(?:\([^()]*\)\s*)?,?\s*(?:and/or|or)\s+(?:her-?2[\s-]*|her\s2[\s-]*)?"
                           r"(?:negative|positive|low|ultra-?low|equivocal|expressing|overexpress\w*|amplified)\b")
_OPPOSITE = {"positive": re.compile(r"[\s-]*(?:negative|neg\b|-(?![a-z0-9]))"),
             "negative": re.compile(r"[\s-]*(?:positive|pos\b|\+(?!\s*\d)|overexpress\w*|amplified)")}
_RECEPTOR_NAMES = {"ER": r"(?<![a-z0-9])(?:er|estrogen\s+receptors?|oestrogen\s+receptors?)(?:\s*\(er\))?",
                   "PR": r"(?<![a-z0-9])(?:pr|pgr|progesterone\s+receptors?)(?:\s*\((?:pr|pgr)\))?",
                   "HER2": r"(?<![a-z0-9])(?:her2|her-2|her\s2|erbb2)(?:\s*\(her2\))?"}
# An exclusion narrowed by what follows ('HER2-negative cancers that have no FDA approved indication for ...'):
# excluding every patient with the status would exclude more than the study does (parentheses read as removed)
_NARROWED_AFTER = re.compile(r"[^.;]{0,60}?\b(?:that|which|whose|who|with|without|"
                             r"and\s+(?:has|have|had|is|are|was|were|not|no|did|does|do))\b")
# Variants, MSI / MMR, PD-L1: alternatives ('at least one of', a line ending 'or', another gene named beside a
# required one: 'mutation in BRCA1, BRCA2, or PALB2'; symbols from the original text, variants like L858R are not)
_ANY_OF = re.compile(r"\b(?:one|any|either)\s+(?:or\s+more\s+)?of\b")
_OR_AT_END = re.compile(r"(?:[;,]\s*|\s)(?:or|and/or)\s*$")
_OTHER_GENE = re.compile(r"(?:,|\bor\b|\band/or\b|/)\s*(?:the\s+)?([A-Z]{2,6}[0-9]{0,2}[A-Z]?)(?![a-z0-9])"
                         r"(?!\s*(?:cells?|tumou?rs?|cancer|disease|guidelines?)\b)")
_NOT_GENES = frozenset({"NSCLC", "SCLC", "CRC", "HCC", "RCC", "HNSCC", "SCCHN", "PDAC", "BTC", "ESCC", "MPM", "GEJ",
                        "TNBC", "CNS", "FDA", "EMA", "CLIA", "CAP", "ASCO", "NGS", "PCR", "IHC", "FISH", "ISH", "DNA",
                        "RNA", "ECOG", "ULN", "AND", "OR", "THE", "WHO", "NCCN", "AJCC", "NOS", "CUP", "AML", "ALL",
                        "CLL", "CML", "MDS", "NHL", "DLBCL", "MCL", "SLL", "GIST", "IV", "III", "II"})


def _other_genes(f: Finding, original: str, start: int, end: int) -> bool:
    """Another gene named in ``original[start:end]`` as an item of a list with the finding's ('BRCA1, BRCA2, or
    PALB2'); tumour names, test names and the finding's own gene ('one of the six KRAS mutations (KRAS G12C, ...)')
    are not."""
    return any(m.group(1) not in _NOT_GENES and m.group(1) != f.concept.upper()
               for m in _OTHER_GENE.finditer(original, start, end))


# A cohort named after the status ('... are excluded from arm 1 (FOLFIRI)', 'EGFR positive lung cancer (arm 1-cancer
# group)'), a subgroup named by its tumour type ('Colorectal cancer (CRC) participants with known KRAS ... mutations')
_COHORT_AFTER = re.compile(r"\b(?:from|for|in|to)\s+(?:the\s+)?(?:arms?|cohorts?|parts?|groups?|modules?|"
                           r"substud(?:y|ies))\s+[a-z0-9]|\(\s*(?:arms?|cohorts?|parts?|groups?)\s*[a-z0-9]")
_TUMOUR_SUBGROUP = re.compile(rf"\b(?:{_TUMOUR_ABBR}|cancer|carcinoma|melanoma|tumou?r)\s*"
                              r"(?:\([a-z]{2,6}\)\s*)?(?:participants?|patients?|subjects?)\s+(?:with|who|whose)\b")
_TUMOUR_RIGHT_AFTER = re.compile(rf"[\s-]*(?:[a-z-]+\s+){{0,2}}?(?:{_TUMOUR_ABBR}|cancers?|"
                                 r"carcinomas?|tumou?rs?|melanoma|lymphomas?|adenocarcinoma)\b")
_OR_JUST_BEFORE = re.compile(rf"\b(?:{_TUMOUR_ABBR}|cancers?|carcinomas?|tumou?rs?|melanoma|"
                             r"lymphomas?)\s*(?:\([a-z]{2,6}\)\s*)?,?\s+or\s+(?:(?!with\b)[a-z-]+\s+){0,2}$")

_CANNOT_CONFIRM = re.compile(r"\b(?:inability|unable|failure|fail(?:s|ed)?)\s+to\s+"
                             r"(?:confirm|determine|document|provide|obtain)\b")
# A relative's result ('have one or more children who have tested positive for a BRCA1 ... mutation')
_RELATIVE = re.compile(r"\b(?:children|child|relatives?|family\s+members?|parents?|siblings?|mother|father|sisters?|"
                       r"brothers?|daughters?|sons?)\s+(?:who|with|of|that)\b")


# A sentence ends at '. ' or ';' (and, in a whole criterion, at a line end); not at 'e.g. ', 'i.e. ', 'vs. ', 'etc. '
_SENTENCE_END = re.compile(r"(?<!\be\.g)(?<!\bi\.e)(?<!\bvs)(?<!\betc)(?<!\bno)\.\s|;")
_SENTENCE_END_LINES = re.compile(_SENTENCE_END.pattern + r"|\n")


def _sentence(line: str, f: Finding, ends: re.Pattern = _SENTENCE_END) -> tuple[int, int]:
    """The bounds of the sentence of ``line`` that holds the finding."""
    s0 = 0
    for m in ends.finditer(line, 0, f.start):
        s0 = m.end()
    m = ends.search(line, f.end)
    return s0, m.start() if m else len(line)


def _lines_over(low: str, ls: int) -> list[str]:
    """The lines a nested item at ``ls`` stands under: the criterion's first line, the lines less indented than it,
    headings (ending with ':') and short lines ('l. Breast cancer monotherapy group i. HR positive HER2 negative')."""
    lines = [ln for ln in low[:ls].split("\n") if ln.strip()]
    if not lines:
        return []
    item = low[ls:].split("\n", 1)[0]
    indent = len(item) - len(item.lstrip())
    return lines[:1] + [ln for ln in lines[1:] if len(ln) - len(ln.lstrip()) < indent or ln.rstrip().endswith(":")
                        or len(ln.split()) <= 12]


def _status_reasons(f: Finding, line: str, original: str, low: str, ls: int, exclude: bool) -> list[str]:
    """Why a status a recogniser read (a receptor, a gene variant, MSI / MMR, PD-L1) is no study-wide rule: the
    contexts above. ``line`` (lower case) and ``original`` are the line of the criterion ``low`` that starts at
    ``ls``; ``exclude``: the finding excludes who has the status."""
    s0, s1 = _sentence(line, f)
    before, sentence = line[s0:f.start], line[s0:s1]
    rest = sentence[:f.start - s0] + " " * (f.end - f.start) + sentence[f.end - s0:]  # the sentence without f
    triple = f.rule == "receptor-triple-negative"
    out = []
    if _HR_SETTING.search(before) or _THERAPY_BEFORE.search(before):
        out.append("the setting of a therapy")
    above = _lines_over(low, ls)
    # examples in an exclusion ('genes such as EGFR, ALK, BRAF (V600E)') each exclude; cohort words never do
    listed = _COHORT_WORDS.search(line, 0, f.start) or (not exclude and _EXAMPLE_WORDS.search(line, 0, f.start)) or \
        any(_COHORT_LABEL.search(m.group(1)) and not (exclude and _EXAMPLE_WORDS.search(m.group(1)))
            for m in _COLON_LABEL.finditer(line, 0, f.start))
    if listed or (_HR_LABEL.match(line, f.end) and _LABEL_START.match(line[:f.start])) or \
            (ls > 0 and any(_COHORT_ABOVE.search(ln) or (not exclude and _LIST_ABOVE.search(ln)) for ln in above)):
        out.append("one tumour type of a list")
    if _COHORT_AFTER.search(line, f.end, s1):
        out.append("one cohort only")  # '... are excluded from arm 1 (FOLFIRI) and arm 2'
    if _HR_SUBGROUP.search(before) and _SUBGROUP_RULE.search(line, f.end, s1) or _SUBGROUP_AFTER.match(line, f.end) \
            or (exclude and _TUMOUR_SUBGROUP.search(before)):
        out.append("a subgroup")
    if _RELATIVE.search(before):
        out.append("a relative's result")
    if _CANNOT_CONFIRM.search(before):
        out.append("a result that could not be confirmed")  # 'Inability to confirm ... PIK3CA mutations' (exclusion)
    if not exclude:  # alternatives in an exclusion each exclude on their own ('TNBC or HER2+ breast cancer')
        if f.kind != "receptor":
            near = _other_genes(f, original, max(s0, f.start - 40), min(s1, f.end + 50))
            # 'MSI-H CRC, esophagogastric cancer, mesothelioma': the status of one tumour type of a list;
            # 'advanced melanoma or PD-L1-positive solid tumor': one of two kinds of patients
            tumour_item = _TUMOUR_RIGHT_AFTER.match(line, f.end) and len(_OTHER_TUMOUR.findall(rest)) >= 2
            other = bool(_OR_AT_END.search(line) or (f.value == "present" and near) or tumour_item or
                         _OR_JUST_BEFORE.search(before) or
                         (_ANY_OF.search(before) and _other_genes(f, original, s0, s1)))
        elif f.concept == "HR":
            other = bool(_HR_OTHER_SIGN.search(sentence))
        elif triple:
            other = bool(_POSITIVE_SIGN.search(rest) or _OTHER_TUMOUR.search(rest))
        else:
            other = bool(_EITHER_AFTER.match(line, f.end) or
                         (f.value in _OPPOSITE and
                          re.search(_RECEPTOR_NAMES[f.concept] + _OPPOSITE[f.value].pattern, rest)) or
                         (f.value == "positive" and re.search(r"\btnbc\b|triple[\s-]+negative", rest)))
        if other:
            out.append("alternatives")
    if exclude and triple:
        out.append("one receptor of an excluded combination")
    unbracketed = re.sub(r"\([^()]*\)", lambda m: " " * len(m.group(0)), line)
    if exclude and (_NARROWED_AFTER.match(unbracketed, f.end) or
                    len(_OTHER_TUMOUR.findall(unbracketed, f.end, s1)) >= 2):
        out.append("an exclusion narrowed by what follows")
    return out


# Prior therapy read over the corpus (2026-12-06; docs/eligibility.md, "Prior therapy read over the corpus"): a drug
# named where the study means no therapy the patient received ('the donor for the allo-SCT', 'Prior intolerance to
# anti-PD-(L)1', '... preclude adequate absorption of abemaciclib', 'that pembrolizumab is FDA approved indication'),
# a disease state named after a therapy ('Platinum resistant or refractory disease' excludes no one for having had
# platinum), current use only ('Concurrent use of endocrine therapy (tamoxifen, ...)' without a window), one cohort
# ('MSS-CRC - progressed on oxaliplatin, ...', 'prior treatment with docetaxel (part 2 only)'), and the treatment of
# another malignancy the criterion permits ('... carcinoma on hormonal therapies such as lupron or tamoxifen and in
# clinical remission').
_FORMULATION_BEFORE = re.compile(r"\b(?:liposomal|pegylated|intravesical|topical|intrathecal|intraperitoneal|"
                                 r"intra-?arterial)\s+$")
_COUNT_BEFORE = re.compile(r"(?:\b(?:[2-9]|two|three|four|five)\s+or\s+more|\bat\s+least\s+(?:[2-9]|two|three|four)|"
                           r"\bmore\s+than\s+(?:[1-9]|one|two|three)|[>≥]\s*[1-9])\b[^;]*$")
_THERAPY_NARROWED_AFTER = re.compile(r"[^.;]{0,40}?\b(?:in\s+(?:an?\s+)?off[\s-]label|through\s+a\s+(?:clinical|"
                                     r"interventional)|as\s+part\s+of\s+a\s+(?:clinical\s+)?(?:trial|study))")
_EVENT_BEFORE = re.compile(r"\b(?:toxicit\w*|adverse|aes?|iraes?|reactions?|progress\w*|relapse\w*|recurr\w*|"
                           r"complications?|neuropathy|resistan\w*|refractory)\b[^;]{0,80}$")
# 'prior allogeneic stem cell transplant with active graft-versus-host disease': only those with it
_WITH_AFTER = re.compile(r"[^.;()]{0,40}?(?<!or )(?<!, )\b(?:with(?!\s+or\b)|who|that|which|whose|requiring|resulting|"
                         r"leading)\b")
_NOT_RECEIVED_BEFORE = re.compile(r"\b(?:because|preclude\w*|donors?|intoleran\w*|absorption|hypersensitiv\w*|"
                                  r"allerg\w*|contraindicat\w*|inelig\w*\s+(?:for|to)|unable\s+to\s+(?:receive|tolerate|take)|inability\s+to\s+"
                                  r"(?:receive|tolerate|take|swallow))\b[^;]{0,50}$")
_INDICATION_AFTER = re.compile(r"[^.;]{0,30}\b(?:is|are)\s+(?:\w+\s+){0,4}?(?:approved|indicated)\b")
_DISEASE_STATE_AFTER = re.compile(r"[\s-]*(?:resistant|refractory|sensitive|resistance|sensitivity|free\s+interval)\b")
_CURRENT_ONLY = re.compile(r"\b(?:concurrent|concomitant|current|currently|ongoing|active)\s+(?:\w+\s+){0,3}?"
                           r"(?:use|treatment|therapy|receiving|taking|administration)\b[^;]{0,80}$|"
                           r"\bcurrently\s+(?:receiving|taking|on)\b[^;]{0,80}$")
_RULE_FOR_SUBGROUP = re.compile(r"\b(?:patients|participants|subjects|those)\s+(?:with|who|whose)\b[^;]{2,120}?\b"
                                r"(?:must|should)\b[^;]*$")
_EVER = re.compile(r"\b(?:ever|prior|previous(?:ly)?|history|past)\b")
_DASH_LABEL = re.compile(r"^\W*([^.;:]{2,80}?)\s-\s?(?=[a-z])")


def _therapy_reasons(f: Finding, line: str, low: str, ls: int, exclude: bool) -> list[str]:
    """Why a prior therapy read from the text is no study-wide rule (the contexts above). ``line`` is the line of the
    criterion ``low`` that starts at ``ls``; ``exclude``: the finding excludes who received the therapy."""
    s0, s1 = _sentence(line, f)
    before = line[s0:f.start]
    out = []
    if _NOT_RECEIVED_BEFORE.search(before) or _INDICATION_AFTER.match(line, f.end, s1):
        out.append("no therapy the patient received")
    if _FORMULATION_BEFORE.search(before):
        out.append("one formulation of the drug")  # 'previous treatment with liposomal doxorubicin'
    if _COUNT_BEFORE.search(before):
        out.append("a count of therapies")  # 'three or more FDA-approved ... (e.g., abiraterone, ...)': not built
    heading = line.rstrip().endswith(":") and ls + len(line) < len(low.rstrip())
    if exclude and (_EVENT_BEFORE.search(before) or heading):
        # 'disease progression within 6 months of receiving any HER2-targeted therapy'; 'Patients who have received
        # prior anti-PD-1 ...:' over the conditions it lists
        out.append("an event of the therapy, not the therapy")
    if exclude and (_THERAPY_NARROWED_AFTER.match(line, f.end, s1) or _WITH_AFTER.match(line, f.end, s1)):
        out.append("an exclusion narrowed by what follows")  # '... in off-label capacity or through a clinical trial'
    if exclude and _DISEASE_STATE_AFTER.match(line, f.end):
        out.append("a disease state named after the therapy")
    if exclude and f.window is None and _CURRENT_ONLY.search(before) and not _EVER.search(before):
        out.append("current use only")
    if _RULE_FOR_SUBGROUP.search(before):
        out.append("a subgroup")  # 'Patients with BRAF V600 activating mutation must have received ... MEK inhibitor'
    if _one_cohort(f, line, low, ls, s1):
        out.append("one cohort only")
    return out


def _one_cohort(f: Finding, line: str, low: str, ls: int, s1: int) -> bool:
    """The finding holds for one cohort, part, arm or stratum: named before it in its line ('Part 2A (...)', 'HIGH-RISK
    STRATUM:', 'MSS-CRC - Progressed on ...'), after it in its sentence ('(Part 2 only)'), or over its nested item."""
    dash = _DASH_LABEL.match(line[:f.start])
    return bool(_COHORT_WORDS.search(line, 0, f.start) or _COHORT_AFTER.search(line, f.end, s1) or
                any(_COHORT_LABEL.search(m.group(1)) for m in _COLON_LABEL.finditer(line, 0, f.start)) or
                (dash and _COHORT_LABEL.search(dash.group(1))) or
                (ls > 0 and any(_COHORT_ABOVE.search(ln) for ln in _lines_over(low, ls))))


_REMISSION = re.compile(r"\b(?:remission|disease[\s-]free|no\s+evidence\s+of\s+disease|cured|adequately\s+treated|"
                        r"curative(?:ly)?)\b")
_EXAMPLES_BEFORE = re.compile(r"\b(?:e\.g|such\s+as|including|includes?|like|for\s+example|at\s+least\s+one|"
                              r"(?:one|any)\s+of)\b|\(\s*(?:[a-z0-9-]+(?:\s+[a-z0-9-]+)?\s*,\s*)*$")
def _in_a_list(f: Finding, text: str, s0: int, s1: int) -> bool:
    """An item of a list of alternatives: separators beside it and an 'or' (or examples) around it ('abiraterone,
    enzalutamide, apalutamide, or darolutamide', 'cisplatin or a drug called carboplatin'); 'platinum and taxane' is
    both, and a class followed by its examples ('an androgen receptor pathway inhibitor (abiraterone, ...)') is not an
    item."""
    before, after = text[max(s0, f.start - 60):f.start], text[f.end:min(s1, f.end + 60)]
    beside = _SEP_BEFORE.search(before) or _SEP_AFTER.match(after)
    return bool(beside and (re.search(r"\bor\b|and/or", before + " " + after) or
                            _EXAMPLES_BEFORE.search(text, s0, f.start) or _COLON_LIST_BEFORE.search(before)))


# 'signaling inhibitor: abiraterone, enzalutamide'
_COLON_LIST_BEFORE = re.compile(r":\s*(?:[a-z0-9-]+(?:\s+[a-z0-9-]+)?\s*,\s*)*$")
_SEP_BEFORE = re.compile(r"(?:,|/|\bor\b|\band/or\b)\s*(?:[a-z-]+\s+){0,3}$")
_SEP_AFTER = re.compile(r"^\s*(?:[a-z-]+\s+){0,1}?(?:,|/|\bor\b|\band/or\b)")


# CNS metastases read over the corpus (2026-12-06; docs/eligibility.md, "CNS metastases read over the corpus"): the
# metastases named as the object of a procedure or treatment ('major surgery (e.g., ... removal or biopsy of brain
# metastasis) within 2 weeks', 'systemic corticosteroids for control of symptoms of CNS metastases'), exclusions
# narrowed by what follows ('brain metastasis larger than 4 cm', 'brain metastases that would require whole brain
# radiotherapy', '... for whom complete surgical resection is clinically appropriate'), rules for a subgroup
# ('asymptomatic brain metastases must meet all criteria of the following', '... in participants with brain
# metastases') and one cohort ('for participants in cohort D, measurable brain metastases').
_CNS_OBJECT_BEFORE = re.compile(r"\b(?:removal|biops\w*|resections?|surgery|excision|radiation|radiotherapy|"
                                r"irradiation|radiosurgery|srs|steroids?|corticosteroids?|symptoms|control|therapy|"
                                r"treatment)\s+"
                                r"(?:[\w-]+\s+){0,2}?(?:of|for|to)\s+(?:[\w-]+\s+){0,2}$")
_CNS_NARROWED_AFTER = re.compile(r"\s*(?:\([^()]*\)\s*)?,?\s*(?:disease\s+)?(?:that|which|with(?!\s+or\b)|whose|"
                                 r"for\s+whom|not\s+amenable|requiring|larger|greater|bigger|>|≥|>=|of\s+size|measuring|"
                                 r"cannot)\b")
_CNS_RULE_AFTER = re.compile(r"\s*(?:\([^()]*\)\s*)?(?:[\w-]+\s+){0,3}?(?:must|should|are\s+eligible|may\s+be|"
                             r"are\s+(?:allowed|permitted))\b")
_IN_SUBGROUP_BEFORE = re.compile(r"\b(?:in|for)\s+(?:participants|patients|subjects)\s+with(?:out)?\s+"
                                 r"(?:[\w-]+\s+){0,3}$")


def _cns_reasons(f: Finding, line: str, low: str, ls: int, exclude: bool) -> list[str]:
    """Why CNS metastases read from the text are no study-wide rule (the contexts above)."""
    s0, s1 = _sentence(line, f)
    before = line[s0:f.start]
    out = []
    if _CNS_OBJECT_BEFORE.search(before):
        out.append("the object of a procedure or treatment")
    if exclude and _CNS_NARROWED_AFTER.match(line, f.end):
        out.append("an exclusion narrowed by what follows")
    if _CNS_RULE_AFTER.match(line, f.end) or _IN_SUBGROUP_BEFORE.search(before) or _RULE_FOR_SUBGROUP.search(before):
        out.append("a subgroup")
    if not exclude and re.search(r"\bexclud\w*", before):
        out.append("an exclusion written in an inclusion line")  # '... will be assessed to exclude participants with
    if _one_cohort(f, line, low, ls, s1):
        out.append("one cohort only")
    return out


# Infections and other malignancies read over the corpus (2026-12-06; docs/eligibility.md, "Infections and other
# malignancies read over the corpus"): exclusions narrowed by what follows ('HIV whose viral load is not controlled',
# 'prior or concurrent malignancy whose natural history or treatment has the potential to interfere', 'HCV, HBV or HIV
# who are on anti-viral therapy that has the potential to interact'), a treatment for it ('current treatment with
# anti-viral therapy for HBV', 'received systemic therapy treatment for prior cancer(s)'), someone else's ('donors:
# positive for HIV'), 'certain other cancers', and one cohort ('* all other solid tumor malignancies (n = 10)').
_CONDITION_NARROWED_AFTER = re.compile(r"\s*(?:\([^()]*\)\s*)?(?:[\w-]+\s+){0,3}?(?:whose|who\s+(?:are|is|have|has)|"
                                       r"(?:that|which)\s+(?:[\w-]+,?\s+){0,6}?(?:has|have|is|are|would|could|may|might)|"
                                       r"not\s+controlled|at\s+risk\s+of|"
                                       r"with\s+(?:a\s+)?(?:prior|previous)\s+history|and\s+(?:currently\s+)?"
                                       r"(?:receiving|on)\b)\b")
_ACTIVE_CLAUSE = re.compile(r"\s*(?:\([^()]*\)\s*)?(?:[\w-]+\s+){0,3}?(?:that|which)\s+(?:is|are)\s+(?:active|"
                            r"progressing)\b")
_JUDGEMENT = re.compile(r"\b(?:interfere\w*|confound\w*|affect\w*|compromise\w*|opinion|potential|considered|likely|"
                        r"life\s+expectancy|compliance)\b")
_TREATMENT_FOR_IN = re.compile(r"\b(?:therap(?:y|ies)|treatments?|surgery|resection)\s+(?:for|of)\s+(?:[\w-]+\s+){0,5}?"
                               r"(?:cancers?|malignanc\w*|tumou?rs?|carcinomas?)\b")
_TREATMENT_FOR_BEFORE = re.compile(r"\b(?:therap(?:y|ies)|treatments?|antivirals?|anti-viral)\s+(?:[\w-]+\s+){0,2}?"
                                   r"(?:for|of)\s+(?:[\w-]+\s+){0,2}$")
_SOMEONE_ELSE = re.compile(r"\b(?:donors?|partners?|household|caregivers?)\b[^;]*$")


def _condition_reasons(f: Finding, line: str, low: str, ls: int, exclude: bool) -> list[str]:
    """Why an infection or another malignancy read from the text is no study-wide rule (the contexts above)."""
    s0, s1 = _sentence(line, f)
    before = line[s0:f.start]
    out = []
    narrowed = _CONDITION_NARROWED_AFTER.match(line, f.end)
    if exclude and narrowed and not _ACTIVE_CLAUSE.match(line, narrowed.start(), s1) and \
            (f.kind == "infection" or _JUDGEMENT.search(line, f.end, s1)):
        # ('... additional malignancy that is progressing or has required active treatment within the past 3 years'
        # is the study's own 'active' and window; a judgement - 'has the potential to interfere' - is not)
        out.append("an exclusion narrowed by what follows")
    span = line[s0:f.end]
    if (_TREATMENT_FOR_BEFORE.search(before) or _TREATMENT_FOR_IN.search(span)) and \
            (f.kind == "infection" or re.search(r"\b(?:received|prior|previous|has|have|had)\b", span)):
        out.append("a treatment for it")  # ('requires ongoing systemic treatment for any other malignancy' is active)
    if f.kind == "other-malignancy" and re.search(r"\b(?:this|the\s+current|the\s+study)\s+(?:cancer|malignancy|"
                                                  r"tumou?r|disease)\b", span):
        out.append("the study's own cancer")  # 'prior surgery for this cancer'
    if f.kind == "infection" and re.search(r"\binactive\b", line[max(s0, f.start - 20):f.start]):
        out.append("an inactive carrier state")  # 'considered to be in an inactive HBV carrier state, defined as ...'
    if _SOMEONE_ELSE.search(line[:f.start]):
        out.append("someone else's")
    if f.kind == "other-malignancy" and not exclude:
        # required, not excluded: nearly always the study's own tumour types ('... or other solid tumors', '* Other
        # epithelial ovarian cancer with BRCA1/2 ...'), which the matching side would read as a second cancer
        out.append("another malignancy required")
    if re.search(r"\bcertain\b", line[max(s0, f.start - 12):f.end]):
        out.append("some malignancies only")  # 'history of certain other cancers in the past 3 years'
    if _one_cohort(f, line, low, ls, s1) or (not exclude and re.search(r"\(\s*n\s*=\s*\d+", line)):
        out.append("one cohort only")
    return out


# Laboratory thresholds read over the corpus (2026-12-06; docs/eligibility.md, "Laboratory thresholds read over the
# corpus"): a limit for some patients only ('AST and ALT <= 2.5 ULN (no liver mets)', '... participants with tumor
# involving the liver may have ... total bilirubin ...'), one of two lines ('platelets >= 75,000/mcl or'), and a
# count whose number does not fit the unit written ('platelets (PLT) count > 100,000 x 10^9/L': 10^14 per litre).
_FOR_SOME_AFTER = re.compile(r"\s*\((?:no|without|with|in|for|if|except)\s+(?:[\w'-]+\s+){0,4}?(?:liver|hepatic|bone|"
                             r"patients?|participants?|subjects?|metasta\w*|mets|involvement|infiltration)\b[^()]*\)")
_COUNT_ANALYTES = frozenset({"platelets", "neutrophils", "leukocytes", "lymphocytes"})


def _lab_reasons(f: Finding, line: str) -> list[str]:
    s0, _ = _sentence(line, f)
    out = []
    if (_FOR_SOME_AFTER.match(line, f.end) and not f.exceptions) or _RULE_FOR_SUBGROUP.search(line[s0:f.start]) or \
            re.search(r"\b(?:patients|participants|subjects)\s+(?:with|who)\b[^;]{2,120}?\bmay\b", line[s0:f.start]):
        out.append("a limit for some patients")
    if _OR_AT_END.search(line):
        out.append("alternatives")
    value = f.value if isinstance(f.value, tuple) else ()
    if f.concept in _COUNT_ANALYTES and len(value) == 3 and value[2] == "10*9/L" and float(value[1]) >= 1000:
        out.append("a number that does not fit its unit")
    return out


def _therapy_lists(findings: list[Finding], text: str, lx: Lexicons) -> list[Finding]:
    """Required therapies named as a list ('Prior therapy with abiraterone acetate, enzalutamide, apalutamide, or
    darolutamide'): alternatives, not each one required, unless a class the list exemplifies is named too ('an androgen
    receptor pathway inhibitor (abiraterone, enzalutamide, ...)'), which stays the rule. Other-malignancy wording in
    the criterion ('... on hormonal therapies such as tamoxifen and in clinical remission') makes its therapies
    medium."""
    out = []
    for f in findings:
        extra = []
        if f.kind != "prior-therapy":
            out.append(f)
            continue
        s0, s1 = _sentence(text, f, _SENTENCE_END_LINES)
        if any(g.kind == "other-malignancy" and s0 <= g.start < s1 for g in findings) and \
                _REMISSION.search(text, s0, s1):
            extra.append("the treatment of another malignancy")
        if not f.exclude and _in_a_list(f, text, s0, s1):
            extra.append("alternatives")
        if extra:
            f = replace(f, confidence=MEDIUM, reasons=f.reasons + tuple(extra))
        out.append(f)
    return out


def _kind_reasons(f: Finding, line: str) -> list[str]:
    """Kind-specific reasons for medium confidence."""
    out = []
    if f.kind == "cns" and (f.qualifiers or f.rule == "cns-lesions"):
        out.append("qualified: " + ", ".join(f.qualifiers) if f.qualifiers else "lesions, not metastases")
    if f.kind == "infection" and f.qualifiers:
        out.append("qualified: " + ", ".join(f.qualifiers))
    if f.kind == "prior-therapy":
        from gateway.mapping.eligibility.recognise import _THERAPY_QUALIFIERS

        if _THERAPY_QUALIFIERS.search(line):
            out.append("qualified therapy")
    if f.kind == "lab" and re.search(r"\bor\b[^.;]{0,25}$", re.sub(r"\([^()]*\)", " ", line[:f.start])):
        out.append("alternative to something not read")  # 'a normal creatinine (adults) or CrCl >= 40'
    if f.kind == "stage" and (_COURSE.search(line) or (_COURSE_UNLESS_STAGED.search(line) and "IV" not in f.value)):
        out.append("stage beside course words")
    if f.kind == "pdl1" and "?" in f.concept:
        out.append("PD-L1 score not named")
    if f.kind == "receptor" and f.rule == "receptor-low":
        out.append("HER2-low")
    if f.kind in ("ecog", "karnofsky", "lansky") and f.rule.endswith("single"):
        pass
    return out


def _joint_reasons(findings: list[Finding], text: str) -> list[Finding]:
    """Alternatives between findings of one criterion ('creatinine <= 1.5 mg/dL OR CrCl >= 60') are not AND-able."""
    out = []
    for f in findings:
        same = [g for g in findings if g is not f and g.kind == f.kind and g.key() != f.key()]
        extra = []
        if same and f.kind in ("lab", "prior-therapy", "variant", "receptor", "pdl1", "ecog", "karnofsky", "lansky") \
                and not f.exclude:
            # 'creatinine <= 1.5 mg/dL OR CrCl >= 60': alternatives, unless the items stand on lines of their own;
            # only the neighbours count ('ER+ and/or PR+, HER2-': HER2 is no alternative)
            before = [g for g in same if g.end <= f.start]
            after = [g for g in same if g.start >= f.end]
            neighbours = ([max(before, key=lambda g: g.end)] if before else []) + \
                ([min(after, key=lambda g: g.start)] if after else [])
            for g in neighbours:
                lo, hi = (g.end, f.start) if g.end <= f.start else (f.end, g.start)
                gap = text[lo:hi]
                if re.search(r"\bor\b|\beither\b", gap) and "\n" not in gap:
                    extra.append("alternatives")
                    break
        scales = ("ecog", "karnofsky", "lansky")
        if f.kind in scales and any(g.kind in scales and g.kind != f.kind and not _same_performance(f, g)
                                    for g in findings):
            extra.append("two performance scales")  # 'ECOG 0-1 or KPS >= 50': different patients, alternatives
        if f.kind == "lab" and any(g.kind == "lab" and g.end == f.end and g.concept != f.concept and
                                   not re.search(r"\band\b|/|&|,", text[min(f.start, g.start):max(f.start, g.start)])
                                   for g in findings):
            # 'estimated GFR (Cockcroft-Gault) >= 50': one value read for two analytes the names stand for; which
            # one the study means is not stated ('AST and ALT <= 3 x ULN' names both)
            extra.append("one value, two analytes")
        if f.kind in ("msi", "mmr") and any(g.kind in ("msi", "mmr") and g.kind != f.kind for g in findings):
            extra.append("MSI-H or dMMR")
        if f.kind == "receptor" and f.exclude and "one receptor of an excluded combination" not in f.reasons and \
                any(g.kind == "receptor" and g.exclude and g.concept != f.concept and
                    not re.search(r"\bor\b|[.;\n]", text[min(f.end, g.end):max(f.start, g.start)]) for g in findings):
            extra.append("one receptor of an excluded combination")  # 'HR+/HER2- breast cancer' under exclusions
        if extra:
            f = replace(f, confidence=MEDIUM, reasons=f.reasons + tuple(extra))
        out.append(f)
    return out


# The usual correspondence of the two scales (Oken et al. 1982; ECOG 5 = KPS 0): each ECOG grade's Karnofsky band.
_ECOG_KPS_BANDS = {0: (90, 100), 1: (70, 80), 2: (50, 60), 3: (30, 40), 4: (10, 20), 5: (0, 0)}


def _same_performance(f: Finding, g: Finding) -> bool:
    """'ECOG <= 2 (Karnofsky >= 60%)': the two scales state the same patients, so each may be judged alone (a patient
    recorded on one scale is outside the other's range too). Otherwise they are alternatives."""
    e, k = (f, g) if f.kind == "ecog" else (g, f)
    if e.kind != "ecog":
        return False
    lo, hi = k.value  # type: ignore[misc]
    grades = [grade for grade, (blo, bhi) in _ECOG_KPS_BANDS.items() if blo <= hi and bhi >= lo]
    return bool(grades) and (min(grades), max(grades)) == tuple(e.value)  # type: ignore[arg-type]


def _merge_stages(findings: list[Finding]) -> list[Finding]:
    """'Stage II (IIA limited ...) or Stage III': one stage finding per polarity, the union of the groups (a
    characteristic's stage codings are alternatives)."""
    stages = [f for f in findings if f.kind == "stage"]
    if len(stages) < 2:
        return findings
    out = [f for f in findings if f.kind != "stage"]
    for concept, exclude in dict.fromkeys((f.concept, f.exclude) for f in stages):
        group = [f for f in stages if f.exclude == exclude and f.concept == concept]
        if not group:
            continue
        codes: list[str] = []
        for f in group:
            codes += [c for c in f.value if c not in codes]  # type: ignore[union-attr]
        codes = [c for c in codes if not (len(c) > 1 and c[-1] in "ABC" and c[:-1] in codes)]
        first = group[0]
        reasons = tuple(dict.fromkeys(r for f in group for r in f.reasons))
        out.append(replace(first, value=tuple(codes), end=max(f.end for f in group), reasons=reasons,
                           confidence=MEDIUM if any(f.confidence == MEDIUM for f in group) else first.confidence))
    return out


def _dedupe(findings: list[Finding]) -> list[Finding]:
    """One finding per (kind, concept, value, polarity): the one stating a window wins, then the first."""
    best: dict[tuple, Finding] = {}
    for f in findings:
        k = f.key()[:4]
        if k not in best or (best[k].window is None and f.window is not None):
            if k in best and best[k].exceptions:
                f = replace(f, exceptions=tuple(dict.fromkeys(f.exceptions + best[k].exceptions)))
            best[k] = f
        elif f.exceptions:  # 'bilirubin <= 2 x ULN or direct bilirubin <= 2 x ULN for patients with Gilbert's'
            best[k] = replace(best[k], exceptions=tuple(dict.fromkeys(best[k].exceptions + f.exceptions)))
    return list(best.values())


def extract(text: str, lexicons: Lexicons | None = None) -> Extraction:
    """Split and recognise a whole eligibility text."""
    lx = lexicons or default_lexicons()
    return Extraction(text, _consistent([recognise_criterion(c, lx) for c in split_criteria(text)]))


def _consistent(results: list[CriterionResult]) -> list[CriterionResult]:
    """A text that requires pregnancy (or breastfeeding) in one criterion and excludes it in another (or asks for a
    negative pregnancy test) has an exclusion under the wrong heading: the requirement is dropped (left as text)."""
    for kind in ("pregnancy", "breastfeeding"):
        required = [i for i, r in enumerate(results) for f in r.findings if f.kind == kind and not f.exclude]
        if not required or not any(f.kind == kind and f.exclude for r in results for f in r.findings):
            continue
        for i in dict.fromkeys(required):
            r = results[i]
            kept = tuple(f for f in r.findings if not (f.kind == kind and not f.exclude))
            results[i] = replace(r, findings=kept, reason=None if kept else "conditional")
    return results


@lru_cache(maxsize=4096)
def extract_cached(text: str) -> Extraction:
    """extract() with the project lexicons, remembered per text in this process (re-imports reuse it)."""
    return extract(text)


__all__ = ["EXTRACTOR_VERSION", "CriterionResult", "Extraction", "extract", "extract_cached", "recognise_criterion"]
