"""Tx.set_hierarchy / Store.hierarchies: registry hierarchy kept with the resource a record was stored as."""

from __future__ import annotations

import time

import pytest
from sqlalchemy import select

from gateway.store import schema as s

MESH = "https://www.nlm.nih.gov/mesh"
BREAST = [{"system": MESH, "code": "D001943", "display": "Breast Neoplasms", "ancestors": ["D009371"]},
          {"system": MESH, "code": "D009371", "display": "Neoplasms by Site", "ancestors": []}]


def _updated_at(store, rid: str) -> str:
    h = s.registry_hierarchy
    with store.engine.connect() as conn:
        return conn.execute(select(h.c.updated_at).where(h.c.res_id == rid)).scalar_one()


def test_kept_replaced_when_changed_and_left_alone_when_not(store):
    with store.write() as tx:
        tx.set_hierarchy("ResearchStudy", "a", BREAST)
    first = _updated_at(store, "a")
    time.sleep(0.01)
    with store.write() as tx:
        tx.set_hierarchy("ResearchStudy", "a", list(BREAST))  # the same again: nothing written
        tx.set_hierarchy("ResearchStudy", "b", BREAST[1:])
    assert _updated_at(store, "a") == first
    assert store.hierarchies("ResearchStudy", ["b", "a", "missing"]) == [("a", BREAST), ("b", BREAST[1:])]
    time.sleep(0.01)
    with store.write() as tx:
        tx.set_hierarchy("ResearchStudy", "a", BREAST[:1])
    assert _updated_at(store, "a") > first
    assert store.hierarchies("ResearchStudy", ["a", "b"]) == [("b", BREAST[1:]), ("a", BREAST[:1])]  # oldest first
    assert store.hierarchies("Group", ["a"]) == []


def test_a_rolled_back_savepoint_keeps_nothing(store):
    with store.write() as tx, pytest.raises(RuntimeError), tx.savepoint():
        tx.set_hierarchy("ResearchStudy", "a", BREAST)
        raise RuntimeError("the record failed")
    assert store.hierarchies("ResearchStudy", ["a"]) == []
