"""Recognisers: one criterion's text -> findings (kind, concept, value, polarity, window, confidence).

Each recogniser is a small function registered by kind; it reads the cleaned, lower-cased text of one line of
the criterion and the lexicons. Polarity and confidence come from context (gateway.mapping.eligibility.context)
and the section, in ``recognise`` below, never from a recogniser alone.

>>> [f.key() for f in recognise_criterion(split_criteria("Exclusion Criteria:\\n* Known HIV infection")[0], lx)]
[('infection', 'HIV', 'present', 'exclude', None)]
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace

from gateway.mapping.eligibility.phrases import PhraseIndex
from gateway.terminology.lexicons import Lexicons, normalise_unit

HIGH, MEDIUM = "high", "medium"


@dataclass(frozen=True)
class Finding:
    """One thing a criterion says about the patient. ``negated``: the text says the concept is absent."""

    kind: str
    concept: str
    value: object  # kind-specific: (low, high) | 'present' | 'absent' | (comparator, number, unit) | tuple
    start: int  # offsets within the criterion text
    end: int
    rule: str
    negated: bool = False
    window: tuple[float, str] | None = None  # look-back: (4, 'wk')
    qualifiers: tuple[str, ...] = ()
    variants: tuple[str, ...] = ()
    confidence: str = HIGH
    reasons: tuple[str, ...] = ()  # why medium
    exceptions: tuple[str, ...] = ()  # diagnoses (diagnoses.yaml keys) for which the criterion is waived ('unless ...')
    exclude: bool = False  # set by recognise(): section x negation

    def key(self) -> tuple:
        """(kind, concept, value, polarity, window): what the evaluation compares."""
        return (self.kind, self.concept, _value_key(self), "exclude" if self.exclude else "include",
                None if self.window is None else f"{_num(self.window[0])} {self.window[1]}")


def _num(v: float) -> str:
    return str(int(v)) if float(v).is_integer() else str(v)


def _value_key(f: Finding) -> str:
    v = f.value
    if f.kind in ("ecog", "karnofsky", "lansky"):
        lo, hi = v  # type: ignore[misc]
        return f"{_num(lo)}-{_num(hi)}"
    if f.kind in ("lab", "pdl1") and isinstance(v, tuple):
        return f"{v[0]}{_num(v[1])} {v[2]}"
    if f.kind == "variant":
        return str(v) + (":" + "|".join(sorted(f.variants)) if f.variants else "")
    if f.kind == "stage":
        return "|".join(v)  # type: ignore[arg-type]
    return str(v)


# -- text helpers -------------------------------------------------------------------------------------------
def clean(text: str) -> str:
    """Lower case with markdown escapes blanked, same length as ``text`` (offsets stay valid)."""
    return text.lower().replace("\\", " ")


_CMP = [
    (">=", r">\s*/?\s*=|=\s*>|≥|⩾|≧|greater\s+than\s+or\s+equal\s+(?:to\s+)?|"
           r"equal\s+to\s+or\s+(?:greater|more|higher)\s+than|"
           r"at\s+least|no\s+less\s+than|not\s+less\s+than|minimum\s+(?:of\s+)?|more\s+than\s+or\s+equal\s+to|"
           r"higher\s+than\s+or\s+equal\s+to"),
    ("<=", r"<\s*/?\s*=|=\s*<|≤|⩽|≦|less\s+than\s+or\s+equal\s+(?:to\s+)?|equal\s+to\s+or\s+(?:less|lower)\s+than|"
           r"no\s+(?:more|greater|higher)\s+than|not\s+(?:more|greater|higher)\s+than|not\s+exceed(?:ing)?|"
           r"maximum\s+(?:of\s+)?|up\s+to|lower\s+than\s+or\s+equal\s+to|under\s+or\s+equal\s+to"),
    (">", r">|greater\s+than|more\s+than|above|exceeding|exceeds|higher\s+than|over"),
    ("<", r"<|less\s+than|below|lower\s+than|under"),
]
_CMP_RE = "(" + "|".join(f"(?P<c{i}>{p})" for i, (_, p) in enumerate(_CMP)) + ")"
_NUMBER = r"(\d{1,3}(?:,\d{3})+|\d+(?:\.\d+)?|\.\d+)"
_WINDOW = re.compile(
    r"(?:within\s+(?:the\s+)?screening\s+(?:window|period)\s+of|within|in\s+the\s+(?:last|past|previous|preceding)|during\s+the\s+(?:last|past|previous)|<|≤|<=)\s*"
    r"(?:the\s+)?(?:last\s+|past\s+|previous\s+|preceding\s+)?(\d+(?:\.\d+)?|one|two|three|four|five|six|"
    r"eight|ten|twelve)\s*(?:\(\d+\)\s*)?(days?|weeks?|months?|years?|wks?|yrs?)\b(?!\s*(?:of\s+age|old|of\s+life))")
_WORD_NUMBERS = {"one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "eight": 8, "ten": 10, "twelve": 12}
_UNIT_CODES = {"day": "d", "week": "wk", "wk": "wk", "month": "mo", "year": "a", "yr": "a"}


def _cmp(m: re.Match) -> str:
    for i, (sym, _) in enumerate(_CMP):
        if m.group(f"c{i}"):
            return sym
    raise AssertionError("no comparator group")


def _number(s: str) -> float:
    return float(s.replace(",", ""))


_ABBREVIATION_DOT = re.compile(r"\b(?:etc|e\.g|i\.e|eg|ie|vs|approx|incl)\.")


_AFTER = re.compile(r"\s*(?:after|following|post|from\s+(?:the\s+)?(?:start|first\s+dose|enrol))\b")


def window_near(text: str, start: int, end: int) -> tuple[float, str] | None:
    """The window stated in the mention's clause, nearest after it, else nearest before it."""
    text = _ABBREVIATION_DOT.sub(lambda m: m.group(0).replace(".", ","), text)  # 'etc. within 6 months' is one clause
    cs = max(text.rfind(". ", 0, start), text.rfind(";", 0, start), -1) + 1
    ce_found = [i for i in (text.find(". ", end), text.find(";", end)) if i >= 0]
    ce = min(ce_found) if ce_found else len(text)
    best = None
    for m in _WINDOW.finditer(text, cs, ce):
        if re.search(r"transfus\w*|g-?csf|growth\s+factor|support", text[max(cs, m.start() - 40):m.start()]):
            continue
        if _AFTER.match(text, m.end()):
            continue  # 'within 6 months after enrolment' looks forward: not a look-back
        d = (0 if m.start() >= end else 1, abs(m.start() - end))
        if best is None or d < best[0]:
            best = (d, m)
    if best is None:
        return None
    m = best[1]
    n = m.group(1)
    return float(_WORD_NUMBERS.get(n, n)), _UNIT_CODES[m.group(2).rstrip("s")]  # type: ignore[arg-type]


def window_in(text: str) -> tuple[float, str] | None:
    """'within 4 weeks prior to' -> (4, 'wk'); None if the text states no window."""
    m = _WINDOW.search(text)
    if not m:
        return None
    n = m.group(1)
    value = float(_WORD_NUMBERS.get(n, n))  # type: ignore[arg-type]
    unit = _UNIT_CODES[m.group(2).rstrip("s")]
    return value, unit


class _Span:
    """A found phrase with the match-object methods the recognisers use."""

    __slots__ = ("_s", "_e", "_t")

    def __init__(self, start: int, end: int, text: str):
        self._s, self._e, self._t = start, end, text

    def start(self) -> int:
        return self._s

    def end(self) -> int:
        return self._e

    def group(self, _: int = 0) -> str:
        return self._t[self._s:self._e]


# -- registry -------------------------------------------------------------------------------------------------
Recogniser = Callable[[str, str, Lexicons], Iterator[Finding]]
RECOGNISERS: dict[str, Recogniser] = {}


def recogniser(kind: str) -> Callable[[Recogniser], Recogniser]:
    def deco(fn: Recogniser) -> Recogniser:
        RECOGNISERS[kind] = fn
        return fn
    return deco


