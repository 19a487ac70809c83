"""The outbound FHIR client: headers, typed errors, retries with backoff and Retry-After, allow-list."""

from __future__ import annotations

import pytest
import requests
import responses
from responses import matchers

from gateway.outbound import errors as E
from gateway.outbound.allowlist import AllowList
from gateway.outbound.auth import BearerTokenAuth
from gateway.outbound.client import FhirClient

BASE = "https://fhir.hospital.test/R4"
PATIENT = {"resourceType": "Patient", "id": "p1", "gender": "female"}
OO = {"resourceType": "OperationOutcome", "issue": [{"severity": "error", "code": "processing",
                                                      "diagnostics": "server says no"}]}
FHIR = {"Content-Type": "application/fhir+json"}


def make(**kw) -> tuple[FhirClient, list[float]]:
    slept: list[float] = []
    kw.setdefault("allowed_hosts", AllowList.parse("fhir.hospital.test"))
    client = FhirClient(BASE, sleep=slept.append, jitter=lambda: 1.0, backoff_base=0.5, **kw)
    return client, slept


@responses.activate
def test_read_sends_fhir_headers_and_a_timeout_and_validates():
    responses.get(f"{BASE}/Patient/p1", json=PATIENT, headers=FHIR)
    client, _ = make(timeout=(2.0, 7.0))
    assert client.read("Patient", "p1") == PATIENT
    sent = responses.calls[0].request
    assert sent.headers["Accept"] == "application/fhir+json"
    assert sent.req_kwargs["timeout"] == (2.0, 7.0)


@pytest.mark.parametrize(("status", "cls", "retryable"), [
    (401, E.Unauthorized, False), (403, E.Forbidden, False), (404, E.NotFound, False), (410, E.NotFound, False),
    (409, E.Conflict, False), (412, E.Conflict, False), (422, E.Unprocessable, False), (400, E.Unprocessable, False),
    (408, E.RequestTimeout, True), (429, E.TooManyRequests, True), (500, E.ServerError, True),
    (503, E.ServerError, True),
])
@responses.activate
def test_each_status_raises_its_typed_error(status, cls, retryable):
    responses.get(f"{BASE}/Patient/p1", json=OO, status=status, headers=FHIR)
    client, _ = make(max_retries=0)
    with pytest.raises(cls) as info:
        client.read("Patient", "p1")
    assert info.value.status == status
    assert info.value.retryable is retryable
    assert "server says no" in str(info.value)
    assert info.value.outcome == OO
    assert len(responses.calls) == 1


@responses.activate
def test_connection_error_is_a_transport_error():
    responses.get(f"{BASE}/Patient/p1", body=requests.ConnectionError("Connection refused"))
    client, slept = make(max_retries=2)
    with pytest.raises(E.TransportError) as info:
        client.read("Patient", "p1")
    assert info.value.retryable
    assert len(responses.calls) == 3  # bounded: 1 + 2 retries
    assert slept == [0.5, 1.0]  # exponential (jitter pinned to its maximum)


@responses.activate
def test_timeout_is_a_transport_error():
    responses.get(f"{BASE}/Patient/p1", body=requests.ReadTimeout("slow"))
    client, _ = make(max_retries=0)
    with pytest.raises(E.TransportError, match="timed out"):
        client.read("Patient", "p1")


@responses.activate
def test_server_errors_are_retried_with_backoff_then_succeed():
    url = f"{BASE}/Patient/p1"
    responses.get(url, json=OO, status=500, headers=FHIR)
    responses.get(url, json=OO, status=503, headers=FHIR)
    responses.get(url, json=PATIENT, headers=FHIR)
    client, slept = make(max_retries=3)
    assert client.read("Patient", "p1")["id"] == "p1"
    assert len(responses.calls) == 3
    assert slept == [0.5, 1.0]


@responses.activate
def test_retry_after_is_honoured():
    url = f"{BASE}/Patient/p1"
    responses.get(url, json=OO, status=429, headers={**FHIR, "Retry-After": "7"})
    responses.get(url, json=PATIENT, headers=FHIR)
    client, slept = make(max_retries=2)
    client.read("Patient", "p1")
    assert slept == [7.0]


@responses.activate
def test_retry_after_longer_than_the_cap_gives_up_at_once():
    responses.get(f"{BASE}/Patient/p1", json=OO, status=503, headers={**FHIR, "Retry-After": "3600"})
    client, slept = make(max_retries=5, backoff_max=30)
    with pytest.raises(E.ServerError) as info:
        client.read("Patient", "p1")
    assert info.value.retry_after == 3600
    assert slept == [] and len(responses.calls) == 1


@responses.activate
def test_retries_are_bounded():
    responses.get(f"{BASE}/Patient/p1", json=OO, status=502, headers=FHIR)
    client, slept = make(max_retries=2)
    with pytest.raises(E.ServerError):
        client.read("Patient", "p1")
    assert len(responses.calls) == 3 and len(slept) == 2


