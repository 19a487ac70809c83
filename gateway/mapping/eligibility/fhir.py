"""Findings -> Group.characteristic entries and Group extensions, in the shapes docs/eligibility.md defines.

>>> group = annotate_group({"resourceType": "Group", "type": "person", "actual": False,
...     "extension": [{"url": EXT_ELIGIBILITY_TEXT, "valueMarkdown": "Inclusion Criteria:\\n* ECOG 0-1"}]})
>>> group["characteristic"][0]["valueRange"]
{'low': {'value': 0}, 'high': {'value': 1}}
"""

from __future__ import annotations

import re

from gateway.fhir import conventions as c
from gateway.mapping.eligibility.extract import CriterionResult, Extraction, extract, extract_cached
from gateway.mapping.eligibility.recognise import Finding
from gateway.terminology.lexicons import Lexicons, default_lexicons

EXT_ELIGIBILITY_TEXT = c.EXT_ELIGIBILITY_TEXT
_UCUM_DURATION = {"d": "days", "wk": "weeks", "mo": "months", "a": "years"}
_PS = {"ecog": (c.ECOG, "ECOG Performance Status score"), "karnofsky": (c.KARNOFSKY, "Karnofsky Performance Status"),
       "lansky": (c.LANSKY, "Lansky Play-Performance Status")}
_RECEPTORS = {"ER": (c.ER_STATUS, "Estrogen receptor status"), "PR": (c.PR_STATUS, "Progesterone receptor status"),
              "HER2": (c.HER2_STATUS, "HER2 status"),
              "HR": (c.HORMONE_RECEPTOR, "Hormone receptor status (ER or PR)")}
_INFECTIONS = {"HIV": (c.HIV_INFECTION, "Human immunodeficiency virus infection"),
               "HBV": (c.HEPATITIS_B, "Viral hepatitis type B"), "HBV ": (c.HEPATITIS_B, "Viral hepatitis type B"),
               "HCV": (c.HEPATITIS_C, "Viral hepatitis type C")}
_SCT_STATUS = {"positive": (c.SCT_POSITIVE, "Positive"), "negative": (c.SCT_NEGATIVE, "Negative")}


def _coding(pair: tuple[str, str], display: str | None = None) -> dict:
    out = {"system": pair[0], "code": pair[1]}
    if display:
        out["display"] = display
    return out


def _concept(pair: tuple[str, str], display: str) -> dict:
    return {"coding": [_coding(pair, display)], "text": display}


def _num(v: float) -> int | float:
    return int(v) if float(v).is_integer() else v


def _source(f: Finding, r: CriterionResult) -> dict:
    crit = r.criterion
    return {"url": c.EXT_CRITERION_SOURCE, "extension": [
        {"url": "text", "valueString": crit.text},
        {"url": "start", "valueInteger": crit.start},
        {"url": "end", "valueInteger": crit.end},
        {"url": "section", "valueCode": crit.section},
        {"url": "rule", "valueString": f.rule},
        {"url": "confidence", "valueCode": f.confidence}]}


