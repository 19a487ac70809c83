"""The page and the API give the same answer (issue #14: "Same data path as the API (the page calls the same
services, not a second implementation)"): for searches by words, by postcode and by both, the results page lists
the studies the FHIR search lists, in the same order, each with the nearest recruiting site the API names.
SQLite and PostgreSQL."""

from __future__ import annotations

import html
import re

import pytest

from gateway.fhir.conventions import EXT_MATCH_NEAREST_SITE, EXT_SITE_RECRUITMENT_STATUS
from tests.conftest import FHIR_JSON
from tests.web.pages import DEMO, STUDY_FILES, csrf_token

# (title, condition text, status, sites: (name, postcode, site status or None))
STUDIES = [
    ("Medulloblastoma in children", "Medulloblastoma", "active",
     [("Leeds General Infirmary", "LS1 3EX", "recruiting"), ("Alder Hey", "L12 2AP", "not-yet-recruiting")]),
    ("Astrocytoma and radiotherapy", "Astrocytoma", "active", [("Royal Marsden", "SM2 5PT", None)]),
    ("Glioma imaging study", "Glioma", "active", [("Sheffield Weston Park", "S10 2SJ", "recruiting")]),
    ("Leukaemia in adults", "Acute myeloid leukaemia", "active", [("St James's Leeds", "LS9 7TF", "recruiting")]),
    ("Lymphoma follow-up", "Hodgkin lymphoma", "active", [("The Christie", "M20 4BX", "recruiting")]),
    ("Closed glioblastoma study", "Glioblastoma", "completed", [("Leeds General Infirmary", "LS1 3EX", None)]),
]


@pytest.fixture
def world(client) -> None:
    for name in STUDY_FILES:
        assert client.post("/fhir", data=(DEMO / name).read_text(), headers=FHIR_JSON).status_code == 200
    for title, condition, status, sites in STUDIES:
        refs = []
        for name, postcode, site_status in sites:
            loc = {"resourceType": "Location", "name": name, "address": {"postalCode": postcode}}
            if site_status:
                loc["extension"] = [{"url": EXT_SITE_RECRUITMENT_STATUS, "valueCode": site_status}]
            r = client.post("/fhir/Location", json=loc, headers=FHIR_JSON)
            assert r.status_code == 201, r.text
            refs.append({"reference": f"Location/{r.json['id']}"})
        study = {"resourceType": "ResearchStudy", "status": status, "title": title,
                 "condition": [{"text": condition}], "site": refs}
        assert client.post("/fhir/ResearchStudy", json=study, headers=FHIR_JSON).status_code == 201


def _page(client, words: str, postcode: str, distance: int) -> list[tuple[str, str]]:
    """The results page: [(study id, nearest recruiting site text)] in the order shown."""
    token = csrf_token(client.get("/trials").text)
    r = client.post("/trials", data={"words": words, "postcode": postcode, "distance": str(distance),
                                     "recruiting": "yes", "csrf_token": token})
    assert r.status_code == 303, r.text
    text = client.get("/trials").text
    ids = re.findall(r'class="nhsuk-card__link" href="/trials/([^"]+)"', text)
    nearest = [" ".join(html.unescape(n).split()) for n in re.findall(
        r'Nearest recruiting site</dt>\s*<dd class="nhsuk-summary-list__value">(.*?)</dd>', text, re.S)]
    return list(zip(ids, nearest, strict=True)) if nearest else [(i, "") for i in ids]


def _api(client, words: str, postcode: str, distance: int) -> list[tuple[str, str | None]]:
    """The FHIR search the page stands for (recruiting only = status=active): [(study id, nearest site name)]."""
    q = {"status": "active", "_count": "20"}
    if words:
        q["_text"] = words
    if postcode:
        q |= {"postcode": postcode, "distance": str(distance)}
    b = client.get("/fhir/ResearchStudy", query_string=q, headers=FHIR_JSON).json
    out = []
    for e in b.get("entry", []):
        if e["search"]["mode"] != "match":
            continue
        ext = next((x for x in e["search"].get("extension", []) if x["url"] == EXT_MATCH_NEAREST_SITE), None)
        site = next((p["valueReference"]["display"] for p in ext["extension"] if p["url"] == "site"), None) \
            if ext else None
        out.append((e["resource"]["id"], site))
    return out


@pytest.mark.parametrize("words, postcode, distance", [
    ("brain tumour", "LS6 3HE", 50),
    ("brain tumour", "LS6 3HE", 200),
    ("brain tumor", "", 50),
    ("blood cancer", "", 50),
    ("", "LS6 3HE", 25),
    ("leukaemia", "M20 4BX", 100),
    ("glioblastoma", "", 50),
])
def test_the_page_lists_what_the_api_finds_in_the_same_order_with_the_same_nearest_site(client, world, words,
                                                                                         postcode, distance):
    page, api = _page(client, words, postcode, distance), _api(client, words, postcode, distance)
    assert api, "the case finds something"
    assert [i for i, _ in page] == [i for i, _ in api]
    if postcode:
        for (_, shown), (_, site) in zip(page, api, strict=True):
            assert site and shown.startswith(html.unescape(site)), (shown, site)
