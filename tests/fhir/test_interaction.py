"""One parser turns a REST call into its FHIR interaction, for route authorization and Bundle entries alike."""

import pytest

from gateway.fhir.interaction import parse_interaction


@pytest.mark.parametrize(("method", "url", "name", "rtype", "rid", "vid", "operation", "query"), [
    ("POST", "", "transaction", None, None, None, None, ""),
    ("POST", "/", "transaction", None, None, None, None, ""),
    ("GET", "_history", "history-system", None, None, None, None, ""),
    ("GET", "$export?x=1", "operation", None, None, None, "export", "x=1"),
    ("GET", "Patient?name=a", "search", "Patient", None, None, None, "name=a"),
    ("POST", "Patient", "create", "Patient", None, None, None, ""),
    ("PUT", "Patient?identifier=s|v", "update", "Patient", None, None, None, "identifier=s|v"),
    ("DELETE", "Patient?identifier=s|v", "delete", "Patient", None, None, None, "identifier=s|v"),
    ("PATCH", "Patient", "update", "Patient", None, None, None, ""),
    ("POST", "Patient/_search", "search", "Patient", None, None, None, ""),
    ("GET", "Patient/_search", "read", "Patient", "_search", None, None, ""),  # not a FHIR search form
    ("GET", "Patient/_history", "history-type", "Patient", None, None, None, ""),
    ("POST", "ResearchStudy/$match", "operation", "ResearchStudy", None, None, "match", ""),
    ("GET", "/Patient/1", "read", "Patient", "1", None, None, ""),
    ("PUT", "Patient/1", "update", "Patient", "1", None, None, ""),
    ("PATCH", "Patient/1", "update", "Patient", "1", None, None, ""),
    ("DELETE", "Patient/1", "delete", "Patient", "1", None, None, ""),
    ("POST", "Patient/1", None, "Patient", "1", None, None, ""),
    ("GET", "ResearchStudy/s1/$candidates", "operation", "ResearchStudy", "s1", None, "candidates", ""),
    ("GET", "Patient/1/_history", "history-instance", "Patient", "1", None, None, ""),
    ("GET", "Patient/1/_history/3", "vread", "Patient", "1", "3", None, ""),
    ("GET", "Patient/1/other", None, "Patient", None, None, None, ""),
    ("GET", "Patient/1/_history/3/x", None, "Patient", None, None, None, ""),
])
def test_every_rest_shape(method, url, name, rtype, rid, vid, operation, query):
    it = parse_interaction(method, url)
    assert (it.name, it.method, it.rtype, it.rid, it.vid, it.operation, it.query) == (
        name, method, rtype, rid, vid, operation, query)


def test_conditional_writes_are_told_apart():
    assert parse_interaction("PUT", "Patient?identifier=s|v").conditional
    assert not parse_interaction("PUT", "Patient/1").conditional
    assert not parse_interaction("GET", "Patient?identifier=s|v").conditional
