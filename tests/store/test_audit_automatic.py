"""record_automatic_for: an automatic action about many people is on record, a bounded AuditEvent per part."""

from __future__ import annotations

from gateway.fhir.search import parse_search
from gateway.store.audit import MAX_ENTITIES, record_automatic_for


def test_every_person_is_named_once_in_events_of_at_most_max_entities(store):
    people = [f"Patient/p{k}" for k in range(2 * MAX_ENTITIES + 50)]
    assert record_automatic_for(store, "alert", people, resources=["ResearchStudy/s1"], detail="alert about s1") == 3
    _, rows = store.search(parse_search("AuditEvent", [("_count", "50")]))
    events = [r.resource() for r in rows]
    assert len(events) == 3
    named = [e["what"]["reference"] for ev in events for e in ev["entity"]
             if e["what"].get("reference", "").startswith("Patient/")]
    assert sorted(named) == sorted(people), "each person once, none left out"
    assert all(sum(1 for e in ev["entity"] if e["what"].get("reference", "").startswith("Patient/")) <= MAX_ENTITIES
               for ev in events)
    assert all(any(e["what"].get("reference") == "ResearchStudy/s1" for e in ev["entity"]) for ev in events)


def test_nobody_means_no_event(store):
    assert record_automatic_for(store, "alert", [], resources=["ResearchStudy/s1"]) == 0
