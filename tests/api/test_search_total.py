"""``_total=none|estimate|accurate`` on ResearchStudy / Location text and place searches (issue #14, speed): without
an exact total the same pages come back (same studies, same order, same score and nearest site), Bundle.total is
left out unless known anyway, and the next link says whether more match. Place searches are then answered nearest
first by widening rings; the pages must be those of the whole circle. Both backends."""

from __future__ import annotations

import random
from urllib.parse import quote

import pytest

from gateway.fhir.conventions import EXT_ELIGIBILITY_TEXT, EXT_SITE_RECRUITMENT_STATUS
from gateway.store import geo, study_search
from tests.api.conftest import CheckedClient
from tests.conftest import BACKENDS, app_for, database_url, dispose_app, settings_for

# Districts spread over England and Wales, several studies per district (ties in distance: relevance, then pk).
DISTRICTS = ["LS6", "LS9", "LS1", "BD7", "HX1", "WF1", "YO1", "HU3", "S10", "M20", "M13", "L7", "CH2", "SK4", "OL1",
             "B15", "CV1", "NE1", "DH1", "NG7", "LE1", "OX3", "CB2", "BS2", "CF14", "SW3", "E1", "N1", "TR1"]
WORDS = ["glioblastoma", "breast cancer", "leukaemia", "lung cancer"]


@pytest.fixture(scope="module", params=BACKENDS)
def searched(request, tmp_path_factory):
    """One gateway per backend holding the world, shared by the module's tests: they only read it."""
    folder = tmp_path_factory.mktemp(f"search-total-{request.param}")
    app = app_for(settings_for(database_url(request.param, folder), folder))
    fhir = CheckedClient(app.test_client())
    yield app, fhir, _world(fhir)
    dispose_app(app)


@pytest.fixture
def app(searched):
    return searched[0]


@pytest.fixture
def fhir(searched) -> CheckedClient:
    return searched[1]


@pytest.fixture
def world(searched) -> list[str]:
    return searched[2]


def _world(fhir) -> list[str]:
    rng = random.Random(14)
    known = geo.load_centroids()
    districts = [d for d in DISTRICTS if d in known]
    ids = []
    for i in range(60):
        sites = []
        for _ in range(rng.choice([1, 1, 2, 3])):
            loc = {"resourceType": "Location", "name": f"site {i}", "status": "active",
                   "address": {"postalCode": rng.choice(districts), "country": "GB"},
                   "extension": [{"url": EXT_SITE_RECRUITMENT_STATUS,
                                  "valueCode": rng.choice(["recruiting"] * 3 + ["not-yet-recruiting"])}]}
            sites.append({"reference": f"Location/{fhir.post('/fhir/Location', json=loc).get_json()['id']}"})
        words = WORDS[i % len(WORDS)]
        body = {"resourceType": "ResearchStudy", "status": rng.choice(["active", "active", "closed-to-accrual"]),
                "title": f"{words.capitalize()} study {i}" + (" with extra glioblastoma words" if i % 7 == 0 else ""),
                "condition": [{"text": words}], "site": sites}
        if i % 3:  # an eligibility Group: its text counts towards the study's relevance
            group = {"resourceType": "Group", "type": "person", "actual": False, "extension": [
                {"url": EXT_ELIGIBILITY_TEXT, "valueMarkdown": f"Adults with {WORDS[(i + 1) % len(WORDS)]}."
                                                               + f" No prior {words} treatment." * (i % 4)}]}
            gid = fhir.post("/fhir/Group", json=group).get_json()["id"]
            body["enrollment"] = [{"reference": f"Group/{gid}"}]
        resp = fhir.post("/fhir/ResearchStudy", json=body)
        assert resp.status_code == 201
        ids.append(resp.get_json()["id"])
    return ids


def _bundle(fhir, query: str) -> dict:
    resp = fhir.get(f"/fhir/{query}")
    assert resp.status_code == 200, resp.get_json()
    return resp.get_json()


