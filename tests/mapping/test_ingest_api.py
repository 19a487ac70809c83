"""POST /ingest/<mapping>: idempotent, atomic per record, errors naming the source field (SQLite and PostgreSQL)."""

from __future__ import annotations

import copy
import json
import random
from pathlib import Path

from gateway.fhir.search import parse_search
from tests.conftest import FHIR_JSON, ROOT

DATA = Path(__file__).resolve().parents[1] / "data" / "ctgov"
PAGE = json.loads((DATA / "search_phelan_limit5_20260811.json").read_text())
FULL = (DATA / "NCT02513394.json").read_bytes()
ONE_SITE = json.loads((DATA / "get_nct02576665_20260811.json").read_text())  # 3 sites
EXTRACT = ROOT / "fixtures" / "problem-list"
JSON = {"Content-Type": "application/json"}


def _post(client, body, mapping="ctgov-v2", query="", headers=JSON):
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    return client.post(f"/ingest/{mapping}{query}", data=data, headers=headers)


def _statuses(resp) -> list[str]:
    return [e["response"]["status"] for e in resp.json["entry"]]


def _find(store, rtype, identifier) -> list:
    _, rows = store.search(parse_search(rtype, [("identifier", identifier)]))
    return rows


def test_import_is_idempotent_and_a_change_makes_new_versions(client, store):
    first = _post(client, ONE_SITE)
    assert first.status_code == 200 and first.json["type"] == "batch-response"
    assert _statuses(first) == ["201 Created"]
    counts = {t: store.count(t) for t in ("ResearchStudy", "Group", "Location")}
    assert counts == {"ResearchStudy": 1, "Group": 1, "Location": 3}
    [study] = _find(store, "ResearchStudy", "https://clinicaltrials.gov|NCT02576665")
    assert first.json["entry"][0]["response"]["location"] == f"ResearchStudy/{study.id}/_history/1"

    again = _post(client, ONE_SITE)
    assert _statuses(again) == ["200 OK"]
    assert {t: store.count(t) for t in counts} == counts
    assert store.read("ResearchStudy", study.id).version == 1  # nothing changed: no new version
    assert store.history("ResearchStudy", study.id)[0] == 1
    assert store.history("Location")[0] == 3  # no new Location versions either

    changed = copy.deepcopy(ONE_SITE)
    changed["protocolSection"]["statusModule"]["overallStatus"] = "COMPLETED"
    third = _post(client, changed)
    assert _statuses(third) == ["200 OK"]
    cur = store.read("ResearchStudy", study.id)
    assert cur.version == 2 and cur.resource()["status"] == "completed"
    [group] = _find(store, "Group", "https://trialgateway.org/fhir/Id/eligibility-group|NCT02576665")
    assert store.read("Group", group.id).version == 1  # the eligibility did not change


def test_page_with_bad_records_stores_the_good_ones_only(client, store):
    page = copy.deepcopy(PAGE)
    page["studies"][1]["protocolSection"]["statusModule"]["overallStatus"] = "BOGUS"
    page["studies"][3] = ["not", "a", "study"]
    resp = _post(client, page)
    assert _statuses(resp) == ["201 Created", "422 Unprocessable Entity", "201 Created", "400 Bad Request",
                               "201 Created"]
    issue = resp.json["entry"][1]["response"]["outcome"]["issue"][0]
    assert issue["expression"] == ["protocolSection.statusModule.overallStatus"]
    assert issue["diagnostics"].startswith("protocolSection.statusModule.overallStatus: 'BOGUS' is not a known value")
    assert resp.json["entry"][3]["response"]["outcome"]["issue"][0]["expression"] == ["studies[3]"]
    assert store.count("ResearchStudy") == 3
    assert _find(store, "ResearchStudy", "https://clinicaltrials.gov|NCT05105685") == []
    assert _find(store, "Group", "https://trialgateway.org/fhir/Id/eligibility-group|NCT05105685") == []


def test_invalid_resource_rejects_the_whole_record_and_names_the_source_field(client, store):
    bad = copy.deepcopy(ONE_SITE)
    bad["protocolSection"]["contactsLocationsModule"]["locations"][2]["facility"] = {"name": "MD Anderson"}
    resp = _post(client, bad)
    assert _statuses(resp) == ["400 Bad Request"]
    issue = resp.json["entry"][0]["response"]["outcome"]["issue"][0]
    assert issue["expression"][0] == "protocolSection.contactsLocationsModule.locations[2].facility"
    assert issue["expression"][1].endswith(".resource.name")
    assert "Input should be a valid string" in issue["diagnostics"]
    # nothing of the record is stored: not even the two good sites
    assert {t: store.count(t) for t in ("ResearchStudy", "Group", "Location")} == {
        "ResearchStudy": 0, "Group": 0, "Location": 0}


def test_study_known_under_another_identifier_is_updated_not_duplicated(client, store):
    sponsor = {"resourceType": "ResearchStudy", "status": "active", "title": "PALLAS (sponsor's own record)",
               "identifier": [{"system": "https://alliance.example.org/studies", "value": "AFT-05"},
                              {"system": "https://www.clinicaltrialsregister.eu", "value": "2014-005181-30"}]}
    created = client.post("/fhir/ResearchStudy", data=json.dumps(sponsor), headers=FHIR_JSON)
    assert created.status_code == 201
    sid = created.json["id"]
    resp = _post(client, FULL)
    assert _statuses(resp) == ["201 Created"]  # the Group and 437 Locations are new
    assert store.count("ResearchStudy") == 1
    study = store.read("ResearchStudy", sid).resource()
    assert study["title"] == "PALbociclib CoLlaborative Adjuvant Study"
    systems = [(i.get("system"), i["value"]) for i in study["identifier"]]
    assert ("https://clinicaltrials.gov", "NCT02513394") in systems
    assert ("https://alliance.example.org/studies", "AFT-05") in systems  # the sponsor's id is kept
    assert systems.count(("https://www.clinicaltrialsregister.eu", "2014-005181-30")) == 1
    assert len(study["site"]) == 437 and store.count("Location") == 437
    again = _post(client, FULL)
    assert _statuses(again) == ["200 OK"]
    assert store.read("ResearchStudy", sid).version == 2  # sponsor's version 1, then ours; re-import: none


