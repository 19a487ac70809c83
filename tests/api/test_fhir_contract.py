"""The FHIR contract clients rely on (issue 13): conditional read, _sort with stable paging, _elements and
_summary, _include / _revinclude, chained parameters, invalid codes and unknown parameters, PATCH, the
CapabilityStatement and its OperationDefinitions, and the edges of the HTTP surface. Both backends."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from urllib.parse import parse_qsl, urlsplit

import pytest

from gateway.fhir.conventions import NHS_NUMBER
from tests.api.conftest import CheckedClient

SPONSOR = "https://sponsor.example.org/studies"
SUBSETTED = "SUBSETTED"
STRICT = {"Prefer": "handling=strict"}
JSON_PATCH = {"Content-Type": "application/json-patch+json"}


def study(ident: str, title: str | None = None, **extra) -> dict:
    return {"resourceType": "ResearchStudy", "status": "active", "title": title or f"Study {ident}",
            "identifier": [{"system": SPONSOR, "value": ident}], **extra}


def path(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.path}?{parts.query}" if parts.query else parts.path


def link(bundle: dict, relation: str) -> str | None:
    return next((lk["url"] for lk in bundle.get("link", []) if lk["relation"] == relation), None)


def matches(bundle: dict) -> list[dict]:
    return [e["resource"] for e in bundle.get("entry", []) if e["search"]["mode"] == "match"]


def mode(bundle: dict, which: str) -> list[dict]:
    return [e["resource"] for e in bundle.get("entry", []) if e["search"]["mode"] == which]


def outcome_text(bundle: dict) -> str:
    return " ".join(i["diagnostics"] for oo in mode(bundle, "outcome") for i in oo["issue"])


def put(fhir: CheckedClient, resource: dict) -> dict:
    r = fhir.put(f"/fhir/{resource['resourceType']}/{resource['id']}", json=resource)
    assert r.status_code in (200, 201), r.get_json()
    return r.get_json()


# -- conditional read --------------------------------------------------------------------------
def test_conditional_read_if_none_match_and_if_modified_since(fhir: CheckedClient):
    put(fhir, {**study("CR"), "id": "cr"})
    first = fhir.get("/fhir/ResearchStudy/cr")
    etag, modified = first.headers["ETag"], first.headers["Last-Modified"]
    assert etag == 'W/"1"'
    for tag in (etag, '"1"', "1", 'W/"7", W/"1"', "*"):  # weak, strong, fhirpy's bare versionId, a list, any
        r = fhir.get("/fhir/ResearchStudy/cr", headers={"If-None-Match": tag})
        assert r.status_code == 304, tag
        assert r.data == b"" and "Content-Type" not in r.headers and r.headers["ETag"] == etag
    assert fhir.get("/fhir/ResearchStudy/cr", headers={"If-None-Match": 'W/"2"'}).status_code == 200
    assert fhir.get("/fhir/ResearchStudy/cr", headers={"If-Modified-Since": modified}).status_code == 304
    later = format_datetime(datetime.now(UTC) + timedelta(days=1), usegmt=True)
    assert fhir.get("/fhir/ResearchStudy/cr", headers={"If-Modified-Since": later}).status_code == 304
    earlier = format_datetime(datetime.now(UTC) - timedelta(days=1), usegmt=True)
    r = fhir.get("/fhir/ResearchStudy/cr", headers={"If-Modified-Since": earlier})
    assert r.status_code == 200 and r.get_json()["id"] == "cr"
    assert fhir.get("/fhir/ResearchStudy/cr", headers={"If-Modified-Since": "not a date"}).status_code == 200
    # If-None-Match wins over If-Modified-Since (RFC 9110): a stale tag means the body is sent
    r = fhir.get("/fhir/ResearchStudy/cr", headers={"If-None-Match": 'W/"9"', "If-Modified-Since": later})
    assert r.status_code == 200
    # after an update the old tag no longer matches
    put(fhir, {**study("CR", "Renamed"), "id": "cr"})
    r = fhir.get("/fhir/ResearchStudy/cr", headers={"If-None-Match": etag})
    assert r.status_code == 200 and r.get_json()["title"] == "Renamed"
    assert fhir.get("/fhir/ResearchStudy/cr/_history/1", headers={"If-None-Match": etag}).status_code == 304
    # HTTP dates have whole seconds: a change in the same second as the date the client holds is never a 304
    before = fhir.get("/fhir/ResearchStudy/cr").headers["Last-Modified"]
    put(fhir, {**study("CR", "Same second"), "id": "cr"})
    r = fhir.get("/fhir/ResearchStudy/cr", headers={"If-Modified-Since": before})
    assert r.status_code == 200 and r.get_json()["title"] == "Same second"
    now = r.headers["Last-Modified"]
    expect = 200 if now == before else 304  # same second as the previous version: ambiguous, so the body
    assert fhir.get("/fhir/ResearchStudy/cr", headers={"If-Modified-Since": now}).status_code == expect
    # a resource that does not exist is still 404, whatever the tag
    assert fhir.get("/fhir/ResearchStudy/nope", headers={"If-None-Match": "*"}).status_code == 404


# -- _sort -------------------------------------------------------------------------------------
def _seed_sortable(fhir: CheckedClient) -> None:
    titles = ["delta", "Alpha", "charlie", "Bravo", "echo", "alpha two"]
    for i, t in enumerate(titles):
        put(fhir, {**study(f"S{i}", t), "id": f"s{i}"})
    put(fhir, {**study("S9", "Zulu"), "id": "s9"})
    put(fhir, {**study("S9", "zulu"), "id": "s9"})  # updated last: the newest


def _walk(fhir: CheckedClient, url: str) -> list[str]:
    """Every match id, following next links from ``url``."""
    out: list[str] = []
    next_url: str | None = url
    while next_url:
        b = fhir.get(next_url).get_json()
        out += [r["id"] for r in matches(b)]
        nxt = link(b, "next")
        next_url = path(nxt) if nxt else None
    return out


def test_sort_by_string_id_and_last_updated_with_stable_pages(fhir: CheckedClient):
    _seed_sortable(fhir)
    by_title = _walk(fhir, "/fhir/ResearchStudy?_sort=title&_count=2")
    assert by_title == ["s1", "s5", "s3", "s2", "s0", "s4", "s9"]  # case- and accent-insensitive order
    assert _walk(fhir, "/fhir/ResearchStudy?_sort=-title&_count=3") == list(reversed(by_title))
    assert _walk(fhir, "/fhir/ResearchStudy?_sort=_id&_count=4") == ["s0", "s1", "s2", "s3", "s4", "s5", "s9"]
    assert _walk(fhir, "/fhir/ResearchStudy?_sort=-_id") == ["s9", "s5", "s4", "s3", "s2", "s1", "s0"]
    newest = _walk(fhir, "/fhir/ResearchStudy?_sort=-_lastUpdated&_count=2")
    assert newest[0] == "s9" and len(newest) == 7 and len(set(newest)) == 7
    assert _walk(fhir, "/fhir/ResearchStudy?_sort=_lastUpdated")[-1] == "s9"
    # the self link keeps the sort, so next pages continue the same order
    b = fhir.get("/fhir/ResearchStudy?_sort=-title&_count=2").get_json()
    assert dict(parse_qsl(urlsplit(link(b, "self")).query))["_sort"] == "-title"
    assert "_sort=-title" in link(b, "next").replace("%2C", ",")


def test_sort_by_date_and_several_keys(fhir: CheckedClient):
    for pid, family, born in [("p1", "Smith", "1980-05-01"), ("p2", "Jones", "1975"), ("p3", "Smith", "1990-01-01"),
                              ("p4", "Adams", None)]:
        res = {"resourceType": "Patient", "id": pid, "name": [{"family": family}]}
        if born:
            res["birthDate"] = born
        put(fhir, res)
    assert _walk(fhir, "/fhir/Patient?_sort=birthdate") == ["p2", "p1", "p3", "p4"]  # no value: last
    assert _walk(fhir, "/fhir/Patient?_sort=-birthdate") == ["p3", "p1", "p2", "p4"]
    assert _walk(fhir, "/fhir/Patient?_sort=family,-birthdate") == ["p4", "p2", "p3", "p1"]
    for oid, when in [("o1", "2024-05-01T10:00:00Z"), ("o2", "2023-01-15"), ("o3", "2025-02-01")]:
        put(fhir, {"resourceType": "Observation", "id": oid, "status": "final", "code": {"text": "ECOG"},
                   "subject": {"reference": "Patient/p1"}, "effectiveDateTime": when})
    assert _walk(fhir, "/fhir/Observation?_sort=-date&_count=1") == ["o3", "o1", "o2"]
    assert _walk(fhir, "/fhir/Observation?subject=Patient/p1&_sort=date") == ["o2", "o1", "o3"]


def test_sort_on_an_unknown_parameter_is_reported_or_refused(fhir: CheckedClient):
    _seed_sortable(fhir)
    r = fhir.get("/fhir/ResearchStudy?_sort=colour", headers=STRICT)
    assert r.status_code == 400 and "colour" in r.get_json()["issue"][0]["diagnostics"]
    b = fhir.get("/fhir/ResearchStudy?_sort=colour,-title").get_json()
    assert [r["id"] for r in matches(b)][0] == "s9"  # the known key still applies
    assert "colour" in outcome_text(b) and "colour" not in link(b, "self")


# -- _elements and _summary ------------------------------------------------------------------
def test_elements_and_summary(fhir: CheckedClient):
    desc = {"description": "A long description", "text": {"status": "generated",
                                                          "div": '<div xmlns="http://www.w3.org/1999/xhtml">x</div>'}}
    put(fhir, {**study("E1", **desc), "id": "e1"})
    b = fhir.get("/fhir/ResearchStudy?_elements=title").get_json()
    (res,) = matches(b)
    assert set(res) == {"resourceType", "id", "meta", "title", "status"}  # status: mandatory, always returned
    assert any(t["code"] == SUBSETTED for t in res["meta"]["tag"])
    excluded = matches(fhir.get("/fhir/ResearchStudy?_elements=-description,-text").get_json())[0]
    assert "description" not in excluded and "title" in excluded and "identifier" in excluded

    summary = matches(fhir.get("/fhir/ResearchStudy?_summary=true").get_json())[0]
    assert "description" not in summary and "text" not in summary and summary["title"] == "Study E1"
    assert any(t["code"] == SUBSETTED for t in summary["meta"]["tag"])
    text = matches(fhir.get("/fhir/ResearchStudy?_summary=text").get_json())[0]
    assert set(text) == {"resourceType", "id", "meta", "text", "status"}
    data = matches(fhir.get("/fhir/ResearchStudy?_summary=data").get_json())[0]
    assert "text" not in data and data["description"] == "A long description"
    full = matches(fhir.get("/fhir/ResearchStudy?_summary=false").get_json())[0]
    assert "text" in full and "tag" not in full.get("meta", {})
    count = fhir.get("/fhir/ResearchStudy?_summary=count").get_json()
    assert count["total"] == 1 and "entry" not in count
    assert fhir.get("/fhir/ResearchStudy?_summary=some").status_code == 400
    assert fhir.get("/fhir/ResearchStudy?_summary=true&_elements=title").status_code == 400
    # read takes them too
    read = fhir.get("/fhir/ResearchStudy/e1?_elements=identifier").get_json()
    assert set(read) == {"resourceType", "id", "meta", "identifier", "status"}
    assert any(t["code"] == SUBSETTED for t in read["meta"]["tag"])
    assert "description" not in fhir.get("/fhir/ResearchStudy/e1?_summary=true").get_json()


# -- _include / _revinclude -------------------------------------------------------------------
def _seed_linked(fhir: CheckedClient) -> None:
    put(fhir, {"resourceType": "Organization", "id": "org1", "name": "Sponsor Org"})
    put(fhir, {"resourceType": "Location", "id": "loc1", "name": "Leeds", "managingOrganization":
               {"reference": "Organization/org1"}})
    put(fhir, {"resourceType": "Group", "id": "grp1", "type": "person", "actual": False})
    put(fhir, {**study("L1", site=[{"reference": "Location/loc1"}], enrollment=[{"reference": "Group/grp1"}],
                       sponsor={"reference": "Organization/org1"}), "id": "rs1"})
    put(fhir, {**study("L2"), "id": "rs2"})
    put(fhir, {"resourceType": "Patient", "id": "pat1", "gender": "female",
               "identifier": [{"system": NHS_NUMBER, "value": "9434765919"}]})
    put(fhir, {"resourceType": "Patient", "id": "pat2", "gender": "male",
               "identifier": [{"system": NHS_NUMBER, "value": "9434765870"}]})
    for sid, pid, st, status in [("sub1", "pat1", "rs1", "candidate"), ("sub2", "pat2", "rs1", "on-study"),
                                 ("sub3", "pat2", "rs2", "candidate")]:
        put(fhir, {"resourceType": "ResearchSubject", "id": sid, "status": status,
                   "study": {"reference": f"ResearchStudy/{st}"}, "individual": {"reference": f"Patient/{pid}"}})
    put(fhir, {"resourceType": "Observation", "id": "obs1", "status": "final", "code": {"text": "ECOG"},
               "subject": {"reference": "Patient/pat1"}})
    put(fhir, {"resourceType": "Condition", "id": "cond1", "subject": {"reference": "Patient/pat2"},
               "code": {"text": "glioblastoma"}})


def _ids(resources: list[dict]) -> set[str]:
    return {f"{r['resourceType']}/{r['id']}" for r in resources}


def test_include_every_reference_parameter_and_iterate(fhir: CheckedClient):
    _seed_linked(fhir)
    b = fhir.get("/fhir/ResearchSubject?study=rs1&_include=ResearchSubject:study"
                 "&_include=ResearchSubject:individual").get_json()
    assert _ids(matches(b)) == {"ResearchSubject/sub1", "ResearchSubject/sub2"}
    assert _ids(mode(b, "include")) == {"ResearchStudy/rs1", "Patient/pat1", "Patient/pat2"}  # each once
    b = fhir.get("/fhir/ResearchStudy?_id=rs1&_include=ResearchStudy:*").get_json()
    assert _ids(mode(b, "include")) == {"Location/loc1", "Group/grp1", "Organization/org1"}
    b = fhir.get("/fhir/ResearchStudy?_id=rs1&_include=ResearchStudy:sponsor:Organization").get_json()
    assert _ids(mode(b, "include")) == {"Organization/org1"}
    b = fhir.get("/fhir/ResearchSubject?_id=sub1&_include=ResearchSubject:study"
                 "&_include:iterate=ResearchStudy:site&_include:iterate=Location:organization").get_json()
    assert _ids(mode(b, "include")) == {"ResearchStudy/rs1", "Location/loc1", "Organization/org1"}
    b = fhir.get("/fhir/Observation?_include=Observation:subject&_include=Observation:patient").get_json()
    assert _ids(mode(b, "include")) == {"Patient/pat1"}
    # not a reference parameter: 400 when strict, a warning otherwise
    assert fhir.get("/fhir/ResearchStudy?_include=ResearchStudy:status", headers=STRICT).status_code == 400
    assert fhir.get("/fhir/ResearchStudy?_include=Patient:organization", headers=STRICT).status_code == 400


def test_revinclude_and_iterate(fhir: CheckedClient):
    _seed_linked(fhir)
    b = fhir.get("/fhir/ResearchStudy?_id=rs1&_revinclude=ResearchSubject:study").get_json()
    assert _ids(matches(b)) == {"ResearchStudy/rs1"}
    assert _ids(mode(b, "include")) == {"ResearchSubject/sub1", "ResearchSubject/sub2"}
    b = fhir.get("/fhir/Patient?_id=pat2&_revinclude=ResearchSubject:individual&_revinclude=Condition:subject"
                 "&_revinclude=Observation:subject").get_json()
    assert _ids(mode(b, "include")) == {"ResearchSubject/sub2", "ResearchSubject/sub3", "Condition/cond1"}
    # iterate: the subjects of the study, then their patients
    b = fhir.get("/fhir/ResearchStudy?_id=rs2&_revinclude=ResearchSubject:study"
                 "&_include:iterate=ResearchSubject:individual").get_json()
    assert _ids(mode(b, "include")) == {"ResearchSubject/sub3", "Patient/pat2"}
    r = fhir.get("/fhir/ResearchStudy?_revinclude=ResearchSubject:individual", headers=STRICT)
    assert r.status_code == 400  # ResearchSubject.individual never refers to a ResearchStudy


# -- chained parameters -------------------------------------------------------------------------
def test_chained_parameters_of_one_level(fhir: CheckedClient):
    _seed_linked(fhir)
    b = fhir.get(f"/fhir/ResearchSubject?study.identifier={SPONSOR}|L1").get_json()
    assert _ids(matches(b)) == {"ResearchSubject/sub1", "ResearchSubject/sub2"}
    b = fhir.get(f"/fhir/ResearchSubject?study.identifier={SPONSOR}|L2&status=candidate").get_json()
    assert _ids(matches(b)) == {"ResearchSubject/sub3"}
    assert fhir.get("/fhir/ResearchSubject?study.title=study%20l").get_json()["total"] == 3
    assert fhir.get("/fhir/ResearchSubject?study.status=completed").get_json()["total"] == 0
    b = fhir.get(f"/fhir/Observation?subject.identifier={NHS_NUMBER}|9434765919").get_json()
    assert _ids(matches(b)) == {"Observation/obs1"}
    assert fhir.get(f"/fhir/Observation?subject.identifier={NHS_NUMBER}|9434765870").get_json()["total"] == 0
    b = fhir.get(f"/fhir/Condition?patient.identifier={NHS_NUMBER}|9434765870").get_json()
    assert _ids(matches(b)) == {"Condition/cond1"}
    b = fhir.get(f"/fhir/Observation?subject:Patient.identifier={NHS_NUMBER}|9434765919").get_json()
    assert _ids(matches(b)) == {"Observation/obs1"}
    b = fhir.get("/fhir/ResearchSubject?individual.gender=male&_sort=_id").get_json()
    assert [r["id"] for r in matches(b)] == ["sub2", "sub3"]
    # refused when strict, reported (and not applied) otherwise
    assert fhir.get("/fhir/ResearchSubject?study.colour=red", headers=STRICT).status_code == 400
    assert fhir.get("/fhir/ResearchSubject?study.site.name=x", headers=STRICT).status_code == 400
    assert fhir.get("/fhir/ResearchSubject?status.code=x", headers=STRICT).status_code == 400
    assert fhir.get("/fhir/Observation?subject:Claim.identifier=x").status_code == 400
    b = fhir.get("/fhir/ResearchSubject?study.colour=red").get_json()
    assert "study.colour" in outcome_text(b) and "colour" not in link(b, "self")


# -- invalid codes and unknown parameters ------------------------------------------------------
def test_invalid_code_is_reported_with_what_to_use_and_never_widens(fhir: CheckedClient):
    put(fhir, {**study("A"), "id": "active1"})
    put(fhir, {**study("C"), "id": "done1", "status": "completed"})
    r = fhir.get("/fhir/ResearchStudy?status=recruiting", headers=STRICT)
    assert r.status_code == 400
    assert "status=active" in r.get_json()["issue"][0]["diagnostics"]
    assert r.get_json()["issue"][0]["code"] == "code-invalid"
    b = fhir.get("/fhir/ResearchStudy?status=recruiting").get_json()
    assert matches(b) == [] and b["total"] == 0  # not widened to every study
    (oo,) = mode(b, "outcome")
    assert oo["issue"][0]["severity"] == "warning" and "status=active" in outcome_text(b)
    assert "recruiting" not in link(b, "self")
    b = fhir.get("/fhir/ResearchStudy?status=recruiting,completed").get_json()
    assert _ids(matches(b)) == {"ResearchStudy/done1"}
    assert "status=completed" in link(b, "self") and "recruiting" not in link(b, "self")
    put(fhir, {"resourceType": "Patient", "id": "g1", "gender": "female"})
    r = fhir.get("/fhir/Patient?gender=F", headers=STRICT)
    assert r.status_code == 400 and "gender=female" in r.get_json()["issue"][0]["diagnostics"]
    assert fhir.get("/fhir/ResearchSubject?status=enrolled", headers=STRICT).status_code == 400
    assert fhir.get("/fhir/Consent?status=granted", headers=STRICT).status_code == 400
    # valid codes, other systems' codes and system-only tokens pass untouched
    assert fhir.get("/fhir/Patient?gender=female", headers=STRICT).get_json()["total"] == 1
    assert fhir.get("/fhir/Consent?status=active", headers=STRICT).status_code == 200


def test_messages_quoting_control_characters_stay_valid_fhir(fhir: CheckedClient):
    """Found by the fuzz run: an OperationOutcome quoting '\x0c' was not a valid FHIR string."""
    r = fhir.get("/fhir/ResearchStudy?_lastUpdated=%0C")  # the body is checked against the R4 schema
    assert r.status_code == 400 and "\\x0c" in r.get_json()["issue"][0]["diagnostics"]
    b = fhir.get("/fhir/ResearchStudy?col%0Bour=1").get_json()
    assert "\\x0b" in outcome_text(b)


def test_unknown_parameter_warns_and_leaves_the_self_link(fhir: CheckedClient):
    put(fhir, {**study("U"), "id": "u1"})
    b = fhir.get("/fhir/ResearchStudy?colour=red&title=study").get_json()
    assert b["total"] == 1
    assert "colour" in outcome_text(b) and "colour" not in link(b, "self") and "title=study" in link(b, "self")
    r = fhir.get("/fhir/ResearchStudy?colour=red", headers=STRICT)
    assert r.status_code == 400 and r.get_json()["resourceType"] == "OperationOutcome"


# -- PATCH -------------------------------------------------------------------------------------
def test_json_patch_with_if_match_validation_and_versions(fhir: CheckedClient):
    put(fhir, {**study("P"), "id": "p1"})
    ops = [{"op": "replace", "path": "/title", "value": "Patched"}, {"op": "add", "path": "/keyword",
                                                                       "value": [{"text": "glioma"}]}]
    r = fhir.patch("/fhir/ResearchStudy/p1", json=ops, headers={**JSON_PATCH, "If-Match": 'W/"1"'})
    assert r.status_code == 200, r.get_json()
    body = r.get_json()
    assert body["title"] == "Patched" and body["keyword"][0]["text"] == "glioma"
    assert body["meta"]["versionId"] == "2" and r.headers["ETag"] == 'W/"2"'
    assert fhir.get("/fhir/ResearchStudy/p1/_history/1").get_json()["title"] == "Study P"
    # stale If-Match
    r = fhir.patch("/fhir/ResearchStudy/p1", json=ops, headers={**JSON_PATCH, "If-Match": 'W/"1"'})
    assert r.status_code == 412
    # a failed test op, a missing path: 422; a malformed document: 400
    test_fail = [{"op": "test", "path": "/title", "value": "Other"}]
    assert fhir.patch("/fhir/ResearchStudy/p1", json=test_fail, headers=JSON_PATCH).status_code == 422
    missing = [{"op": "replace", "path": "/phase/text", "value": "x"}]
    assert fhir.patch("/fhir/ResearchStudy/p1", json=missing, headers=JSON_PATCH).status_code == 422
    assert fhir.patch("/fhir/ResearchStudy/p1", json=[{"op": "jump"}], headers=JSON_PATCH).status_code == 400
    assert fhir.patch("/fhir/ResearchStudy/p1", json={"op": "x"}, headers=JSON_PATCH).status_code == 400
    # the result is validated like any update
    bad = [{"op": "replace", "path": "/status", "value": "recruiting"}]
    assert fhir.patch("/fhir/ResearchStudy/p1", json=bad, headers=JSON_PATCH).status_code in (400, 422)
    worse = [{"op": "add", "path": "/notAnElement", "value": 1}]
    assert fhir.patch("/fhir/ResearchStudy/p1", json=worse, headers=JSON_PATCH).status_code in (400, 422)
    nulled = [{"op": "add", "path": "/title", "value": None}]  # found by the fuzz run: FHIR JSON has no nulls
    r = fhir.patch("/fhir/ResearchStudy/p1", json=nulled, headers=JSON_PATCH)
    assert r.status_code == 422 and "ResearchStudy.title" in r.get_json()["issue"][0]["diagnostics"]
    move_id = [{"op": "replace", "path": "/id", "value": "other"}]
    assert fhir.patch("/fhir/ResearchStudy/p1", json=move_id, headers=JSON_PATCH).status_code == 422
    assert fhir.get("/fhir/ResearchStudy/p1").get_json()["meta"]["versionId"] == "2"  # nothing stored
    # JSON merge patch (what fhirpy sends) and the media types refused
    r = fhir.patch("/fhir/ResearchStudy/p1", json={"title": "Merged", "keyword": None},
                   headers={"Content-Type": "application/merge-patch+json"})
    assert r.status_code == 200 and r.get_json()["title"] == "Merged" and "keyword" not in r.get_json()
    r = fhir.patch("/fhir/ResearchStudy/p1", data="title=x", headers={"Content-Type": "text/plain"})
    assert r.status_code == 415
    fhirpath = {"resourceType": "Parameters", "parameter": []}
    assert fhir.patch("/fhir/ResearchStudy/p1", json=fhirpath).status_code == 415
    assert fhir.patch("/fhir/ResearchStudy/nope", json=ops, headers=JSON_PATCH).status_code == 404
    r = fhir.patch("/fhir/ResearchStudy/p1", json=[{"op": "remove", "path": "/keyword"}],
                   headers={**JSON_PATCH, "Prefer": "return=minimal"})
    assert r.status_code in (200, 422) and "text/html" not in r.headers.get("Content-Type", "")


# -- CapabilityStatement and OperationDefinitions ----------------------------------------------
def test_capability_statement_security_operations_and_definitions(fhir: CheckedClient):
    cs = fhir.get("/fhir/metadata").get_json()
    rest = cs["rest"][0]
    sec = rest["security"]
    assert sec["service"][0]["coding"][0]["code"] == "SMART-on-FHIR"
    (oauth,) = [e for e in sec["extension"]
                if e["url"] == "http://fhir-registry.smarthealthit.org/StructureDefinition/oauth-uris"]
    uris = {e["url"]: e["valueUri"] for e in oauth["extension"]}
    assert uris["token"].endswith("/auth/token")
    by_type = {r["type"]: r for r in rest["resource"]}
    seen_defs = set()
    for res in rest["resource"]:
        names = [o["name"] for o in res.get("operation", [])]
        assert len(names) == len(set(names)), (res["type"], names)
        seen_defs.update(o["definition"] for o in res.get("operation", []))
    assert {"match", "candidates"} <= {o["name"] for o in by_type["ResearchStudy"]["operation"]}
    assert len(seen_defs) >= 6
    for canonical in seen_defs:
        oid = canonical.rstrip("/").rsplit("/", 1)[-1]
        r = fhir.get(f"/fhir/OperationDefinition/{oid}")  # the body is checked against the R4 schema
        assert r.status_code == 200, canonical
        od = r.get_json()
        assert od["resourceType"] == "OperationDefinition" and od["url"] == canonical and od["id"] == oid
    match_def = fhir.get("/fhir/OperationDefinition/ResearchStudy-match").get_json()
    assert {"patient", "bundle", "return"} <= {p["name"] for p in match_def["parameter"]}
    assert "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/backport-subscription" in \
        by_type["Subscription"]["supportedProfile"]
    assert {"_sort", "_elements", "_summary", "_include", "_revinclude"} <= {p["name"] for p in rest["searchParam"]}
    rs = by_type["ResearchStudy"]
    assert {"status", "title", "_id", "_lastUpdated"} <= {p["name"] for p in rs["searchParam"]}
    assert "ResearchSubject:study" in rs["searchRevInclude"]
    assert "ResearchSubject:individual" in by_type["Patient"]["searchRevInclude"]
    assert {"patch"} <= {i["code"] for i in rs["interaction"]}


# -- edges of the HTTP surface -------------------------------------------------------------------
def test_metadata_post_root_get_empty_responses_and_fhir_version(fhir: CheckedClient):
    r = fhir.post("/fhir/metadata", json={"resourceType": "Parameters"})
    assert r.status_code == 405 and r.get_json()["resourceType"] == "OperationOutcome"
    assert "GET" in r.headers.get("Allow", "")
    for url in ("/fhir", "/fhir/"):
        r = fhir.get(url)
        assert r.status_code in (400, 404) and r.get_json()["resourceType"] == "OperationOutcome"
        assert "/fhir/metadata" in r.get_json()["issue"][0]["diagnostics"]
    r = fhir.post("/fhir/ResearchStudy", json=study("MIN"), headers={"Prefer": "return=minimal"})
    assert r.status_code == 201 and r.data == b"" and "Content-Type" not in r.headers and r.headers["Location"]
    rid = r.headers["Location"].split("/ResearchStudy/")[1].split("/")[0]
    r = fhir.delete(f"/fhir/ResearchStudy/{rid}")
    assert r.status_code == 204 and r.data == b"" and "Content-Type" not in r.headers
    r = fhir.get("/fhir/metadata", headers={"Accept": "application/fhir+json; fhirVersion=5.0"})
    assert r.status_code == 406 and r.get_json()["resourceType"] == "OperationOutcome"
    assert fhir.get("/fhir/ResearchStudy", headers={"Accept": "application/fhir+json; fhirVersion=4.0"}
                    ).status_code == 200
    assert fhir.get("/fhir/ResearchStudy", headers={
        "Accept": "application/fhir+json; fhirVersion=5.0, application/fhir+json; fhirVersion=4.0"}).status_code == 200
    r = fhir.post("/fhir/ResearchStudy", json=study("V5"),
                  headers={"Content-Type": "application/fhir+json; fhirVersion=5.0"})
    assert r.status_code == 415


@pytest.mark.parametrize("url", ["/fhir/ResearchStudy?_sort=title&_include=ResearchStudy:site&_summary=true",
                                 "/fhir/ResearchStudy?_elements=title&_revinclude=ResearchSubject:study&_count=1"])
def test_combinations_keep_their_parameters_in_links(fhir: CheckedClient, url: str):
    _seed_linked(fhir)
    b = fhir.get(url).get_json()
    query = urlsplit(url).query
    for k, v in parse_qsl(query):
        if k != "_count":
            assert (k, v) in parse_qsl(urlsplit(link(b, "self")).query)
    nxt = link(b, "next")
    if nxt:
        assert set(parse_qsl(urlsplit(nxt).query)) >= {(k, v) for k, v in parse_qsl(query) if k != "_count"}
