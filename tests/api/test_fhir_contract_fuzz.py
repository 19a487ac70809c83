"""A bounded fuzzing run over the search surface the CapabilityStatement lists (its types, search parameters,
searchInclude / searchRevInclude, result parameters), with chains, modifiers, sort keys, strict handling and odd
values, and over PATCH bodies: never a server error, always an OperationOutcome or a Bundle. Both backends."""

from __future__ import annotations

from urllib.parse import urlencode

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.api.capability import capability_statement
from tests.api.conftest import CheckedClient

CS = capability_statement("http://localhost/fhir", "2026-01-01")
REST = CS["rest"][0]
TYPES = {r["type"]: r for r in REST["resource"] if len(r["searchParam"]) > 2}  # the types with own parameters
ODD = st.sampled_from(["", "x", "-", ",", "\\,", "|", "a|b|c", "Patient/1", "ResearchStudy/rs", "ge2020",
                       "2020-13-45", "active", "recruiting", "*", ":", "..", "%", "_", "é", "1e9", "true", "-title"])
VALUES = st.one_of(ODD, st.text(max_size=10))


@st.composite
def search_params(draw) -> tuple[str, list[tuple[str, str]]]:
    rtype = draw(st.sampled_from(sorted(TYPES)))
    res = TYPES[rtype]
    names = [p["name"] for p in res["searchParam"]]
    items: list[tuple[str, str]] = []
    for _ in range(draw(st.integers(1, 4))):
        shape = draw(st.sampled_from(["param", "modifier", "chain", "sort", "elements", "summary", "include",
                                      "revinclude", "unknown"]))
        if shape == "param":
            items.append((draw(st.sampled_from(names)), draw(VALUES)))
        elif shape == "modifier":
            mod = draw(st.sampled_from(["exact", "contains", "missing", "not", "Patient", "ResearchStudy", "text",
                                        "below", "iterate", ""]))
            items.append((f"{draw(st.sampled_from(names))}:{mod}", draw(VALUES)))
        elif shape == "chain":
            inner = draw(st.sampled_from(["identifier", "name", "status", "title", "_id", "gender", "x", "a.b"]))
            items.append((f"{draw(st.sampled_from(names))}.{inner}", draw(VALUES)))
        elif shape == "sort":
            keys = draw(st.lists(st.sampled_from(names + ["-" + n for n in names] + ["nope", ""]), max_size=3))
            items.append(("_sort", ",".join(keys)))
        elif shape == "elements":
            items.append(("_elements", draw(st.sampled_from(["title", "-text", "id,meta", "a.b", "value[x]", ""]))))
        elif shape == "summary":
            items.append(("_summary", draw(st.sampled_from(["true", "text", "data", "count", "false", "maybe"]))))
        elif shape in ("include", "revinclude"):
            pool = res.get("searchInclude" if shape == "include" else "searchRevInclude") or [f"{rtype}:x"]
            key = f"_{shape}" + draw(st.sampled_from(["", ":iterate", ":bogus"]))
            items.append((key, draw(st.one_of(st.sampled_from(pool), VALUES))))
        else:
            items.append((draw(st.sampled_from(["colour", "_has:Observation:patient:code", "_tag", "_text"])),
                          draw(VALUES)))
    return rtype, items


@pytest.fixture
def seeded(fhir: CheckedClient) -> CheckedClient:
    fhir.put("/fhir/Location/loc", json={"resourceType": "Location", "id": "loc", "name": "Leeds"})
    fhir.put("/fhir/ResearchStudy/rs", json={"resourceType": "ResearchStudy", "id": "rs", "status": "active",
                                             "title": "Glioma", "site": [{"reference": "Location/loc"}]})
    fhir.put("/fhir/Patient/pt", json={"resourceType": "Patient", "id": "pt", "gender": "female",
                                       "birthDate": "1980"})
    fhir.put("/fhir/Observation/ob", json={"resourceType": "Observation", "id": "ob", "status": "final",
                                           "code": {"text": "ECOG"}, "subject": {"reference": "Patient/pt"}})
    return fhir


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(case=search_params(), strict=st.booleans())
def test_search_surface_never_errors(seeded: CheckedClient, case, strict):
    rtype, items = case
    headers = {"Prefer": "handling=strict"} if strict else {}
    r = seeded.get(f"/fhir/{rtype}?{urlencode(items)}", headers=headers)  # bodies are checked against R4
    assert r.status_code < 500, (rtype, items, r.get_data(as_text=True)[:500])
    body = r.get_json()
    assert body["resourceType"] == ("Bundle" if r.status_code == 200 else "OperationOutcome")


PATCHES = st.one_of(
    st.lists(st.fixed_dictionaries({"op": st.sampled_from(["add", "remove", "replace", "move", "copy", "test", "x"]),
                                    "path": st.sampled_from(["/title", "/status", "/id", "/meta", "/site/0",
                                                             "/site/-", "/nope/x", "", "title", "/"]),
                                    "value": st.one_of(st.none(), st.text(max_size=5), st.integers(),
                                                       st.just({"reference": "Location/loc"}))}), max_size=3),
    st.dictionaries(st.sampled_from(["title", "status", "id", "resourceType", "site"]),
                    st.one_of(st.none(), st.text(max_size=5), st.integers()), max_size=3),
    st.integers(), st.text(max_size=5))


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=PATCHES, ctype=st.sampled_from(["application/json-patch+json", "application/merge-patch+json",
                                            "application/fhir+json", "text/plain"]))
def test_patch_never_errors(seeded: CheckedClient, body, ctype):
    r = seeded.patch("/fhir/ResearchStudy/rs", json=body, headers={"Content-Type": ctype})
    assert r.status_code < 500, (body, ctype, r.get_data(as_text=True)[:500])
    if r.status_code == 200:
        assert r.get_json()["resourceType"] == "ResearchStudy" and r.get_json()["id"] == "rs"
