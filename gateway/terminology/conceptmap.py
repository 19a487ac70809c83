"""FHIR ConceptMap translation (R4): the one engine behind ``$translate``, hospital code
translation in the mapping layer, and the cross-system bridges of the terminology layer.

>>> idx = ConceptMapIndex([conceptmap_json])
>>> idx.translate("LOC-GBM", "https://trust.example/codes", target_system="http://snomed.info/sct")
[Translation(equivalence='equivalent', system='http://snomed.info/sct', code='393563007', ...)]
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import orjson

from gateway.terminology.systems import canonical_system, normalise_coding

# R4 ConceptMapEquivalence codes that mean "use this target".
MATCHING_EQUIVALENCES = frozenset({"relatedto", "equivalent", "equal", "wider", "subsumes", "narrower",
                                   "specializes", "inexact"})


@dataclass(frozen=True)
class Translation:
    equivalence: str
    system: str
    code: str
    display: str | None
    source: str  # the ConceptMap's url (or id)

    @property
    def is_match(self) -> bool:
        return self.equivalence in MATCHING_EQUIVALENCES


class ConceptMapIndex:
    """Translations from every loaded ConceptMap, indexed by (source system, source code)."""

    def __init__(self, conceptmaps: Iterable[dict] = ()):
        self._by_source: dict[tuple[str, str], list[Translation]] = defaultdict(list)
        # The same translations under canonical keys, so that 'http://id.nlm.nih.gov/mesh' + 'D000005910'
        # finds a map written with 'https://www.nlm.nih.gov/mesh' + 'D005910'.
        self._by_canonical: dict[tuple[str, str], list[Translation]] = defaultdict(list)
        self.maps: dict[str, dict] = {}
        for cm in conceptmaps:
            self.add(cm)

    def add(self, cm: dict) -> None:
        url = cm.get("url") or cm.get("id") or f"ConceptMap#{len(self.maps)}"
        self.maps[url] = cm
        for group in cm.get("group") or []:
            src, tgt = group.get("source"), group.get("target")
            for element in group.get("element") or []:
                code = element.get("code")
                if not (src and code):
                    continue
                for target in element.get("target") or []:
                    equivalence = target.get("equivalence", "equivalent")
                    if target.get("code") is None and equivalence != "unmatched":
                        continue
                    t = Translation(equivalence, tgt or "", target.get("code") or "", target.get("display"), url)
                    self._by_source[(src, code)].append(t)
                    self._by_canonical[normalise_coding(src, code)].append(t)

    def translate(self, code: str, system: str, *, target_system: str | None = None,
                  url: str | None = None) -> list[Translation]:
        """All translations of (system, code), optionally only into ``target_system`` / from map ``url``."""
        out = []
        found = self._by_source.get((system, code)) or self._by_canonical.get(normalise_coding(system, code), ())
        target_system = canonical_system(target_system) if target_system else None
        for t in found:
            if target_system and canonical_system(t.system) != target_system:
                continue
            if url and t.source != url:
                continue
            out.append(t)
        return out

    def __len__(self) -> int:
        return len(self.maps)


def load_conceptmaps(folder: Path) -> list[dict]:
    """Every ConceptMap JSON file below ``folder`` (other JSON files are ignored)."""
    out = []
    if not folder.exists():
        return out
    for path in sorted(folder.rglob("*.json")):
        data = orjson.loads(path.read_bytes())
        if isinstance(data, dict) and data.get("resourceType") == "ConceptMap":
            out.append(data)
    return out
