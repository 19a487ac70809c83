"""store.ahead.read_ahead: the items of a generator made on a worker thread, in order, errors and early stops
handled as a plain loop would."""

from __future__ import annotations

import threading

import pytest

from gateway.store.ahead import read_ahead


def test_items_come_in_order_and_are_made_on_another_thread():
    threads = set()

    def produce():
        for i in range(50):
            threads.add(threading.current_thread().name)
            yield i

    assert list(read_ahead(produce)) == list(range(50))
    assert threads == {"read-ahead"}


def test_an_error_of_the_producer_is_raised_after_the_items_before_it():
    def produce():
        yield 1
        yield 2
        raise ValueError("chunk 3 could not be read")

    got = []
    with pytest.raises(ValueError, match="chunk 3"):
        for item in read_ahead(produce):
            got.append(item)
    assert got == [1, 2]


def test_stopping_early_closes_the_producer_on_its_thread_and_ends_the_worker():
    closed = threading.Event()
    made = []

    def produce():
        try:
            for i in range(10_000):
                made.append(i)
                yield i
        finally:
            closed.set()  # a connection opened by the producer is given back here

    items = read_ahead(produce, depth=1)
    assert [next(items) for _ in range(3)] == [0, 1, 2]
    items.close()
    assert closed.is_set(), "closed before close() returned"
    assert len(made) <= 6, "at most a few items made ahead, not the whole producer"
    assert not any(t.name == "read-ahead" and t.is_alive() for t in threading.enumerate())
