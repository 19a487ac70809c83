"""The results page does not count every match (issue #14, speed): with more studies than one page it says "More
than 20 studies found" and shows the 20 nearest (the same as the counted search's first page); with fewer, the exact
number. SQLite and PostgreSQL."""

from __future__ import annotations

import re

from gateway.fhir.conventions import EXT_SITE_RECRUITMENT_STATUS
from tests.web.pages import csrf_token


def _studies(client, n: int, word: str) -> None:
    for i in range(n):
        loc = {"resourceType": "Location", "name": f"{word} site {i}", "status": "active",
               "address": {"postalCode": ["LS6 3HE", "LS9 7TF", "BD7 1DP", "M20 4BX"][i % 4], "country": "GB"},
               "extension": [{"url": EXT_SITE_RECRUITMENT_STATUS, "valueCode": "recruiting"}]}
        lid = client.post("/fhir/Location", json=loc).get_json()["id"]
        body = {"resourceType": "ResearchStudy", "status": "active", "title": f"{word.capitalize()} study {i}",
                "condition": [{"text": word}], "site": [{"reference": f"Location/{lid}"}]}
        assert client.post("/fhir/ResearchStudy", json=body).status_code == 201


def _page(client, words: str, postcode: str = "LS6 3HE") -> str:
    token = csrf_token(client.get("/trials").text)
    r = client.post("/trials", data={"words": words, "postcode": postcode, "distance": "100", "recruiting": "yes",
                                     "csrf_token": token})
    assert r.status_code == 303
    page = client.get("/trials")
    assert page.status_code == 200
    return page.text


def test_more_than_a_page_is_not_counted_and_fewer_are(client):
    _studies(client, 25, "glioblastoma")
    _studies(client, 3, "leukaemia")
    html = _page(client, "glioblastoma")
    assert "More than 20 studies found" in html and "These are the 20 nearest" in html
    shown = re.findall(r'href="/trials/([0-9a-f-]{32,36})"', html)
    api = client.get("/fhir/ResearchStudy?_text=glioblastoma&postcode=LS6&distance=100&status=active&_count=20",
                     headers={"Accept": "application/fhir+json"}).get_json()
    assert api["total"] == 25 and shown == [e["resource"]["id"] for e in api["entry"]]  # the same 20, same order
    html = _page(client, "leukaemia")
    assert "3 studies found" in html and "More than" not in html
