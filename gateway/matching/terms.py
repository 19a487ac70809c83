"""The slice of the terminology layer matching relies on, as a Protocol, plus small code helpers."""

from __future__ import annotations

from typing import Protocol

from gateway.fhir import conventions as cv

Code = tuple[str, str]  # (system, code)


class Terminology(Protocol):
    """What gateway.terminology.Terminology offers; tests may pass any object with these methods."""

    def is_a(self, system: str, code: str, ancestor_system: str, ancestor_code: str) -> bool: ...

    def ancestors(self, system: str, code: str) -> frozenset[tuple[str, str]]: ...

    def display(self, system: str, code: str) -> str | None: ...

    def system_name(self, system: str) -> str: ...

    def resolve_text(self, text: str) -> list[tuple[str, str]]: ...

    def normalise_text(self, text: str) -> str: ...

    def is_secondary(self, system: str, code: str) -> bool: ...


def default_terminology() -> Terminology:
    """The gateway's terminology (curated code systems loaded from mappings/)."""
    from gateway.terminology import default_terminology as _default

    return _default()


def norm_system(system: str | None) -> str:
    """Aliases -> one URI: 'http://id.nlm.nih.gov/mesh' -> MESH."""
    if not system:
        return ""
    if system in cv.MESH_ALIASES:
        return cv.MESH
    return system


def norm_code(system: str, code: str) -> str:
    """MeSH 'D000005910' -> 'D005910' (ClinicalTrials.gov pads descriptor ids to 9 digits)."""
    if system == cv.MESH and len(code) == 10 and code[0] == "D" and code[1:4] == "000":
        return "D" + code[4:]
    return code


def codings(concept: dict | None) -> list[Code]:
    """CodeableConcept -> [(system, code)] normalised, skipping codings without both."""
    out: list[Code] = []
    for c in (concept or {}).get("coding") or []:
        system, code = norm_system(c.get("system")), c.get("code")
        if system and code:
            out.append((system, norm_code(system, code)))
    return out


def concept_label(concept: dict | None, term: Terminology | None = None) -> str:
    """CodeableConcept -> "'Glioma' (MeSH D005910)", or its text when it has no coding."""
    concept = concept or {}
    for c in concept.get("coding") or []:
        system, code = norm_system(c.get("system")), c.get("code")
        if system and code:
            code = norm_code(system, code)
            name = c.get("display") or (term.display(system, code) if term else None) or concept.get("text") or code
            sname = term.system_name(system) if term else system
            return f"'{name}' ({sname} {code})"
    return f"'{concept.get('text') or 'unnamed'}'"