def characteristic(f: Finding, r: CriterionResult, lx: Lexicons) -> dict | None:
    """One finding as a Group.characteristic (None for a finding with no agreed shape, e.g. 'HER2-low')."""
    exclude = f.exclude
    ext: list[dict] = [_source(f, r)]
    out: dict
    if f.kind in _PS:
        pair, display = _PS[f.kind]
        lo, hi = f.value  # type: ignore[misc]
        out = {"code": _concept(pair, display), "valueRange": {"low": {"value": _num(lo)}, "high": {"value": _num(hi)}}}
    elif f.kind == "lab":
        sym, value, unit = f.value  # type: ignore[misc]
        analyte = lx.analytes[f.concept]
        q: dict = {"value": _num(value)}
        if sym != "=":
            q["comparator"] = sym
        q.update({"unit": "x ULN" if unit == c.UNIT_ULN else unit, "system": c.UCUM, "code": unit})
        out = {"code": {"coding": [_coding((c.LOINC, analyte.loinc[0]), analyte.display)], "text": analyte.display},
               "valueQuantity": q}
    elif f.kind == "variant":
        gene = lx.genes[f.concept]
        present = f.value == "present"
        value = _concept(c.VARIANT_PRESENT, "Present") if present else _concept(c.VARIANT_ABSENT, "Absent")
        out = {"code": _concept(c.GENETIC_VARIANT, "Genetic variant assessment"), "valueCodeableConcept": value}
        ext.append({"url": c.EXT_CHARACTERISTIC_GENE, "valueCodeableConcept": {
            "coding": [{"system": c.HGNC, "code": gene.hgnc, "display": gene.symbol}], "text": gene.symbol}})
        ext += [{"url": c.EXT_CHARACTERISTIC_VARIANT, "valueString": v} for v in f.variants]
    elif f.kind == "receptor":
        if f.value not in _SCT_STATUS:
            return None
        pair, display = _RECEPTORS[f.concept]
        out = {"code": _concept(pair, display), "valueCodeableConcept": _concept(*_SCT_STATUS[str(f.value)])}
    elif f.kind == "msi":
        out = {"code": _concept(c.MSI_STATUS, "Microsatellite instability"),
               "valueCodeableConcept": _concept(c.MSI_HIGH, "MSI-H")}
        exclude = exclude if f.value == "present" else not exclude
    elif f.kind == "mmr":
        out = {"code": _concept(c.MMR_DEFICIENT, "Mismatch repair deficient (dMMR)"), "valueBoolean": True}
        exclude = exclude if f.value == "present" else not exclude
    elif f.kind == "pdl1":
        if isinstance(f.value, tuple):
            sym, value, unit = f.value
            pair = c.PDL1_CPS if "CPS" in f.concept else c.PDL1_TPS
            label = "PD-L1 combined positive score" if "CPS" in f.concept else "PD-L1 tumour proportion score"
            out = {"code": _concept(pair, label), "valueQuantity": {"value": _num(value), "comparator": sym,
                                                                      "unit": unit, "system": c.UCUM, "code": unit}}
        elif f.value in _SCT_STATUS:
            out = {"code": _concept(c.PDL1_STATUS, "PD-L1 status"),
                   "valueCodeableConcept": _concept(*_SCT_STATUS[str(f.value)])}
        else:
            return None
    elif f.kind == "cns":
        out = {"code": _concept(c.DIAGNOSIS, "Diagnosis"),
               "valueCodeableConcept": _concept(c.CNS_METASTASES, "Secondary malignant neoplasm of brain")}
        ext += [{"url": c.EXT_CHARACTERISTIC_QUALIFIER, "valueCode": q} for q in f.qualifiers]
    elif f.kind == "infection":
        pair, display = _INFECTIONS[f.concept]
        out = {"code": _concept(c.DIAGNOSIS, "Diagnosis"), "valueCodeableConcept": _concept(pair, display)}
    elif f.kind in ("pregnancy", "breastfeeding"):
        pair = c.PREGNANCY if f.kind == "pregnancy" else c.BREASTFEEDING
        out = {"code": _concept(pair, "Pregnant" if f.kind == "pregnancy" else "Breastfeeding"), "valueBoolean": True}
    elif f.kind == "prior-therapy":
        if f.concept in lx.classes:
            cls = lx.classes[f.concept]
            value = _concept((c.DRUG_CLASS_CS, cls.code), cls.display)
        else:
            drug = lx.drug(f.concept)
            if drug is None:
                return None
            value = _concept((c.RXNORM, drug.rxnorm), drug.key)
        out = {"code": _concept(c.PRIOR_THERAPY, "Prior therapy"), "valueCodeableConcept": value}
    elif f.kind == "stage":
        codings = []
        for s in f.value:  # type: ignore[union-attr]
            codings.append(_coding((c.AJCC_STAGE_CS, s), f"Stage {s}"))
        label = {"figo-stage": "FIGO stage ", "ann-arbor": "Ann Arbor stage "}.get(f.concept, "Stage ") + \
            ", ".join(f.value)  # type: ignore[arg-type]
        out = {"code": _concept(c.STAGE_GROUP, "Cancer stage group"), "valueCodeableConcept": {
            "coding": codings, "text": label}}
    elif f.kind == "diagnosis":
        from gateway.mapping.eligibility.diagnoses import default_diagnoses

        diag = default_diagnoses().by_key.get(f.concept)
        if diag is None:
            return None
        # the concept first, then the subtypes a record may carry: the codings are alternatives
        out = {"code": _concept(c.DIAGNOSIS, "Diagnosis"), "valueCodeableConcept": {
            "coding": [_coding((c.SNOMED, code), diag.display if code == diag.snomed else None)
                       for code in diag.codes], "text": diag.display}}
        ext += [{"url": c.EXT_CHARACTERISTIC_QUALIFIER, "valueCode": q} for q in f.qualifiers]
    elif f.kind == "other-malignancy":
        out = {"code": _concept(c.OTHER_MALIGNANCY, "Other malignancy"),
               "valueCodeableConcept": _concept(c.MALIGNANCY, "Malignant neoplastic disease")}
    else:
        return None
    if f.exceptions:
        from gateway.mapping.eligibility.diagnoses import default_diagnoses

        # 'bilirubin <= 1.5 x ULN (excepting Gilbert's syndrome)': waived for a patient with the diagnosis
        for key in f.exceptions:
            diag = default_diagnoses().by_key.get(key)
            if diag is None:
                return None
            ext += [{"url": c.EXT_CHARACTERISTIC_QUALIFIER, "valueCode": f"{c.QUALIFIER_UNLESS_PREFIX}{code}"}
                    for code in diag.codes]
    if f.window is not None:
        n, unit = f.window
        ext.append({"url": c.EXT_CRITERION_LOOKBACK, "valueDuration": {
            "value": _num(n), "unit": _UCUM_DURATION[unit], "system": c.UCUM, "code": unit}})
    return {"extension": ext, **out, "exclude": exclude}


