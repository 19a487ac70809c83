"""Transaction atomicity: a failing entry leaves every table exactly as it was."""

from __future__ import annotations

import pytest

from gateway.fhir.errors import FhirError, PreconditionFailed
from gateway.fhir.search import parse_search
from tests.conftest import FHIR_JSON
from tests.store.helpers import table_counts

SPONSOR = "https://sponsor.example.org/studies"


def _study(ident: str, **extra) -> dict:
    return {"resourceType": "ResearchStudy", "status": "active", "title": ident,
            "identifier": [{"system": SPONSOR, "value": ident}], **extra}


def _bundle(resources: list[dict]) -> dict:
    return {"resourceType": "Bundle", "type": "transaction",
            "entry": [{"fullUrl": f"urn:uuid:00000000-0000-4000-8000-{i:012d}",
                       "request": {"method": "POST", "url": r["resourceType"]}, "resource": r}
                      for i, r in enumerate(resources)]}


@pytest.fixture
def seeded(service):
    """Something already stored, so 'unchanged' is a non-trivial claim."""
    service.create(_study("EXISTING"))
    service.update("ResearchStudy", "dup-a", {**_study("DUP"), "id": "dup-a"})
    service.update("ResearchStudy", "dup-b", {**_study("DUP"), "id": "dup-b"})
    return service


@pytest.mark.parametrize("bad,status,expression", [
    ({"resourceType": "ResearchStudy", "status": "not-a-status"}, 422, "Bundle.entry[4].resource.status"),
    ({"resourceType": "ResearchStudy", "status": "active", "period": {"start": "yesterday"}}, 400,
     "Bundle.entry[4].resource.period.start"),
])
def test_invalid_fifth_entry_stores_nothing(client, store, seeded, bad, status, expression):
    before = table_counts(store)
    bundle = _bundle([_study(f"A{i}") for i in range(4)] + [bad] + [_study("A5")])
    r = client.post("/fhir", json=bundle, headers=FHIR_JSON)
    assert r.status_code == status
    outcome = r.get_json()
    assert outcome["resourceType"] == "OperationOutcome"
    assert outcome["issue"][0]["expression"][0] == expression
    assert table_counts(store) == before


def test_failure_after_earlier_entries_were_written_rolls_them_back(client, store, seeded):
    """Entries 0-3 are written inside the transaction before entry 4's conditional update finds two matches."""
    before = table_counts(store)
    bundle = _bundle([_study(f"B{i}") for i in range(4)] + [_study("X")])
    bundle["entry"][4]["request"] = {"method": "PUT", "url": f"ResearchStudy?identifier={SPONSOR}|DUP"}
    r = client.post("/fhir", json=bundle, headers=FHIR_JSON)
    assert r.status_code == 412
    assert r.get_json()["issue"][0]["expression"][0].startswith("Bundle.entry[4]")
    assert table_counts(store) == before


def test_hook_failure_rolls_back_the_whole_transaction(store, seeded):
    """A write hook (e.g. an outbox enqueue) that raises undoes every entry, hook rows included."""
    before = table_counts(store)

    def refuse_fifth(tx, result, resource):
        if resource.get("title") == "C4":
            raise PreconditionFailed("refused by hook", "ResearchStudy")

    seeded.hooks.append(refuse_fifth)
    try:
        with pytest.raises(FhirError) as exc:
            seeded.process_bundle(_bundle([_study(f"C{i}") for i in range(6)]))
        assert exc.value.issues[0].expression[0].startswith("Bundle.entry[4]")
    finally:
        seeded.hooks.remove(refuse_fifth)
    assert table_counts(store) == before


def test_successful_transaction_writes_all_entries_and_one_change_each(service, store):
    before = table_counts(store)
    service.process_bundle(_bundle([_study(f"D{i}") for i in range(6)]))
    after = table_counts(store)
    assert after["resources"] - before["resources"] == 6
    assert after["resource_versions"] - before["resource_versions"] == 6
    assert after["changes"] - before["changes"] == 6
    changes = store.changes_since(before["counter:changes"])
    assert [c["seq"] for c in changes] == list(range(before["counter:changes"] + 1,
                                                     before["counter:changes"] + 7))
    assert len({c["at"] for c in changes}) == 1, "one transaction, one timestamp"


def test_server_and_client_ids_mixed_in_one_transaction(service, store):
    """New rows with server ids are inserted in bulk at flush with pre-assigned keys; rows with client ids
    are inserted at once. Interleaved, every resource still gets its own key and is readable."""
    service.update("ResearchStudy", "before", {**_study("BEFORE"), "id": "before"})
    entries = []
    for i in range(6):
        if i % 2:
            entries.append({"request": {"method": "PUT", "url": f"ResearchStudy/client-{i}"},
                            "resource": {**_study(f"E{i}"), "id": f"client-{i}"}})
        else:
            entries.append({"request": {"method": "POST", "url": "ResearchStudy"}, "resource": _study(f"E{i}")})
    entries.append({"request": {"method": "PUT", "url": f"ResearchStudy?identifier={SPONSOR}|NEW"},
                    "resource": _study("NEW")})
    out = service.process_bundle({"resourceType": "Bundle", "type": "transaction", "entry": entries})
    assert [e["response"]["status"] for e in out["entry"]] == ["201 Created"] * 7
    service.create(_study("AFTER"))
    rows = store.search(parse_search("ResearchStudy", [("_count", "100")]))[1]
    assert len(rows) == 9 and len({r.pk for r in rows}) == 9
    for r in rows:
        assert store.read("ResearchStudy", r.id).resource()["title"] == r.resource()["title"]
    found = store.search_ids(parse_search("ResearchStudy", [("identifier", f"{SPONSOR}|E4")]))
    assert len(found) == 1, "index rows point at the right key"