# Words one of which a line must hold for a recogniser to be worth running (a substring test costs nanoseconds; the
# recognisers' expressions tens of microseconds). None: always run.
KEYWORDS: dict[str, tuple[str, ...] | None] = {
    "ecog": ("ecog", "eastern", "zubrod", "who", "world health", "performance"), "karnofsky": ("karnofsky", "kps"),
    "lansky": ("lansky", "lps"), "lab": tuple("0123456789"), "variant": None,
    "receptor": ("er", "pr", "hr", "her", "estrogen", "oestrogen", "progesterone", "hormone", "triple", "tnbc"),
    "msi": ("msi", "microsatellite", "mismatch", "mmr", "mss"), "pdl1": ("pd", "programmed"),
    "cns": ("brain", "cns", "central nervous", "cranial", "cerebral", "mening"),
    "infection": ("hiv", "hepatitis", "hbv", "hcv", "hbsag", "aids", "immunodeficiency", "hep "),
    "pregnancy": ("pregnan", "breast", "lactat", "nursing"), "prior-therapy": None, "stage": ("stage",),
    "diagnosis": None,
    "other-malignancy": ("malignan", "cancer", "carcinoma", "neoplasm", "tumor", "tumour"),
}


# -- performance status ---------------------------------------------------------------------------------------
_PS = re.compile(r"\b(?:ecog|eastern\s+cooperative\s+oncology\s+group|zubrod|"
                 r"who\s*(?:/\s*ecog\s*)?(?:performance|ps\b)|"
                 r"world\s+health\s+organi[sz]ation\s*(?:\(who\)\s*)?performance)")
_KPS = re.compile(r"\b(?:karnofsky|kps\b)")
_LANSKY = re.compile(r"\blansky\b|\blps\b")


def _ps_range(after: str, top: int, step: int) -> tuple[float, float, str] | None:
    """The score range a performance-status phrase states: 'of 0 or 1' -> (0, 1); '>= 70%' -> (70, 100)."""
    d = r"(\d{1,3})"
    m = re.match(rf"[^\d\n.;]{{0,50}}?{d}(?:\s*(?:/|,)\s*{d})+(?:\s*(?:,?\s*or|,?\s*and|-|–|/|,)\s*{d})?\b"
                 rf"(?!\s*(?:days|weeks|%))",
                 after)
    if m:
        nums = [int(x) for x in re.findall(r"\d{1,3}", m.group(0))]
        if all(n <= top for n in nums) and (step == 1 or all(n % 10 == 0 for n in nums)):
            return min(nums), max(nums), "list"
    m = re.match(rf"[^\d\n.;]{{0,50}}?{d}\s*%?\s*(?:-|–|to|through|~|or|and)\s*{d}\b(?!\s*(?:days|weeks|months))",
                 after)
    if m and not re.search(r"(?:,|or)\s*\d", after[m.end():m.end() + 6]):
        a, b = int(m.group(1)), int(m.group(2))
        if a <= top and b <= top and a <= b:
            return a, b, "range"
    m = re.match(rf"[^\d\n.;]{{0,50}}?{d}(?:\s*,\s*{d})+\s*,?\s*(?:or|and)\s*{d}\b", after)
    if m:
        nums = [int(x) for x in re.findall(r"\d{1,3}", m.group(0))]
        if all(n <= top for n in nums):
            return min(nums), max(nums), "list"
    m = re.match(rf"[^\d\n.;]{{0,50}}?{_CMP_RE}\s*{d}", after)
    if m:
        n, sym = int(m.group(m.lastindex or 0)), _cmp(m)
        if n <= top:
            return {">=": (n, top), "<=": (0, n), ">": (n + step, top), "<": (0, n - step)}[sym] + ("cmp",)
    m = re.match(rf"[^\d\n.;]{{0,50}}?{d}\s*%?\s*(?:or|and)\s*"
                 rf"(less|lower|below|better|more|higher|greater|above|worse)",
                 after)
    if m:
        n = int(m.group(1))
        if n <= top:
            up = m.group(2) in ("more", "higher", "greater", "above")
            # ECOG 'or worse' means higher; Karnofsky 'or better' means higher
            if m.group(2) == "worse":
                up = step == 1
            if m.group(2) == "better":
                up = step != 1
            return ((n, top) if up else (0, n)) + ("cmp",)
    m = re.match(rf"[^\d\n.;]{{0,30}}?(?:of|score|status|ps|:|=|is)\s*{d}\b"
                 rf"(?!\s*(?:-|–|to|,|or|and|days|weeks|%\s*or))",
                 after)
    if m:
        n = int(m.group(1))
        if n <= top:
            return n, n, "single"
    return None


def _performance(kind: str, rx: re.Pattern, top: int, step: int) -> Recogniser:
    def rec(text: str, original: str, lx: Lexicons) -> Iterator[Finding]:
        for m in rx.finditer(text):
            got = _ps_range(text[m.end():m.end() + 90], top, step)
            if got is None:
                yield Finding(kind, kind.upper(), None, m.start(), m.end(), f"{kind}-unparsed")
                continue
            lo, hi, how = got
            if step == 10 and (lo % 10 or hi % 10):
                continue
            yield Finding(kind, kind.upper(), (lo, hi), m.start(), m.end(), f"{kind}-{how}",
                          window=window_near(text, m.start(), m.end()))
    return rec


RECOGNISERS["ecog"] = _performance("ecog", _PS, 5, 1)
RECOGNISERS["karnofsky"] = _performance("karnofsky", _KPS, 100, 10)
RECOGNISERS["lansky"] = _performance("lansky", _LANSKY, 100, 10)


# -- laboratory values -----------------------------------------------------------------------------------------
_UNIT_RE = (r"(?:\s*(?:x|×|\*)\s*10\s*(?:\^|\*|e)?\s*(?:9|3|⁹|³)\s*/\s*(?:l|ul|µl|μl|mcl|mm3|mm\^3|mm³|mm\s*3)|"
            r"\s*(?:10\s*(?:\^|\*|e)\s*(?:9|3)\s*/\s*(?:l|ul|µl|μl|mcl|mm3|mm\^3|mm³))|"
            r"\s*(?:g/dl|gm/dl|gr/dl|g/l|mg/dl|mg/100\s*ml|umol/l|µmol/l|μmol/l|mmol/l|"
            r"ml/min(?:ute)?(?:\s*/\s*1\.73\s*(?:m\s*\^?\s*2|m²|sqm|m2))?|cc/min|u/l|iu/l|"
            r"(?:cells\s*)?/\s*(?:mm\s*\^?\s*3|mm³|µl|μl|ul|mcl|microlit(?:er|re)|cu\.?\s*mm|cumm)|k/ul|k/mm3|%))")
_ULN_RE = (r"\s*(?:x|×|\*|times)?\s*(?:within\s+)?(?:the\s+)?(?:institutional\s+|site\s+|local\s+|laboratory\s+)?"
           r"(?:upper\s+limits?\s+of\s+(?:the\s+)?normal(?:\s+range)?|uln|iuln)")
_LAB_VALUE = re.compile(rf"{_CMP_RE}\s*(?:to\s+)?{_NUMBER}(?P<uln>{_ULN_RE})?(?P<unit>{_UNIT_RE})?")


def _index(lx: Lexicons, name: str, build: Callable[[], list[tuple[str, object]]]) -> PhraseIndex:
    """A phrase index over one lexicon, built once per Lexicons object."""
    cache = lx.__dict__.setdefault("_phrase_indexes", {})
    if name not in cache:
        cache[name] = PhraseIndex(build())
    return cache[name]


def _lab_names(lx: Lexicons) -> PhraseIndex:
    return _index(lx, "labs", lambda: [(n, k) for k, a in lx.analytes.items() for n in a.names])


# Between an analyte's name and its threshold: words, brackets, 'and' / '/' to another analyte, not a number.
_LAB_GAP = re.compile(r"^[a-z\s(),/.\-:'’\[\]]*$")
_UNIT_BY_MAGNITUDE = {
    "neutrophils": lambda v: "/uL" if v >= 100 else "10*3/uL",
    "leukocytes": lambda v: "/uL" if v >= 100 else "10*3/uL",
    "platelets": lambda v: "/uL" if v >= 1000 else "10*3/uL",
    "hemoglobin": lambda v: "g/L" if v >= 30 else "g/dL",
    "creatinine": lambda v: "umol/L" if v >= 20 else "mg/dL",
    "bilirubin": lambda v: "umol/L" if v >= 10 else "mg/dL",
    "creatinine-clearance": lambda v: "mL/min",
    "egfr": lambda v: "mL/min/{1.73_m2}",
    "albumin": lambda v: "g/L" if v >= 10 else "g/dL",
    "inr": lambda v: "{INR}",
}


