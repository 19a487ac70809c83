"""Conditional create and update under concurrent requests: exactly one resource, on every backend.

Real threads, each with its own database connection from the pool. The store serialises on the
search key (pg_advisory_xact_lock on PostgreSQL; BEGIN IMMEDIATE on SQLite)."""

from __future__ import annotations

import threading
from collections import Counter

from gateway.fhir.errors import FhirError
from gateway.fhir.search import parse_search

NCT = "https://clinicaltrials.gov|NCT09999999"
THREADS = 8


def _study(title: str = "Race") -> dict:
    return {"resourceType": "ResearchStudy", "status": "active", "title": title,
            "identifier": [{"system": "https://clinicaltrials.gov", "value": "NCT09999999"}]}


def _race(fn) -> list:
    """Run fn() in THREADS threads released at the same moment; return results (or exceptions)."""
    barrier = threading.Barrier(THREADS)
    results: list = [None] * THREADS

    def run(i: int) -> None:
        barrier.wait()
        try:
            results[i] = fn(i)
        except FhirError as exc:
            results[i] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results


def _matches(store) -> list[str]:
    return store.search_ids(parse_search("ResearchStudy", [("identifier", NCT)]))


def test_concurrent_conditional_create_makes_one_resource(service, store):
    results = _race(lambda i: service.create(_study(f"t{i}"), if_none_exist=f"identifier={NCT}"))
    assert all(not isinstance(r, Exception) for r in results), results
    assert Counter(r.outcome for r in results) == {"created": 1, "unchanged": THREADS - 1}
    assert len({r.stored.id for r in results}) == 1
    assert len(_matches(store)) == 1
    assert store.count("ResearchStudy") == 1


def test_concurrent_conditional_create_in_transactions_makes_one_resource(service, store):
    def post(i: int):
        return service.process_bundle({"resourceType": "Bundle", "type": "transaction", "entry": [
            {"request": {"method": "POST", "url": "ResearchStudy", "ifNoneExist": f"identifier={NCT}"},
             "resource": _study(f"t{i}")}]})

    results = _race(post)
    statuses = Counter(r["entry"][0]["response"]["status"] for r in results)
    assert statuses == {"201 Created": 1, "200 OK": THREADS - 1}
    assert len(_matches(store)) == 1


def test_concurrent_conditional_update_makes_one_resource(service, store):
    results = _race(lambda i: service.conditional_update("ResearchStudy", f"identifier={NCT}", _study("same")))
    assert all(not isinstance(r, Exception) for r in results), results
    assert Counter(r.outcome for r in results) == {"created": 1, "unchanged": THREADS - 1}
    assert len(_matches(store)) == 1
    assert store.read("ResearchStudy", results[0].stored.id).version == 1


def test_concurrent_puts_of_a_new_client_id_never_lose_a_version(service, store):
    """8 threads PUT different content to the same new id. Exactly one creates it; every other one either
    updates it (a new version each) or, having lost the race to insert it, gets 409 Conflict. Nothing is
    silently lost: the final version number counts every successful write."""
    results = _race(lambda i: service.update("ResearchStudy", "race", {**_study(f"t{i}"), "id": "race"}))
    ok = [r for r in results if not isinstance(r, Exception)]
    failed = [r for r in results if isinstance(r, Exception)]
    assert all(exc.status == 409 for exc in failed), failed
    assert Counter(r.outcome for r in ok)["created"] == 1
    assert all(r.outcome in ("created", "updated") for r in ok)
    assert store.read("ResearchStudy", "race").version == len(ok)
    assert sorted(r.stored.version for r in ok) == list(range(1, len(ok) + 1))
