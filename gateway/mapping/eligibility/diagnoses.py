"""General diagnoses in criteria text (mappings/lexicons/diagnoses.yaml): 'Known COPD', 'severe COPD (GOLD stage III
or IV)', 'history of myocardial infarction within 6 months', and the diagnosis an exception names ('excepting
Gilbert's syndrome'). Loaded once and checked on load; a broken file raises LexiconError naming the file and field.

>>> [d.key for _, _, d in find_diagnoses("patients with severe copd (gold stage iii or iv)", "...")]
['severe-copd']
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from gateway.mapping.eligibility.phrases import PhraseIndex
from gateway.terminology.lexicons import DEFAULT_PATH, read_diagnoses


@dataclass(frozen=True)
class Diagnosis:
    key: str
    display: str
    snomed: str
    includes: tuple[str, ...]
    names: tuple[str, ...]
    caps: tuple[str, ...]
    patterns: tuple[re.Pattern, ...]

    @property
    def codes(self) -> tuple[str, ...]:
        """The concept and the subtypes a record may carry, first the concept itself."""
        return (self.snomed, *[c for c in self.includes if c != self.snomed])


@dataclass(frozen=True)
class DiagnosisLexicon:
    by_key: dict[str, Diagnosis]
    index: PhraseIndex
    patterns: tuple[tuple[re.Pattern, Diagnosis], ...]

    def by_code(self, code: str) -> Diagnosis | None:
        return next((d for d in self.by_key.values() if d.snomed == code), None)


def load_diagnoses(path: Path) -> DiagnosisLexicon:
    """Load diagnoses.yaml, checked by gateway.terminology.lexicons.read_diagnoses (the check ``gateway mappings
    check`` runs too); raises LexiconError naming the file and the field."""
    out: dict[str, Diagnosis] = {}
    phrases: list[tuple[str, object]] = []
    patterns: list[tuple[re.Pattern, Diagnosis]] = []
    for key, d in read_diagnoses(path).items():
        diag = Diagnosis(key, d["display"], d["snomed"], tuple(d["includes"]), tuple(n.lower() for n in d["names"]),
                         tuple(n.lower() for n in d.get("caps") or ()), tuple(d["patterns"]))
        phrases += [(n, (diag, False)) for n in diag.names] + [(n, (diag, True)) for n in diag.caps]
        patterns += [(p, diag) for p in diag.patterns]
        out[key] = diag
    return DiagnosisLexicon(out, PhraseIndex(phrases), tuple(patterns))


@lru_cache(maxsize=4)
def diagnoses_for(folder: str) -> DiagnosisLexicon:
    return load_diagnoses(Path(folder) / "diagnoses.yaml")


def default_diagnoses() -> DiagnosisLexicon:
    return diagnoses_for(str(DEFAULT_PATH))


def find_diagnoses(text: str, original: str, lexicon: DiagnosisLexicon | None = None
                   ) -> list[tuple[int, int, Diagnosis]]:
    """The diagnoses named in ``text`` (lower case; ``original`` the same text as written, same length):
    (start, end, diagnosis), leftmost-longest; a pattern match wins over the names inside it."""
    lx = lexicon or default_diagnoses()
    found: list[tuple[int, int, Diagnosis]] = []
    for pattern, diag in lx.patterns:
        found += [(m.start(), m.end(), diag) for m in pattern.finditer(text)]
    for start, end, (diag, caps) in lx.index.find(text):  # type: ignore[misc]
        if caps and original[start:end] != original[start:end].upper():
            continue  # 'mi', 'tb' in running text: only as written in capitals
        overlap = [i for i, (s, e, _) in enumerate(found) if s < end and start < e]
        if overlap:
            for i in overlap:  # 'severe copd' + 'copd (gold stage iii or iv)': one mention, the words of both
                s, e, d = found[i]
                if d is diag:
                    found[i] = (min(s, start), max(e, end), d)
            continue
        found.append((start, end, diag))
    return sorted(found, key=lambda x: x[0])


__all__ = ["Diagnosis", "DiagnosisLexicon", "default_diagnoses", "diagnoses_for", "find_diagnoses",
           "load_diagnoses"]
