"""ResearchStudy?postcode / distance / near and Location?near (issue #14): recruiting sites only, nearest first,
the nearest site named on each entry, refusals. Both backends."""

from __future__ import annotations

import pytest

from gateway.fhir.conventions import EXT_MATCH_NEAREST_SITE, EXT_SITE_RECRUITMENT_STATUS

# LS6 (Leeds) centroid ~ (53.820, -1.571). Distances below are to district centroids.
SITES = {
    "leeds-recruiting": ("LS9 7TF", "recruiting"),  # ~4 km from LS6
    "leeds-not-yet": ("LS6 4EP", "not-yet-recruiting"),  # ~0 km (same district): never offered
    "manchester": ("M20 4BX", "recruiting"),  # ~62 km
    "liverpool-no-status": ("L12 2AP", None),  # ~100 km: the study status decides
    "london": ("SW1A 1AA", "recruiting"),  # ~270 km
}


def _location(name: str, postcode: str, status: str | None) -> dict:
    loc: dict = {"resourceType": "Location", "name": name, "status": "active",
                 "address": {"postalCode": postcode, "country": "GB"}}
    if status:
        loc["extension"] = [{"url": EXT_SITE_RECRUITMENT_STATUS, "valueCode": status}]
    return loc


@pytest.fixture
def world(fhir) -> dict[str, str]:
    ids = {name: fhir.post("/fhir/Location", json=_location(name, pc, st)).get_json()["id"]
           for name, (pc, st) in SITES.items()}

    def study(title: str, sites: list[str], status: str = "active") -> None:
        body = {"resourceType": "ResearchStudy", "status": status, "title": title,
                "condition": [{"text": "Glioblastoma"}], "site": [{"reference": f"Location/{ids[s]}"} for s in sites]}
        assert fhir.post("/fhir/ResearchStudy", json=body).status_code == 201

    study("A: Leeds recruiting and not-yet", ["leeds-not-yet", "leeds-recruiting"])
    study("B: only a not-yet-recruiting site nearby, recruiting in Manchester", ["leeds-not-yet", "manchester"])
    study("C: Liverpool, no site status, study active", ["liverpool-no-status"])
    study("D: Liverpool, no site status, study closed", ["liverpool-no-status"], status="closed-to-accrual")
    study("E: London", ["london"])
    return ids


def _entries(fhir, query: str) -> list[dict]:
    resp = fhir.get(f"/fhir/{query}")
    assert resp.status_code == 200, resp.get_json()
    return [e for e in resp.get_json().get("entry", []) if e["search"]["mode"] == "match"]


def _nearest(entry: dict) -> tuple[str, float]:
    ext = next(x for x in entry["search"]["extension"] if x["url"] == EXT_MATCH_NEAREST_SITE)
    parts = {p["url"]: p for p in ext["extension"]}
    return parts["site"]["valueReference"]["display"], parts["distance"]["valueQuantity"]["value"]


def test_postcode_default_50_km_recruiting_sites_only_nearest_first(fhir, world):
    entries = _entries(fhir, "ResearchStudy?postcode=LS6 3HE")
    assert [e["resource"]["title"][0] for e in entries] == ["A"]
    name, km = _nearest(entries[0])
    assert name == "leeds-recruiting" and 2 < km < 8  # never the not-yet-recruiting site 1 km away


def test_distance_widens_and_the_nearest_site_is_a_recruiting_one(fhir, world):
    entries = _entries(fhir, "ResearchStudy?postcode=LS6&distance=150")
    titles = [e["resource"]["title"][0] for e in entries]
    assert titles == ["A", "B", "C"]  # D: its only site has no status and the study is closed
    assert [_nearest(e)[0] for e in entries] == ["leeds-recruiting", "manchester", "liverpool-no-status"]
    kms = [_nearest(e)[1] for e in entries]
    assert kms == sorted(kms)


def test_near_in_km_and_miles(fhir, world):
    km = _entries(fhir, "ResearchStudy?near=53.82|-1.571|150|km")
    mi = _entries(fhir, "ResearchStudy?near=53.82|-1.571|93.3|mi")
    assert [e["resource"]["id"] for e in km] == [e["resource"]["id"] for e in mi] and len(km) == 3
    assert len(_entries(fhir, "ResearchStudy?near=53.82|-1.571")) == 1  # 50 km by default


