"""The schema helper itself: it must catch what the official R4 schema forbids, also in nested resources."""

from __future__ import annotations

import time

from tests.fhir.schema import schema_errors, validator


def test_valid_resource_has_no_errors():
    assert schema_errors({"resourceType": "Patient", "gender": "female", "birthDate": "1980-02-29"}) == []


def test_bad_values_and_unknown_elements_are_caught():
    errors = schema_errors({"resourceType": "Patient", "gender": "woman", "birthDate": "1980-13-01", "foo": 1})
    assert any(e.startswith("Patient.gender") for e in errors)
    assert any(e.startswith("Patient.birthDate") for e in errors)
    assert any("'foo' was unexpected" in e for e in errors)


def test_nested_resources_are_checked_against_their_own_type():
    bundle = {"resourceType": "Bundle", "type": "searchset", "entry": [
        {"resource": {"resourceType": "Patient", "active": "yes"}},
        {"response": {"status": "200", "outcome": {"resourceType": "OperationOutcome",
                                                         "issue": [{"severity": "dire", "code": "x"}]}}},
    ]}
    errors = schema_errors(bundle)
    assert any(e.startswith("Bundle.entry[0].resource.active") for e in errors)
    assert any(e.startswith("Bundle.entry[1].response.outcome.issue[0]") for e in errors)


def test_unknown_type_is_an_error():
    assert schema_errors({"resourceType": "Nonsense"}) == ["Nonsense: 'Nonsense' is not an R4 resource type"]


def test_validators_are_compiled_once_per_type():
    assert validator("Observation") is validator("Observation")
    obs = {"resourceType": "Observation", "status": "final", "code": {"text": "x"}}
    start = time.perf_counter()
    for _ in range(100):
        assert schema_errors(obs) == []
    assert time.perf_counter() - start < 2.0, "one type's validator, not the root oneOf over ~150 types"


def test_prune_empty_reads_other_servers_empty_values_as_absent():
    """What a hospital's server sends with empty values is read as if they were absent (outbound client); the
    paired placeholders of primitive arrays stay aligned with their extensions."""
    from gateway.fhir.validate import prune_empty, validate_resource

    sent = {"resourceType": "Bundle", "type": "searchset", "total": 0, "entry": [], "link": [{}],
            "meta": {"tag": []}}
    assert validate_resource(prune_empty(sent)) == {"resourceType": "Bundle", "type": "searchset", "total": 0}
    patient = {"resourceType": "Patient", "name": [{"given": [None, "Jo"], "_given": [{"id": "a"}, None],
                                                    "family": ""}], "telecom": [None]}
    assert prune_empty(patient) == {"resourceType": "Patient",
                                    "name": [{"given": [None, "Jo"], "_given": [{"id": "a"}, None]}]}