@recogniser("lab")
def labs(text: str, original: str, lx: Lexicons) -> Iterator[Finding]:
    idx = _lab_names(lx)
    for start, end, key in idx.find(text):
        m = _Span(start, end, text)
        name = m.group(0)
        if len(name) <= 3 and original[m.start():m.end()] != original[m.start():m.end()].upper():
            continue  # 'cr', 'hb', 'ast' in running text: only as written in capitals
        if key == "egfr" and re.match(r"[\s-]*(?:mut|wild|negative|positive|tki|inhibitor|exon|amplif|rearr|alter"
                                      r"|-?directed|targeted|\+|status|sensiti|activating|variant|l858|t790)",
                                      text[m.end():m.end() + 14]):
            continue  # the EGFR gene, not the filtration rate
        if key == "egfr" and original[m.start():m.end()] == "EGFR" and "ml/min" not in text[m.end():m.end() + 40]:
            continue  # written 'EGFR' (capital E): the gene unless a filtration unit follows
        v = _LAB_VALUE.search(text, m.end(), min(len(text), m.end() + 80))
        if not v or not _LAB_GAP.match(text[m.end():v.start()]) or len(text[m.end():v.start()]) > 110:
            continue
        gap = text[m.end():v.start()]
        if re.search(r"\bor\b", re.sub(r"\([^()]*\)", " ", gap)) and idx.find(gap):
            continue  # 'creatinine (adults) or creatinine clearance >= 40': the value is the other analyte's
        if re.search(r"\b(?:ratio|change|increase|decrease|reduction|grade|ctcae)\b", gap):
            continue
        sym = _cmp(v)
        num = re.search(_NUMBER, text[v.start():v.end()])
        if num is None:
            continue
        value = _number(num.group(0))
        rule = "lab-threshold"
        if v.group("uln"):
            unit = "{ULN}"
            rule = "lab-uln"
        elif v.group("unit"):
            written = normalise_unit(v.group("unit"))
            unit = lx.units.get(written) or lx.units.get(written.lstrip("x")) or ""
            if not unit:
                continue
            if unit == "10*3/uL" and re.search(r"mm", written):
                unit = "10*3/uL"
        else:
            guess = _UNIT_BY_MAGNITUDE.get(str(key))
            if guess is None:
                continue
            unit = guess(value)
            rule = "lab-unit-inferred"
        if unit not in lx.analytes[str(key)].accepts and unit not in ("/uL", "/mm3", "10*3/uL", "10*9/L") or (
                unit in ("/uL", "/mm3", "10*3/uL", "10*9/L") and not set(lx.analytes[str(key)].accepts) & {unit}):
            continue  # a unit this analyte is never measured in ('creatinine < 1.5 g/dL'): a typo we do not guess
        yield Finding("lab", str(key), (sym, value, unit), m.start(), v.end(), rule,
                      window=window_near(text, m.start(), v.end()))


# -- biomarkers -----------------------------------------------------------------------------------------------
_PRESENT = (r"mutat\w*|mutant|positive|pos\b|\+|alter\w*|amplif\w*|rearrange\w*|fusion\w*|translocat\w*|"
            r"variant|deletion|insertion|detected|activating|sensiti[sz]ing|harbou?r\w*|carrier|pathogenic|"
            r"deleterious|methylat\w*|overexpress\w*|driver|(?:exon\s*\d+|[a-z]\d{2,4}[a-z])")
_ABSENT = (r"negative|neg\b|wild[\s-]?type|wt\b|not\s+(?:been\s+)?(?:detected|found|identified)|unmethylated|"
           r"non[\s-]?mutated|non[\s-]?amplified")


def _gene_names(lx: Lexicons) -> PhraseIndex:
    return _index(lx, "genes", lambda: [(n, g) for g, gene in lx.genes.items() for n in gene.names])


_THERAPY_AFTER = re.compile(r"^[\s-]*(?:tki|tkis|inhibitor|inhibitors|targeted|directed|-targeted|antibod|therap"
                            r"|treatment|blockade|agent|checkpoint|inhibition|blocking|immunotherap)")
_AMBIGUOUS_GENE_WORDS = {"met", "ret", "alk"}


_COORDINATED = re.compile(r"\s*(?:,\s*(?:and\s+|or\s+)?|and\s+|or\s+|and/or\s+|/\s*)")


def _coordinated_absent(text: str, hits: list, i: int) -> bool:
    """'EGFR, ALK and ROS1 wild-type': genes joined only by list words share the status the last one carries."""
    j = i
    while j + 1 < len(hits) and _COORDINATED.fullmatch(text, hits[j][1], hits[j + 1][0]):
        j += 1
    if j == i:
        return False
    phrase = re.split(r"[.;,)]|\b(?:or|and|who|that|with)\b", text[hits[j][1]:hits[j][1] + 45], maxsplit=1)[0]
    return bool(re.match(rf"^[\s\-:/(]*(?:[a-z0-9]+[\s-]+){{0,4}}?(?:{_ABSENT})", phrase))


@recogniser("variant")
def variants(text: str, original: str, lx: Lexicons) -> Iterator[Finding]:
    seen: set[str] = set()
    hits = list(_gene_names(lx).find(text))
    for i, (start, end, gene) in enumerate(hits):
        m = _Span(start, end, text)
        gene = str(gene)
        word = original[m.start():m.end()]
        if m.group(0) in _AMBIGUOUS_GENE_WORDS and word != word.upper():
            continue
        after = text[m.end():m.end() + 45]
        if _THERAPY_AFTER.match(after) or re.match(r"^[\s-]*(?:[a-z0-9/-]+\s+){0,3}(?:inhibitors?|tkis?|targeted|"
                                                   r"directed|degraders?)\b", after):
            continue
        before = text[max(0, m.start() - 35):m.start()]
        if re.search(r"(?:other\s+than|except|besides|excluding|apart\s+from)\s*(?:for\s+)?$", before):
            continue
        if re.search(r"\b(?:unknown|untested|not\s+(?:been\s+)?tested\s+for)\s+(?:[a-z0-9/-]+,?\s+){0,3}$", before) or \
                (re.search(r"\bother\s+$", before) and re.search(r"\b(?:besides?|except|other\s+than)\b", after)):
            continue  # 'participants with unknown EGFR status', 'other KRAS mutations beside G12C': no status
        status = None
        # nearest status word after the gene (within its phrase), else just before it
        phrase = re.split(r"[.;,)]|\b(?:or|and|who|that|with)\b", after, maxsplit=1)[0]
        pa = re.match(rf"^[\s\-:/(]*(?:[a-z0-9]+[\s-]+){{0,3}}?(?P<w>{_PRESENT})", phrase)
        if re.search(rf"^[\s\-:/(]*(?:[a-z0-9]+[\s-]+){{0,4}}?(?:{_ABSENT})", phrase):
            status = "absent"
        elif pa:
            status = "present"
        elif _coordinated_absent(text, hits, i):
            status = "absent"  # 'EGFR and ALK mutation-negative': the status after the last gene is each one's
        else:
            pb = re.search(rf"(?P<w>{_ABSENT}|{_PRESENT}|known|documented|confirmed)[\s-]+(?:[a-z0-9]+[\s-]+){{0,2}}$",
                           before)
            if pb:
                status = "absent" if re.match(_ABSENT, pb.group("w")) else "present"
        if status is None or gene in seen:
            continue
        if re.match(r"^[\s\-:/(]*(?:[a-z0-9]+[\s-]+){0,3}?(?:mutation\s+)?(?:status|testing|test|result)\b",
                    phrase) and \
                not re.search(r"positive|negative|detected|wild", phrase):
            continue  # 'BRAF V600 mutation status determined': the test, not its result
        found = tuple(name for name, pat in lx.genes[gene].variants if pat.search(text))
        seen.add(gene)
        yield Finding("variant", gene, status, m.start(), m.end(), "variant-status" if not found else "variant-named",
                      variants=found)


_RECEPTOR = re.compile(
    r"(?<![a-z0-9])(?P<r>er|pr|hr|her2|her-2|her\s2|erbb2|estrogen\s+receptors?|oestrogen\s+receptors?|"
    r"progesterone\s+receptors?|hormone\s+receptors?)(?:\s*\((?:er|pr|hr|her2)\))?"
    r"(?P<sep>[\s-]*(?:status\s*)?(?:is\s+|:\s*)?)(?P<s>positive|negative|pos\b|neg\b|\+(?!\s*\d)|-(?![a-z0-9])|"
    r"low\b|ultra-?low|0\b|amplified|overexpress\w*|non-?amplified)")
