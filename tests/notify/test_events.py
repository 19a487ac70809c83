"""Subscription state and event numbering in the store, on every backend."""

from __future__ import annotations

import threading

from gateway.notify import events


def test_events_are_numbered_from_one_and_listed_in_range(store):
    with store.write() as tx:
        events.ensure(tx.conn, "s1", "topic")
        numbers = [events.emit(tx.conn, "s1", "topic", f"ResearchStudy/{i}").number for i in range(5)]
    assert numbers == [1, 2, 3, 4, 5]
    with store.engine.connect() as conn:
        assert [e.number for e in events.events(conn, "s1", since=2, until=4)] == [2, 3, 4]
        assert events.get(conn, "s1").events_since_start == 5


def test_concurrent_emits_never_share_a_number(store):
    with store.write() as tx:
        events.ensure(tx.conn, "s2", "topic")

    def work():
        for _ in range(10):
            with store.write() as tx:
                events.emit(tx.conn, "s2", "topic", "ResearchStudy/x")

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    with store.engine.connect() as conn:
        numbers = [e.number for e in events.events(conn, "s2")]
    assert numbers == list(range(1, 41))


def test_failures_move_to_error_and_recover(store):
    with store.write() as tx:
        events.ensure(tx.conn, "s3", "topic", status="active")
        for _ in range(2):
            state = events.record_failure(tx.conn, "s3", "connection refused", error_after=3)
        assert state.status == "active" and state.consecutive_failures == 2
        state = events.record_failure(tx.conn, "s3", "connection refused", error_after=3)
        assert state.status == "error" and state.last_error == "connection refused"
        events.set_status(tx.conn, "s3", "active")
        assert events.get(tx.conn, "s3").consecutive_failures == 0


def test_cancel_for_focus_hides_events(store):
    with store.write() as tx:
        events.ensure(tx.conn, "s4", "topic")
        events.emit(tx.conn, "s4", "topic", "ResearchStudy/a")
        events.emit(tx.conn, "s4", "topic", "ResearchStudy/b")
        assert events.cancel_for_focus(tx.conn, "ResearchStudy/a") == 1
        assert [e.focus for e in events.events(tx.conn, "s4")] == ["ResearchStudy/b"]
