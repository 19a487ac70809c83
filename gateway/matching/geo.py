"""Locations for matching: great-circle distance and UK postcode district centroids (mappings/geo)."""

from __future__ import annotations

from gateway.fhir.conventions import EXT_SITE_RECRUITMENT_STATUS

# One implementation of postcodes, centroids and distance for matching and for the search index (which places a
# Location at write time and so lives in the store layer, below matching).
from gateway.store.geo import (  # noqa: F401  (re-exported: matching's callers import them from here)
    CENTROIDS_FILE,
    GEOLOCATION_EXT,
    LatLon,
    haversine_km,
    load_centroids,
    location_position,
    outward_code,
    postcode_position,
)

SITE_RECRUITMENT_STATUS_EXT = EXT_SITE_RECRUITMENT_STATUS


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


def site_recruits(location: dict, study_status: str | None) -> bool:
    """A study site that can take a patient now: its site-recruitment-status says 'recruiting', or, without one,
    the study is 'active' (R4: recruiting). A not-yet-recruiting site 1 km away is never the one offered."""
    for ext in location.get("extension") or []:
        if isinstance(ext, dict) and ext.get("url") == SITE_RECRUITMENT_STATUS_EXT and \
                isinstance(ext.get("valueCode"), str):
            return ext["valueCode"].lower() == "recruiting"
    return study_status == "active"