_RECEPTOR_KEY = {"er": "ER", "estrogen": "ER", "oestrogen": "ER", "pr": "PR", "progesterone": "PR", "hr": "HR",
                 "hormone": "HR", "her2": "HER2", "her-2": "HER2", "her 2": "HER2", "erbb2": "HER2"}


# 'ER and/or PR positive', 'ER+ or PR+', 'ER/PR-positive', 'estrogen receptor (ER) positive and/or progesterone
# receptor (PR) positive': either receptor positive, i.e. hormone-receptor positive (HR+), one characteristic
_ER_NAME = r"(?:er|estrogen\s+receptors?|oestrogen\s+receptors?)(?:\s*\(er\))?"
_PR_NAME = r"(?:pr|progesterone\s+receptors?)(?:\s*\(pr\))?"
_POSITIVE = r"[\s-]*(?:positive|pos\b|\+)(?:\s*[\[(]\s*(?:er|pr)\s*\+\s*[\])])?"  # '... positive [ER+]'
_EITHER = r"\s*(?:and\s*/\s*or|or)\s*"
_HR_EITHER = re.compile(rf"(?<![a-z0-9])(?:{_ER_NAME}(?:{_POSITIVE})?{_EITHER}{_PR_NAME}|"
                        rf"{_PR_NAME}(?:{_POSITIVE})?{_EITHER}{_ER_NAME}|(?:er|pr)\s*/\s*(?:pr|er)){_POSITIVE}")
# ('ER+/PR+' with a status on each may state both; only the bare pair 'ER/PR positive' is read as either)
_SHORT_NAME = re.compile(r"(?<![a-z0-9])(?:er|pr)(?![a-z0-9])")


# 'HER2- or HER3-primed DC1 therapy': the hyphen of 'HER2-primed', not a negative status
_SUSPENDED_HYPHEN = re.compile(r"\s*(?:or|and|/|,)\s*[a-z0-9]+-(?!(?:positive|negative|pos|neg)\b)[a-z]")
_REGARDLESS = re.compile(r"\b(?:regardless|irrespective)\s+of\b[^.;]*$")


@recogniser("receptor")
def receptors(text: str, original: str, lx: Lexicons) -> Iterator[Finding]:
    if re.search(r"triple[\s-]+negative|\btnbc\b", text):
        m = re.search(r"triple[\s-]+negative|\btnbc\b", text)
        assert m is not None
        for r in ("ER", "PR", "HER2"):
            yield Finding("receptor", r, "negative", m.start(), m.end(), "receptor-triple-negative")
    either = [m for m in _HR_EITHER.finditer(text)
              if all(original[a.start():a.end()].isupper() for a in _SHORT_NAME.finditer(text, m.start(), m.end()))]
    for m in either:
        yield Finding("receptor", "HR", "positive", m.start(), m.end(), "receptor-hr-either")
    for m in _RECEPTOR.finditer(text):
        if any(e.start() <= m.start() < e.end() for e in either):
            continue  # 'ER+' of 'ER+ and/or PR+': one alternative, read above
        raw = m.group("r")
        if raw in ("er", "pr", "hr") and original[m.start():m.start() + 2] != raw.upper():
            continue
        key = _RECEPTOR_KEY[raw.split()[0] if " " in raw and not raw.startswith("her") else raw]
        s = m.group("s")
        if key == "HR":
            if s in ("positive", "pos", "+"):
                # 'HR+', 'hormone receptor-positive': ER or PR positive (one characteristic, judged on both)
                yield Finding("receptor", "HR", "positive", m.start(), m.end(), "receptor-hr")
            continue  # 'HR-negative' (both negative), 'HR-low': left as text
        if s in ("low", "ultra-low", "ultralow", "0") or s.startswith("ultra"):
            yield Finding("receptor", key, f"{s}", m.start(), m.end(), "receptor-low")
            continue
        if s == "-" and (text[m.end():m.end() + 1].isdigit() or _SUSPENDED_HYPHEN.match(text, m.end())):
            continue
        if _REGARDLESS.search(text, max(0, m.start() - 80), m.start()):
            continue  # 'regardless of hormone-receptor status or HER2-overexpression': no requirement
        status = "negative" if s in ("negative", "neg", "-", "non-amplified", "nonamplified") else "positive"
        yield Finding("receptor", key, status, m.start(), m.end(), "receptor-status")
    for m in re.finditer(r"\b(?:er|pr)\s*/\s*(?:pr|er)\s*[\s-]*(positive|negative|\+|-(?![a-z0-9]))", text):
        if original[m.start():m.start() + 2] not in ("ER", "PR"):
            continue
        status = "negative" if m.group(1) in ("negative", "-") else "positive"
        if status == "negative":  # 'ER/PR-negative': both negative
            for r in ("ER", "PR"):
                yield Finding("receptor", r, status, m.start(), m.end(), "receptor-pair")


_MSI_H = re.compile(r"msi[\s-]*(?:h\b|high)|microsatellite[\s-]+instab\w*[\s-]*(?:\(msi\)\s*)?[\s-]*(?:-\s*)?high|"
                    r"high[\s-]+microsatellite[\s-]+instab\w*|microsatellite[\s-]+unstable")
_MSS = re.compile(r"\bmss\b|microsatellite[\s-]+stab\w*|msi[\s-]*(?:l\b|low)")
_DMMR = re.compile(r"\bdmmr\b|mismatch[\s-]+repair[\s-]+(?:\(mmr\)\s*)?[\s-]*deficien\w*|deficient[\s-]+mismatch[\s-]+"
                   r"repair|mmr[\s-]+deficien\w*|mmr-d\b")
_PMMR = re.compile(r"\bpmmr\b|mismatch[\s-]+repair[\s-]+(?:\(mmr\)\s*)?[\s-]*proficien\w*|proficient[\s-]+mismatch[\s-]"
                   r"+repair|mmr[\s-]+proficien\w*")


@recogniser("msi")
def msi(text: str, original: str, lx: Lexicons) -> Iterator[Finding]:
    for m in _MSI_H.finditer(text):
        yield Finding("msi", "MSI", "present", m.start(), m.end(), "msi-high")
        break
    else:
        for m in _MSS.finditer(text):
            yield Finding("msi", "MSI", "absent", m.start(), m.end(), "msi-stable")
            break
    for m in _DMMR.finditer(text):
        yield Finding("mmr", "dMMR", "present", m.start(), m.end(), "mmr-deficient")
        break
    else:
        for m in _PMMR.finditer(text):
            yield Finding("mmr", "dMMR", "absent", m.start(), m.end(), "mmr-proficient")
            break


_PDL1 = re.compile(r"pd[\s-]?l1|programmed\s+(?:death|cell\s+death)[\s-]+ligand[\s-]+1")


@recogniser("pdl1")
def pdl1(text: str, original: str, lx: Lexicons) -> Iterator[Finding]:
    for m in _PDL1.finditer(text):
        after = text[m.end():m.end() + 80]
        if _THERAPY_AFTER.match(after) or re.match(r"^[\s-]*(?:inhibitor|antibod|blockade|therap|agent|targeted)",
                                                   after):
            continue
        if text[max(0, m.start() - 6):m.start()].rstrip().endswith(("anti", "anti-")):
            continue
        after = re.split(r"\.\s|;", after, maxsplit=1)[0]
        score = re.search(rf"(tps|tumou?r\s+proportion\s+score|cps|combined\s+positive\s+score|tc|expression|"
                          rf"staining|score)?[^.;\d]{{0,25}}?{_CMP_RE}\s*(\d+(?:\.\d+)?)\s*(%)?", after)
        if score and not re.search(r"\b(?:or|and)\b\s*$", after[:score.start()]):
            what = score.group(1) or ""
            nums = re.findall(r"\d+(?:\.\d+)?", score.group(0))
            if not nums:
                continue
            num = float(nums[-1])
            kind = "CPS" if what.startswith(("cps", "combined")) else "TPS" if what.startswith(("tps", "tumo")) \
                else "TPS?"
            unit = "{score}" if kind == "CPS" else "%"
            yield Finding("pdl1", f"PD-L1 {kind}", (_cmp(score), num, unit), m.start(), m.end() + score.end(),
                          "pdl1-threshold")
            continue
        st = re.match(r"^[\s-]*(?:expression\s+)?(?:status\s+)?(?:is\s+)?(positive|negative|\+|high|low)", after)
        if st:
            status = "negative" if st.group(1) == "negative" else "positive" if st.group(1) in ("positive", "+") \
                else st.group(1)
            yield Finding("pdl1", "PD-L1", status, m.start(), m.end() + st.end(), "pdl1-status")