def condition_characteristics(term: str, findings: list[Finding], lx: Lexicons | None = None) -> list[dict]:
    """The qualifiers of a study's condition phrase ('EGFR-mutant NSCLC') as characteristics; their source is the
    phrase (no offsets: it is not in the criteria text), rule 'condition-qualifier'."""
    from gateway.mapping.eligibility.split import Criterion

    lx = lx or default_lexicons()
    r = CriterionResult(Criterion(term, 0, len(term), "inclusion"), tuple(findings))
    out = []
    for f in findings:
        ch = characteristic(f, r, lx)
        if ch is None:
            continue
        src = ch["extension"][0]
        src["extension"] = [e for e in src["extension"] if e["url"] not in ("start", "end")]
        for e in src["extension"]:
            if e["url"] == "rule":
                e["valueString"] = f"condition-qualifier:{f.rule}"
        out.append(ch)
    return out


def _unstructured(r: CriterionResult, reason: str) -> dict:
    crit = r.criterion
    return {"url": c.EXT_UNSTRUCTURED_CRITERION, "extension": [
        {"url": "text", "valueString": crit.text},
        {"url": "start", "valueInteger": crit.start},
        {"url": "end", "valueInteger": crit.end},
        {"url": "section", "valueCode": crit.section},
        {"url": "reason", "valueCode": reason}]}


def group_parts(ex: Extraction, lx: Lexicons | None = None) -> tuple[list[dict], list[dict]]:
    """(characteristics, Group extensions: unstructured criteria and the count) of one extraction."""
    lx = lx or default_lexicons()
    chars: list[dict] = []
    exts: list[dict] = []
    structured = 0
    for r in ex.results:
        made = [ch for ch in (characteristic(f, r, lx) for f in r.findings) if ch is not None]
        if made:
            structured += 1
            chars.extend(made)
        else:
            exts.append(_unstructured(r, r.reason or "low-confidence"))
    exts.append({"url": c.EXT_CRITERIA_COUNT, "extension": [{"url": "total", "valueInteger": ex.total},
                                                           {"url": "structured", "valueInteger": structured}]})
    return chars, exts


