"""The change feed (Store.changes_since): every committed change once, in commit order."""

from __future__ import annotations

import threading

from tests.store.helpers import table_counts


def _obs(code: str) -> dict:
    return {"resourceType": "Observation", "status": "final", "code": {"coding": [{"system": "urn:t", "code": code}]}}


def test_changes_record_create_update_delete_in_order(service, store):
    start = table_counts(store)["counter:changes"]
    a = service.create(_obs("a")).stored
    service.update("Observation", a.id, {**_obs("a2"), "id": a.id})
    service.update("Observation", a.id, {**_obs("a2"), "id": a.id})  # unchanged: no change row
    service.update("Patient", "p1", {"resourceType": "Patient", "id": "p1"})
    service.delete("Observation", a.id)
    service.delete("Observation", a.id)  # already deleted: no change row
    feed = store.changes_since(start)
    assert [(c["type"], c["op"], c["version"]) for c in feed] == [
        ("Observation", "create", 1), ("Observation", "update", 2), ("Patient", "create", 1),
        ("Observation", "delete", 3)]
    assert [c["seq"] for c in feed] == list(range(start + 1, start + 5))
    assert store.changes_since(feed[1]["seq"]) == feed[2:]
    assert [c["type"] for c in store.changes_since(start, types=("Patient",))] == ["Patient"]
    assert len(store.changes_since(start, limit=2)) == 2


def test_a_follower_misses_nothing_while_writers_commit_concurrently(service, store):
    """Writers in 4 threads; a follower polls changes_since(last seen). Sequence numbers are assigned
    under a lock held to commit, so a change can never appear behind one the follower already passed."""
    writers, per_writer = 4, 12
    start = table_counts(store)["counter:changes"]
    done = threading.Event()
    seen: list[int] = []
    errors: list[BaseException] = []

    def write(n: int) -> None:
        try:
            for i in range(per_writer):
                service.create(_obs(f"w{n}-{i}"))
        except BaseException as exc:  # surfaced in the main thread below
            errors.append(exc)

    def follow() -> None:
        last = start
        while True:
            finished = done.is_set()
            for c in store.changes_since(last):
                assert c["seq"] > last
                seen.append(c["seq"])
                last = c["seq"]
            if finished:
                return

    follower = threading.Thread(target=follow)
    follower.start()
    threads = [threading.Thread(target=write, args=(n,)) for n in range(writers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    done.set()
    follower.join()
    assert errors == []
    total = writers * per_writer
    assert seen == list(range(start + 1, start + total + 1)), "no gaps, no repeats, ascending"