# -- CNS metastases, infections, pregnancy ----------------------------------------------------------------------
_CNS = re.compile(
    r"(?:brain|cns|central\s+nervous\s+system|intracranial|cerebral|intra-cranial)\s*(?:/\s*\w+\s*)?"
    r"(?:metasta\w*|mets\b|lesions?\b|involvement)|leptomeningeal\s*(?:disease|metasta\w*|carcinomatosis|involvement|"
    r"spread)?|carcinomatous\s+meningitis|metasta\w*\s+(?:to|in|of)\s+(?:the\s+)?(?:brain|cns|central\s+nervous)|"
    r"meningeal\s+carcinomatosis")
_CNS_QUALIFIERS = {"active": r"\bactive\b", "untreated": r"\buntreated\b|not\s+(?:been\s+)?(?:previously\s+)?treated",
                   "symptomatic": r"(?<!a)symptomatic",
                   "progressive": r"progress\w*|unstable|uncontrolled|growing|enlarg\w*|\bnew\b",
                   "leptomeningeal": r"leptomening\w*|carcinomatous\s+meningitis|meningeal"}


@recogniser("cns")
def cns(text: str, original: str, lx: Lexicons) -> Iterator[Finding]:
    m = _CNS.search(text)
    if not m:
        return
    clause_start = max(text.rfind(".", 0, m.start()), text.rfind(";", 0, m.start()), -1) + 1
    around = text[clause_start:m.end() + 40]
    quals = tuple(q for q, p in _CNS_QUALIFIERS.items() if re.search(p, around))
    weak = not re.search(r"metasta|mets\b|leptomening|carcinomat", m.group(0))
    yield Finding("cns", "CNS metastases", "present", m.start(), m.end(), "cns-lesions" if weak else "cns-metastases",
                  qualifiers=quals)


_INFECTIONS = {
    "HIV": re.compile(r"(?<![a-z])hiv(?![a-z])|human\s+immuno\s*deficiency\s+virus|\baids\b|acquired\s+immun\w*\s+"
                      r"deficiency"),
    "HBV": re.compile(r"hepatitis\s+b(?![a-z])|(?<![a-z])hbv(?![a-z])|hbsag|hepatitis\s+b\s+surface|\bhep\s+b\b"),
    "HCV": re.compile(r"hepatitis\s+(?:b\s*(?:,|or|and|and/or|/)\s*)?c(?![a-z])|(?<![a-z])hcv(?![a-z])|\bhep\s+c\b"),
}


@recogniser("infection")
def infections(text: str, original: str, lx: Lexicons) -> Iterator[Finding]:
    for name, rx in _INFECTIONS.items():
        m = rx.search(text)
        while m and m.group(0) == "aids" and original[m.start():m.end()] != "AIDS":
            m = rx.search(text, m.end())  # 'smoking cessation aids': not AIDS
        if not m:
            continue
        if re.search(r"\b(?:not\s+required|testing|screening\s+(?:is|for)|vaccin\w*|reactivation)\b", text) and \
                not re.search(r"known|history|positive|infection|active|chronic", text):
            continue
        # 'active' is no qualifier here: a diagnosis criterion is judged on active, confirmed conditions (resolved
        # ones count only for 'history of'), so 'active hepatitis B' and 'hepatitis B' read the same records
        quals = tuple(q for q in ("chronic", "uncontrolled", "detectable", "acute") if re.search(rf"\b{q}\b", text))
        reasons = ()
        if re.search(r"\b(?:evaluat\w*|should\s+(?:be|undergo)|tested|testing|screening|serolog\w*)\b", text):
            reasons = ("a testing statement",)
        elif re.match(r"^[^.;]{0,40}?\b(?:with|who\s+have|and\s+(?:a\s+)?history)\b", text[m.end():]):
            reasons = ("qualified by what follows",)
        yield Finding("infection", name, "present", m.start(), m.end(), "infection", qualifiers=quals, reasons=reasons)


_PREGNANT = re.compile(r"\bpregnan\w*")
_NON_STATUS = re.compile(r"\bnon[\s-]?$")  # 'non-pregnant', 'non-breastfeeding', 'non lactating'

_BREASTFEEDING = re.compile(r"breast[\s-]*feed\w*|lactat\w*|nursing(?!\s+home)|breast\s*-?\s*feeding")
_NOT_STATUS = re.compile(r"contracept\w*|avoid\w*\s+(?:becoming\s+)?pregnan|become\s+pregnan|becoming\s+pregnan|"
                         r"father|partner|sperm|barrier|abstinen\w*|plan\w*\s+(?:to|a)\s+|intend\w*|donate|egg|"
                         r"potential\s+to\s+become|prevent\w*\s+pregnan|childbearing\s+potential\s+must\s+agree")


# 'recently pregnant (up to 30 days after the end of pregnancy)', 'or within 6 weeks postpartum': pregnant at some time
# in the window (a look-back)
_RECENT_PREGNANCY = re.compile(
    r"(?:recent(?:ly)?\s+pregnan\w*|post[\s-]*partum|after\s+(?:the\s+end\s+of\s+)?(?:pregnancy|delivery))"
    r"(?:[^.;\d]{0,40}?(?:up\s+to|within|<=?|≤|no\s+more\s+than)\s*(?P<n>\d+)\s*(?P<u>days?|weeks?|months?)\s+"
    r"(?:after|following|post|of|since)\b)?")


# The noun names the participant's state only bare or after a word of status or grammar ('current pregnancy',
# 'known pregnancy', 'evidence of pregnancy', 'pregnancy'). After any other word it names a kind of pregnancy
# ('high-risk pregnancy', 'multiple pregnancy', 'previous pregnancy') or is the object of something else ('to attempt
# pregnancy'): excluding that kind does not exclude every pregnant patient.
_PREGNANCY_NOUN = re.compile(r"pregnanc(?:y|ies)\b")
_WORD_BEFORE = re.compile(r"([a-z][\w'’-]*?)-?[ \t]*-?[ \t]*$")
_STATUS_BEFORE = frozenset({
    "current", "currently", "known", "confirmed", "documented", "diagnosed", "active", "ongoing", "concurrent",
    "existing", "suspected", "possible", "self-reported", "reported", "positive", "evidence", "presence",
    "a", "an", "any", "of", "in", "with", "or", "and", "nor", "for", "by", "to", "is", "are", "was", "were", "be",
    "been", "being", "including", "include", "includes", "such", "as", "e", "g", "eg", "i", "ie", "no", "not",
    "without", "exclude", "excluding", "during", "where"})
# ... and before another noun it only qualifies that noun ('pregnancy-related conditions', 'pregnancy category D').
_MODIFIES_NEXT = re.compile(r"[ \t]*-?[ \t]*(?:related|induced|associated|complications?|categor(?:y|ies)|outcomes?|"
                            r"loss(?:es)?|prevention|preventing|assessment|risks?|rates?|care|registry|intentions?|"
                            r"wish|desire|planning|history|results?)\b")


def _pregnancy_mentions(text: str) -> Iterator[tuple[re.Match, bool]]:
    """Each 'pregnan...' mention that may be the participant's state, with whether it names a kind of pregnancy."""
    for m in _PREGNANT.finditer(text):
        if not _PREGNANCY_NOUN.match(text, m.start()):
            yield m, False  # 'pregnant', 'pregnant women'
        elif not _MODIFIES_NEXT.match(text, m.end()):
            before = _WORD_BEFORE.search(text, max(0, m.start() - 40), m.start())
            yield m, bool(before) and before.group(1) not in _STATUS_BEFORE  # type: ignore[union-attr]