def test_place_combines_with_text_and_other_parameters(fhir, world):
    assert len(_entries(fhir, "ResearchStudy?postcode=LS6&distance=400&_text=glioblastoma")) == 4
    assert _entries(fhir, "ResearchStudy?postcode=LS6&distance=400&_text=melanoma") == []
    entries = _entries(fhir, "ResearchStudy?postcode=LS6&distance=400&_text=glioblastoma&_count=2")
    assert "score" in entries[0]["search"] and len(entries) == 2


def test_self_link_keeps_the_district_not_the_full_postcode(fhir, world):
    body = fhir.get("/fhir/ResearchStudy?postcode=LS6 3HE&distance=100").get_json()
    self_url = body["link"][0]["url"]
    assert "postcode=LS6&" in self_url and "3HE" not in self_url and "distance=100" in self_url


@pytest.mark.parametrize("query, words", [
    ("postcode=ZZ9 9ZZ", "not known"),
    ("postcode=hello", "not a UK postcode"),
    ("postcode=JE2 3QS", "not known"),  # Jersey: not covered
    ("postcode=LS6&distance=-3", "above 0"),
    ("postcode=LS6&distance=far", "number"),
    ("distance=10", "needs a postcode"),
    ("near=53.8", "latitude|longitude"),
    ("near=99|0|10|km", "-90..90"),
    ("near=53.8|-1.5|10|parsecs", "km or mi"),
    ("near=53.8|-1.5|10|km&postcode=LS6", "either"),
])
def test_refusals_say_what_is_wrong_and_never_echo_the_postcode(fhir, world, query, words):
    resp = fhir.get(f"/fhir/ResearchStudy?{query}")
    assert resp.status_code == 400
    text = resp.get_data(as_text=True)
    assert words in resp.get_json()["issue"][0]["diagnostics"]
    assert "9ZZ" not in text and "3QS" not in text


def test_location_near(fhir, world):
    entries = _entries(fhir, "Location?near=53.82|-1.571|80|km")
    assert [e["resource"]["name"] for e in entries] == ["leeds-not-yet", "leeds-recruiting", "manchester"]


def test_service_function_for_the_pages(app, world):
    from gateway.api.study_search import UnknownPostcode, search_studies

    store = app.extensions["gateway.store"]
    result = search_studies(store, text="glioblastoma", postcode="LS6 3HE", distance_km=150)
    assert result.total == 3 and [h.resource["title"][0] for h in result.hits] == ["A", "B", "C"]
    first = result.hits[0]
    assert first.nearest_site.name == "leeds-recruiting" and 2 < first.nearest_site.distance_km < 8
    assert first.score is not None and first.nearest_site.location_id == world["leeds-recruiting"]
    assert search_studies(store, text="glioblastoma", count=2).total == 4  # recruiting only: D is closed
    assert search_studies(store, text="glioblastoma", recruiting_only=False).total == 5
    assert search_studies(store, recruiting_only=False).total == 5
    with pytest.raises(UnknownPostcode) as err:
        search_studies(store, postcode="ZZ9 9ZZ")
    assert "9ZZ" not in str(err.value)


def test_sort_says_otherwise(fhir, world):
    by_distance = [e["resource"]["title"][0] for e in _entries(fhir, "ResearchStudy?postcode=LS6&distance=400")]
    assert by_distance == ["A", "B", "C", "E"]
    by_title = [e["resource"]["title"][0] for e in _entries(fhir, "ResearchStudy?postcode=LS6&distance=400"
                                                                   "&_sort=-title")]
    assert by_title == ["E", "C", "B", "A"]
    page = _entries(fhir, "ResearchStudy?postcode=LS6&distance=400&_sort=-title&_count=2&_offset=2")
    assert [e["resource"]["title"][0] for e in page] == ["B", "A"]
    assert _nearest(page[1])[0] == "leeds-recruiting"  # the nearest site is still named


def test_migration_8_fills_the_unit_sphere_points_of_sites_placed_before_it(fhir, world, store):
    """Sites placed before migration 8 have no (x, y, z): the migration computes them from lat/lon, migration 11
    copies the sites to their studies' rows, and place search gives the same answer as for sites written since."""
    from sqlalchemy import text

    from gateway.store import fulltext

    before = [e["resource"]["id"] for e in _entries(fhir, "ResearchStudy?postcode=LS6&distance=150")]
    with store.engine.begin() as conn:  # a database of before migration 8 (and so before 11)
        conn.execute(text("UPDATE search_geo SET x = NULL, y = NULL, z = NULL"))
        conn.execute(text("DELETE FROM search_sites"))
    assert _entries(fhir, "ResearchStudy?postcode=LS6&distance=150") == []
    assert fulltext.fill_unit_vectors(store.engine) == len(SITES)
    fulltext.backfill_sites(store.engine)
    assert [e["resource"]["id"] for e in _entries(fhir, "ResearchStudy?postcode=LS6&distance=150")] == before


