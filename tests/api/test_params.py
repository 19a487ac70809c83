"""One reader of operation parameters: a Parameters body -> {name: [values]}, typed values with a 400."""

import pytest

from gateway.api.params import boolean, each_once, parameters_of, whole
from gateway.fhir.errors import InvalidResource


def test_parameters_body_values_and_resources():
    body = {"resourceType": "Parameters", "parameter": [
        {"name": "status", "valueCode": "recruiting"}, {"name": "status", "valueCode": "active"},
        {"name": "bundle", "resource": {"resourceType": "Bundle"}}, {"name": "near", "valueBoolean": False}]}
    assert parameters_of(body, "$match") == {"status": ["recruiting", "active"],
                                             "bundle": [{"resourceType": "Bundle"}], "near": [False]}


@pytest.mark.parametrize("body", [{"resourceType": "Patient"}, [], "x",
                                  {"resourceType": "Parameters", "parameter": [{"valueString": "no name"}]},
                                  {"resourceType": "Parameters", "parameter": ["not an object"]}])
def test_other_bodies_are_400_naming_where(body):
    with pytest.raises(InvalidResource) as err:
        parameters_of(body, "$translate")
    assert err.value.status == 400


def test_repeats_and_typed_values():
    with pytest.raises(InvalidResource, match="may appear once"):
        each_once({"codeA": ["a", "b"]})
    assert each_once({"codeA": ["a"], "system": ["s"]}) == {"codeA": "a", "system": "s"}
    assert whole("3", "_count") == 3 and boolean("TRUE", "includeNearMisses") is True
    with pytest.raises(InvalidResource, match="_count"):
        whole("-1", "_count")