@recogniser("pregnancy")
def pregnancy(text: str, original: str, lx: Lexicons) -> Iterator[Finding]:
    negative_test = re.search(r"negative\s+(?:[\w/()-]+\s+){0,4}?pregnancy\s+test|"
                              r"pregnancy\s+test\s+(?:\w+\s+){0,4}negative", text)
    if negative_test:
        yield Finding("pregnancy", "pregnancy", "present", negative_test.start(), negative_test.end(),
                      "pregnancy-negative-test", negated=True)
    else:
        mentions = list(_pregnancy_mentions(text))
        # the first mention of the state itself; else the first kind of pregnancy, which can only state a
        # requirement ('Singleton pregnancy' under an inclusion heading needs a pregnant participant)
        m, kind_of = next(((x, k) for x, k in mentions if not k), mentions[0] if mentions else (None, False))
        non = _NON_STATUS.search(text[max(0, m.start() - 5):m.start()]) if m else None
        if m and non and not _NOT_STATUS.search(text):
            # 'non-pregnant, non-breastfeeding female': the text states the patient is not pregnant
            yield Finding("pregnancy", "pregnancy", "present", m.start(), m.end(), "pregnancy-non", negated=True)
        elif m and not _NOT_STATUS.search(text) and not re.search(r"pregnancy\s+test", text):
            recent = _RECENT_PREGNANCY.search(text)
            window = None
            reasons: tuple[str, ...] = ()
            if recent and recent.group("n"):
                window = (float(recent.group("n")), _UNIT_CODES[recent.group("u").rstrip("s")])
            elif recent:
                reasons = ("recent pregnancy, period not stated",)
            yield Finding("pregnancy", "pregnancy", "present", m.start(), m.end(),
                          "pregnancy-kind" if kind_of else "pregnancy", window=window, reasons=reasons)
        elif m and _NOT_STATUS.search(text) and re.search(r"^[\s\W]*(?:pregnan\w*|(?:women|females?|patients?|"
                                                         r"participants?|subjects?)\s+(?:who\s+are\s+)?pregnant)|"
                                                         r"(?:is|are|currently)\s+pregnant", text):
            yield Finding("pregnancy", "pregnancy", "present", m.start(), m.end(), "pregnancy-with-contraception")
    b = _BREASTFEEDING.search(text)
    if b and not re.search(r"intend\w*|plan\w*|breast\s*milk|pump", text[max(0, b.start() - 25):b.start()]) and \
            not re.search(r"breast\s*milk|pump", text[b.end():b.end() + 30]):
        non = bool(_NON_STATUS.search(text[max(0, b.start() - 5):b.start()]))
        yield Finding("breastfeeding", "breastfeeding", "present", b.start(), b.end(),
                      "breastfeeding-non" if non else "breastfeeding", negated=non)


# -- prior therapy --------------------------------------------------------------------------------------------
def _therapy_names(lx: Lexicons) -> PhraseIndex:
    def build() -> list[tuple[str, object]]:
        names: list[tuple[str, object]] = [(p, ("compound", codes)) for p, codes in lx.compounds.items()]
        names += [(n, ("drug", d.rxnorm)) for d in lx.drugs.values() for n in d.names]
        names += [(n, ("class", c.code)) for c in lx.classes.values() for n in c.names]
        return names
    return _index(lx, "therapy", build)


_THERAPY_CUE = re.compile(r"\b(?:prior|previous\w*|received|receiving|receive|treated|treatment\s+with|therapy\s+with|"
                          r"exposure|exposed|naive|naïve|refractory|progress\w*|failed|failure|resistant|intoleran\w*|"
                          r"concurrent|concomitant|current\w*|ongoing|history\s+of|last\s+dose|pre-?treated|within|"
                          r"underwent|undergone|had\b|use\s+of|administration|recipients?|given)\b")
_TOXICITY = re.compile(r"toxicit\w*|adverse\s+(?:event|reaction)\w*|\baes?\b|side[\s-]+effects?|recover\w*|"
                       r"immune[\s-]+(?:mediated|related)|irae|discontinued\s+(?:\w+\s+){0,3}(?:for|due\s+to)")
_WASHOUT_BEFORE = re.compile(r"(?:minimum\s+of|at\s+least|≥|>=|>|more\s+than)\s*(\d+)\s*(days?|weeks?|months?)\s+"
                             r"(?:must\s+have\s+)?(?:elapsed\s+|passed\s+)?(?:since|from|after)\s+(?:the\s+)?"
                             r"(?:last\s+(?:dose|administration|treatment)\s+(?:of|with)\s+)?(?:any\s+)?(?:prior\s+|previous\s+)?"
                             r"(?:[\w/-]+\s+){0,2}$")
_ADC_SUFFIX = re.compile(r"^[\s-]*(?:deruxtecan|emtansine|govitecan|vedotin|duocarmazine|dxd|dm1|ozogamicin)")
_THERAPY_ANTICUE = re.compile(r"amenable|curable|curative(?![\s-]+intent)|treatment\s+plan|"
                              r"hypersensitiv\w*|allerg\w*|contraindicat\w*|candidate|eligible\s+(?:for|to)|"
                              r"suitable\s+for|willing|refus\w*|scheduled|will\s+receive|to\s+receive|indicated|"
                              r"planned|plan\s+to|unable\s+to\s+receive|ineligible|not\s+(?:a\s+)?candidate|"
                              r"able\s+to\s+(?:receive|tolerate)|excipient|components?\s+of")
_THERAPY_QUALIFIERS = re.compile(r"\bfor\s+(?:metastatic|advanced|recurrent|locally|unresectable|the\s+treatment|"
                                 r"this|his|her|their)|\bin\s+the\s+(?:metastatic|advanced|adjuvant|neoadjuvant|"
                                 r"perioperative|first|second)|\bsetting\b|\badjuvant\b|\bneoadjuvant\b|\blines?\b|"
                                 r"\bregimens?\b|\bcycles?\b|\bto\s+(?:the|more|a|an|any)\b|\bto\s*(?:>|≥)|\bfield\b|palliative|"
                                 r"\blesions?\b|bone\s+marrow|\bexcept\b|other\s+than|\bsite\b|\bdoses?\b|"
                                 r"\bmonotherapy\b|\bcombination\b|\bcontaining\b|\bbased\b")


@recogniser("prior-therapy")
def prior_therapy(text: str, original: str, lx: Lexicons) -> Iterator[Finding]:
    if not _THERAPY_CUE.search(text) or _THERAPY_ANTICUE.search(text):
        return
    found: list[tuple[int, int, str]] = []
    for start, end, (what, code) in _therapy_names(lx).find(text):  # type: ignore[misc]
        word = original[start:end]
        if what != "compound" and len(word) <= 4 and word != word.upper() and not word[0].isdigit():
            continue
        found += [(start, end, c_) for c_ in code] if what == "compound" else [(start, end, code)]
    seen = set()
    for start, end, code in sorted(found):
        after = text[end:end + 25]
        before = text[max(0, start - 25):start]
        if code in seen:
            continue
        if re.search(r"(?:requir\w*|need\w*|excluding|except(?:\s+for)?|other\s+than|besides|not\s+including|"
                     r"candidates?\s+for)\s+(?:\w+\s+){0,2}$", before):
            continue  # 'infection requiring systemic therapy', '(excluding hormonal therapy)'
        if _TOXICITY.search(text[max(0, start - 60):end + 40]):
            continue  # toxicity of a therapy, not the therapy
        if code not in lx.classes and any(s_ < start and c_ in lx.classes for s_, _, c_ in found) and \
                re.search(r"(?:e\.g\.|such\s+as|including|i\.e\.)[^)]*$", text[:start]):
            continue  # an example of a class already named ('CDK4/6 inhibitors (e.g. palbociclib)')
        if _ADC_SUFFIX.match(after) or re.match(r"^[\s-]*(?:expression|positiv|negativ|status|score|tps|cps|\d|%|"
                                                r"\+|ligand)", after):
            continue
        seen.add(code)
        window = window_near(text, start, end)
        rule = "prior-therapy"
        negated = False
        washout = re.match(rf"^[^.;]{{0,40}}?{_CMP_RE}\s*(?P<n>\d+)\s*(?P<u>days?|weeks?|months?)", text[end:])
        washout2 = re.match(r"^[^.;]{0,60}?(\d+)\s*(days?|weeks?|months?)\s+or\s+(?:more|longer|greater)\s+"
                            r"(?:prior|before)", text[end:])
        if washout and _cmp(washout) in (">", ">="):
            # 'radiotherapy > 21 days prior to the first dose': none within the last 21 days
            window = (float(washout.group("n")), _UNIT_CODES[washout.group("u").rstrip("s")])
            rule, negated = "prior-therapy-washout", True
        elif washout2:
            window = (float(washout2.group(1)), _UNIT_CODES[washout2.group(2).rstrip("s")])
            rule, negated = "prior-therapy-washout", True
        elif washout3 := _WASHOUT_BEFORE.search(text[max(0, start - 90):start]):
            # 'a minimum of 2 weeks from prior PD-1/PD-L1 blockade': none within the last 2 weeks
            window = (float(washout3.group(1)), _UNIT_CODES[washout3.group(2).rstrip("s")])
            rule, negated = "prior-therapy-washout", True
        yield Finding("prior-therapy", code, "received", start, end, rule, window=window, negated=negated)