def _titles(fhir, query: str) -> list[str]:
    return [e["resource"]["title"][0] for e in _entries(fhir, query)]


def _put(fhir, rtype: str, rid: str, change) -> None:
    body = fhir.get(f"/fhir/{rtype}/{rid}").get_json()
    change(body)
    assert fhir.put(f"/fhir/{rtype}/{rid}", json=body).status_code == 200


def _study_id(fhir, letter: str) -> str:
    found = fhir.get("/fhir/ResearchStudy?_count=50").get_json()["entry"]
    return next(e["resource"]["id"] for e in found if e["resource"]["title"].startswith(f"{letter}:"))


def test_a_sites_later_changes_reach_its_studies_place_search(fhir, world):
    """A study's sites are kept with it (search_sites): a Location that stops recruiting, moves or is deleted after
    its studies were stored changes their place search at once."""
    near = "ResearchStudy?postcode=LS6&distance=150"
    assert _titles(fhir, near) == ["A", "B", "C"]
    _put(fhir, "Location", world["manchester"],
         lambda loc: loc.__setitem__("extension", [{"url": EXT_SITE_RECRUITMENT_STATUS, "valueCode": "closed"}]))
    assert _titles(fhir, near) == ["A", "C"], "B's only recruiting site stopped recruiting"
    _put(fhir, "Location", world["leeds-not-yet"],
         lambda loc: loc.__setitem__("extension", [{"url": EXT_SITE_RECRUITMENT_STATUS, "valueCode": "recruiting"}]))
    entries = _entries(fhir, near)
    assert [e["resource"]["title"][0] for e in entries] == ["A", "B", "C"]
    assert [_nearest(e)[0] for e in entries[:2]] == ["leeds-not-yet", "leeds-not-yet"], "the site that now recruits"
    _put(fhir, "Location", world["london"], lambda loc: loc["address"].__setitem__("postalCode", "LS9 7TF"))
    assert _titles(fhir, "ResearchStudy?postcode=LS6&distance=10") == ["A", "B", "E"], "E's site moved to Leeds"
    assert fhir.delete(f"/fhir/Location/{world['liverpool-no-status']}").status_code in (200, 204)
    assert _titles(fhir, near) == ["A", "B", "E"], "C's only site is gone"


def test_a_studys_status_and_sites_reach_its_place_search(fhir, world):
    """A site without its own status recruits while its study is active; a study's site list and its deletion are
    followed too."""
    near = "ResearchStudy?postcode=LS6&distance=150"
    _put(fhir, "ResearchStudy", _study_id(fhir, "D"), lambda st: st.__setitem__("status", "active"))
    assert _titles(fhir, near) == ["A", "B", "C", "D"]
    _put(fhir, "ResearchStudy", _study_id(fhir, "C"), lambda st: st.__setitem__("status", "closed-to-accrual"))
    assert _titles(fhir, near) == ["A", "B", "D"]
    _put(fhir, "ResearchStudy", _study_id(fhir, "E"),
         lambda st: st.__setitem__("site", [*st["site"], {"reference": f"Location/{world['leeds-recruiting']}"}]))
    titles = _titles(fhir, near)
    assert set(titles[:2]) == {"A", "E"} and titles[2:] == ["B", "D"], "E now has a Leeds site, as A has"
    assert fhir.delete(f"/fhir/ResearchStudy/{_study_id(fhir, 'A')}").status_code in (200, 204)
    assert "A" not in _titles(fhir, near)


def test_migration_11_gives_the_rows_the_write_path_gives(fhir, world, store):
    from sqlalchemy import text

    from gateway.store import fulltext

    query = "SELECT study_pk, site_pk, site_ref, lat, lon, recruiting FROM search_sites ORDER BY study_pk, site_pk"
    with store.engine.connect() as conn:
        written = conn.execute(text(query)).all()
    fulltext.backfill_sites(store.engine)
    with store.engine.connect() as conn:
        assert conn.execute(text(query)).all() == written
    assert len(written) == 7  # A 2, B 2, C 1, D 1, E 1
    assert sum(1 for r in written if r.recruiting) == 4  # A's Leeds, B's Manchester, C (active), E; not D, not-yet