def is_extracted(ch: dict) -> bool:
    """True for a characteristic the extractor made (it carries criterion-source)."""
    return any(e.get("url") == c.EXT_CRITERION_SOURCE for e in ch.get("extension") or [])


def _same_key(ch: dict) -> tuple:
    """What makes two characteristics 'the same criterion': the code, and for coded values the value's codes."""
    code = tuple(sorted((x.get("system"), x.get("code")) for x in (ch.get("code") or {}).get("coding") or []))
    value = ch.get("valueCodeableConcept")
    if isinstance(value, dict) and code and code[0] in (c.DIAGNOSIS, c.PRIOR_THERAPY, c.GENETIC_VARIANT):
        gene = [e.get("valueCodeableConcept") for e in ch.get("extension") or []
                if e.get("url") == c.EXT_CHARACTERISTIC_GENE]
        vals = tuple(sorted((x.get("system"), x.get("code")) for x in value.get("coding") or []))
        return code, vals, str(gene)
    return (code,)


_GROUP_EXTS = frozenset({c.EXT_UNSTRUCTURED_CRITERION, c.EXT_CRITERIA_COUNT})


def annotate_group(group: dict, *, lexicons: Lexicons | None = None) -> dict:
    """The Group with characteristics extracted from its verbatim criteria text (a new dict; no text: unchanged).

    Characteristics without criterion-source (a sponsor's, or the registry's structured age and sex) are kept and
    win: an extracted characteristic with the same code (and, for diagnoses, therapies and variants, the same
    value) is not added. Earlier extracted characteristics and counts are replaced.
    """
    text = next((e.get("valueMarkdown") or e.get("valueString") for e in group.get("extension") or []
                 if e.get("url") == EXT_ELIGIBILITY_TEXT), None)
    if not isinstance(text, str) or not text.strip():
        return group
    ex = extract_cached(text) if lexicons is None else extract(text, lexicons)
    chars, exts = group_parts(ex, lexicons)
    kept = [ch for ch in group.get("characteristic") or [] if not is_extracted(ch)]
    taken = {_same_key(ch) for ch in kept}
    out = dict(group)
    out["characteristic"] = kept + [ch for ch in chars if _same_key(ch) not in taken]
    out["extension"] = [e for e in group.get("extension") or [] if e.get("url") not in _GROUP_EXTS] + exts
    if not out["characteristic"]:
        out.pop("characteristic")
    return out


def _objects(value: object) -> bool:
    """Absent, or a list of JSON objects (the only shapes annotate_group reads)."""
    return value is None or (isinstance(value, list) and all(isinstance(x, dict) for x in value))


def annotate_pushed_group(resource: object) -> object:
    """The service's pre-write transform (FhirService.transforms): a pushed eligibility Group gets its criteria text
    extracted before it is validated and stored; anything else passes unchanged.

    Applies to a ``Group`` with ``actual`` false that carries ``eligibility-criteria-text``. A Group carrying
    ``eligibility-criteria-reviewed`` (a person corrected it) is stored as sent. A malformed Group (extension or
    characteristic not a list of objects) is left for validation to refuse with 400. Deterministic (same text and
    lexicons, same output), so an unchanged re-push stays "unchanged".
    """
    if not isinstance(resource, dict) or resource.get("resourceType") != "Group" or resource.get("actual") is not False:
        return resource
    exts, chars = resource.get("extension"), resource.get("characteristic")
    if not _objects(exts) or not _objects(chars):
        return resource
    if any(not _objects(ch.get("extension")) for ch in chars or []):
        return resource
    urls = {e.get("url") for e in exts or []}
    if EXT_ELIGIBILITY_TEXT not in urls or c.EXT_CRITERIA_REVIEWED in urls:
        return resource
    return _sponsor_covered(annotate_group(resource))


# A criterion stating an age limit: "Aged 18 to 70", "Age >= 18 years", "18 years of age or older".
_AGE_LINE = re.compile(r"\bage[ds]?\b[^.;]*\d|\d+\s*(?:years?|yrs?)\s*(?:of\s+age|old|or\s+older)", re.IGNORECASE)
# Words too general to say which diagnosis a criterion names.
_GENERIC = frozenset({"cancer", "cancers", "tumor", "tumors", "tumour", "tumours", "carcinoma", "neoplasm", "neoplasms",
                      "malignant", "malignancy", "disease", "primary", "secondary", "disorder", "advanced",
                      "metastatic", "recurrent", "chronic", "acute", "syndrome", "stage", "grade", "other"})