def test_dry_run_returns_a_collection_and_stores_nothing(client, store):
    page = copy.deepcopy(PAGE)
    page["studies"][0]["protocolSection"]["eligibilityModule"]["minimumAge"] = "eighteen"
    resp = _post(client, page, query="?dry-run=true")
    assert resp.status_code == 200 and resp.json["type"] == "collection"
    types = [e["resource"]["resourceType"] for e in resp.json["entry"]]
    assert types == ["OperationOutcome"] + ["Group", "ResearchStudy"] * 4
    assert resp.json["entry"][0]["resource"]["issue"][0]["expression"] == [
        "protocolSection.eligibilityModule.minimumAge"]
    assert store.count() == 0


def test_bad_payloads(client):
    resp = _post(client, b'{"studies": [', )
    assert resp.status_code == 400
    assert resp.json["issue"][0]["diagnostics"].startswith("ctgov-v2: the payload is not valid JSON")
    missing = _post(client, b"{}", mapping="no-such-mapping")
    assert missing.status_code == 404
    diagnostics = missing.json["issue"][0]["diagnostics"]
    assert "no mapping named 'no-such-mapping' (known: ctgov-v2, problem-list" in diagnostics


def test_problem_list_csv(client, store):
    leeds = {"resourceType": "Patient", "identifier": [{"system": "https://fhir.nhs.uk/Id/nhs-number",
                                                        "value": "9449306060"}],
             "name": [{"family": "Example", "given": ["Leeds"]}], "gender": "female"}
    assert client.post("/fhir/Patient", data=json.dumps(leeds), headers=FHIR_JSON).status_code == 201
    resp = _post(client, (EXTRACT / "problem-list-extract.csv").read_bytes(), mapping="problem-list",
                 headers={"Content-Type": "text/csv"})
    statuses = _statuses(resp)
    assert statuses.count("201 Created") == 13 and statuses[13] == "422 Unprocessable Entity"
    assert resp.json["entry"][13]["response"]["outcome"]["issue"][0]["expression"] == ["nhs_number"]
    assert store.count("Patient") == 6  # 6 people in 13 good rows; the Leeds patient was not duplicated
    [patient] = _find(store, "Patient", "https://fhir.nhs.uk/Id/nhs-number|9449306060")
    assert store.read("Patient", patient.id).resource()["name"] == leeds["name"]  # the EHR's record is kept
    _, conditions = store.search(parse_search("Condition", [("code", "http://snomed.info/sct|393563007")]))
    [gbm] = conditions
    res = gbm.resource()
    assert res["subject"] == {"reference": f"Patient/{patient.id}"}
    assert [c["code"] for c in res["code"]["coding"]] == ["ONC-GBM", "393563007", "C71.9"]
    assert res["onsetDateTime"] == "2026-09-02"
    # the same extract as JSON: nothing new
    again = _post(client, (EXTRACT / "problem-list-extract.json").read_bytes(), mapping="problem-list")
    assert set(_statuses(again)) == {"200 OK"} and store.count("Condition") == 13


def test_mesh_hierarchy_of_stored_studies_reaches_the_terminology(client):
    from gateway.terminology import default_terminology

    mesh = "https://www.nlm.nih.gov/mesh"
    # made-up 9-digit ids, new in each test run: the terminology lives as long as the process
    term, ancestor = (f"D000{random.randint(900000, 999999)}" for _ in range(2))
    study = copy.deepcopy(ONE_SITE)
    study["derivedSection"] = {"conditionBrowseModule": {
        "meshes": [{"id": term, "term": "Test Neoplasm (made up)"}],
        "ancestors": [{"id": ancestor, "term": "Test Ancestor (made up)"}],
        "browseLeaves": [{"id": "M1", "name": "Test Neoplasm (made up)", "asFound": "Lymphoma"}]}}
    terminology = default_terminology()
    assert not terminology.is_a(mesh, term, mesh, ancestor)
    assert _statuses(_post(client, study)) == ["201 Created"]
    assert terminology.is_a(mesh, term, mesh, ancestor)


def test_identifiers_naming_two_stored_studies_reject_the_record(client, store):
    for ident in ({"system": "https://clinicaltrials.gov", "value": "NCT02513394"},
                  {"system": "https://www.clinicaltrialsregister.eu", "value": "2014-005181-30"}):
        body = {"resourceType": "ResearchStudy", "status": "active", "identifier": [ident]}
        assert client.post("/fhir/ResearchStudy", data=json.dumps(body), headers=FHIR_JSON).status_code == 201
    resp = _post(client, FULL)
    assert _statuses(resp) == ["412 Precondition Failed"]
    issue = resp.json["entry"][0]["response"]["outcome"]["issue"][0]
    assert issue["expression"] == ["protocolSection.identificationModule"]
    assert "the record's identifiers name 2 different ResearchStudy resources" in issue["diagnostics"]
    assert store.count("Location") == 0 and store.count("ResearchStudy") == 2
