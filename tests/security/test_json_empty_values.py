"""FHIR JSON forbids null values (except paired primitive-array placeholders), empty arrays, empty objects and
empty strings. ``validate_resource`` refuses them, naming the element, for every write path that uses it
(REST and PATCH: tests/api/test_fhir_contract_security.py; Bundle entries and ingest here)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gateway.fhir.errors import InvalidResource
from gateway.fhir.validate import _json_ok, find_empty, validate_resource
from gateway.mapping.engine import MappedRecord
from gateway.mapping.ingest import prevalidate

DATA = Path(__file__).resolve().parents[1] / "data"
FIXTURES = Path(__file__).resolve().parents[2] / "fixtures"


def _study(**extra) -> dict:
    return {"resourceType": "ResearchStudy", "status": "active", "title": "T", **extra}


def test_a_bundle_entry_with_a_null_is_refused_naming_the_entry_element():
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"resource": _study(), "request": {"method": "POST", "url": "ResearchStudy"}},
        {"resource": _study(title=None), "request": {"method": "POST", "url": "ResearchStudy"}}]}
    with pytest.raises(InvalidResource) as err:
        validate_resource(bundle)
    assert err.value.issues[0].expression == ["Bundle.entry[1].resource.title"]
    assert "null is not a valid value" in err.value.diagnostics


def test_ingest_does_not_prevalidate_a_resource_with_an_empty_value():
    """The ingest pipeline leaves such a resource to the store, which refuses the record (same validator)."""
    rec = MappedRecord(index=0, source_id="NCT0", bundle={"resourceType": "Bundle", "type": "transaction", "entry": [
        {"resource": _study(), "request": {"method": "POST", "url": "ResearchStudy"}},
        {"resource": _study(keyword=[]), "request": {"method": "POST", "url": "ResearchStudy"}}]})
    assert prevalidate(rec).validated == {0}


@pytest.mark.parametrize("value", [None, "", [], {}, [None], [""], [{}], {"a": None}])
def test_each_empty_form_is_found(value):
    doc = {"resourceType": "Basic", "nested": {"deeper": [{"x": 1}, {"y": value}]}}
    assert not _json_ok(doc)
    where, _ = find_empty(doc, "Basic")
    assert where.startswith("Basic.nested.deeper[1].y")


def test_project_fixtures_hold_no_empty_values():
    """Every FHIR resource the tests and the demo load is valid FHIR JSON in this respect (the mCODE file
    with ``"extension": []`` is raw matching data, read by the matcher only, never written)."""
    roots = [DATA / "hl7-examples", DATA / "synthea", DATA / "ctgov" / "expected", FIXTURES / "demo"]
    count = 0
    for root in roots:
        for path in sorted(root.rglob("*.json")):
            doc = json.loads(path.read_text())
            if isinstance(doc, dict) and "resourceType" in doc:
                count += 1
                assert _json_ok(doc), (path.name, find_empty(doc, doc["resourceType"]))
    assert count >= 20