_WORD = re.compile(r"[a-z0-9]+")


def _labels(concept: object) -> set[str]:
    """The distinctive words (5+ letters, not generic) of a CodeableConcept's text and codings' displays."""
    if not isinstance(concept, dict):
        return set()
    texts = [concept.get("text")] + [x.get("display") for x in concept.get("coding") or [] if isinstance(x, dict)]
    return {w for t in texts if isinstance(t, str) for w in _WORD.findall(t.lower())
            if len(w) >= 5 and w not in _GENERIC}


def _sponsor_covered(group: dict) -> dict:
    """A pushed Group's criteria left as text ("not-recognised") that the sponsor's own characteristics state are
    not "unchecked": an inclusion line naming the sponsor's included diagnosis ("Histologically confirmed
    glioblastoma" beside a Diagnosis "Glioblastoma multiforme") or stating an age limit beside the sponsor's Age.
    They count as structured in eligibility-criteria-count; every other criterion stays text."""
    sponsor = [ch for ch in group.get("characteristic") or [] if not is_extracted(ch)]
    has_age = any(c.AGE in _codes(ch.get("code")) for ch in sponsor)
    words: set[str] = set()
    for ch in sponsor:
        if c.DIAGNOSIS in _codes(ch.get("code")) and ch.get("exclude") is not True:
            words |= _labels(ch.get("valueCodeableConcept"))
    if not has_age and not words:
        return group

    def covered(ext: dict) -> bool:
        sub = {x.get("url"): next((v for k, v in x.items() if k.startswith("value")), None)
               for x in ext.get("extension") or []}
        text = sub.get("text")
        if sub.get("section") != "inclusion" or sub.get("reason") != "not-recognised" or not isinstance(text, str):
            return False
        return bool(has_age and _AGE_LINE.search(text)) or bool(words & set(_WORD.findall(text.lower())))

    drop = [e for e in group.get("extension") or [] if e.get("url") == c.EXT_UNSTRUCTURED_CRITERION and covered(e)]
    if not drop:
        return group
    out = dict(group)
    exts = []
    for e in group.get("extension") or []:
        if any(e is d for d in drop):
            continue
        if e.get("url") == c.EXT_CRITERIA_COUNT:
            e = {**e, "extension": [{**x, "valueInteger": x["valueInteger"] + len(drop)}
                                    if x.get("url") == "structured" else x for x in e.get("extension") or []]}
        exts.append(e)
    out["extension"] = exts
    return out


def registry_age_covered(exts: list[dict], ages: set[int]) -> list[dict]:
    """A registry record's Group extensions with its inclusion age line ("Age >= 18 years", "Aged 18 to 75")
    counted as structured when every age the line states is one of the registry's structured ages (``ages``, in
    years): the registry's Age characteristic checks it. A line stating another age stays text."""
    if not ages:
        return exts

    def covered(ext: dict) -> bool:
        if ext.get("url") != c.EXT_UNSTRUCTURED_CRITERION:
            return False
        sub = {x.get("url"): next((v for k, v in x.items() if k.startswith("value")), None)
               for x in ext.get("extension") or []}
        text = sub.get("text")
        if sub.get("section") != "inclusion" or sub.get("reason") != "not-recognised" or not isinstance(text, str) \
                or not _AGE_LINE.search(text) or len(text) > 200:
            return False
        stated = {int(n) for n in re.findall(r"\d+", text)}  # every number: 'Age 18-70', '... and 2 prior lines'
        return bool(stated) and stated <= ages

    drop = sum(1 for e in exts if covered(e))
    if not drop:
        return exts
    out = []
    for e in exts:
        if covered(e):
            continue
        if e.get("url") == c.EXT_CRITERIA_COUNT:
            e = {**e, "extension": [{**x, "valueInteger": x["valueInteger"] + drop}
                                    if x.get("url") == "structured" else x for x in e.get("extension") or []]}
        out.append(e)
    return out


