"""FHIR REST interactions through the Flask test client, every response body checked against the R4 schema."""

from __future__ import annotations

import dataclasses
from urllib.parse import urlsplit

import orjson
import pytest

from gateway.api.app import create_app
from gateway.fhir.conventions import CTGOV, NHS_NUMBER
from gateway.fhir.search_params import CONDITION_SEARCH_PARAM_URL
from tests.api.conftest import CheckedClient

SPONSOR = "https://sponsor.example.org/studies"
GROUP_URN = "urn:uuid:22222222-2222-4222-8222-222222222222"
MISSING_URN = "urn:uuid:33333333-3333-4333-8333-333333333333"


def study(ident: str, **extra) -> dict:
    return {"resourceType": "ResearchStudy", "status": "active", "title": f"Study {ident}",
            "identifier": [{"system": SPONSOR, "value": ident}], **extra}


def patient(nhs: str, **extra) -> dict:
    return {"resourceType": "Patient", "gender": "female",
            "identifier": [{"system": NHS_NUMBER, "value": nhs}], **extra}


def path(url: str) -> str:
    """An absolute link from a Bundle -> the path and query the test client wants."""
    parts = urlsplit(url)
    return f"{parts.path}?{parts.query}" if parts.query else parts.path


def ids(bundle: dict, mode: str = "match") -> list[str]:
    return [e["resource"]["id"] for e in bundle.get("entry", []) if e["search"]["mode"] == mode]


# -- create, read, update ------------------------------------------------------------------------
def test_put_creates_with_client_id_then_updates(fhir: CheckedClient):
    r = fhir.put("/fhir/ResearchStudy/rs-1", json={**study("S1"), "id": "rs-1"})
    assert r.status_code == 201
    assert r.headers["Location"].endswith("/fhir/ResearchStudy/rs-1/_history/1")
    assert r.get_json()["meta"]["versionId"] == "1"
    r = fhir.put("/fhir/ResearchStudy/rs-1", json={**study("S1", title="Renamed"), "id": "rs-1"})
    assert r.status_code == 200 and r.headers["ETag"] == 'W/"2"'
    assert fhir.get("/fhir/ResearchStudy/rs-1").get_json()["title"] == "Renamed"


def test_put_with_mismatched_id_is_400(fhir):
    r = fhir.put("/fhir/ResearchStudy/rs-1", json={**study("S1"), "id": "other"})
    assert r.status_code == 400
    assert r.get_json()["issue"][0]["expression"] == ["ResearchStudy.id"]


def test_vread_and_history(fhir):
    fhir.put("/fhir/ResearchStudy/h1", json={**study("H1"), "id": "h1"})
    fhir.put("/fhir/ResearchStudy/h1", json={**study("H1", status="completed"), "id": "h1"})
    fhir.put("/fhir/ResearchStudy/h2", json={**study("H2"), "id": "h2"})
    v1 = fhir.get("/fhir/ResearchStudy/h1/_history/1")
    assert v1.status_code == 200 and v1.get_json()["status"] == "active" and v1.headers["ETag"] == 'W/"1"'
    assert fhir.get("/fhir/ResearchStudy/h1/_history/2").get_json()["status"] == "completed"
    assert fhir.get("/fhir/ResearchStudy/h1/_history/3").status_code == 404
    assert fhir.get("/fhir/ResearchStudy/h1/_history/x").status_code == 404

    inst = fhir.get("/fhir/ResearchStudy/h1/_history").get_json()
    assert inst["type"] == "history" and inst["total"] == 2
    assert [e["resource"]["meta"]["versionId"] for e in inst["entry"]] == ["2", "1"], "newest first"
    typ = fhir.get("/fhir/ResearchStudy/_history").get_json()
    assert typ["total"] == 3
    assert {e["resource"]["id"] for e in typ["entry"]} == {"h1", "h2"}
    system = fhir.get("/fhir/_history?_count=2").get_json()
    assert system["total"] == 3 and len(system["entry"]) == 2
    nxt = next(link["url"] for link in system["link"] if link["relation"] == "next")
    assert len(fhir.get(path(nxt)).get_json()["entry"]) == 1
    assert fhir.get("/fhir/ResearchStudy/nope/_history").status_code == 404


