"""Locations for matching: great-circle distance and UK postcode district centroids (mappings/geo)."""

from __future__ import annotations

import csv
import math
import re
from functools import lru_cache
from pathlib import Path

from gateway.fhir.conventions import EXT_SITE_RECRUITMENT_STATUS

GEOLOCATION_EXT = "http://hl7.org/fhir/StructureDefinition/geolocation"
SITE_RECRUITMENT_STATUS_EXT = EXT_SITE_RECRUITMENT_STATUS
CENTROIDS_FILE = Path(__file__).resolve().parents[2] / "mappings" / "geo" / "uk_postcode_district_centroids.csv"

_OUTCODE = re.compile(r"^([A-Z]{1,2}[0-9][0-9A-Z]?)")

LatLon = tuple[float, float]


def haversine_km(a: LatLon, b: LatLon) -> float:
    """Great-circle distance: ((53.80, -1.55), (53.43, -2.23)) -> ~59 km."""
    lat1, lon1, lat2, lon2 = map(math.radians, (a[0], a[1], b[0], b[1]))
    h = math.sin((lat2 - lat1) / 2) ** 2 + math.cos(lat1) * math.cos(lat2) * math.sin((lon2 - lon1) / 2) ** 2
    return 2 * 6371.0088 * math.asin(min(1.0, math.sqrt(h)))


def outward_code(postcode: str | None) -> str | None:
    """'ls6 1lf' -> 'LS6'; 'LS6' -> 'LS6'; 'M20 4BX' -> 'M20'; rubbish -> None."""
    if not postcode:
        return None
    pc = re.sub(r"\s+", "", postcode.upper())
    if len(pc) >= 5 and re.fullmatch(r"[A-Z0-9]+[0-9][A-Z]{2}", pc):
        return pc[:-3]  # a full postcode: the inward code is always the last three characters
    m = _OUTCODE.match(pc)
    return m.group(1) if m and m.group(1) == pc else None


@lru_cache(maxsize=4)
def load_centroids(path: Path = CENTROIDS_FILE) -> dict[str, LatLon]:
    """The open district centroid table (OGL v3; attribution in mappings/geo/PROVENANCE.md)."""
    with path.open(newline="", encoding="utf-8") as fh:
        return {row["outcode"]: (float(row["latitude"]), float(row["longitude"])) for row in csv.DictReader(fh)}


def postcode_position(postcode: str | None) -> LatLon | None:
    """'LS6 1LF' -> (lat, lon) of the LS6 district centroid, or None when unknown."""
    oc = outward_code(postcode)
    return load_centroids().get(oc) if oc else None


def address_position(address: dict) -> tuple[LatLon, str] | None:
    """An Address -> (position, how): the geolocation extension first, else the postcode district."""
    for ext in address.get("extension") or []:
        if ext.get("url") == GEOLOCATION_EXT:
            vals = {e.get("url"): e.get("valueDecimal") for e in ext.get("extension") or []}
            if isinstance(vals.get("latitude"), int | float) and isinstance(vals.get("longitude"), int | float):
                return (float(vals["latitude"]), float(vals["longitude"])), "address geolocation"
    pos = postcode_position(address.get("postalCode"))
    if pos:
        return pos, f"postcode district {outward_code(address.get('postalCode'))}"
    return None


def location_position(location: dict) -> LatLon | None:
    """Location.position, else the Location's address."""
    p = location.get("position") or {}
    if isinstance(p.get("latitude"), int | float) and isinstance(p.get("longitude"), int | float):
        return float(p["latitude"]), float(p["longitude"])
    addr = location.get("address")
    if isinstance(addr, dict):
        found = address_position(addr)
        return found[0] if found else None
    return None


def site_recruits(location: dict, study_status: str | None) -> bool:
    """A study site that can take a patient now: its site-recruitment-status says 'recruiting', or, without one,
    the study is 'active' (R4: recruiting). A not-yet-recruiting site 1 km away is never the one offered."""
    for ext in location.get("extension") or []:
        if isinstance(ext, dict) and ext.get("url") == SITE_RECRUITMENT_STATUS_EXT and \
                isinstance(ext.get("valueCode"), str):
            return ext["valueCode"].lower() == "recruiting"
    return study_status == "active"