# -- stage ----------------------------------------------------------------------------------------------------
_STAGE_ORDER = ["0", "I", "IA", "IB", "II", "IIA", "IIB", "IIC", "III", "IIIA", "IIIB", "IIIC", "IV", "IVA", "IVB",
                "IVC"]
_ARABIC = {"0": "0", "1": "I", "2": "II", "3": "III", "4": "IV"}
_STAGE_TOKEN = r"(?:iv|iii|ii|i|0|[1-4])[abc]?(?![a-z0-9])"
_STAGE = re.compile(rf"\bstages?\s*(?:group\s*)?(?P<list>{_STAGE_TOKEN}(?:\s*(?:-|–|to|through|/|,?\s*or|,?\s*and|"
                    rf",?\s*and/or|,)\s*(?:stage\s*)?{_STAGE_TOKEN})*)")
_OTHER_STAGING = re.compile(r"(?:figo|ann\s+arbor|rai|binet|iss|r-iss|bclc|lugano|masaoka|enneking|inrg|durie|clark|"
                            r"child[\s-]*pugh|nyha|ckd|kidney|renal|lymphoma|hodgkin|myeloma|cll|gold|hepatic|"
                            r"pressure|sleep|heart\s+failure|pulmonary|copd|liver|fibrosis)[^.;]{0,25}$")


def _stage_code(tok: str) -> str:
    tok = tok.strip().upper()
    base, sub = (tok[:-1], tok[-1]) if tok[-1] in "ABC" else (tok, "")
    return _ARABIC.get(base, base) + sub


def _stage_set(listing: str) -> tuple[str, ...]:
    tokens = re.findall(rf"{_STAGE_TOKEN}|-|–|to|through", listing)
    codes: list[str] = []
    pending_range = False
    for t in tokens:
        if t in ("-", "–", "to", "through"):
            pending_range = bool(codes)
            continue
        code = _stage_code(t)
        if code not in _STAGE_ORDER:
            continue
        if pending_range and codes:
            a, b = _STAGE_ORDER.index(codes[-1]), _STAGE_ORDER.index(code)
            if a < b:
                codes.extend(_STAGE_ORDER[a + 1:b + 1])
        else:
            codes.append(code)
        pending_range = False
    # a substage whose group is listed adds nothing: 'IIIB-IV' -> IIIB, IIIC, IV
    out = [c for c in dict.fromkeys(codes) if not (len(c) > 1 and c[-1] in "ABC" and c[:-1] in codes)]
    return tuple(out)


# A staging system other than AJCC/TNM named right after the stage ('stage I-IV Hodgkin lymphoma', 'stage III
# COPD'): the groups are not AJCC groups.
_OTHER_STAGING_AFTER = re.compile(r"[\s)(,-]*(?:\([^)]{0,30}\)\s*)?(?:[\w-]+\s+){0,3}?"
                                  r"(?:figo|ann\s+arbor|lugano|rai|binet|iss|r-iss|wilms|neuroblastoma|mf|ss|mycosis|s[eé]zary|encephalopathy|"
                                  r"lymph[o]?edema|ulcers?|sarcoidosis|bclc|masaoka|enneking|inrg|lymphoma|hodgkin|myeloma|leuka?emia|cll|copd|"
                                  r"kidney|renal|liver|hepatic|heart|cardiac|lung\s+disease|pulmonary|fibrosis|"
                                  r"pressure|sleep|ckd|hypertension)\b")
_SIBLING_LETTERS = re.compile(r"(?:\s*(?:,|/|or|and)\s*[a-d])+\b")
# 'advanced (stage IIIB-IV)', 'stage III or metastatic': metastatic disease is stage IV.
_METASTATIC_ALTERNATIVE = re.compile(r"[^.;()]{0,40}?\bor\s+(?:\w+\s+)?metastatic\b|"
                                     r"[^.;()]{0,80}\)[\s,]*or\s+(?:\w+\s+)?metastatic\b")


@recogniser("stage")
def stage(text: str, original: str, lx: Lexicons) -> Iterator[Finding]:
    for m in _STAGE.finditer(text):
        before = text[max(0, m.start() - 40):m.start()]
        after = _OTHER_STAGING_AFTER.match(text, m.end())
        system = "figo-stage" if "figo" in before or (after and "figo" in after.group(0)) else \
            "ann-arbor" if "ann arbor" in before or (after and re.search(r"ann\s+arbor|lymphoma|hodgkin",
                                                                        after.group(0))) else "stage"
        if system == "stage" and (_OTHER_STAGING.search(before) or after):
            continue
        if re.match(r"\s*(?:renal|kidney|liver|heart)", text[m.end():m.end() + 12]) or \
                re.search(r"\b(?:end|[tnm])[\s-]*$", text[max(0, m.start() - 6):m.start()]):
            continue  # 'end-stage', 'T stage 1-3' (a TNM category, not a stage group)
        if re.search(r"\b(?:therap\w*|treatment|regimens?|chemotherapy|treated)\s+(?:\w+\s+){0,2}for\s+(?:\w+\s+)?$",
                     text[max(0, m.start() - 60):m.start()]):
            continue  # 'no previous systemic therapy for stage IV disease': the stage of the therapy's setting
        codes = _stage_set(m.group("list"))
        arabic = not re.search(r"[iv]", m.group("list"))
        if arabic and (m.group(0).startswith("stages") or re.match(r"\s*:", text[m.end():m.end() + 3]) or
                       re.search(r"(?:study|part|phase|step|cohort|arm)\b[^.;:]{0,30}$",
                                 text[max(0, m.start() - 42):m.start()])):
            continue  # 'Stages 1 and 2:' of the study, not of the cancer
        if codes and _SIBLING_LETTERS.match(text, m.end()):
            # 'stage IIIB, C or D': sibling substages written as letters (some, like IIID, have no code of ours): the
            # whole group, so that no patient of a listed substage is left out
            group = codes[-1].rstrip("ABC")
            codes = tuple(c for c in codes if not c.startswith(group)) + (group,)
        if codes and "IV" not in codes and (_METASTATIC_ALTERNATIVE.match(text, m.end()) or
                                           re.search(r"\bmetastatic\s+or\s+(?:\w+\s+){0,2}\(?\s*$",
                                                     text[max(0, m.start() - 40):m.start()])):
            codes = (*codes, "IV")  # 'stage III or metastatic': stage IV is the metastatic alternative
        if codes:
            # FIGO (gynaecological) and Ann Arbor (lymphoma) groups use the same numerals as AJCC groups (AJCC 8th
            # edition adopts FIGO's for gynaecological sites); the concept says which system the text named
            yield Finding("stage", system, codes, m.start(), m.end(), "stage-group" if system == "stage" else system)


# -- other malignancy -----------------------------------------------------------------------------------------
_OTHER_MALIGNANCY = re.compile(
    r"(?:other|another|second|secondary|prior|previous|concurrent|concomitant|additional|separate|active|"
    r"history\s+of|diagnosis\s+of)\s+(?:\w+\s+){0,3}?(?:primary\s+)?(?:malignanc\w*|cancers?|carcinoma|"
    r"neoplasms?|tumou?rs?)\b|malignanc\w*\s+(?:other\s+than|besides|apart\s+from)")
_YEARS = re.compile(r"(?:within|in\s+the\s+(?:last|past|previous|preceding)|during\s+the\s+(?:last|past)|<|≤|<=|"
                    r"free\s+(?:\w+\s+){0,3}for\s+(?:at\s+least\s+|(?:greater|more)\s+than\s+)?|"
                    r"for\s+(?:at\s+least\s+|(?:greater|more)\s+than\s+)?|past|last)\s*(?:the\s+)?"
                    r"(?:last\s+|past\s+|previous\s+)?(\d+|one|two|three|four|five|ten)\s*(?:\(\d+\)\s*)?"
                    r"(?:years?|yrs?)")


# 'malignancy with less than 2 years of complete remission': a malignancy within the last 2 years
_REMISSION_YEARS = re.compile(r"(?:less\s+than|fewer\s+than|<|under)\s*(\d+|one|two|three|four|five|ten)\s*"
                              r"(?:\(\d+\)\s*)?(?:years?|yrs?)\s+(?:of\s+|in\s+)?(?:complete\s+|continuous\s+)?(?:remission|disease[\s-]free)")
