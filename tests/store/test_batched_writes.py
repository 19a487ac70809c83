"""Many units of work in one database transaction: batched conditional lookups that see buffered writes, and
savepoints that undo one unit only (SQLite and PostgreSQL)."""

from __future__ import annotations

from urllib.parse import parse_qsl

import pytest

from gateway.fhir.errors import InvalidResource
from gateway.fhir.search import parse_search
from tests.store.helpers import table_counts

SYS = "https://sponsor.example.org/sites"


def _loc(ident: str, name: str = "Site", rid: str | None = None) -> dict:
    r = {"resourceType": "Location", "name": name, "identifier": [{"system": SYS, "value": ident}]}
    return {**r, "id": rid} if rid else r


def _ids(found: dict, key: tuple[str, str]) -> list[str]:
    return [st.id for st in found.get(key, [])]


def test_find_tokens_sees_stored_and_buffered_writes_and_replaced_index_rows(service, store):
    stored = service.create(_loc("A"))
    service.update("Location", "gone", _loc("G", rid="gone"))
    service.delete("Location", "gone")
    with store.write() as tx:
        fresh = tx.create(_loc("B"), "b-id")  # buffered: not flushed yet
        assert tx.pending.resources, "the new row should still be buffered"
        # A changes identifier inside the transaction: its stored index row for A no longer counts.
        tx.put({**_loc("A2"), "id": stored.stored.id})
        found = tx.find_tokens("Location:identifier", [(SYS, "A"), (SYS, "A2"), (SYS, "B"), (SYS, "G"),
                                                       (SYS, "nothing")])
        assert _ids(found, (SYS, "A")) == []
        assert _ids(found, (SYS, "A2")) == [stored.stored.id]
        assert _ids(found, (SYS, "B")) == ["b-id"]
        assert found[(SYS, "B")][0].version == fresh.stored.version == 1
        assert (SYS, "G") not in found  # deleted resources are not found
        assert (SYS, "nothing") not in found


def test_savepoint_rollback_keeps_earlier_buffered_rows_and_drops_its_own(service, store):
    before = table_counts(store)
    with store.write() as tx:
        tx.create(_loc("KEEP"), "keep")
        with pytest.raises(InvalidResource), tx.savepoint():
            tx.create(_loc("DROP"), "drop")
            tx.put({**_loc("DROP2"), "id": "drop2"})  # a client id: written at once, after a flush
            raise InvalidResource("boom", "Location")
        with tx.savepoint():
            tx.create(_loc("KEEP2"), "keep2")
    after = table_counts(store)
    assert after["resources"] == before["resources"] + 2
    assert after["resource_versions"] == before["resource_versions"] + 2
    assert after["changes"] == before["changes"] + 2
    assert after["counter:changes"] == before["counter:changes"] + 2
    ids = store.search_ids(parse_search("Location", [("identifier", f"{SYS}|KEEP,{SYS}|KEEP2,{SYS}|DROP,"
                                                                    f"{SYS}|DROP2")]))
    assert sorted(ids) == ["keep", "keep2"]
    feed = [(c["id"], c["seq"]) for c in store.changes_since(before["counter:changes"])]
    assert [i for i, _ in feed] == ["keep", "keep2"]
    assert [s for _, s in feed] == [before["counter:changes"] + 1, before["counter:changes"] + 2]


def test_a_bundle_inside_a_savepoint_sees_an_earlier_bundles_buffered_writes(service, store):
    """Two conditional PUTs of the same key in two Bundles of one transaction: one resource, two versions."""
    def bundle(name: str) -> dict:
        return {"resourceType": "Bundle", "type": "transaction", "entry": [
            {"resource": _loc("SAME", name), "request": {"method": "PUT", "url": f"Location?identifier={SYS}|SAME"}}]}

    with store.write() as tx:
        with tx.savepoint():
            _, [first] = service.run_bundle(bundle("one"), tx=tx)
        with tx.savepoint():
            _, [second] = service.run_bundle(bundle("two"), tx=tx)
    assert first.write.outcome == "created" and second.write.outcome == "updated"
    assert first.write.stored.id == second.write.stored.id
    current = store.read("Location", first.write.stored.id)
    assert current.version == 2 and current.resource()["name"] == "two"
    assert store.history("Location", first.write.stored.id)[0] == 2


def test_two_conditional_puts_resolving_to_one_resource_apply_in_order(service, store):
    made = service.create(_loc("X", "zero"))
    rid = made.stored.id
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"resource": {**_loc("X", "one"), "identifier": [{"system": SYS, "value": "X"}, {"system": SYS, "value": "Y"}]},
         "request": {"method": "PUT", "url": f"Location?identifier={SYS}|X"}},
        {"resource": {**_loc("Y", "two"), "identifier": [{"system": SYS, "value": "X"}, {"system": SYS, "value": "Y"}]},
         "request": {"method": "PUT", "url": f"Location?identifier={SYS}|X"}},
    ]}
    _, results = service.run_bundle(bundle)
    assert [r.write.stored.version for r in results] == [2, 3]
    assert store.read("Location", rid).resource()["name"] == "two"


def test_conditional_delete_and_put_of_the_same_key_in_one_bundle(service, store):
    made = service.create(_loc("Z", "old"))
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"resource": _loc("Z", "new"), "request": {"method": "PUT", "url": f"Location?identifier={SYS}|Z"}},
        {"request": {"method": "DELETE", "url": f"Location?identifier={SYS}|Z"}},
    ]}
    _, results = service.run_bundle(bundle)
    # DELETE runs first; the PUT (resolved before it) writes the resource again as a new version
    assert results[1].write.outcome == "deleted"
    assert results[0].write.stored.id == made.stored.id and results[0].write.stored.version == 3
    assert store.read("Location", made.stored.id).resource()["name"] == "new"


@pytest.mark.parametrize("query", [
    f"identifier={SYS}|K1",
    f"identifier={SYS}|K1,{SYS}|K2",
    f"identifier={SYS}|a\\,b",  # an escaped comma inside a value
    "identifier=http%3A%2F%2Fclinicaltrials.gov%2F|NCT00000001",  # percent-encoded, another form of the system
    f"identifier={SYS}|missing",
    "identifier=K1",  # no system: not a key, runs as a normal search
    f"identifier:not={SYS}|K1",
    f"identifier={SYS}|K1&name=one",
])
def test_conditional_matches_agrees_with_the_search(service, store, query):
    service.create({**_loc("K1", "one")})
    service.create({**_loc("K2", "two")})
    service.create({**_loc("a,b", "comma")})
    service.create({"resourceType": "Location", "name": "ct",
                    "identifier": [{"system": "https://clinicaltrials.gov", "value": "NCT00000001"}]})
    try:
        want = sorted(store.search_ids(parse_search("Location", parse_qsl(query), strict=True)))
    except Exception as exc:  # a search the server refuses: the conditional path must refuse it too
        with store.write() as tx, pytest.raises(type(exc)):
            service.conditional_matches(tx, "Location", query)
        return
    with store.write() as tx:
        got = sorted(st.id for st in service.conditional_matches(tx, "Location", query))
    assert got == want