def test_delete_then_read_is_410_and_history_keeps_the_tombstone(fhir):
    fhir.put("/fhir/ResearchStudy/d1", json={**study("D1"), "id": "d1"})
    r = fhir.delete("/fhir/ResearchStudy/d1")
    assert r.status_code == 204 and r.headers["ETag"] == 'W/"2"'
    gone = fhir.get("/fhir/ResearchStudy/d1")
    assert gone.status_code == 410 and gone.get_json()["issue"][0]["code"] == "deleted"
    assert fhir.get("/fhir/ResearchStudy/d1/_history/1").status_code == 200
    assert fhir.get("/fhir/ResearchStudy/d1/_history/2").status_code == 410
    hist = fhir.get("/fhir/ResearchStudy/d1/_history").get_json()
    assert hist["total"] == 2 and "resource" not in hist["entry"][0]
    assert hist["entry"][0]["request"]["method"] == "DELETE"
    assert fhir.get("/fhir/ResearchStudy?identifier=D1").get_json()["total"] == 0, "deleted is not found"
    again = fhir.delete("/fhir/ResearchStudy/d1")
    assert again.status_code == 200, "deleting a deleted resource is not an error"
    # Re-creating under the same id continues the version sequence.
    r = fhir.put("/fhir/ResearchStudy/d1", json={**study("D1"), "id": "d1"})
    assert r.status_code == 201 and r.headers["ETag"] == 'W/"3"'


def test_read_unknown_is_404(fhir):
    r = fhir.get("/fhir/ResearchStudy/unknown")
    assert r.status_code == 404 and r.get_json()["issue"][0]["code"] == "not-found"


def test_if_match(fhir):
    fhir.put("/fhir/ResearchStudy/m1", json={**study("M1"), "id": "m1"})
    body = {**study("M1", title="v2"), "id": "m1"}
    stale = fhir.put("/fhir/ResearchStudy/m1", json=body, headers={"If-Match": 'W/"7"'})
    assert stale.status_code == 412 and stale.get_json()["issue"][0]["code"] == "conflict"
    ok = fhir.put("/fhir/ResearchStudy/m1", json=body, headers={"If-Match": 'W/"1"'})
    assert ok.status_code == 200 and ok.headers["ETag"] == 'W/"2"'
    assert fhir.delete("/fhir/ResearchStudy/m1", headers={"If-Match": 'W/"1"'}).status_code == 412
    assert fhir.get("/fhir/ResearchStudy/m1").status_code == 200, "a failed delete deletes nothing"
    assert fhir.delete("/fhir/ResearchStudy/m1", headers={"If-Match": 'W/"2"'}).status_code == 204


# -- conditional create and update ---------------------------------------------------------------
def test_conditional_create(fhir):
    hdr = {"If-None-Exist": f"identifier={SPONSOR}|C1"}
    first = fhir.post("/fhir/ResearchStudy", json=study("C1"), headers=hdr)
    assert first.status_code == 201
    second = fhir.post("/fhir/ResearchStudy", json=study("C1", title="changed"), headers=hdr)
    assert second.status_code == 200
    assert second.get_json()["id"] == first.get_json()["id"]
    assert second.get_json()["title"] == "Study C1", "a matching conditional create changes nothing"
    fhir.post("/fhir/ResearchStudy", json=study("C1"))  # an unconditional duplicate
    third = fhir.post("/fhir/ResearchStudy", json=study("C1"), headers=hdr)
    assert third.status_code == 412


def test_conditional_update_outcomes(fhir, store):
    url = f"/fhir/ResearchStudy?identifier={SPONSOR}|U1"
    r = fhir.put(url, json=study("U1"))
    assert r.status_code == 201
    rid = r.get_json()["id"]
    seq = store.changes_since(0)[-1]["seq"]

    same = fhir.put(url, json=study("U1"))
    assert same.status_code == 200 and same.headers["ETag"] == 'W/"1"', "unchanged content: no new version"
    assert store.changes_since(seq) == [], "an unchanged update records no change"
    assert fhir.get(f"/fhir/ResearchStudy/{rid}/_history").get_json()["total"] == 1

    changed = fhir.put(url, json=study("U1", title="New title"))
    assert changed.status_code == 200 and changed.headers["ETag"] == 'W/"2"'
    assert changed.get_json()["id"] == rid

    fhir.post("/fhir/ResearchStudy", json=study("U1"))
    assert fhir.put(url, json=study("U1", title="x")).status_code == 412
    assert fhir.get(f"/fhir/ResearchStudy/{rid}").get_json()["title"] == "New title"


