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

from marshmallow import RAISE, Schema, fields, validate

from gateway.mapping.eligibility.phrases import PhraseIndex
from gateway.terminology.lexicons import DEFAULT_PATH, LexiconError, _check, _load_yaml

_SCTID = validate.Regexp(r"^[1-9]\d{5,17}$", error="not a SNOMED CT concept id")


class _Strict(Schema):
    class Meta:
        unknown = RAISE


class DiagnosisSchema(_Strict):
    display = fields.String(required=True, validate=validate.Length(min=1))
    snomed = fields.String(required=True, validate=_SCTID)
    includes = fields.List(fields.String(validate=_SCTID), required=True)
    names = fields.List(fields.String(validate=validate.Length(min=1)), required=True, validate=validate.Length(min=1))
    caps = fields.List(fields.String(validate=validate.Length(min=1)))
    patterns = fields.List(fields.String(validate=validate.Length(min=1)))
    checked = fields.String(required=True)


class DiagnosesFileSchema(_Strict):
    diagnoses = fields.Dict(keys=fields.String(validate=validate.Regexp(r"^[a-z0-9-]+$")),
                            values=fields.Nested(DiagnosisSchema), required=True)


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
    """Load and check diagnoses.yaml; raises LexiconError naming the file and the field."""
    data = _check(path, DiagnosesFileSchema(), _load_yaml(path))
    out: dict[str, Diagnosis] = {}
    phrases: list[tuple[str, object]] = []
    seen: dict[str, str] = {}
    patterns: list[tuple[re.Pattern, Diagnosis]] = []
    for key, d in data["diagnoses"].items():
        compiled = []
        for i, p in enumerate(d.get("patterns") or []):
            try:
                compiled.append(re.compile(p, re.IGNORECASE))
            except re.error as exc:
                raise LexiconError(f"{path}: diagnoses.{key}.patterns.{i}: not a regular expression ({exc})") from None
        diag = Diagnosis(key, d["display"], d["snomed"], tuple(d["includes"]), tuple(n.lower() for n in d["names"]),
                         tuple(n.lower() for n in d.get("caps") or ()), tuple(compiled))
        for field_name, names in (("names", diag.names), ("caps", diag.caps)):
            for n in names:
                if n in seen:
                    raise LexiconError(f"{path}: diagnoses.{key}.{field_name}: '{n}' is also a name of "
                                       f"'{seen[n]}'")
                seen[n] = key
                phrases.append((n, (diag, field_name == "caps")))
        patterns += [(p, diag) for p in compiled]
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
