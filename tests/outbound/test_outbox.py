"""The outbox on both backends: dedupe, single claim, leases, attempts, backoff, dead, retry, purge."""

from __future__ import annotations

import threading
import time

import pytest

from gateway.outbound import outbox
from gateway.outbound.errors import ServerError, TooManyRequests, Unprocessable

CALLS: list[int] = []


def _ok(job, ctx):
    CALLS.append(job.id)
    return f"done {job.payload['n']}"


FLAKY: dict[int, int] = {}


def _flaky(job, ctx):
    """Fails twice per job (across retries), then succeeds."""
    FLAKY[job.id] = FLAKY.get(job.id, 0) + 1
    if FLAKY[job.id] < 3:
        raise ServerError("POST /x: 500 Internal Server Error", status=500)
    return "third time lucky"


def _permanent(job, ctx):
    raise Unprocessable("POST /x: 422 Unprocessable Entity: bad", status=422)


def _slow_down(job, ctx):
    raise TooManyRequests("POST /x: 429", status=429, retry_after=120)


def _bug(job, ctx):
    raise KeyError("oops")


TEST_KINDS = {"t-ok": _ok, "t-flaky": _flaky, "t-permanent": _permanent, "t-429": _slow_down, "t-bug": _bug}


@pytest.fixture
def worker(worker):
    """The app's worker, given this module's job kinds too (kinds are passed to a worker, never found by name)."""
    worker.handlers = {**worker.handlers, **TEST_KINDS}
    return worker


def _add(store, kind: str, n: int, max_attempts: int = 3) -> bool:
    with store.write() as tx:
        return outbox.enqueue(tx.conn, kind=kind, destination="d", payload={"n": n}, dedupe_key=f"{kind}:{n}",
                              max_attempts=max_attempts, resource=("ResearchSubject", f"rs{n}", 1))


def test_enqueue_is_deduplicated(store):
    assert _add(store, "t-ok", 1) is True
    assert _add(store, "t-ok", 1) is False
    assert outbox.counts(store)["pending"] == 1


def test_enqueue_rolls_back_with_the_transaction(store):
    try:
        with store.write() as tx:
            outbox.enqueue(tx.conn, kind="t-ok", destination="d", payload={}, dedupe_key="k", max_attempts=3)
            raise RuntimeError("the write that caused it failed")
    except RuntimeError:
        pass
    assert outbox.counts(store)["pending"] == 0


def test_a_job_is_claimed_once_and_reclaimed_after_its_lease(store):
    _add(store, "t-ok", 1)
    first = outbox.claim(store, "w1", lease_seconds=0.2)
    assert [j.attempts for j in first] == [1]
    assert outbox.claim(store, "w2", lease_seconds=0.2) == []
    time.sleep(0.25)  # w1 "died": its lease runs out
    second = outbox.claim(store, "w2", lease_seconds=30)
    assert [j.id for j in second] == [first[0].id] and second[0].attempts == 2
    # w1 comes back late: its result is not recorded over w2's claim
    assert outbox.finish(store, first[0], "w1", outcome="delivered") is False
    assert outbox.finish(store, second[0], "w2", outcome="delivered", result="ok") is True
    job = outbox.get_job(store, first[0].id)
    assert job.state == "delivered" and job.result == "ok"
    assert [a["outcome"] for a in outbox.attempts_of(store, job.id)] == ["delivered-late", "delivered"]


