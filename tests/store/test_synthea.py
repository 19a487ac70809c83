"""Whole Synthea patient records (transaction Bundles) load, with every urn:uuid reference resolved."""

from __future__ import annotations

import orjson
import pytest

from tests.api.conftest import CheckedClient
from tests.conftest import DATA
from tests.store.helpers import references

RECORDS = sorted((DATA / "synthea").glob("*.json"))


@pytest.mark.parametrize("path", RECORDS, ids=lambda p: p.name.split("_")[0])
def test_synthea_record_loads_as_one_transaction(client, store, path):
    bundle = orjson.loads(path.read_bytes())
    entries = bundle["entry"]
    fhir = CheckedClient(client)  # the transaction-response is checked against the R4 schema
    r = fhir.post("/fhir", json=bundle)
    assert r.status_code == 200, r.get_json()
    out = r.get_json()
    assert out["type"] == "transaction-response" and len(out["entry"]) == len(entries)
    assert all(e["response"]["status"] == "201 Created" for e in out["entry"])

    # fullUrl -> the stored Type/id, from the response locations (same order as the request).
    stored = {}
    for req, resp in zip(entries, out["entry"], strict=True):
        rtype, rid = resp["response"]["location"].split("/")[:2]
        assert rtype == req["resource"]["resourceType"]
        stored[req["fullUrl"]] = f"{rtype}/{rid}"
    assert store.count() == len(entries)

    resolved = 0
    for req in entries:
        rtype, rid = stored[req["fullUrl"]].split("/")
        resource = store.read(rtype, rid).resource()
        sent_refs = list(references(req["resource"]))
        got_refs = list(references(resource))
        assert len(sent_refs) == len(got_refs)
        for sent, got in zip(sent_refs, got_refs, strict=True):
            if sent.startswith("urn:uuid:"):
                assert got == stored[sent], f"{sent} rewritten to the entry it names"
                t, i = got.split("/")
                assert store.read(t, i).id == i  # resolves to a stored resource
                resolved += 1
            else:
                assert got == sent  # contained (#...) references are left alone
    assert resolved > 200

    patient_id = stored[entries[0]["fullUrl"]].split("/")[1]
    conditions = fhir.get(f"/fhir/Condition?patient={patient_id}").get_json()
    assert conditions["total"] == sum(1 for e in entries if e["resource"]["resourceType"] == "Condition")
    observations = fhir.get(f"/fhir/Observation?subject=Patient/{patient_id}&_count=1000").get_json()
    assert observations["total"] == sum(1 for e in entries if e["resource"]["resourceType"] == "Observation")
