"""Registry sites -> NHS trusts, on the 16 UK sites of a real ClinicalTrials.gov record (tests/data/ctgov)."""

from __future__ import annotations

import json
from pathlib import Path

from gateway.outbound.sitelink import TrustLinker

RECORD = Path(__file__).resolve().parents[1] / "data" / "ctgov" / "NCT02513394.json"
# Checked by hand against the NHS trust list: the trust that runs each site (None: must stay unlinked).
EXPECTED = {
    "Charing Cross Hospital": None,  # Imperial (RYJ): its registered address names another hospital
    "City Hospital Birmingham": None,  # Sandwell and West Birmingham: not findable from the name; ambiguous
    "Guy's and St Thomas' NHS Foundation Trust": "RJ1",
    "Maidstone Hospital, Kent Oncology Centre": "RWF",
    "Northern Centre for Cancer Care": "RTD",
    "Nottingham University Hospitals NHS TRUST UK": "RX1",
    "Royal Cornwall Hospitals NHS Trust, Oncology Trials, Sunrise Centre": "REF",
    "Royal Liverpool University Hospital": "REM",
    "Royal Marsden Hospital Chelsea": "RPY",
    "The Beatson West of Scotland Cancer Centre": None,  # Scotland: not in the trust list
    "The Christie NHS Foundation Trust": "RBV",
    "The Royal Marsden Sutton": "RPY",
    "University Hospitals Bristol NHS Foundation Trust": "RA7",
    "University Hospitals of Leicester": "RWE",
    "Velindre Cancer Centre": "RQF",
    "Weston Park Hospital, Sheffield Teaching Hospitals": "RHQ",
}


def _sites() -> list[dict]:
    record = json.loads(RECORD.read_text())
    return [loc for loc in record["protocolSection"]["contactsLocationsModule"]["locations"]
            if loc.get("country") == "United Kingdom"]


def test_the_real_uk_sites_link_to_the_right_trust_or_stay_unlinked():
    linker = TrustLinker.from_file()
    got = {}
    for loc in _sites():
        found = linker.link({"name": loc["facility"], "address": {"city": loc.get("city"), "postalCode": loc.get(
            "zip"), "country": loc["country"]}})
        got[loc["facility"]] = found.ods
        assert found.why
    assert got == EXPECTED


def test_no_link_from_a_place_name_alone_and_none_abroad():
    linker = TrustLinker.from_file()
    assert linker.link({"name": "University of Leeds", "address": {"city": "Leeds"}}).ods is None
    assert linker.link({"name": "St James's University Hospital", "address": {"city": "Leeds"}}).ods == "RR8"
    assert linker.link({"name": "The Christie", "address": {"postalCode": "M20 4BX", "country": "France"}}).ods is None
    org = {"identifier": {"system": "https://fhir.nhs.uk/Id/ods-organization-code", "value": "RXX"}}
    assert linker.link({"name": "Anything", "managingOrganization": org}).rule == "managingOrganization"