def _codes(concept: object) -> set[tuple[str, str]]:
    if not isinstance(concept, dict):
        return set()
    return {(x.get("system"), x.get("code")) for x in concept.get("coding") or [] if isinstance(x, dict)}


def review_lines(group: dict) -> list[str]:
    """A Group's extraction as lines a person can check: each characteristic with its source span and confidence,
    then each criterion left as text with the reason."""
    lines = []
    for ch in group.get("characteristic") or []:
        src = next((e for e in ch.get("extension") or [] if e.get("url") == c.EXT_CRITERION_SOURCE), None)
        what = describe(ch)
        if src is None:
            lines.append(f"  [given]  {what}")
            continue
        parts = {e["url"]: next(v for k, v in e.items() if k.startswith("value")) for e in src["extension"]}
        where = f"{parts['start']}-{parts['end']}" if "start" in parts else "condition"
        lines.append(f"  [{parts['confidence']:<6}] {what}  <- {parts['section']} {where} "
                     f"{_short(parts['text'])!r} ({parts['rule']})")
    for e in group.get("extension") or []:
        if e.get("url") == c.EXT_UNSTRUCTURED_CRITERION:
            parts = {x["url"]: next(v for k, v in x.items() if k.startswith("value")) for x in e["extension"]}
            lines.append(f"  [text: {parts['reason']}] {parts['section']} {parts['start']}-{parts['end']} "
                         f"{_short(parts['text'])!r}")
    return lines


def _short(text: str, n: int = 90) -> str:
    t = " ".join(text.split())
    return t if len(t) <= n else t[: n - 3] + "..."


def describe(ch: dict) -> str:
    """'exclude Diagnosis = Secondary malignant neoplasm of brain [untreated]' (for review output)."""
    code = (ch.get("code") or {}).get("text") or "?"
    if "valueRange" in ch:
        r = ch["valueRange"]
        v = f"{(r.get('low') or {}).get('value', '')}-{(r.get('high') or {}).get('value', '')}"
    elif "valueQuantity" in ch:
        q = ch["valueQuantity"]
        v = f"{q.get('comparator', '')}{q.get('value')} {q.get('unit', '')}"
    elif "valueCodeableConcept" in ch:
        v = ch["valueCodeableConcept"].get("text") or ""
    else:
        v = str(ch.get("valueBoolean", ""))
    extras = [e.get("valueString") or e.get("valueCode") or (e.get("valueCodeableConcept") or {}).get("text")
              for e in ch.get("extension") or [] if e.get("url") in (c.EXT_CHARACTERISTIC_GENE,
                                                                    c.EXT_CHARACTERISTIC_VARIANT,
                                                                    c.EXT_CHARACTERISTIC_QUALIFIER)]
    window = next((e["valueDuration"] for e in ch.get("extension") or [] if e.get("url") == c.EXT_CRITERION_LOOKBACK),
                  None)
    unless = [str(x)[len(c.QUALIFIER_UNLESS_PREFIX):] for x in extras if str(x).startswith(c.QUALIFIER_UNLESS_PREFIX)]
    if unless:
        from gateway.mapping.eligibility.diagnoses import default_diagnoses

        # one name per diagnosis (its subtypes' codes travel too): 'unless Gilbert's syndrome'
        names = dict.fromkeys(d.display for u in unless if (d := default_diagnoses().by_code(u))) or \
            {f"SNOMED CT {unless[0]}": None}
        extras = [x for x in extras if not str(x).startswith(c.QUALIFIER_UNLESS_PREFIX)] + \
            [f"unless {' or '.join(names)}"]
    out = f"{'exclude' if ch.get('exclude') else 'include'} {code} = {v}"
    if extras:
        out += f" [{', '.join(str(x) for x in extras)}]"
    if window:
        out += f" within {window['value']} {window['unit']}"
    return out


__all__ = ["annotate_group", "characteristic", "condition_characteristics", "describe", "group_parts", "is_extracted",
           "review_lines"]
