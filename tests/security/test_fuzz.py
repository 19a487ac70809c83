"""Fuzzing the FHIR endpoints with hypothesis as restricted callers: never a 500, never another's content."""

from __future__ import annotations

import json

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.security.conftest import WORLD, bearer, get_token, idp_token, secret
from tests.security.test_tenant_matrix import VISIBLE

IDS = [r["id"] for r in WORLD] + ["nope", "$match", "_history", "_search", "$candidates", "../admin", "%00"]
TYPES = ["Patient", "Condition", "Observation", "Consent", "ResearchSubject", "ResearchStudy", "Group", "Location",
         "Subscription", "AuditEvent", "Organization", "Encounter", "Bundle", "NotAType", "$match", "_history"]
PARAMS = ["_id", "patient", "subject", "individual", "identifier", "_include", "_count", "_offset", "_summary",
          "study", "code", "status", "_since", "_format", "name", "organization", "member"]
VALUES = st.one_of(st.sampled_from(IDS), st.sampled_from([f"Patient/{i}" for i in IDS]),
                   st.sampled_from(["ResearchStudy:enrollment", "ResearchStudy:site", "count", "-1", "1000000",
                                    "https://fhir.nhs.uk/Id/nhs-number|9434765870", "json", "xml"]),
                   st.text(max_size=12))

json_leaf = st.one_of(st.none(), st.booleans(), st.integers(-5, 5), st.text(max_size=8),
                      st.sampled_from([f"Patient/{i}" for i in IDS]))
json_value = st.recursive(json_leaf, lambda inner: st.one_of(
    st.lists(inner, max_size=3), st.dictionaries(st.sampled_from(
        ["reference", "resourceType", "id", "subject", "patient", "individual", "entry", "resource", "request",
         "method", "url", "parameter", "name", "valueReference", "meta", "tag", "system", "code", "status"]),
        inner, max_size=4)), max_leaves=12)


@st.composite
def bodies(draw):
    kind = draw(st.sampled_from(["world", "bundle", "params", "random"]))
    if kind == "world":
        res = json.loads(json.dumps(draw(st.sampled_from(WORLD))))
        if draw(st.booleans()):
            res.pop("id")
        if draw(st.booleans()):
            res["subject"] = {"reference": f"Patient/{draw(st.sampled_from(IDS))}"}
        return res
    if kind == "bundle":
        entries = []
        for res in draw(st.lists(st.sampled_from(WORLD), max_size=3)):
            method = draw(st.sampled_from(["GET", "PUT", "POST", "DELETE"]))
            url = f"{res['resourceType']}/{res['id']}" if method != "POST" else res["resourceType"]
            entries.append({"request": {"method": method, "url": url}, "resource": res})
        return {"resourceType": "Bundle", "type": draw(st.sampled_from(["transaction", "batch"])), "entry": entries}
    if kind == "params":
        return {"resourceType": "Parameters", "parameter": [
            {"name": draw(st.sampled_from(["patient", "subject", "study"])),
             "valueReference": {"reference": f"Patient/{draw(st.sampled_from(IDS))}"}}]}
    return draw(json_value)


@st.composite
def requests_(draw):
    rtype = draw(st.sampled_from(TYPES))
    shape = draw(st.sampled_from(["type", "instance", "history", "vread", "op", "system"]))
    rid = draw(st.sampled_from(IDS))
    path = {"type": f"/fhir/{rtype}", "instance": f"/fhir/{rtype}/{rid}",
            "history": f"/fhir/{rtype}/{rid}/_history", "vread": f"/fhir/{rtype}/{rid}/_history/1",
            "op": f"/fhir/{rtype}/{rid}/${draw(st.sampled_from(['match', 'candidates', 'status', 'erase']))}",
            "system": "/fhir"}[shape]
    method = draw(st.sampled_from(["GET", "POST", "PUT", "DELETE"]))
    query = draw(st.lists(st.tuples(st.sampled_from(PARAMS), VALUES), max_size=3))
    body = draw(bodies()) if method in ("POST", "PUT") else None
    return method, path, query, body


def _fuzz(http, headers, role, req):
    method, path, query, body = req
    r = http.open(path, method=method, query_string=query, json=body, headers=headers)
    text = r.get_data(as_text=True)
    assert r.status_code < 500, (method, path, query, text[:300])
    leaks = [i for i in (x["id"] for x in WORLD) if i not in VISIBLE[role] and secret(i) in text]
    assert leaks == [], (method, path, query)


FUZZ = settings(max_examples=120, deadline=None, database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


@FUZZ
@given(req=requests_())
def test_fuzz_patient_app(http, keys, world, req):
    _fuzz(http, bearer(idp_token(keys)), "patient-app", req)


@FUZZ
@given(req=requests_())
def test_fuzz_hospital(http, keys, world, req):
    _fuzz(http, bearer(_cached(http, keys, "leeds-ehr")), "hospital", req)


@FUZZ
@given(req=requests_())
def test_fuzz_sponsor(http, keys, world, req):
    _fuzz(http, bearer(_cached(http, keys, "sponsor-a")), "sponsor", req)


_TOKENS: dict[tuple[int, str], str] = {}


def _cached(http, keys, client_id: str) -> str:
    key = (id(http.application), client_id)
    if key not in _TOKENS:
        _TOKENS[key] = get_token(http, keys, client_id)
    return _TOKENS[key]
