"""Condition phrases whose qualifiers a code would lose ('Microsatellite Instability-High Solid Malignant Tumor').

Free-text resolution of such a phrase finds the longest known term inside it ('malignant tumor') and so admits
every cancer. Instead, a qualified phrase is split: its core disease stays the condition and its qualifiers (a
biomarker, a stage) become Group characteristics, when the study has that one condition; otherwise, or when the core
is generic ('solid tumour'), the phrase is left unresolved (a coding of ours that no patient has) and reported.

>>> qualified_condition("Glioblastoma, IDH-wildtype")
Qualified(core='Glioblastoma', qualifiers=('IDH-wildtype',), generic=False)
>>> qualified_condition("Microsatellite Instability-High Solid Malignant Tumor").generic
True
>>> qualified_condition("Solid Tumor") is None
True
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_BIOMARKER = re.compile(
    r"(?i)(?:microsatellite\s+instability[\s-]*(?:high|low)?|msi[\s-]*(?:h|high|l|low)\b|mismatch\s+repair\s+"
    r"(?:deficient|proficient)|\b[dp]mmr\b|\b(?:egfr|alk|ros1|braf|kras|nras|her2|her-2|erbb2|brca[12]?|ntrk\d?|idh[12]?|"
    r"pd-?l1|met|ret|pik3ca|esr1|fgfr\d?|tmb)\b[\s,-]*(?:v600e|g12c|exon\s*\d+\s*\w*|[a-z]\d{2,4}[a-z])?[\s,-]*"
    r"(?:mutant|mutated|mutation[s]?|wild[\s-]?type|positive|negative|amplified|amplification|fusion[s]?|"
    r"rearranged|rearrangement|altered|alteration[s]?|\+|-(?=\s|$)|high|low|expressing)?|"
    r"\b(?:hormone\s+receptor|estrogen\s+receptor|progesterone\s+receptor|hr|er|pr)[\s-]*(?:positive|negative|\+|-)|"
    r"triple[\s-]+negative|\b(?:high|low)[\s-]+(?:tumor\s+)?mutational\s+burden)")
_STAGE = re.compile(r"(?i)\b(?:(?:clinical|pathologic(?:al)?|anatomic)\s+)?stage\s+"
                    r"(?:0|i{1,3}[abc]?|iv[abc]?|[1-4][abc]?)"
                    r"(?:\s*(?:-|to|or|/)\s*(?:i{1,3}[abc]?|iv[abc]?|[1-4][abc]?))?\b|\bajcc\s*v?\d*\b|\bv[78]\b|"
                    r"\b(?:ctnm|ptnm|tnm)\b")
# A core that names no particular disease: any cancer would match it.
_GENERIC_CORE = re.compile(r"(?i)^(?:advanced|metastatic|unresectable|locally|recurrent|refractory|relapsed|adult|"
                           r"malignant|solid|and|or|of|the|,|\s)*(?:solid\s+)?(?:malignant\s+)?(?:tumou?rs?|neoplasms?|"
                           r"cancers?|malignanc(?:y|ies)|carcinomas?|solid\s+tumou?rs?|disease)?\s*$")


@dataclass(frozen=True)
class Qualified:
    core: str  # the phrase without its qualifiers ('' if nothing is left)
    qualifiers: tuple[str, ...]
    generic: bool  # the core names no particular disease


def qualified_condition(term: str) -> Qualified | None:
    """The qualifiers a condition phrase carries, or None when it has none (a plain disease name)."""
    found = [m for m in list(_BIOMARKER.finditer(term)) + list(_STAGE.finditer(term)) if m.group(0).strip(" ,-")]
    if not found:
        return None  # 'Solid Tumor' of a basket trial means any solid tumour: nothing is lost
    core = term
    for m in sorted(found, key=lambda m: -m.start()):
        core = core[:m.start()] + " " + core[m.end():]
    core = re.sub(r"\s+", " ", re.sub(r"^[\s,;-]+|[\s,;-]+$", "", core)).strip(" ,-")
    core = re.sub(r"\s*,\s*$", "", core)
    generic = not core or bool(_GENERIC_CORE.match(core)) or bool(re.search(r"(?i)\bsolid\b", core))
    return Qualified(core, tuple(m.group(0).strip(" ,-") for m in found), generic)


__all__ = ["Qualified", "qualified_condition"]