def test_concurrent_claims_are_disjoint(store):
    for n in range(40):
        _add(store, "t-ok", n)
    got: list[list[int]] = []

    def claim(name):
        ids = []
        while batch := outbox.claim(store, name, limit=3):
            ids.extend(j.id for j in batch)
        got.append(ids)

    threads = [threading.Thread(target=claim, args=(f"w{i}",)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    every = [i for ids in got for i in ids]
    assert len(every) == 40 and len(set(every)) == 40


def test_worker_delivers_and_records(store, worker):
    CALLS.clear()
    _add(store, "t-ok", 7)
    assert worker.run_until_idle() == 1
    total, jobs = outbox.list_jobs(store, state="delivered")
    assert total == 1 and jobs[0].result == "done 7" and jobs[0].delivered_at
    assert len(CALLS) == 1
    assert worker.run_until_idle() == 0  # nothing delivered twice


def test_retryable_errors_back_off_then_deliver(store, worker):
    FLAKY.clear()
    _add(store, "t-flaky", 1, max_attempts=5)
    for _ in range(3):
        worker.run_once()
        time.sleep(0.02)  # backoff base is 1 ms in these tests
    job = outbox.list_jobs(store)[1][0]
    assert job.state == "delivered" and job.attempts == 3
    assert [a["outcome"] for a in outbox.attempts_of(store, job.id)] == ["retry", "retry", "delivered"]
    assert [a["status"] for a in outbox.attempts_of(store, job.id)][:2] == [500, 500]


def test_attempt_budget_exhausted_makes_the_job_dead_then_retry_revives_it(store, worker):
    FLAKY.clear()
    _add(store, "t-flaky", 2, max_attempts=2)
    worker.run_once()
    time.sleep(0.02)
    worker.run_once()
    job = outbox.list_jobs(store, state="dead")[1][0]
    assert job.attempts == 2 and "ServerError" in job.last_error
    assert outbox.retry(store, [job.id]) == 1
    assert outbox.get_job(store, job.id).state == "pending"
    # a fresh budget: attempts restart, and the third call overall succeeds
    worker.run_once()
    job = outbox.get_job(store, job.id)
    assert job.state == "delivered" and job.attempts == 1


def test_permanent_errors_are_dead_at_once(store, worker):
    _add(store, "t-permanent", 1, max_attempts=8)
    worker.run_once()
    job = outbox.list_jobs(store)[1][0]
    assert job.state == "dead" and job.attempts == 1 and job.last_status == 422


def test_retry_after_pushes_the_next_attempt(store, worker):
    _add(store, "t-429", 1, max_attempts=8)
    worker.run_once()
    job = outbox.list_jobs(store)[1][0]
    assert job.state == "pending"
    assert job.next_attempt_at >= outbox.iso_in(110)
    assert worker.run_once() == 0  # not due yet


def test_a_bug_in_a_deliver_function_is_recorded_not_fatal(store, worker):
    _add(store, "t-bug", 1)
    _add(store, "t-ok", 2)
    assert worker.run_once() == 2
    total, jobs = outbox.list_jobs(store)
    by_kind = {j.kind: j for j in jobs}
    assert by_kind["t-bug"].state == "pending" and "KeyError" in by_kind["t-bug"].last_error
    assert by_kind["t-ok"].state == "delivered"


def test_unknown_kind_is_dead(store, worker):
    _add(store, "t-nobody-registered-this", 1)
    worker.run_once()
    assert outbox.list_jobs(store)[1][0].state == "dead"


def test_purge_delivered_keeps_the_rest(store, worker):
    _add(store, "t-ok", 1)
    _add(store, "t-permanent", 2)
    worker.run_until_idle()
    assert outbox.purge_delivered(store) == 1
    assert outbox.counts(store) == {"pending": 0, "in-progress": 0, "delivered": 0, "dead": 1}


def test_backoff_grows_is_capped_and_honours_retry_after():
    assert outbox.backoff_seconds(1, 2.0, 600, rng=lambda: 1.0) == 2.0
    assert outbox.backoff_seconds(4, 2.0, 600, rng=lambda: 1.0) == 16.0
    assert outbox.backoff_seconds(30, 2.0, 600, rng=lambda: 1.0) == 600
    assert 1.0 <= outbox.backoff_seconds(2, 2.0, 600) <= 4.0  # jitter stays within [ceiling/2, ceiling]
    assert outbox.backoff_seconds(1, 2.0, 600, retry_after=90) == 90
