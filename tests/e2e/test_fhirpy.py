"""A FHIR client written by others (fhirpy) drives the gateway running in a separate process on 127.0.0.1:
CRUD, search with paging, conditional create, and 8 concurrent conditional creates over real HTTP."""

from __future__ import annotations

import threading
from collections import Counter

import pytest
import requests
from fhirpy import SyncFHIRClient
from fhirpy.base.exceptions import MultipleResourcesFound, OperationOutcome, ResourceNotFound

from tests.conftest import PG_URL, reset_postgres
from tests.fhir.schema import assert_valid
from tests.procs import GatewayProcess

SPONSOR = "https://sponsor.example.org/studies"


@pytest.fixture(scope="module", params=["sqlite"] + (["postgresql"] if PG_URL else []))
def gateway(request, tmp_path_factory):
    """One server process per backend for this module (starting one takes about a second)."""
    folder = tmp_path_factory.mktemp(f"gw-{request.param}")
    if request.param == "sqlite":
        url = f"sqlite:///{folder / 'gateway.sqlite3'}"
    else:
        reset_postgres(PG_URL)
        url = PG_URL
    with GatewayProcess(url, folder) as gw:
        yield gw


@pytest.fixture
def fhir(gateway) -> SyncFHIRClient:
    return SyncFHIRClient(gateway.base, extra_headers={"Content-Type": "application/fhir+json"})


def test_crud(fhir):
    study = fhir.resource("ResearchStudy", status="active", title="fhirpy study",
                          identifier=[{"system": SPONSOR, "value": "FP-CRUD"}])
    study.save()
    assert study.id and study["meta"]["versionId"] == "1"

    got = fhir.reference("ResearchStudy", study.id).to_resource()
    assert got["title"] == "fhirpy study"
    assert_valid(got.serialize())

    got["title"] = "renamed"
    got.save()
    assert got["meta"]["versionId"] == "2"
    assert fhir.reference("ResearchStudy", study.id).to_resource()["title"] == "renamed"

    explicit = fhir.resource("Patient", id="fp-patient", gender="female")
    explicit.save()  # PUT with a client id
    assert fhir.resources("Patient").search(_id="fp-patient").count() == 1

    got.delete()
    with pytest.raises(ResourceNotFound):
        fhir.reference("ResearchStudy", study.id).to_resource()


def test_validation_errors_reach_the_client_as_operation_outcomes(fhir):
    bad = fhir.resource("ResearchStudy", status="not-a-status")
    with pytest.raises(OperationOutcome) as exc:
        bad.save()
    assert "not-a-status" in str(exc.value)


def test_search_with_paging(fhir):
    made = set()
    for i in range(23):
        s = fhir.resource("ResearchStudy", status="active", title=f"Paged {i}",
                          identifier=[{"system": SPONSOR, "value": f"FP-PAGE-{i}"}],
                          keyword=[{"coding": [{"system": "urn:test", "code": "paged"}]}])
        s.save()
        made.add(s.id)
    search = fhir.resources("ResearchStudy").search(keyword="paged").limit(5)
    assert search.count() == 23
    first_page = search.fetch()
    assert len(first_page) == 5
    everything = search.fetch_all()  # follows the server's next links
    assert {r.id for r in everything} == made and len(everything) == 23
    bundle = requests.get(f"{fhir.url}/ResearchStudy", params={"keyword": "paged", "_count": 5},
                          headers={"Accept": "application/fhir+json"}, timeout=10).json()
    assert_valid(bundle)
    assert fhir.resources("ResearchStudy").search(title="paged 1").count() == 11  # 1, 10-19
    found = fhir.resources("ResearchStudy").search(identifier=f"{SPONSOR}|FP-PAGE-7").get()
    assert found["title"] == "Paged 7"


def test_conditional_create(fhir):
    search = fhir.resources("ResearchStudy").search(identifier=f"{SPONSOR}|FP-COND")
    study = fhir.resource("ResearchStudy", status="active", title="conditional",
                          identifier=[{"system": SPONSOR, "value": "FP-COND"}])
    first, created = search.get_or_create(study)
    assert created
    second, created_again = search.get_or_create(study)
    assert not created_again and second.id == first.id
    assert search.count() == 1

    # Conditional update through fhirpy: unchanged content, no new version.
    updated, created = search.update(study)
    assert not created and updated.id == first.id and updated["meta"]["versionId"] == "1"

    # With two matches the server answers 412, which fhirpy maps to MultipleResourcesFound.
    fhir.resource("ResearchStudy", status="active", identifier=[{"system": SPONSOR, "value": "FP-COND"}]).save()
    with pytest.raises(MultipleResourcesFound):
        search.get_or_create(study)