def test_conditional_update_id_mismatch_is_400(fhir):
    fhir.put("/fhir/ResearchStudy/u2", json={**study("U2"), "id": "u2"})
    r = fhir.put(f"/fhir/ResearchStudy?identifier={SPONSOR}|U2", json={**study("U2"), "id": "other"})
    assert r.status_code == 400


def test_put_and_delete_on_type_without_query_are_405(fhir):
    assert fhir.put("/fhir/ResearchStudy", json=study("x")).status_code == 405
    assert fhir.delete("/fhir/ResearchStudy").status_code == 405
    assert fhir.patch("/fhir/ResearchStudy", json={}).status_code == 405  # conditional patch: not supported
    assert fhir.patch("/fhir/ResearchStudy/x", json={}).status_code == 404  # PATCH is supported; x does not exist
    assert fhir.post("/fhir/ResearchStudy/x", json=study("x")).status_code == 405


# -- Prefer ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("prefer,body", [
    ("return=minimal", None), ("return=representation", "ResearchStudy"),
    ("return=OperationOutcome", "OperationOutcome"), (None, "ResearchStudy")])
def test_prefer_return(fhir, prefer, body):
    headers = {"Prefer": prefer} if prefer else {}
    r = fhir.post("/fhir/ResearchStudy", json=study("P1"), headers=headers)
    assert r.status_code == 201 and r.headers["Location"]
    if body is None:
        assert r.data == b""
    else:
        assert r.get_json()["resourceType"] == body


# -- search --------------------------------------------------------------------------------------
def test_token_forms(fhir):
    fhir.post("/fhir/ResearchStudy", json=study("T1"))
    fhir.post("/fhir/ResearchStudy", json={**study("T2"), "identifier": [{"value": "T2"}]})  # no system
    q = "/fhir/ResearchStudy?identifier="
    assert ids(fhir.get(q + f"{SPONSOR}|T1").get_json()) != []
    assert fhir.get(q + f"{SPONSOR}|T1").get_json()["total"] == 1
    assert fhir.get(q + "T1").get_json()["total"] == 1, "value: any system"
    assert fhir.get(q + "|T1").get_json()["total"] == 0, "|value: no system"
    assert fhir.get(q + "|T2").get_json()["total"] == 1
    assert fhir.get(q + f"{SPONSOR}|").get_json()["total"] == 1, "system|: any value in the system"
    assert fhir.get(q + "T1,T2").get_json()["total"] == 2, "comma is OR"
    assert fhir.get(q + "https://other.example|T1").get_json()["total"] == 0


def test_researchstudy_search_parameters(fhir):
    snomed = "http://snomed.info/sct"
    fhir.post("/fhir/ResearchStudy", json=study(
        "K1", title="Glioblastoma Vaccine Trial", keyword=[{"coding": [{"system": "urn:kw", "code": "gbm"}]}],
        condition=[{"coding": [{"system": snomed, "code": "393563007"}]}]))
    fhir.post("/fhir/ResearchStudy", json=study("K2", status="completed", title="Colon screening"))
    s = "/fhir/ResearchStudy?"
    assert ids(fhir.get(s + "title=glioBLAST").get_json()) == ids(fhir.get(s + "keyword=gbm").get_json())
    assert fhir.get(s + "title=glioblast").get_json()["total"] == 1, "string: case-insensitive prefix"
    assert fhir.get(s + "title:contains=vaccine").get_json()["total"] == 1
    assert fhir.get(s + "title:exact=Vaccine").get_json()["total"] == 0
    assert fhir.get(s + f"condition={snomed}|393563007").get_json()["total"] == 1
    assert fhir.get(s + "status=completed").get_json()["total"] == 1
    assert fhir.get(s + "status=active&title=colon").get_json()["total"] == 0, "parameters are ANDed"
    assert fhir.get(s + "_lastUpdated=gt2000-01-01").get_json()["total"] == 2
    assert fhir.get(s + "_lastUpdated=lt2000-01-01").get_json()["total"] == 0


