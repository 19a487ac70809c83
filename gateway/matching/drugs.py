"""Therapy codes widened through the lexicon: a product-level RxNorm code also counts as its ingredient and classes,
and so does an NHS dm+d id (VTM or VMP) the lexicon lists for a drug (system https://dmd.nhs.uk, the older
https://fhir.nhs.uk/Id/dmd, or SNOMED CT, since dm+d ids are SNOMED CT identifiers): it counts as the drug's RxNorm
ingredient and its classes, exactly as an RxNorm product code does.

>>> [c for _, c in expand((("http://www.nlm.nih.gov/research/umls/rxnorm", "1873980"),))]  # ribociclib product
['1873980', '1873916', 'cdk4-6-inhibitor']

Drug classes and ingredients are data (mappings/lexicons/drugs.yaml, gateway.terminology.lexicons); the only
table here names the few SNOMED CT procedures that are a therapy class criteria speak of (radiotherapy, stem-cell
transplant), because procedures are not drugs and the drug lexicon does not list them.
"""

from __future__ import annotations

import re
from functools import lru_cache

from gateway.fhir import conventions as cv
from gateway.matching.terms import DMD_SYSTEMS, Code

# SNOMED CT procedures -> our drug-class code (conventions: radiotherapy and stem-cell transplant are classes).
PROCEDURE_CLASSES: dict[str, str] = {
    "108290001": "radiotherapy",  # Radiation oncology AND/OR radiotherapy (procedure)
    "1287742003": "radiotherapy",  # Radiotherapy (procedure)
    "33195004": "radiotherapy",  # External beam radiation therapy procedure
    "152198000": "radiotherapy",  # Brachytherapy (procedure)
    "234336002": "stem-cell-transplant",  # Hemopoietic stem cell transplant (procedure)
    "425983008": "stem-cell-transplant",  # Transplantation of bone marrow (procedure)
    "709115004": "stem-cell-transplant",  # Transplantation of autologous hematopoietic stem cell (procedure)
}


@lru_cache(maxsize=1)
def _lexicons():
    from gateway.terminology.lexicons import default_lexicons

    return default_lexicons()


@lru_cache(maxsize=8192)
def _widen(code: Code) -> tuple[Code, ...]:
    system, value = code
    out: list[Code] = []
    if system == cv.RXNORM:
        lx = _lexicons()
        out += [(cv.RXNORM, i) for i in sorted(lx.ingredients(value)) if i != value]
        out += [(cv.DRUG_CLASS_CS, c) for c in sorted(lx.drug_classes(value))]
    elif system == cv.SNOMED and value in PROCEDURE_CLASSES:
        out.append((cv.DRUG_CLASS_CS, PROCEDURE_CLASSES[value]))
    elif system.rstrip("/") in DMD_SYSTEMS or system == cv.SNOMED:
        lx = _lexicons()
        drug = lx.dmd_drug(value)
        if drug:
            out.append((cv.RXNORM, drug.rxnorm))
            out += [(cv.DRUG_CLASS_CS, c) for c in sorted(lx.drug_classes(drug.rxnorm))]
    return tuple(out)


def expand(codes: tuple[Code, ...]) -> tuple[Code, ...]:
    """The record's codes, then their ingredients and classes (no duplicates, order kept)."""
    out = list(codes)
    for code in codes:
        for extra in _widen(code):
            if extra not in out:
                out.append(extra)
    return tuple(out)


def class_display(code: str) -> str | None:
    """'cdk4-6-inhibitor' -> 'CDK4/6 inhibitor' (None if the lexicon does not know it)."""
    c = _lexicons().classes.get(code)
    return c.display if c else None


@lru_cache(maxsize=2048)
def analyte_codes(loinc: str) -> tuple[str, ...]:
    """Every LOINC code the lexicon accepts for the same analyte as ``loinc`` (itself first)."""
    for a in _lexicons().analytes.values():
        if loinc in a.loinc:
            return (loinc, *(c for c in a.loinc if c != loinc))
    return (loinc,)


@lru_cache(maxsize=2048)
def molar_mass(loinc_codes: tuple[str, ...]) -> float | None:
    """The molar mass (g/mol) the analyte lexicon gives for the analyte of these LOINC codes, if any."""
    for a in _lexicons().analytes.values():
        if a.molar_mass and set(loinc_codes) & set(a.loinc):
            return a.molar_mass
    return None


_STAGE_TEXT = re.compile(r"(?:^|[^a-z])(?:stage\s*)?(0|iv|i{1,3})([abc])?(?![a-z])", re.I)


def stage_of(codes: tuple[Code, ...], text: str) -> str | None:
    """A patient's stage group from an Observation value: our AJCC code, a SNOMED CT code the lexicon lists,
    else the display text ('Stage IIIA' -> 'IIIA'); None when none of them names a stage."""
    stages = _lexicons().stages
    for s, c in codes:
        if s == cv.AJCC_STAGE_CS and c.upper() in stages:
            return c.upper()
    for s, c in codes:
        if s == cv.SNOMED:
            for name, entry in stages.items():
                if entry.get("snomed") == c:
                    return name
    m = _STAGE_TEXT.search(text or "")
    if m:
        name = (m.group(1) + (m.group(2) or "")).upper()
        return name if name in stages else None
    return None


def stage_ancestors(stage: str) -> tuple[str, ...]:
    """'IIIB' -> ('IIIB', 'III')."""
    return tuple(_lexicons().stage_ancestors(stage))


@lru_cache(maxsize=1)
def _gene_aliases() -> dict[str, frozenset[str]]:
    out: dict[str, frozenset[str]] = {}
    for symbol, gene in _lexicons().genes.items():
        names = frozenset({symbol.lower(), gene.hgnc.lower()})
        for n in names:
            out[n] = names
    return out


def gene_names(genes: set[str]) -> frozenset[str]:
    """Gene identifiers (lower case) widened to both the HGNC id and the symbol: {'hgnc:3236'} -> + 'egfr'."""
    aliases = _gene_aliases()
    out = set(genes)
    for g in genes:
        out |= aliases.get(g, frozenset())
    return frozenset(out)