def test_eight_concurrent_conditional_creates_over_http(gateway):
    barrier = threading.Barrier(8)
    statuses: list[int] = []
    lock = threading.Lock()
    body = {"resourceType": "ResearchStudy", "status": "active",
            "identifier": [{"system": SPONSOR, "value": "FP-RACE"}]}

    def post() -> None:
        barrier.wait()
        r = requests.post(f"{gateway.base}/ResearchStudy", json=body, timeout=30,
                          headers={"Content-Type": "application/fhir+json",
                                   "If-None-Exist": f"identifier={SPONSOR}|FP-RACE"})
        with lock:
            statuses.append(r.status_code)

    threads = [threading.Thread(target=post) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert Counter(statuses) == {201: 1, 200: 7}
    found = requests.get(f"{gateway.base}/ResearchStudy", params={"identifier": f"{SPONSOR}|FP-RACE"},
                         timeout=10).json()
    assert found["total"] == 1


def test_sort_elements_include_revinclude_patch_and_refresh(fhir):
    """What fhirpy's query builder sends: .sort(), .elements(), .include(), .revinclude(), patch and refresh."""
    site = fhir.resource("Location", name="FP contract site")
    site.save()
    titles = ["fp-c delta", "FP-C alpha", "fp-c charlie", "FP-C bravo"]
    studies = []
    for i, title in enumerate(titles):
        s = fhir.resource("ResearchStudy", status="active", title=title, description="long text",
                          identifier=[{"system": SPONSOR, "value": f"FP-C-{i}"}],
                          site=[{"reference": f"Location/{site.id}"}])
        s.save()
        studies.append(s)
    group = fhir.resource("Group", type="person", actual=False)
    group.save()
    studies[0]["enrollment"] = [{"reference": f"Group/{group.id}"}]
    studies[0].save()
    search = fhir.resources("ResearchStudy").search(title="fp-c ")

    ordered = [r["title"] for r in search.sort("title").limit(3).fetch_all()]  # paged: 3 + 1
    assert ordered == ["FP-C alpha", "FP-C bravo", "fp-c charlie", "fp-c delta"]
    assert [r["title"] for r in search.sort("-title").fetch()] == list(reversed(ordered))
    assert [r.id for r in search.sort("-_lastUpdated").fetch()][0] == studies[0].id  # saved again last

    slim = search.elements("title").fetch()
    assert len(slim) == 4 and all("description" not in r and "site" not in r for r in slim)
    assert all(any(t["code"] == "SUBSETTED" for t in r["meta"]["tag"]) for r in slim)

    raw = search.include("ResearchStudy", "site").include("ResearchStudy", "enrollment").fetch_raw()
    included = {(e.resource.resourceType, e.resource.id) for e in raw.entry if e.search.mode == "include"}
    assert included == {("Location", site.id), ("Group", group.id)}
    assert len(search.include("ResearchStudy", "site").fetch()) == 4  # fetch() keeps the matches' type
    raw = fhir.resources("Location").search(_id=site.id).revinclude("ResearchStudy", "site").fetch_raw()
    assert {e.resource.id for e in raw.entry if e.search.mode == "include"} == {s.id for s in studies}

    chained = fhir.resources("ResearchStudy").search(**{"enrollment.type": "person", "site.name": "FP contract"})
    assert [r.id for r in chained.fetch()] == [studies[0].id]

    patched = fhir.patch("ResearchStudy", studies[1].id, title="FP-C alpha patched")  # a merge patch
    assert patched["title"] == "FP-C alpha patched" and patched["meta"]["versionId"] == "2"
    studies[1].patch(description="patched by fhirpy")  # sends only the fields given
    got = fhir.reference("ResearchStudy", studies[1].id).to_resource()
    assert got["description"] == "patched by fhirpy" and got["title"] == "FP-C alpha patched"
    assert got["meta"]["versionId"] == "3"
    json_patch = requests.patch(f"{fhir.url}/ResearchStudy/{studies[1].id}", timeout=10,
                                json=[{"op": "replace", "path": "/title", "value": "json-patched"}],
                                headers={"Content-Type": "application/json-patch+json", "If-Match": 'W/"3"'})
    assert json_patch.status_code == 200 and json_patch.json()["meta"]["versionId"] == "4"
    got.refresh()  # fhirpy sends If-None-Match with the versionId it holds: a changed resource comes back
    assert got["title"] == "json-patched"
    got.refresh()  # and an unchanged one is a 304, which fhirpy keeps as it is
    assert got["title"] == "json-patched" and got["meta"]["versionId"] == "4"


def test_empty_responses_and_conditional_read_over_http(gateway):
    """Over a real server: empty 201/204/304 answers carry no Content-Type (no text/html), 405 and 406 edges."""
    base = gateway.base
    json_headers = {"Content-Type": "application/fhir+json"}
    body = {"resourceType": "ResearchStudy", "status": "active", "title": "http edges"}
    r = requests.post(f"{base}/ResearchStudy", json=body, timeout=10,
                      headers={**json_headers, "Prefer": "return=minimal"})
    assert r.status_code == 201 and r.content == b"" and "Content-Type" not in r.headers
    url = r.headers["Location"].split("/_history/")[0]
    r = requests.get(url, headers={"If-None-Match": 'W/"1"'}, timeout=10)
    assert r.status_code == 304 and r.content == b"" and "Content-Type" not in r.headers
    r = requests.delete(url, timeout=10)
    assert r.status_code == 204 and r.content == b"" and "Content-Type" not in r.headers
    r = requests.post(f"{base}/metadata", json={}, headers=json_headers, timeout=10)
    assert r.status_code == 405 and r.json()["resourceType"] == "OperationOutcome"
    r = requests.get(base, timeout=10)
    assert r.status_code == 400 and r.json()["resourceType"] == "OperationOutcome"
    r = requests.get(f"{base}/metadata", headers={"Accept": "application/fhir+json; fhirVersion=5.0"}, timeout=10)
    assert r.status_code == 406 and r.json()["resourceType"] == "OperationOutcome"