_ACTIVE_MALIGNANCY = re.compile(r"\bactive\b|requir\w*\s+(?:\w+\s+){0,2}(?:treatment|therapy)|"
                                r"(?:treatment|therapy)\s+is\s+(?:currently\s+)?required|currently\s+(?:being\s+)?treated|"
                                r"under(?:going)?\s+(?:active\s+)?treatment")


@recogniser("other-malignancy")
def other_malignancy(text: str, original: str, lx: Lexicons) -> Iterator[Finding]:
    m = _OTHER_MALIGNANCY.search(text)
    if not m:
        return
    if re.search(r"family\s+history|first[\s-]+degree|relative", text):
        return
    phrase = m.group(0)
    if re.match(r"^[\s-]*(?:therap|treatment|drug|agent|regimen|directed)", text[m.end():m.end() + 15]):
        return
    if not re.search(r"other|another|second|additional|separate|concurrent|concomitant|prior|previous|history|"
                     r"besides|apart", phrase):
        return
    y = _YEARS.search(text) or _REMISSION_YEARS.search(text)
    window = None
    if y:
        n = y.group(1)
        window = (float(_WORD_NUMBERS.get(n, n)), "a")  # type: ignore[arg-type]
    # 'another malignancy requiring treatment', 'active second malignancy': one active now, not any in the history
    active = window is None and bool(_ACTIVE_MALIGNANCY.search(text))
    yield Finding("other-malignancy", "other malignancy", "present", m.start(), m.end(), "other-malignancy",
                  window=window, qualifiers=("active",) if active else ())


# -- general diagnoses (mappings/lexicons/diagnoses.yaml) -------------------------------------------------------
# Words beside a diagnosis that the records cannot confirm ('uncontrolled hypertension', 'clinically significant
# heart failure', 'NYHA class III or IV'): the characteristic is written, at medium confidence.
_DIAGNOSIS_QUALIFIER = re.compile(
    r"\b(?:uncontrolled|poorly[\s-]+controlled|not\s+(?:well[\s-]+)?controlled|clinically[\s-]+(?:significant|"
    r"relevant|active|unstable)|significant|severe|moderate|symptomatic|unstable|decompensated|serious|"
    r"requir\w*|nyha|class\s+(?:i{1,3}|iv|[1-4])\b|grade\s*(?:[1-4]|i{1,3}|iv)\b|gold|evidence\s+of|"
    r"suspect\w*|risk\s+of|predispos\w*|treated|medication|drug[\s-]+induced|steroid|immunosuppress\w*|"
    r"test\w*|screen\w*|latent|child[\s-]*pugh|new\s+york\s+heart|ejection|related|induced|associated|"
    r"affecting|involving|index|risk\s+factors?|grade|any\s+severity|at\s+risk|insulin|controlled|stable|"
    r"major\s+organ|exceptions?|allowed|permitted|eligible)")
_DIAGNOSIS_EXAMPLE = re.compile(r"(?:\be[.,]?\s?g\b[.,]?|such\s+as|including|like|\bi\.\s?e\b\.?|examples?|"
                                r"for\s+instance|as\s+listed|as\s+follows|the\s+following)(?:[^.;:]|\.(?=\s?g\b|\s?e\b|,))*$")
# A narrower or study-specific kind named just before ('isolated brainstem stroke', 'index stroke', 'post stroke',
# 'recent myocardial infarction' with no period stated).
_NARROWER_BEFORE = re.compile(r"\b(?:post|index|isolated|qualifying|brainstem|cerebellar|lacunar|ha?emorrhagic|"
                              r"embolic|minor|mild|recent|small|focal|localized|localised|limited)[\s-]+(?:[\w-]+\s+){0,2}$")
# Another disease the words before the name make of it: 'portal hypertension', 'pulmonary hypertension'.
_OTHER_DISEASE_BEFORE = re.compile(r"(?:\bpre|portal|pulmonary|intracranial|ocular|gestational|pregnancy[\s-]induced|"
                                   r"renal|renovascular|white[\s-]coat|steroid[\s-]induced|drug[\s-]induced|"
                                   r"radiation|immune[\s-]related|checkpoint[\s-]inhibitor)[\s-]*$")
_PAST_YEAR = re.compile(r"(?:in|within|during)\s+(?:the\s+)?(?:past|last|previous|prior|preceding)\s+year\b")


@recogniser("diagnosis")
def diagnoses(text: str, original: str, lx: Lexicons) -> Iterator[Finding]:
    from gateway.mapping.eligibility.diagnoses import find_diagnoses

    for start, end, diag in find_diagnoses(text, original):
        if diag.key == "gilbert-syndrome":
            continue  # named as an exception to a bilirubin limit, not as an exclusion of its own
        if re.match(r"[\s-]*(?:medication|drug|therap|treatment|agent|prophyla)", text[end:end + 14]):
            continue  # 'anti-epileptic medication', 'tuberculosis prophylaxis': a therapy, not the disease
        if _OTHER_DISEASE_BEFORE.search(text, max(0, start - 30), start):
            continue  # 'portal hypertension' is not hypertension
        if re.search(r"with\s+or\s+without|\+\s*/\s*-|and/or\s+without", text[max(0, start - 60):start]):
            continue  # 'with or without diabetes': neither required nor excluded
        text = _ABBREVIATION_DOT.sub(lambda m: m.group(0).replace(".", ","), text)  # 'i.e. ' ends no sentence
        cs = max(text.rfind(". ", 0, start), text.rfind(";", 0, start), text.rfind(",", 0, start), -1) + 1
        ce = min([i for i in (text.find(". ", end), text.find(";", end), text.find(",", end)) if i >= 0],
                 default=len(text))
        reasons: list[str] = []
        # the diagnosis' own name may hold a severity ('severe copd'): only the words around it count
        # a qualifier before a list reaches every item ('clinically significant liver disease, including ..., or
        # cirrhosis'); after the mention, only its own item
        ss = max(text.rfind(". ", 0, start), text.rfind(";", 0, start), -1) + 1
        se = min([i for i in (text.find(". ", end), text.find(";", end)) if i >= 0], default=len(text))
        around = text[ss:start] + " " + text[end:max(ce, min(se, end + 120))]
        if _DIAGNOSIS_QUALIFIER.search(around):
            reasons.append("qualified diagnosis")
        if _DIAGNOSIS_EXAMPLE.search(text[max(ss, start - 400):start]):
            reasons.append("an example of a broader condition")
        if _NARROWER_BEFORE.search(text, max(0, start - 40), start):
            reasons.append("a narrower kind")
        if re.match(r"\s*(?:\([^()]*\)\s*)?(?:exacerbations?|flares?)\b", text[end:se]):
            reasons.append("an event of the disease")  # 'no COPD exacerbation or other acute respiratory illness'
        if re.search(r"\d+\s*(?:-|–|to)\s*\d+\s*(?:days?|weeks?|months?|years?)", text[end:se]):
            reasons.append("a period not read")  # 'within 6-12 months
        history = bool(re.search(r"\bhistory\s+of\b|\bprior\b|\bprevious\b|\bpast\b", text[cs:start]))
        window = window_near(text, start, end)
        colon = text.rfind(":", 0, start)
        if window is None and colon > 0:
            window = window_in(text[:colon])  # 'History within 6 months of: heart failure; myocardial infarction'
        if window is None and _PAST_YEAR.search(text, end, se):
            window = (1.0, "a")  # 'CVA or TIA in past year'
        yield Finding("diagnosis", diag.key, "present", start, end, "diagnosis",
                      window=window, qualifiers=("history",) if history else (),
                      reasons=tuple(reasons))


# -- not checkable from an EHR --------------------------------------------------------------------------------
NOT_CHECKABLE = re.compile(
    r"life\s+expectancy|measurable\s+(?:disease|lesion)|evaluable\s+disease|recist|informed\s+consent|\bconsent\b|"
    r"willing\w*|able\s+to\s+(?:comply|understand|swallow|provide)|comply|compliance|contracept\w*|"
    r"\bagree\w*|geographic\w*|psychiatric\s+illness.{0,40}limit|investigator|opinion|signed|"
    r"\bbiopsy\b.{0,40}(?:available|provide|willing|archival)|archival\s+tissue|tissue\s+(?:sample|block)s?\s+"
    r"(?:available|must)", re.IGNORECASE)


__all__ = ["Finding", "HIGH", "MEDIUM", "NOT_CHECKABLE", "RECOGNISERS", "clean", "replace", "window_in"]