def test_researchsubject_and_reference_search(fhir):
    fhir.put("/fhir/ResearchStudy/rs", json={**study("R"), "id": "rs"})
    fhir.put("/fhir/Patient/p1", json={**patient("9000000009"), "id": "p1"})
    # PUT: POST /fhir/ResearchSubject is the contact-request endpoint (gateway.api.contact), with its own rules.
    subj = {"resourceType": "ResearchSubject", "id": "sub1", "status": "candidate",
            "study": {"reference": "ResearchStudy/rs"}, "individual": {"reference": "Patient/p1"}}
    assert fhir.put("/fhir/ResearchSubject/sub1", json=subj).status_code == 201
    s = "/fhir/ResearchSubject?"
    for q in ("study=ResearchStudy/rs", "study=rs", "individual=Patient/p1", "patient=p1", "status=candidate",
              "study=http://elsewhere.example/fhir/ResearchStudy/rs"):
        assert fhir.get(s + q).get_json()["total"] == 1, q
    assert fhir.get(s + "status=on-study").get_json()["total"] == 0


def test_post_search_with_form_body(fhir):
    fhir.post("/fhir/ResearchStudy", json=study("F1"))
    fhir.post("/fhir/ResearchStudy", json=study("F2"))
    r = fhir.post("/fhir/ResearchStudy/_search", data={"identifier": f"{SPONSOR}|F2"},
                  headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert r.status_code == 200 and r.get_json()["total"] == 1
    assert r.get_json()["entry"][0]["resource"]["identifier"][0]["value"] == "F2"
    both = fhir.post("/fhir/ResearchStudy/_search?_count=1", data={"identifier": "F1,F2"},
                     headers={"Content-Type": "application/x-www-form-urlencoded"}).get_json()
    assert both["total"] == 2 and len(both["entry"]) == 1, "URL and body parameters combine"
    bad = fhir.post("/fhir/ResearchStudy/_search", json={"identifier": "F1"})
    assert bad.status_code == 415


def test_include_enrollment_and_site(fhir):
    group = {"resourceType": "Group", "id": "elig", "type": "person", "actual": False}
    fhir.put("/fhir/Group/elig", json=group)
    fhir.put("/fhir/Location/site1", json={"resourceType": "Location", "id": "site1", "name": "The Christie"})
    fhir.put("/fhir/Location/site2", json={"resourceType": "Location", "id": "site2", "name": "Leeds"})
    fhir.post("/fhir/ResearchStudy", json=study("I1", enrollment=[{"reference": "Group/elig"}],
                                                site=[{"reference": "Location/site1"},
                                                      {"reference": "Location/site2"}]))
    fhir.post("/fhir/ResearchStudy", json=study("I2", site=[{"reference": "Location/site1"}]))
    inc = "_include=ResearchStudy:enrollment&_include=ResearchStudy:site"
    b = fhir.get(f"/fhir/ResearchStudy?{inc}").get_json()
    assert b["total"] == 2 and len(ids(b)) == 2
    included = sorted(f'{e["resource"]["resourceType"]}/{e["resource"]["id"]}'
                      for e in b["entry"] if e["search"]["mode"] == "include")
    assert included == ["Group/elig", "Location/site1", "Location/site2"], "each included once"
    only_site = fhir.get(f"/fhir/ResearchStudy?identifier={SPONSOR}|I2&_include=ResearchStudy:site"
                         ).get_json()
    assert ids(only_site, "include") == ["site1"]
    # every reference parameter can be included now; 'title' is not one: refused when strict, else a warning
    strict = {"Prefer": "handling=strict"}
    assert fhir.get("/fhir/ResearchStudy?_include=ResearchStudy:title", headers=strict).status_code == 400
    lenient = fhir.get("/fhir/ResearchStudy?_include=ResearchStudy:title").get_json()
    assert [e["search"]["mode"] for e in lenient["entry"]].count("outcome") == 1
    assert "_include" not in next(lk["url"] for lk in lenient["link"] if lk["relation"] == "self")


def test_summary_count(fhir):
    for i in range(3):
        fhir.post("/fhir/ResearchStudy", json=study(f"N{i}"))
    b = fhir.get("/fhir/ResearchStudy?_summary=count").get_json()
    assert b["total"] == 3 and "entry" not in b or b.get("entry") == []


def test_count_paging_links_walk_forward_and_back(fhir):
    made = [fhir.post("/fhir/ResearchStudy", json=study(f"G{i}")).get_json()["id"] for i in range(7)]
    page = fhir.get("/fhir/ResearchStudy?status=active&_count=3").get_json()
    assert page["total"] == 7
    links = {link["relation"]: link["url"] for link in page["link"]}
    assert set(links) == {"self", "next"}
    seen, pages = ids(page), [page]
    while "next" in links:
        page = fhir.get(path(links["next"])).get_json()
        pages.append(page)
        seen += ids(page)
        links = {link["relation"]: link["url"] for link in page["link"]}
    assert sorted(seen) == sorted(made) and len(pages) == 3
    assert "status=active" in links["self"], "links keep the search parameters"
    back = fhir.get(path(links["prev"])).get_json()
    assert ids(back) == ids(pages[1])
    assert fhir.get("/fhir/ResearchStudy?_count=0").get_json()["total"] == 7
    capped = fhir.get("/fhir/ResearchStudy?_count=5000").get_json()
    assert "_count=1000" in capped["link"][0]["url"], "_count is capped at the maximum (1000)"


def test_unknown_parameters_reported_or_strict(fhir):
    fhir.post("/fhir/ResearchStudy", json=study("X1"))
    lax = fhir.get("/fhir/ResearchStudy?frobnicate=1&identifier=X1").get_json()
    assert lax["total"] == 1, "the unknown parameter is ignored, the known one applies"
    outcome = [e for e in lax["entry"] if e["search"]["mode"] == "outcome"]
    assert len(outcome) == 1
    issue = outcome[0]["resource"]["issue"][0]
    assert issue["severity"] == "warning" and "frobnicate" in issue["diagnostics"]
    assert "frobnicate" not in lax["link"][0]["url"], "self link lists only what was applied"
    strict = fhir.get("/fhir/ResearchStudy?frobnicate=1", headers={"Prefer": "handling=strict"})
    assert strict.status_code == 400 and "frobnicate" in strict.get_json()["issue"][0]["diagnostics"]
    assert fhir.get("/fhir/ResearchStudy?_lastUpdated=yesterday").status_code == 400
    assert fhir.get("/fhir/ResearchStudy?_count=-1").status_code == 400


def test_search_on_unknown_type_is_404(fhir):
    assert fhir.get("/fhir/Nonsense?x=1").status_code == 404


# -- media types and limits ----------------------------------------------------------------------
def test_media_types(fhir):
    assert fhir.post("/fhir/ResearchStudy", data="<x/>", headers={"Content-Type": "application/xml"}
                     ).status_code == 415
    assert fhir.post("/fhir/ResearchStudy", json=study("J1"), headers={"Content-Type": "application/json"}
                     ).status_code == 201
    assert fhir.get("/fhir/ResearchStudy", headers={"Accept": "application/fhir+xml"}).status_code == 406
    assert fhir.get("/fhir/ResearchStudy?_format=xml").status_code == 406
    assert fhir.get("/fhir/ResearchStudy", headers={"Accept": "application/json"}).status_code == 200
    assert fhir.post("/fhir/ResearchStudy", data="{not json").status_code == 400
    assert fhir.post("/fhir/ResearchStudy", data="").status_code == 400


@pytest.fixture
def small_client(settings):
    app = create_app(dataclasses.replace(settings, max_body_bytes=2000, max_bundle_entries=3))
    yield CheckedClient(app.test_client())
    app.extensions["gateway.store"].engine.dispose()


def test_body_and_bundle_limits_are_413(small_client, store):
    big = study("B1", description="x" * 3000)
    r = small_client.post("/fhir/ResearchStudy", json=big)
    assert r.status_code == 413 and "GATEWAY_MAX_BODY_BYTES" in r.get_json()["issue"][0]["diagnostics"]
    entries = [{"request": {"method": "POST", "url": "Patient"}, "resource": {"resourceType": "Patient"}}] * 4
    r = small_client.post("/fhir", json={"resourceType": "Bundle", "type": "batch", "entry": entries})
    assert r.status_code == 413 and "GATEWAY_MAX_BUNDLE_ENTRIES" in r.get_json()["issue"][0]["diagnostics"]
    ok = small_client.post("/fhir", json={"resourceType": "Bundle", "type": "batch", "entry": entries[:3]})
    assert ok.status_code == 200


# -- Bundles -------------------------------------------------------------------------------------
def test_batch_entries_are_independent(fhir, store):
    bundle = {"resourceType": "Bundle", "type": "batch", "entry": [
        {"request": {"method": "POST", "url": "ResearchStudy"}, "resource": study("B1")},
        {"request": {"method": "POST", "url": "ResearchStudy"}, "resource": study("B2", status="bogus")},
        {"request": {"method": "PUT", "url": "ResearchStudy/b3"}, "resource": {**study("B3"), "id": "b3"}},
        {"request": {"method": "GET", "url": "ResearchStudy/nope"}},
        {"request": {"method": "GET", "url": f"ResearchStudy?identifier={SPONSOR}|B1"}},
        {"request": {"method": "DELETE", "url": "ResearchStudy/b3"}},
    ]}
    r = fhir.post("/fhir", json=bundle)
    assert r.status_code == 200
    out = r.get_json()
    assert out["type"] == "batch-response" and len(out["entry"]) == 6
    status = [e["response"]["status"].split()[0] for e in out["entry"]]
    assert status[:3] == ["201", "422", "201"]
    assert out["entry"][1]["response"]["outcome"]["issue"][0]["expression"] == [
        "Bundle.entry[1].resource.status"]
    assert status[3] == "404"
    assert status[4] == "200" and out["entry"][4]["resource"]["total"] == 1
    assert status[5] == "200"
    assert store.count("ResearchStudy") == 1, "B1 stays although B2 failed; b3 was created then deleted"


def test_transaction_rewrites_references_and_responds_in_order(fhir):
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"fullUrl": "urn:uuid:11111111-1111-4111-8111-111111111111",
         "request": {"method": "POST", "url": "ResearchStudy", "ifNoneExist": f"identifier={SPONSOR}|TX1"},
         "resource": study("TX1", enrollment=[{"reference": GROUP_URN}])},
        {"fullUrl": GROUP_URN,
         "request": {"method": "POST", "url": "Group"},
         "resource": {"resourceType": "Group", "type": "person", "actual": False}},
    ]}
    r = fhir.post("/fhir", json=bundle, headers={"Prefer": "return=representation"})
    assert r.status_code == 200
    out = r.get_json()
    assert out["type"] == "transaction-response"
    assert [e["response"]["status"] for e in out["entry"]] == ["201 Created", "201 Created"]
    group_id = out["entry"][1]["resource"]["id"]
    assert out["entry"][0]["resource"]["enrollment"][0]["reference"] == f"Group/{group_id}"
    # Re-posting: the conditional entry matches, the unconditional one creates another Group.
    again = fhir.post("/fhir", json=bundle, headers={"Prefer": "return=minimal"}).get_json()
    assert again["entry"][0]["response"]["status"] == "200 OK"
    assert "resource" not in again["entry"][0] and "resource" not in again["entry"][1]


