"""The slice of the terminology layer matching relies on, as a Protocol, plus small code helpers."""

from __future__ import annotations

from typing import Protocol

from gateway.fhir import conventions as cv
from gateway.terminology.systems import normalise_coding

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


def codings(concept: dict | None) -> list[Code]:
    """CodeableConcept -> [(system, code)] normalised, skipping codings without both."""
    out: list[Code] = []
    for c in (concept or {}).get("coding") or []:
        system, code = c.get("system"), c.get("code")
        if system and code:
            out.append(normalise_coding(system, code))
    return out


# NHS dm+d (the UK medicines dictionary): the system URI UK Core uses, then the older NHS one still sent.
DMD_SYSTEMS: tuple[str, ...] = ("https://dmd.nhs.uk", "https://fhir.nhs.uk/Id/dmd")

# Names for code systems a terminology may not know, so that no explanation ever shows a raw URL.
_OWN_NAMES = {
    cv.ELIGIBILITY_CS: "trial gateway eligibility code", cv.RXNORM: "RxNorm", cv.UCUM: "UCUM",
    f"{cv.BASE}/CodeSystem/drug-class": "drug class", f"{cv.BASE}/CodeSystem/ajcc-stage-group": "AJCC stage group",
    f"{cv.BASE}/CodeSystem/biomarker": "biomarker", "http://www.genenames.org": "HGNC",
    "http://hl7.org/fhir/administrative-gender": "administrative gender",
    **{system: "NHS dm+d" for system in DMD_SYSTEMS},
    "http://hl7.org/fhir/uv/ips/CodeSystem/absent-unknown-uv-ips": "IPS absent/unknown",
}


def system_label(system: str, term: Terminology | None = None) -> str:
    """A code system's name for people: 'http://snomed.info/sct' -> 'SNOMED CT'; never a URL."""
    name = term.system_name(system) if term else system
    if "://" not in name and not name.startswith("urn:"):
        return name
    if system in _OWN_NAMES:
        return _OWN_NAMES[system]
    tail = system.rstrip("/").rsplit("/", 1)[-1].rsplit(":", 1)[-1]
    return tail.replace("-", " ") or "code"


def concept_words(cc: object) -> set[str]:
    """The lower-cased codes, displays and text of a CodeableConcept: names to compare (genes, variants).

    >>> sorted(concept_words({"coding": [{"code": "HGNC:3236", "display": "EGFR"}], "text": "EGFR "}))
    ['egfr', 'hgnc:3236']
    """
    out: set[str] = set()
    if not isinstance(cc, dict):
        return out
    for c in cc.get("coding") or []:
        if isinstance(c, dict):
            out.update(c[k].strip().lower() for k in ("code", "display") if isinstance(c.get(k), str))
    if isinstance(cc.get("text"), str):
        out.add(cc["text"].strip().lower())
    return out


def concept_label(concept: dict | None, term: Terminology | None = None) -> str:
    """CodeableConcept -> "'Glioma' (MeSH D005910)", or its text when it has no coding."""
    concept = concept or {}
    for c in concept.get("coding") or []:
        system, code = c.get("system"), c.get("code")
        if system and code:
            system, code = normalise_coding(system, code)
            name = c.get("display") or (term.display(system, code) if term else None) or concept.get("text") or code
            return f"'{name}' ({system_label(system, term)} {code})"
    return f"'{concept.get('text') or 'unnamed'}'"
