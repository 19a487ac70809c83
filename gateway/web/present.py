"""Plain-English views of a study for the patient pages: pure functions over stored FHIR JSON (no Flask).

>>> describe_status({"status": "active"}).label
'Recruiting'
>>> age_sentence({"low": {"value": 18, "code": "a"}, "high": {"value": 70, "code": "a"}})
'Aged 18 to 70'
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from gateway.fhir import conventions as cv
from gateway.store import geo

RECRUITING_STUDY_STATUS = "active"  # R4 ResearchStudy.status for a study that is recruiting

# R4 ResearchStudy.status -> (words a patient understands, NHS tag colour)
_STATUS_WORDS: dict[str, tuple[str, str]] = {
    "active": ("Recruiting", "green"),
    "approved": ("Not yet recruiting", "blue"),
    "in-review": ("Not yet recruiting", "blue"),
    "temporarily-closed-to-accrual": ("Temporarily not recruiting", "yellow"),
    "temporarily-closed-to-accrual-and-intervention": ("Temporarily not recruiting", "yellow"),
    "closed-to-accrual": ("No longer recruiting", "grey"),
    "closed-to-accrual-and-intervention": ("No longer recruiting", "grey"),
    "administratively-completed": ("Stopped early", "grey"),
    "completed": ("Finished", "grey"),
    "disapproved": ("Not going ahead", "grey"),
    "withdrawn": ("Not going ahead", "grey"),
}
# site-recruitment-status codes (ClinicalTrials.gov's, lower-case with hyphens) -> recruiting?
_SITE_RECRUITING = frozenset({"recruiting", "enrolling-by-invitation"})
_UNIT_WORDS = {"a": "years", "mo": "months", "wk": "weeks", "d": "days"}
_SEX_WORDS = {"female": "Women only", "male": "Men only"}


@dataclass(frozen=True)
class Status:
    label: str
    colour: str


@dataclass(frozen=True)
class SiteView:
    location_id: str
    name: str
    town: str
    postcode: str
    recruiting: bool
    distance_km: float | None = None

    @property
    def distance_text(self) -> str:
        """'4 km' / 'less than 1 km' / '' when there is no origin or position."""
        if self.distance_km is None:
            return ""
        if self.distance_km < 1:
            return "less than 1 km"
        return f"{self.distance_km:.0f} km"


@dataclass
class StudyView:
    id: str
    title: str
    summary: str
    status: Status
    who: list[str] = field(default_factory=list)  # who can take part, one short sentence each
    not_for: list[str] = field(default_factory=list)  # exclusions in lay words
    conditions: list[str] = field(default_factory=list)
    sites: list[SiteView] = field(default_factory=list)  # recruiting sites first, nearest first
    eligibility_text: str = ""
    phase: str = ""
    located: bool = False  # distances were measured from the patient's postcode
    nearest_id: str | None = None  # the search service's nearest recruiting site (Location id), when it named one
    identifiers: list[str] = field(default_factory=list)

    @property
    def recruiting_sites(self) -> list[SiteView]:
        return [s for s in self.sites if s.recruiting]

    @property
    def eligibility_blocks(self) -> list[tuple[str, list[str]]]:
        return eligibility_blocks(self.eligibility_text)

    @property
    def nearest(self) -> SiteView | None:
        """The nearest recruiting site (never one that is not recruiting): the one the search service named, else
        the first recruiting site (nearest first when there is an origin)."""
        sites = self.recruiting_sites
        named = [s for s in sites if self.nearest_id is not None and s.location_id == self.nearest_id]
        return named[0] if named else (sites[0] if sites else None)


def describe_status(study: dict) -> Status:
    label, colour = _STATUS_WORDS.get(str(study.get("status") or ""), ("Status not known", "grey"))
    return Status(label, colour)


def site_recruiting(location: dict | None, study: dict) -> bool:
    """A site recruits when its site-recruitment-status says so; without one, when the study is recruiting."""
    for ext in (location or {}).get("extension") or []:
        if isinstance(ext, dict) and ext.get("url") == cv.EXT_SITE_RECRUITMENT_STATUS:
            return str(ext.get("valueCode") or "").lower().replace("_", "-") in _SITE_RECRUITING
    return study.get("status") == RECRUITING_STUDY_STATUS


def age_sentence(rng: dict) -> str:
    """valueRange of the Age criterion -> 'Aged 18 to 70' / 'Aged 16 or over' / 'Aged up to 12 months'."""
    low, high = rng.get("low") or {}, rng.get("high") or {}
    unit = _UNIT_WORDS.get(str(low.get("code") or high.get("code") or "a"), "years")
    lo, hi = low.get("value"), high.get("value")
    suffix = "" if unit == "years" else f" {unit}"
    if lo is not None and hi is not None:
        return f"Aged {_num(lo)} to {_num(hi)}{suffix}"
    if lo is not None:
        return f"Aged {_num(lo)}{suffix} or over"
    if hi is not None:
        return f"Aged up to {_num(hi)}{suffix}"
    return ""


def _num(v: object) -> str:
    return f"{v:g}" if isinstance(v, float) else str(v)


def _concept_text(concept: dict | None) -> str:
    if not isinstance(concept, dict):
        return ""
    if concept.get("text"):
        return str(concept["text"])
    for c in concept.get("coding") or []:
        if isinstance(c, dict) and c.get("display"):
            return str(c["display"])
    return ""


def _codes(concept: dict | None) -> set[tuple[str, str]]:
    return {(str(c.get("system")), str(c.get("code"))) for c in (concept or {}).get("coding") or []
            if isinstance(c, dict)}


def _performance_sentence(code: tuple[str, str], rng: dict) -> str:
    hi = (rng.get("high") or {}).get("value")
    lo = (rng.get("low") or {}).get("value")
    if code == cv.ECOG:
        if hi is not None and hi <= 1:
            return f"Able to look after yourself and do light work (ECOG performance status {_range_text(lo, hi)})"
        if hi is not None and hi <= 2:
            return f"Able to look after yourself, up and about more than half the day (ECOG {_range_text(lo, hi)})"
        return f"ECOG performance status {_range_text(lo, hi)}"
    if lo is not None and lo >= 70:
        return f"Able to look after yourself (Karnofsky score {_range_text(lo, hi)})"
    return f"Karnofsky score {_range_text(lo, hi)}"


def _range_text(lo: object, hi: object) -> str:
    if lo is not None and hi is not None:
        return f"{_num(lo)} to {_num(hi)}"
    if lo is not None:
        return f"{_num(lo)} or more"
    return f"up to {_num(hi)}" if hi is not None else ""


def who_can_take_part(group: dict | None) -> tuple[list[str], list[str]]:
    """The eligibility Group -> (who can take part, who cannot), short lay sentences in Group order."""
    who: list[str] = []
    not_for: list[str] = []
    sex = ""
    for ch in (group or {}).get("characteristic") or []:
        if not isinstance(ch, dict):
            continue
        codes = _codes(ch.get("code"))
        exclude = ch.get("exclude") is True
        sentence = ""
        if cv.AGE in codes and isinstance(ch.get("valueRange"), dict):
            sentence = age_sentence(ch["valueRange"])
        elif cv.SEX in codes:
            gender = next((c for _, c in _codes(ch.get("valueCodeableConcept"))), "")
            sex = _SEX_WORDS.get(gender, "")
            continue
        elif cv.DIAGNOSIS in codes:
            text = _concept_text(ch.get("valueCodeableConcept"))
            sentence = f"{'People who have' if exclude else 'People with'} {text.lower()}" if text else ""
            if exclude:
                not_for.append(sentence)
                continue
        elif cv.HEALTHY_VOLUNTEERS in codes and isinstance(ch.get("valueBoolean"), bool):
            sentence = "Healthy volunteers can take part" if ch["valueBoolean"] else ""
        elif codes & {cv.ECOG, cv.KARNOFSKY} and isinstance(ch.get("valueRange"), dict):
            sentence = _performance_sentence(next(iter(codes & {cv.ECOG, cv.KARNOFSKY})), ch["valueRange"])
        elif cv.PRIOR_THERAPY in codes:
            text = _concept_text(ch.get("valueCodeableConcept"))
            if text:
                (not_for if exclude else who).append(
                    f"People who have had {text}" if exclude else f"People who have had {text} before")
            continue
        else:
            text = _concept_text(ch.get("code"))
            if text:
                sentence = f"A test result for {text.lower()} in a set range"
        if sentence:
            (not_for if exclude else who).append(sentence)
    who.append(sex or "Anyone of any sex")
    return who, not_for


def eligibility_blocks(text: str) -> list[tuple[str, list[str]]]:
    """Verbatim criteria text -> [('p', [line]) | ('ul', [item, ...])]: bullet lines ('* ', '- ') become lists.

    >>> eligibility_blocks("Inclusion criteria:\\n* Aged 18 to 70\\n* ECOG 0-1")
    [('p', ['Inclusion criteria:']), ('ul', ['Aged 18 to 70', 'ECOG 0-1'])]
    """
    blocks: list[tuple[str, list[str]]] = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line:
            continue
        if line[:2] in ("* ", "- ", "• "):
            if not blocks or blocks[-1][0] != "ul":
                blocks.append(("ul", []))
            blocks[-1][1].append(line[2:].strip())
        else:
            blocks.append(("p", [line]))
    return blocks


def eligibility_text(group: dict | None) -> str:
    for ext in (group or {}).get("extension") or []:
        if isinstance(ext, dict) and ext.get("url") == cv.EXT_ELIGIBILITY_TEXT:
            return str(ext.get("valueMarkdown") or "")
    return ""


def _site_view(location_id: str, location: dict | None, display: str, study: dict, origin: geo.LatLon | None
               ) -> SiteView:
    loc = location or {}
    addr = loc.get("address") if isinstance(loc.get("address"), dict) else {}
    pos = geo.location_position(loc) if loc else None
    dist = geo.haversine_km(origin, pos) if origin is not None and pos is not None else None
    return SiteView(location_id=location_id, name=str(loc.get("name") or display or "Study site"),
                    town=str(addr.get("city") or ""), postcode=str(addr.get("postalCode") or ""),
                    recruiting=site_recruiting(location, study), distance_km=dist)


def ref_id(ref: object, rtype: str) -> str | None:
    """{'reference': 'Location/abc'} -> 'abc' (another type or a contained reference -> None)."""
    if not isinstance(ref, dict) or not isinstance(ref.get("reference"), str):
        return None
    t, _, i = ref["reference"].rpartition("/")
    return i if t.rsplit("/", 1)[-1] == rtype and i else None


def describe(study: dict, group: dict | None, locations: dict[str, dict], origin: geo.LatLon | None = None
             ) -> StudyView:
    """ResearchStudy + eligibility Group + {Location id: Location} -> StudyView.

    Sites: recruiting ones first, each group sorted by distance from ``origin`` (a postcode's position) when given.
    """
    who, not_for = who_can_take_part(group)
    sites = [_site_view(ref_id(ref, "Location") or "", locations.get(ref_id(ref, "Location") or ""),
                        str(ref.get("display") or ""), study, origin)
             for ref in study.get("site") or [] if isinstance(ref, dict)]
    sites.sort(key=lambda s: (not s.recruiting, s.distance_km if s.distance_km is not None else float("inf")))
    return StudyView(
        id=str(study.get("id") or ""), title=str(study.get("title") or "Untitled study"),
        summary=str(study.get("description") or ""), status=describe_status(study), who=who, not_for=not_for,
        conditions=[t for t in (_concept_text(c) for c in study.get("condition") or []) if t],
        sites=sites, eligibility_text=eligibility_text(group), phase=_concept_text(study.get("phase")),
        located=origin is not None,
        identifiers=_identifiers(study.get("identifier")))


def _identifiers(items: Iterable[object] | None) -> list[str]:
    out = []
    for i in items or []:
        if isinstance(i, dict) and i.get("value") and i.get("system") in (cv.CTGOV, cv.ISRCTN, cv.EUDRACT, cv.EU_CT):
            out.append(str(i["value"]))
    return out