def test_transaction_with_unresolved_urn_is_400(fhir, store):
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"request": {"method": "POST", "url": "ResearchStudy"},
         "resource": study("TX2", enrollment=[{"reference": MISSING_URN}])},
    ]}
    r = fhir.post("/fhir", json=bundle)
    assert r.status_code == 400 and "urn:uuid:3333" in r.get_json()["issue"][0]["diagnostics"]
    assert store.count() == 0


def test_bundle_must_be_transaction_or_batch(fhir):
    r = fhir.post("/fhir", json={"resourceType": "Bundle", "type": "collection"})
    assert r.status_code == 400 and r.get_json()["issue"][0]["expression"] == ["Bundle.type"]


# -- CapabilityStatement -------------------------------------------------------------------------
def test_metadata(fhir):
    r = fhir.get("/fhir/metadata")
    assert r.status_code == 200
    cs = r.get_json()
    assert cs["resourceType"] == "CapabilityStatement" and cs["fhirVersion"] == "4.0.1"
    rest = cs["rest"][0]
    by_type = {res["type"]: res for res in rest["resource"]}
    assert "Claim" in by_type and "MedicinalProduct" not in by_type
    rs_params = {p["name"]: p for p in by_type["ResearchStudy"]["searchParam"]}
    assert rs_params["condition"]["type"] == "token"
    assert rs_params["condition"]["definition"] == CONDITION_SEARCH_PARAM_URL
    includes = set(by_type["ResearchStudy"]["searchInclude"])
    assert includes == {"ResearchStudy:enrollment", "ResearchStudy:site", "ResearchStudy:sponsor", "ResearchStudy:*"}
    assert {i["code"] for i in rest["interaction"]} >= {"transaction", "batch"}


