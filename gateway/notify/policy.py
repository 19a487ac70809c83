"""The data of the consent gate: legal bases (mappings/legal-bases/*.yaml) and the national data opt-out list.

The rules (who may be alerted or proposed) are gateway.matching.consent.ConsentGate, re-exported here as ``Policy``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import orjson
from marshmallow import RAISE, Schema, fields

from gateway.datafiles import load_yaml_file
from gateway.fhir import conventions as cv
from gateway.matching.consent import ConsentGate, Decision

__all__ = ["ConsentGate", "Decision", "LegalBasis", "OptOutList", "Policy", "load_legal_bases", "load_optout",
           "policy_from"]


class LegalBasisFileError(ValueError):
    """A legal-basis file is broken; the message names the file and the field."""


class _LegalBasisSchema(Schema):
    class Meta:
        unknown = RAISE

    name = fields.String(required=True)
    reference = fields.String(required=True)
    description = fields.String(load_default="")
    studies = fields.List(fields.String(), required=True)
    enabled = fields.Boolean(load_default=True)


@dataclass(frozen=True)
class LegalBasis:
    name: str
    reference: str
    description: str
    studies: frozenset[tuple[str, str]]
    source: str


def load_legal_bases(folder: Path) -> list[LegalBasis]:
    """Enabled legal bases from ``folder``; a broken file raises LegalBasisFileError naming file and field."""
    out = []
    for path in sorted(folder.glob("*.yaml")) if folder.exists() else []:
        data = load_yaml_file(path, _LegalBasisSchema(), LegalBasisFileError)
        studies = set()
        for i, ident in enumerate(data["studies"]):
            system, sep, value = ident.rpartition("|")
            if not sep or not system or not value:
                raise LegalBasisFileError(f"{path}: studies.{i}: expected system|value, got '{ident}'")
            studies.add((cv.normalise_ctgov_system(system) or system, value))
        if data["enabled"]:
            out.append(LegalBasis(data["name"], data["reference"], data["description"], frozenset(studies),
                                  str(path)))
    return out


class OptOutList:
    """The national data opt-out: NHS numbers whose data may not be used under a legal basis.

    Loaded from a file (one NHS number a line, or a JSON array); the HTTP source fetches the same
    format through the outbound client (see ``from_lines``).
    """

    def __init__(self, numbers: Iterable[str] = ()):
        self._numbers = frozenset(n.replace(" ", "") for n in numbers if n)

    @classmethod
    def from_lines(cls, text: str) -> OptOutList:
        stripped = text.strip()
        if stripped.startswith("["):
            return cls(str(x) for x in orjson.loads(stripped))
        return cls(line.split("#", 1)[0].strip() for line in stripped.splitlines())

    @classmethod
    def from_file(cls, path: Path) -> OptOutList:
        return cls.from_lines(path.read_text(encoding="utf-8"))

    def __contains__(self, nhs_number: object) -> bool:
        return isinstance(nhs_number, str) and nhs_number.replace(" ", "") in self._numbers

    def __len__(self) -> int:
        return len(self._numbers)


def load_optout(source: str | None, fetch=None) -> OptOutList:
    """GATEWAY_NATIONAL_OPTOUT: a file path, or an http(s) URL read with ``fetch(url) -> text`` (the outbound
    session, allow-list checked by the caller). Unset: an empty list.

    >>> len(load_optout(None))
    0
    """
    if not source:
        return OptOutList()
    if source.startswith(("http://", "https://")):
        if fetch is None:
            raise ValueError("GATEWAY_NATIONAL_OPTOUT is a URL but no outbound fetcher was given")
        return OptOutList.from_lines(fetch(source))
    return OptOutList.from_file(Path(source))


# The rules themselves live beside the consent rules (gateway.matching.consent.ConsentGate), so that $candidates and
# the automatic flows apply one gate; ``Policy`` is that gate, with the loaders above for its data.
Policy = ConsentGate


def policy_from(mappings_path: Path, optout_source: str | None, fetch=None) -> ConsentGate:
    """The deployment's gate: legal bases from ``mappings_path``/legal-bases, the opt-out list from
    ``optout_source`` (GATEWAY_NATIONAL_OPTOUT: a file, or a URL read with ``fetch``)."""
    return ConsentGate(load_legal_bases(mappings_path / "legal-bases"), load_optout(optout_source, fetch))
