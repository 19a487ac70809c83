"""The change feed in commit order, and named cursors that followers advance."""

from __future__ import annotations

from gateway.store import feed


def test_follow_sees_each_change_once_in_order(service, store):
    a = service.create({"resourceType": "Patient", "gender": "female"}).stored
    service.create({"resourceType": "Condition", "subject": {"reference": f"Patient/{a.id}"}})
    seen = [c for batch in feed.follow(store, "test") for c in batch]
    assert [c["type"] for c in seen] == ["Patient", "Condition"]
    assert [c["seq"] for c in seen] == sorted(c["seq"] for c in seen)
    assert list(feed.follow(store, "test")) == [], "nothing new after the cursor"

    service.update("Patient", a.id, {"resourceType": "Patient", "id": a.id, "gender": "male"})
    again = [c for batch in feed.follow(store, "test", types=("Patient",)) for c in batch]
    assert [(c["type"], c["op"], c["version"]) for c in again] == [("Patient", "update", 2)]
    assert feed.cursor(store, "test") == again[-1]["seq"]
    assert feed.cursor(store, "other") == 0


def test_advance_never_moves_backwards(store):
    feed.advance(store, "w", 10)
    feed.advance(store, "w", 3)
    assert feed.cursor(store, "w") == 10


def test_two_versions_in_one_transaction_leave_only_the_last_index_rows(store):
    from gateway.fhir.search import parse_search

    with store.write() as tx:
        tx.put({"resourceType": "Patient", "id": "twice", "gender": "female"})
        tx.put({"resourceType": "Patient", "id": "twice", "gender": "male"})
    assert store.search_ids(parse_search("Patient", [("gender", "female")])) == []
    assert store.search_ids(parse_search("Patient", [("gender", "male")])) == ["twice"]
    assert store.read("Patient", "twice").version == 2
    with store.write() as tx:
        tx.put({"resourceType": "Patient", "id": "twice", "gender": "other"})
        tx.delete("Patient", "twice")
    assert store.search_ids(parse_search("Patient", [("gender", "other")])) == []
