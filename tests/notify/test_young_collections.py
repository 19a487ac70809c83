"""flows.young_collections_only: the collector's full passes paused for a study's flows, and restored after."""

from __future__ import annotations

import gc
import threading

import pytest

from gateway.notify.flows import NO_FULL_COLLECTION, young_collections_only


def test_full_passes_are_paused_inside_and_the_setting_restored_after_even_on_error():
    before = gc.get_threshold()
    with pytest.raises(RuntimeError), young_collections_only():
        assert gc.get_threshold() == (before[0], before[1], NO_FULL_COLLECTION)
        with young_collections_only():  # nested: still paused, and the outer exit restores
            pass
        assert gc.get_threshold()[2] == NO_FULL_COLLECTION
        raise RuntimeError("the block failed")
    assert gc.get_threshold() == before


def test_overlapping_threads_restore_the_setting_of_before_the_first():
    before = gc.get_threshold()
    entered, release = threading.Event(), threading.Event()

    def other():
        with young_collections_only():
            entered.set()
            release.wait(5)

    t = threading.Thread(target=other)
    t.start()
    entered.wait(5)
    with young_collections_only():
        pass
    assert gc.get_threshold()[2] == NO_FULL_COLLECTION, "the other thread is still inside"
    release.set()
    t.join(5)
    assert gc.get_threshold() == before