@responses.activate
def test_plain_post_is_not_retried_on_a_server_error():
    responses.post(f"{BASE}/Task", json=OO, status=500, headers=FHIR)
    client, _ = make(max_retries=3)
    with pytest.raises(E.ServerError):
        client.create({"resourceType": "Task", "status": "requested", "intent": "order"})
    assert len(responses.calls) == 1  # a repeat could create a second Task


@responses.activate
def test_conditional_create_sends_if_none_exist_and_is_retried():
    rs = {"resourceType": "ResearchSubject", "status": "candidate", "study": {"identifier": {"value": "S"}},
          "individual": {"reference": "Patient/p1"}}
    url = f"{BASE}/ResearchSubject"
    responses.post(url, json=OO, status=500, headers=FHIR)
    responses.post(url, json={**rs, "id": "r1"}, status=201, headers={**FHIR, "Location": f"{url}/r1/_history/1"})
    client, _ = make(max_retries=2)
    resp = client.create(rs, if_none_exist="identifier=https://x.test/id|abc")
    assert resp.status == 201 and resp.location.endswith("/r1/_history/1")
    assert len(responses.calls) == 2
    for call in responses.calls:
        assert call.request.headers["If-None-Exist"] == "identifier=https://x.test/id|abc"
        assert call.request.headers["Content-Type"].startswith("application/fhir+json")
        assert b'"individual":{"reference":"Patient/p1"}' in call.request.body


@responses.activate
def test_update_sends_if_match():
    url = f"{BASE}/Patient/p1"
    responses.put(url, json=PATIENT, headers=FHIR, match=[matchers.header_matcher({"If-Match": 'W/"3"'})])
    client, _ = make()
    assert client.update(PATIENT, if_match='W/"3"').status == 200


@responses.activate
def test_host_not_allow_listed_sends_nothing():
    with pytest.raises(E.DestinationNotAllowed, match="GATEWAY_ALLOWED_HOSTS"):
        FhirClient(BASE, allowed_hosts=AllowList.parse("other.test"))
    assert len(responses.calls) == 0


@responses.activate
def test_search_follows_next_links_but_only_to_allowed_hosts():
    page1 = {"resourceType": "Bundle", "type": "searchset", "link": [
        {"relation": "next", "url": f"{BASE}/Condition?page=2"}],
        "entry": [{"resource": {"resourceType": "Condition", "id": "c1", "subject": {"reference": "Patient/p1"}},
                   "search": {"mode": "match"}}]}
    page2 = {"resourceType": "Bundle", "type": "searchset", "link": [
        {"relation": "next", "url": "https://evil.test/steal"}],
        "entry": [{"resource": {"resourceType": "Condition", "id": "c2", "subject": {"reference": "Patient/p1"}}}]}
    responses.get(f"{BASE}/Condition", json=page1, headers=FHIR,
                  match=[matchers.query_param_matcher({"patient": "p1"})])
    responses.get(f"{BASE}/Condition", json=page2, headers=FHIR, match=[matchers.query_param_matcher({"page": "2"})])
    client, _ = make()
    with pytest.raises(E.DestinationNotAllowed):
        client.search("Condition", {"patient": "p1"})
    assert len(responses.calls) == 2  # the third URL was refused before sending


@responses.activate
def test_response_that_is_not_fhir_is_refused():
    responses.get(f"{BASE}/Patient/p1", body="<html>proxy</html>", content_type="text/html")
    responses.get(f"{BASE}/Patient/p2", json={"resourceType": "Patient", "gender": "purple"}, headers=FHIR)
    client, _ = make(max_retries=0)
    with pytest.raises(E.InvalidResponse, match="text/html"):
        client.read("Patient", "p1")
    with pytest.raises(E.InvalidResponse, match="not a valid FHIR R4 resource"):
        client.read("Patient", "p2")


@responses.activate
def test_redirects_are_not_followed():
    responses.get(f"{BASE}/Patient/p1", status=302, headers={"Location": "https://evil.test/"})
    client, _ = make(max_retries=0)
    with pytest.raises(E.InvalidResponse, match="redirect"):
        client.read("Patient", "p1")
    assert len(responses.calls) == 1


@responses.activate
def test_bearer_token_comes_from_the_named_environment_variable():
    responses.get(f"{BASE}/Patient/p1", json=PATIENT, headers=FHIR)
    client, _ = make(auth=BearerTokenAuth("HOSP_TOKEN", env={"HOSP_TOKEN": "s3cret"}))
    client.read("Patient", "p1")
    assert responses.calls[0].request.headers["Authorization"] == "Bearer s3cret"


@responses.activate
def test_missing_bearer_token_is_a_configuration_error_and_sends_nothing():
    client, _ = make(auth=BearerTokenAuth("HOSP_TOKEN", env={}))
    with pytest.raises(E.ConfigurationError, match="HOSP_TOKEN"):
        client.read("Patient", "p1")
    assert len(responses.calls) == 0
