"""$match handles what it does not apply as search does (issue #14, "never silently dropped"): a parameter it
does not know, or a status that is not an R4 ResearchStudy.status code, is a warning entry that says what to use
instead, and stays out of the self link (lenient), or a 400 OperationOutcome (``Prefer: handling=strict``)."""

from __future__ import annotations

from tests.api.test_search_match import _anonymous, _titles, demo  # noqa: F401 (fixture)

STRICT = {"Prefer": "handling=strict"}


def _outcomes(bundle: dict) -> list[dict]:
    return [i for e in bundle.get("entry", []) if e["search"]["mode"] == "outcome"
            for i in e["resource"]["issue"]]


def _self(bundle: dict) -> str:
    return next(lk["url"] for lk in bundle["link"] if lk["relation"] == "self")


def test_status_recruiting_is_warned_with_status_active_and_never_widens(fhir, demo):  # noqa: F811
    r = fhir.get("/fhir/ResearchStudy/$match?condition-text=GBM&age=45&status=recruiting")
    assert r.status_code == 200
    b = r.get_json()
    assert _titles(b) == [] and b["total"] == 0  # no study can have 'recruiting': nothing, not every status
    (first, *rest) = _outcomes(b)
    assert first["severity"] == "warning" and first["code"] == "code-invalid"
    assert "use status=active" in first["diagnostics"] and rest
    assert "status" not in _self(b) and "GBM" not in _self(b)
    # a valid code beside it is applied, and only it is in the link
    b = fhir.get("/fhir/ResearchStudy/$match?condition-text=GBM&age=45&status=recruiting,active").get_json()
    assert _titles(b) and _titles(b)[0].startswith("ReGlio")
    assert "status=active" in _self(b) and "recruiting" not in _self(b)
    assert any("use status=active" in i["diagnostics"] for i in _outcomes(b))


def test_status_recruiting_is_refused_when_strict(fhir, demo):  # noqa: F811
    r = fhir.get("/fhir/ResearchStudy/$match?condition-text=GBM&status=recruiting", headers=STRICT)
    assert r.status_code == 400
    (issue,) = r.get_json()["issue"]
    assert issue["code"] == "code-invalid" and "use status=active" in issue["diagnostics"]
    body = _anonymous()
    body["parameter"].append({"name": "status", "valueCode": "recruiting"})
    r = fhir.post("/fhir/ResearchStudy/$match", json=body, headers=STRICT)
    assert r.status_code == 400 and "status=active" in r.get_json()["issue"][0]["diagnostics"]
    assert "LS6" not in r.get_data(as_text=True)


def test_unknown_parameter_warns_lenient_and_is_refused_strict(fhir, demo):  # noqa: F811
    body = _anonymous()
    body["parameter"].append({"name": "colour", "valueString": "red"})
    b = fhir.post("/fhir/ResearchStudy/$match", json=body).get_json()
    assert _titles(b)[0].startswith("ReGlio")
    (issue,) = _outcomes(b)
    assert issue["code"] == "not-supported" and "'colour'" in issue["diagnostics"]
    assert "colour" not in _self(b)
    r = fhir.post("/fhir/ResearchStudy/$match", json=body, headers=STRICT)
    assert r.status_code == 400 and r.get_json()["issue"][0]["code"] == "not-supported"
    r = fhir.get("/fhir/ResearchStudy/$match?condition-text=GBM&colour=red", headers=STRICT)
    assert r.status_code == 400 and "'colour'" in r.get_json()["issue"][0]["diagnostics"]


def test_every_documented_parameter_passes_strict_and_stays_in_the_self_link(fhir, demo):  # noqa: F811
    body = _anonymous()
    body["parameter"] += [{"name": "status", "valueCode": "active"}, {"name": "phase", "valueCode": "phase-2"},
                          {"name": "maxDistanceKm", "valueDecimal": 80},
                          {"name": "includeNearMisses", "valueBoolean": False}]
    r = fhir.post("/fhir/ResearchStudy/$match?_count=1", json=body, headers=STRICT)
    assert r.status_code == 200, r.get_json()
    link = _self(r.get_json())
    for kept in ("status=active", "phase=phase-2", "maxDistanceKm=80", "includeNearMisses=False", "_count=1"):
        assert kept in link, (kept, link)
    assert not _outcomes(r.get_json())
    assert "LS6" not in link and "GBM" not in link and "age" not in link


def test_the_operation_definition_names_every_parameter_match_reads(fhir):
    """What $match accepts and what its OperationDefinition documents are the same set (the anonymous profile
    included), so a parameter cannot be applied without being documented, or documented and then refused."""
    from gateway.api.matching_ops import MATCH_PARAMS

    od = fhir.get("/fhir/OperationDefinition/ResearchStudy-match").get_json()
    assert {p["name"] for p in od["parameter"] if p["use"] == "in"} == MATCH_PARAMS


def test_candidates_warns_of_an_unknown_parameter_and_refuses_it_when_strict(fhir, demo):  # noqa: F811
    from gateway.api.matching_ops import CANDIDATES_PARAMS

    sid = fhir.get("/fhir/ResearchStudy?_text=glioblastoma").get_json()["entry"][0]["resource"]["id"]
    b = fhir.get(f"/fhir/ResearchStudy/{sid}/$candidates?consent=any&colour=red&_count=5").get_json()
    (issue,) = _outcomes(b)
    assert issue["code"] == "not-supported" and "'colour'" in issue["diagnostics"]
    assert "colour" not in _self(b) and "consent=any" in _self(b) and "_count=5" in _self(b)
    r = fhir.get(f"/fhir/ResearchStudy/{sid}/$candidates?colour=red", headers=STRICT)
    assert r.status_code == 400 and r.get_json()["issue"][0]["code"] == "not-supported"
    ok = fhir.get(f"/fhir/ResearchStudy/{sid}/$candidates?consent=any&maxDistanceKm=80&_total=accurate&_count=5",
                  headers=STRICT)
    assert ok.status_code == 200 and not _outcomes(ok.get_json())
    od = fhir.get("/fhir/OperationDefinition/ResearchStudy-candidates").get_json()
    assert {p["name"] for p in od["parameter"] if p["use"] == "in"} == CANDIDATES_PARAMS