# -- ClinicalTrials.gov identifier systems ---------------------------------------------------------
@pytest.mark.parametrize("system", ["http://clinicaltrials.gov", "https://clinicaltrials.gov/",
                                    "http://www.clinicaltrials.gov/"])
def test_ctgov_system_is_stored_in_one_form(fhir, system):
    nct = {"resourceType": "ResearchStudy", "status": "active", "identifier": [{"system": system,
                                                                               "value": "NCT01234567"}]}
    r = fhir.post("/fhir/ResearchStudy", json=nct)
    assert r.status_code == 201
    rid = r.get_json()["id"]
    assert fhir.get(f"/fhir/ResearchStudy/{rid}").get_json()["identifier"][0]["system"] == CTGOV
    for form in (CTGOV, system, "http://clinicaltrials.gov/"):
        assert fhir.get(f"/fhir/ResearchStudy?identifier={form}|NCT01234567").get_json()["total"] == 1, form
    # Re-pushing under another spelling is the same content: no new version.
    again = fhir.put("/fhir/ResearchStudy?identifier=http://clinicaltrials.gov|NCT01234567",
                     json={**nct, "identifier": [{"system": "http://clinicaltrials.gov/",
                                                  "value": "NCT01234567"}]})
    assert again.status_code == 200 and again.headers["ETag"] == 'W/"1"'