def _matches(bundle: dict) -> list[tuple]:
    return [(e["resource"]["id"], e["search"].get("score"), repr(e["search"].get("extension")))
            for e in bundle.get("entry", []) if e["search"]["mode"] == "match"]


def _has_next(bundle: dict) -> bool:
    return any(link["relation"] == "next" for link in bundle["link"])


QUERIES = [
    "ResearchStudy?postcode=LS6&distance=400",
    "ResearchStudy?postcode=LS6%203HE&distance=50",
    "ResearchStudy?postcode=SW3&distance=1500&status=active",
    "ResearchStudy?_text=brain%20tumour&postcode=M20&distance=600",
    "ResearchStudy?_text=cancer&near=53.8|-1.55|300|mi",
    "ResearchStudy?_text=leukaemia",
    "ResearchStudy?_text=cancer&status=active",
    "Location?near=53.8|-1.55|200|km",
]


@pytest.mark.parametrize("query", QUERIES)
@pytest.mark.parametrize("mode", ["none", "estimate"])
def test_pages_without_a_total_are_the_pages_with_one(fhir, world, monkeypatch, query, mode):
    monkeypatch.setattr(study_search, "RING_SITES", 1)  # a first ring of 1 km: each widening is exercised
    monkeypatch.setattr(study_search, "RING_SITES_FILTERED", 1)
    whole = _bundle(fhir, f"{query}&_count=200")
    total = whole["total"]
    assert total == len(_matches(whole)) and total > 3, query  # the world gives every query several matches
    for count in (1, 3, 7, 20):
        for offset in sorted({0, count, 2 * count, max(total - count, 0), total - 1, total, total + 5}):
            exact = _bundle(fhir, f"{query}&_count={count}&_offset={offset}")
            fast = _bundle(fhir, f"{query}&_count={count}&_offset={offset}&_total={mode}")
            assert _matches(fast) == _matches(exact) == _matches(whole)[offset:offset + count], (query, count, offset)
            assert _has_next(fast) == _has_next(exact) == (offset + count < total), (query, count, offset)
            if offset + count < total:
                assert "total" not in fast  # not counted: left out, as FHIR allows
                nxt = next(link["url"] for link in fast["link"] if link["relation"] == "next")
                assert f"_total={mode}" in nxt  # the next page is asked the same way
            elif offset < total or offset == 0:
                assert fast["total"] == total  # the last page: known anyway


def test_total_accurate_is_the_default_and_a_bad_value_is_refused(fhir, world):
    assert _bundle(fhir, "ResearchStudy?postcode=LS6&distance=400&_total=accurate&_count=2")["total"] == \
        _bundle(fhir, "ResearchStudy?postcode=LS6&distance=400&_count=2")["total"] > 2
    resp = fhir.get("/fhir/ResearchStudy?postcode=LS6&_total=" + quote("all of them"))
    assert resp.status_code == 400
    assert "_total must be one of none, estimate, accurate" in resp.get_json()["issue"][0]["diagnostics"]


def test_service_function_without_a_total(app, world, monkeypatch):
    from gateway.api.study_search import search_studies

    monkeypatch.setattr(study_search, "RING_SITES_FILTERED", 1)
    store = app.extensions["gateway.store"]
    exact = search_studies(store, text="cancer", postcode="LS6 3HE", distance_km=300, count=5)
    fast = search_studies(store, text="cancer", postcode="LS6 3HE", distance_km=300, count=5, total="none")
    assert exact.total > 5 and exact.more and fast.total is None and fast.more
    assert [(h.study_id, h.score, h.nearest_site) for h in fast.hits] == \
        [(h.study_id, h.score, h.nearest_site) for h in exact.hits]
    last = search_studies(store, text="cancer", postcode="LS6 3HE", distance_km=300, count=5, total="none",
                          offset=exact.total - 2)
    assert last.total == exact.total and not last.more and len(last.hits) == 2
