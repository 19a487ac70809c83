"""Registry sites in England -> their NHS trust (ODS code), through the open NHS trust list (mappings/geo).

A ClinicalTrials.gov site Location carries a facility name, a city and usually a postcode, never an ODS code.
``TrustLinker.link(location)`` decides, in this order, and says why:

1. ``postcode``: the site's full postcode is a trust's registered address postcode (one trust only);
2. ``name``: every distinctive word of a trust's name (without "NHS", "Foundation", "Trust", "Hospitals", ...)
   is in the facility name, and the facility name looks like an NHS body (hospital, trust, NHS, infirmary,
   centre ...); the most specific trust wins; a tie is broken by the city, then by the most words shared with
   the trust's full name, else the site stays unlinked;
3. ``address``: the facility name holds the hospital named first in a trust's address (e.g. "St James's
   University Hospital") and the city matches.

Anything else is unlinked, with the reason, for ``gateway sites link --report``. Precision over recall: a wrong
trust would send a person's contact request to the wrong research office.

>>> TrustLinker.from_file().link({"name": "The Christie NHS Foundation Trust", "address": {"city": "Manchester"}}).ods
'RBV'
"""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from gateway.datafiles import BUNDLED_MAPPINGS
from gateway.fhir.conventions import ODS_ORGANIZATION

TRUSTS_FILE = BUNDLED_MAPPINGS / "geo" / "nhs_trusts_england_open.csv"  # package data (gateway/datafiles.py)
UK = {"united kingdom", "uk", "england", "great britain", "gb"}
# Words that name what a body is, not which one it is.
GENERIC = {"nhs", "foundation", "trust", "the", "of", "and", "hospital", "hospitals", "university", "teaching",
           "healthcare", "health", "care", "services", "service", "partnership", "group", "integrated",
           "community", "mental", "ambulance", "national", "acute", "general", "district", "specialist",
           "childrens", "children", "for", "&", "st", "royal", "city", "county", "united", "uk"}
NHS_LIKE = {"nhs", "hospital", "hospitals", "trust", "infirmary", "centre", "center", "clinic", "healthcare",
            "institute", "unit"}
_POSSESSIVE = re.compile(r"['’`]s\b")
_NON_WORD = re.compile(r"[^a-z0-9]+")


def words(text: str | None) -> list[str]:
    """'St. James's University Hospital' -> ['st', 'james', 'university', 'hospital']."""
    t = _POSSESSIVE.sub("", (text or "").lower()).replace("&", " and ").replace("saint ", "st ")
    return [w for w in _NON_WORD.split(t) if w]


def postcode_key(text: str | None) -> str | None:
    """'m20 4bx' / 'M20 4BX UK' -> 'M204BX' when it is a full UK postcode, else None."""
    compact = re.sub(r"[^A-Z0-9]", "", (text or "").upper()).removesuffix("UK")
    return compact if re.fullmatch(r"[A-Z]{1,2}[0-9][0-9A-Z]?[0-9][A-Z]{2}", compact) else None


@dataclass(frozen=True)
class Trust:
    ods: str
    name: str
    key: frozenset[str]  # the distinctive words of its name
    building: frozenset[str]  # the words of the first address segment when it names a hospital
    town: str  # last address segment, e.g. 'leeds'
    postcode: str | None


@dataclass(frozen=True)
class Link:
    ods: str | None
    rule: str  # postcode | name | address | managingOrganization | unlinked
    why: str
    trust_name: str = ""


def _trust(row: dict) -> Trust:
    segments = [s.strip() for s in (row.get("address") or "").split(",") if s.strip()]
    first = set(words(segments[0])) if segments else set()
    building = frozenset(first) if first & {"hospital", "infirmary", "centre"} else frozenset()
    return Trust(row["ods_code"], row["name"], frozenset(w for w in words(row["name"]) if w not in GENERIC),
                 building, " ".join(words(segments[-1])) if segments else "", postcode_key(row.get("postcode")))


class TrustLinker:
    """The open trust list in memory (202 rows) and the three rules above."""

    def __init__(self, trusts: list[Trust]):
        self.trusts = trusts
        self.by_postcode: dict[str, list[Trust]] = {}
        for t in trusts:
            if t.postcode:
                self.by_postcode.setdefault(t.postcode, []).append(t)

    @staticmethod
    @lru_cache(maxsize=2)
    def from_file(path: Path = TRUSTS_FILE) -> TrustLinker:
        with path.open(newline="", encoding="utf-8") as fh:
            return TrustLinker([_trust(row) for row in csv.DictReader(fh)])

    def link(self, location: dict) -> Link:
        """A Location (registry site) -> Link; ``ods`` None when it cannot be linked (``why`` says why)."""
        org = location.get("managingOrganization") or {}
        ident = org.get("identifier") if isinstance(org, dict) else None
        if isinstance(ident, dict) and ident.get("system") == ODS_ORGANIZATION and ident.get("value"):
            return Link(str(ident["value"]), "managingOrganization", "the site names its organisation")
        addr = location.get("address") if isinstance(location.get("address"), dict) else {}
        country = (addr.get("country") or "").strip().lower()
        if country and country not in UK:
            return Link(None, "unlinked", "not in the United Kingdom")
        name = set(words(location.get("name")))
        city = " ".join(words(addr.get("city")))
        pc = postcode_key(addr.get("postalCode"))
        if pc and len(self.by_postcode.get(pc, [])) == 1:
            t = self.by_postcode[pc][0]
            return Link(t.ods, "postcode", "the site's postcode is the trust's registered address", t.name)
        if name & NHS_LIKE:
            found = [t for t in self.trusts if t.key and t.key <= name]
            if found:
                best = max(len(t.key) for t in found)
                found = [t for t in found if len(t.key) == best]
                if len(found) > 1 and city:
                    found = [t for t in found if t.town == city] or found
                if len(found) > 1:  # e.g. 'Sheffield Teaching Hospitals': the trust sharing most words
                    overlap = {t.ods: len(set(words(t.name)) & name) for t in found}
                    most = max(overlap.values())
                    found = [t for t in found if overlap[t.ods] == most]
                if len(found) == 1:
                    return Link(found[0].ods, "name", "the facility name holds the trust's name", found[0].name)
                return Link(None, "unlinked", "the name fits several trusts: "
                            + ", ".join(sorted(t.ods for t in found)))
        by_building = [t for t in self.trusts if t.building and (t.building - GENERIC) and t.building <= name
                       and (not city or t.town == city)]
        if len(by_building) == 1:
            t = by_building[0]
            return Link(t.ods, "address", "the facility is the hospital of the trust's registered address", t.name)
        return Link(None, "unlinked", "no trust's name, postcode or registered hospital matches")

    def ods_of(self, location: dict) -> str | None:
        return self.link(location).ods


__all__ = ["Link", "Trust", "TrustLinker", "postcode_key", "words"]
