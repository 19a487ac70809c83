"""Store.search_ids: the prebuilt 'system|code' statement (conditional keys) agrees with the general path."""

from __future__ import annotations

import pytest

from gateway.fhir.conventions import CTGOV
from gateway.fhir.search import parse_search

SPONSOR = "https://sponsor.example.org/studies"


@pytest.fixture
def studies(service):
    def make(ident: list[dict], **extra) -> str:
        return service.create({"resourceType": "ResearchStudy", "status": "active", "identifier": ident,
                               **extra}).stored.id

    ids = {
        "a": make([{"system": SPONSOR, "value": "A"}, {"system": CTGOV, "value": "NCT1"}]),
        "b": make([{"system": SPONSOR, "value": "B"}]),
        "b2": make([{"system": SPONSOR, "value": "B"}]),
        "nosys": make([{"value": "A"}]),
        "other": make([{"system": "https://other.example", "value": "A"}]),
    }
    service.delete("ResearchStudy", make([{"system": SPONSOR, "value": "DELETED"}]))
    service.create({"resourceType": "Patient", "identifier": [{"system": SPONSOR, "value": "A"}]})
    return ids


@pytest.mark.parametrize("value", [f"{SPONSOR}|A", f"{SPONSOR}|B", f"{SPONSOR}|DELETED", f"{SPONSOR}|none",
                                   "http://clinicaltrials.gov/|NCT1", "https://other.example|A", "|A", "A",
                                   f"{SPONSOR}|", "A,B"])
def test_fast_and_general_paths_agree(store, studies, value):
    q = parse_search("ResearchStudy", [("identifier", value)])
    general = store.search_ids(q)  # no limit: always the general path
    limited = store.search_ids(q, limit=3)  # the path conditional writes take
    assert limited == general[:3]
    expected = {f"{SPONSOR}|A": ["a"], f"{SPONSOR}|B": ["b", "b2"], "http://clinicaltrials.gov/|NCT1": ["a"],
                "https://other.example|A": ["other"], "|A": ["nosys"], "A": ["a", "nosys", "other"],
                f"{SPONSOR}|": ["a", "b", "b2"], "A,B": ["a", "b", "b2", "nosys", "other"]}
    assert sorted(general) == sorted(studies[k] for k in expected.get(value, []))
