"""Places for search: UK postcode district centroids, great-circle distance, a site's position.

Pure functions over the open centroid table in mappings/geo (OGL v3; attribution in its PROVENANCE.md).
The one implementation: ``gateway.matching.geo`` re-exports these for matching. It lives in the store layer so
that the search index can place a Location at write time without importing matching.

>>> postcode_position("LS6 3HE")  # the LS6 district centroid
(53.8195..., -1.5751...)
"""

from __future__ import annotations

import csv
import math
import re
from functools import lru_cache
from pathlib import Path

from gateway.datafiles import BUNDLED_MAPPINGS

CENTROIDS_FILE = BUNDLED_MAPPINGS / "geo" / "uk_postcode_district_centroids.csv"  # package data (gateway/datafiles.py)
GEOLOCATION_EXT = "http://hl7.org/fhir/StructureDefinition/geolocation"

LatLon = tuple[float, float]
_OUTCODE = re.compile(r"^[A-Z]{1,2}[0-9][0-9A-Z]?$")
_FULL = re.compile(r"^([A-Z]{1,2}[0-9][0-9A-Z]?)([0-9][A-Z]{2})$")
EARTH_KM = 6371.0088
KM_PER_MILE = 1.609344


def haversine_km(a: LatLon, b: LatLon) -> float:
    """Great-circle distance: ((53.80, -1.55), (53.43, -2.23)) -> ~59 km."""
    lat1, lon1, lat2, lon2 = map(math.radians, (a[0], a[1], b[0], b[1]))
    h = math.sin((lat2 - lat1) / 2) ** 2 + math.cos(lat1) * math.cos(lat2) * math.sin((lon2 - lon1) / 2) ** 2
    return 2 * EARTH_KM * math.asin(min(1.0, math.sqrt(h)))


def outward_code(postcode: str | None) -> str | None:
    """'ls6 3he' -> 'LS6'; 'LS6' -> 'LS6'; 'M20 4BX' -> 'M20'; not shaped like a UK postcode -> None."""
    if not postcode:
        return None
    pc = re.sub(r"\s+", "", postcode.upper())
    m = _FULL.match(pc)
    if m:
        return m.group(1)
    return pc if _OUTCODE.match(pc) else None


@lru_cache(maxsize=2)
def load_centroids(path: Path = CENTROIDS_FILE) -> dict[str, LatLon]:
    """outcode -> (lat, lon) for the 2,945 UK postcode districts."""
    with path.open(newline="", encoding="utf-8") as fh:
        return {row["outcode"]: (float(row["latitude"]), float(row["longitude"])) for row in csv.DictReader(fh)}


def postcode_position(postcode: str | None) -> LatLon | None:
    """'LS6 3HE' -> the LS6 district centroid; None when not a postcode or the district is unknown."""
    oc = outward_code(postcode)
    return load_centroids().get(oc) if oc else None


def location_position(location: dict) -> LatLon | None:
    """Location.position, else its address's geolocation extension, else its postcode district centroid."""
    p = location.get("position")
    if isinstance(p, dict) and _number(p.get("latitude")) and _number(p.get("longitude")):
        return float(p["latitude"]), float(p["longitude"])
    addr = location.get("address")
    if not isinstance(addr, dict):
        return None
    for ext in addr.get("extension") or []:
        if isinstance(ext, dict) and ext.get("url") == GEOLOCATION_EXT:
            vals = {e.get("url"): e.get("valueDecimal") for e in ext.get("extension") or [] if isinstance(e, dict)}
            if _number(vals.get("latitude")) and _number(vals.get("longitude")):
                return float(vals["latitude"]), float(vals["longitude"])
    pc = addr.get("postalCode")
    return postcode_position(pc) if isinstance(pc, str) else None


def bounding_box(centre: LatLon, km: float) -> tuple[float, float, float, float]:
    """(min lat, max lat, min lon, max lon) of a box that holds every point within ``km`` of ``centre``."""
    dlat = math.degrees(km / EARTH_KM)
    coslat = max(math.cos(math.radians(centre[0])), 0.01)
    dlon = min(180.0, math.degrees(km / (EARTH_KM * coslat)))
    return centre[0] - dlat, centre[0] + dlat, centre[1] - dlon, centre[1] + dlon


def _number(v: object) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)
