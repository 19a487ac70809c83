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