def test_ctgov_normalisation_in_transactions(fhir):
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"request": {"method": "PUT", "url": "ResearchStudy?identifier=http://clinicaltrials.gov/|NCT07654321"},
         "resource": {"resourceType": "ResearchStudy", "status": "active",
                      "identifier": [{"system": "http://clinicaltrials.gov/", "value": "NCT07654321"}]}}]}
    assert fhir.post("/fhir", json=bundle).get_json()["entry"][0]["response"]["status"] == "201 Created"
    found = fhir.get(f"/fhir/ResearchStudy?identifier={CTGOV}|NCT07654321").get_json()
    assert found["entry"][0]["resource"]["identifier"][0]["system"] == CTGOV
    assert fhir.post("/fhir", json=bundle).get_json()["entry"][0]["response"]["status"] == "200 OK"


def test_every_response_was_schema_checked(fhir):
    fhir.post("/fhir/ResearchStudy", json=study("S"))
    fhir.get("/fhir/ResearchStudy")
    fhir.get("/fhir/ResearchStudy/_history")
    fhir.get("/fhir/ResearchStudy/nope")
    assert fhir.checked == 4


def test_store_json_is_what_is_served(fhir, store):
    """Served bytes are the stored JSON (validated once on the way in), not a re-serialisation."""
    rid = fhir.post("/fhir/ResearchStudy", json=study("Z")).get_json()["id"]
    served = fhir.get(f"/fhir/ResearchStudy/{rid}").data
    assert orjson.loads(served) == orjson.loads(store.read("ResearchStudy", rid).content)


def test_conditional_create_with_search_parameters_on_the_url(fhir):
    """POST /ResearchStudy?identifier=... (how fhirpy's get_or_create asks) is a conditional create too."""
    url = f"/fhir/ResearchStudy?identifier={SPONSOR}|Q1"
    first = fhir.post(url, json=study("Q1"))
    assert first.status_code == 201
    again = fhir.post(url + "&_format=json", json=study("Q1"))
    assert again.status_code == 200 and again.get_json()["id"] == first.get_json()["id"]
    assert fhir.get(f"/fhir/ResearchStudy?identifier={SPONSOR}|Q1").get_json()["total"] == 1
