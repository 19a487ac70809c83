"""Code-system identity: canonical system URIs, human names, and per-system code normalisation.

>>> canonical_system("http://id.nlm.nih.gov/mesh")
'https://www.nlm.nih.gov/mesh'
>>> normalise_code(MESH, "D000005910")
'D005910'
>>> normalise_code(ICD10CM, "c719")
'C71.9'
>>> normalise_coding("http://id.nlm.nih.gov/mesh", "D000005910")
('https://www.nlm.nih.gov/mesh', 'D005910')
"""

from __future__ import annotations

import re
from functools import lru_cache

from gateway.fhir import conventions
from gateway.fhir.conventions import ICD10, ICD10CM, LOINC, MESH, MESH_ALIASES, ONCOTREE, SNOMED

SYSTEM_NAMES: dict[str, str] = {
    SNOMED: "SNOMED CT",
    ICD10: "ICD-10",
    ICD10CM: "ICD-10-CM",
    MESH: "MeSH",
    ONCOTREE: "OncoTree",
    LOINC: "LOINC",
}

# Other spellings of the systems we reason about (input only; we always store and answer the canonical URI).
_ALIASES: dict[str, str] = {alias: MESH for alias in MESH_ALIASES}
_ALIASES.update({
    "https://snomed.info/sct": SNOMED,
    "http://snomed.info/sct/": SNOMED,
    "urn:oid:2.16.840.1.113883.6.96": SNOMED,
    "urn:oid:2.16.840.1.113883.6.3": ICD10,
    "urn:oid:2.16.840.1.113883.6.90": ICD10CM,
    "http://oncotree.mskcc.org/": ONCOTREE,
    "https://oncotree.mskcc.org": ONCOTREE,
    "https://oncotree.info": ONCOTREE,
    "http://oncotree.info": ONCOTREE,
})

_ICD_CODE = re.compile(r"^([A-Z]\d[0-9A-Z])\.?([0-9A-Z]{1,4})?$")
_ICD_RANGE = re.compile(r"^[A-Z]\d[0-9A-Z]-[A-Z]\d[0-9A-Z]$")


def canonical_system(system: str | None) -> str:
    """The one URI we use for a code system ('' for None)."""
    if not system:
        return ""
    return _ALIASES.get(system, _ALIASES.get(system.rstrip("/"), system))


def system_name(system: str) -> str:
    """'http://snomed.info/sct' -> 'SNOMED CT'; unknown systems are named by their URI."""
    system = canonical_system(system)
    return SYSTEM_NAMES.get(system, system)


def normalise_mesh_id(code: str) -> str:
    """'D000005910' -> 'D005910'; 'D000071380' (a 9-digit descriptor) unchanged (one rule: conventions)."""
    return conventions.normalise_mesh_id(code.strip().upper())


def normalise_icd_code(code: str) -> str:
    """'c719' -> 'C71.9', 'C71.9' unchanged, 'c69-c72' -> 'C69-C72' (a block); chapters ('II', '2') as is."""
    code = code.strip().upper()
    if _ICD_RANGE.match(code):
        return code
    m = _ICD_CODE.match(code)
    if not m:
        return code
    return f"{m.group(1)}.{m.group(2)}" if m.group(2) else m.group(1)


def normalise_code(system: str, code: str) -> str:
    """Per-system normal form of a code (system must already be canonical)."""
    if system == MESH:
        return normalise_mesh_id(code)
    if system in (ICD10, ICD10CM):
        return normalise_icd_code(code)
    if system == ONCOTREE:
        return code.strip().upper()
    return code.strip()


@lru_cache(maxsize=65536)
def normalise_coding(system: str | None, code: str) -> tuple[str, str]:
    """A coding in the one form used everywhere (terminology, concept maps, matching, alert filters): the
    canonical system and that system's normal form of the code.

    >>> normalise_coding("http://id.nlm.nih.gov/mesh", "D000005910")
    ('https://www.nlm.nih.gov/mesh', 'D005910')
    """
    system = canonical_system(system)
    return system, normalise_code(system, code)


def icd_structural_parent(code: str) -> str | None:
    """The parent a code's shape implies: 'C71.9' -> 'C71', 'C79.31' -> 'C79.3'; categories -> None."""
    if "." not in code:
        return None
    head, tail = code.split(".", 1)
    return f"{head}.{tail[:-1]}" if len(tail) > 1 else head
