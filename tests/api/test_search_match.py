"""$match for the patient's front door (issue #14): Conditions given only as text, an anonymous profile with nothing
stored, the nearest site offered always a recruiting one, paging with links. Both backends."""

from __future__ import annotations

import pytest

from gateway.fhir.conventions import EXT_MATCH_NEAREST_SITE, EXT_SITE_RECRUITMENT_STATUS
from tests.conftest import FHIR_JSON, ROOT

DEMO = ROOT / "fixtures" / "demo"


@pytest.fixture
def demo(fhir) -> None:
    for name in ("01-sponsor-glioblastoma-study.json", "02-sponsor-brain-metastases-study.json"):
        assert fhir.post("/fhir", data=(DEMO / name).read_bytes()).status_code == 200


def _params(*params: dict) -> dict:
    return {"resourceType": "Parameters", "parameter": list(params)}


def _anonymous(words: str = "GBM", **extra: object) -> dict:
    ps = [{"name": "age", "valueInteger": 45}, {"name": "gender", "valueCode": "female"},
          {"name": "postcode", "valueString": "LS6 3HE"}, {"name": "condition-text", "valueString": words}]
    ps += [{"name": k.replace("_", "-") if not k.startswith("_") else k, "valueString": str(v)}
           for k, v in extra.items()]
    return _params(*ps)


def _match(fhir, body: dict, url: str = "/fhir/ResearchStudy/$match"):
    resp = fhir.post(url, json=body)
    assert resp.status_code == 200, resp.get_json()
    return resp.get_json()


def _titles(bundle: dict) -> list[str]:
    return [e["resource"]["title"] for e in bundle.get("entry", []) if e["search"]["mode"] == "match"]


def _nearest(entry: dict) -> str:
    ext = next(x for x in entry["search"]["extension"] if x["url"] == EXT_MATCH_NEAREST_SITE)
    return next(p for p in ext["extension"] if p["url"] == "site")["valueReference"]["display"]


@pytest.mark.parametrize("words", ["GBM", "glioblastoma", "Glioblastoma multiforme"])
def test_bundle_with_text_only_condition_is_resolved_through_the_terminology(fhir, demo, words):
    bundle = {"resourceType": "Bundle", "type": "collection", "entry": [
        {"fullUrl": "urn:uuid:p1", "resource": {"resourceType": "Patient", "birthDate": "1980-05-01",
                                                "gender": "female", "address": [{"postalCode": "LS6 3HE"}]}},
        {"resource": {"resourceType": "Condition", "subject": {"reference": "urn:uuid:p1"}, "code": {"text": words},
                      "clinicalStatus": {"coding": [{"code": "active"}]},
                      "verificationStatus": {"coding": [{"code": "confirmed"}]}}}]}
    titles = _titles(_match(fhir, _params({"name": "bundle", "resource": bundle})))
    assert titles and titles[0].startswith("ReGlio") and not any(t.startswith("SRS") for t in titles)


def test_anonymous_profile_matches_and_stores_nothing(fhir, demo):
    before = fhir.get("/fhir/Patient?_summary=count").get_json()["total"]
    body = _match(fhir, _anonymous())
    assert _titles(body)[0].startswith("ReGlio") and not any(t.startswith("SRS") for t in _titles(body))
    assert fhir.get("/fhir/Patient?_summary=count").get_json()["total"] == before == 0
    assert fhir.get("/fhir/Condition?_summary=count").get_json()["total"] == 0
    assert "LS6" not in body["link"][0]["url"] and "GBM" not in body["link"][0]["url"]


def test_birthdate_instead_of_age(fhir, demo):
    body = _params({"name": "birthdate", "valueDate": "1980-05-01"},
                   {"name": "condition-text", "valueString": "glioblastoma"})
    assert _titles(_match(fhir, body))[0].startswith("ReGlio")


def test_nearest_site_offered_is_always_recruiting(fhir):
    def loc(name: str, postcode: str, status: str) -> str:
        body = {"resourceType": "Location", "name": name, "address": {"postalCode": postcode},
                "extension": [{"url": EXT_SITE_RECRUITMENT_STATUS, "valueCode": status}]}
        return fhir.post("/fhir/Location", json=body).get_json()["id"]

    near, far = loc("Alder Hey (not yet recruiting)", "L12 2AP", "not-yet-recruiting"), loc(
        "Great Ormond Street (recruiting)", "WC1N 3JH", "recruiting")
    study = {"resourceType": "ResearchStudy", "status": "active", "title": "Medulloblastoma in children",
             "condition": [{"text": "Medulloblastoma"}],
             "site": [{"reference": f"Location/{near}"}, {"reference": f"Location/{far}"}]}
    assert fhir.post("/fhir/ResearchStudy", json=study).status_code == 201
    body = _params({"name": "age", "valueInteger": 8}, {"name": "postcode", "valueString": "L12"},
                   {"name": "condition-text", "valueString": "medulloblastoma"})
    (entry,) = [e for e in _match(fhir, body)["entry"] if e["search"]["mode"] == "match"]
    assert _nearest(entry) == "Great Ormond Street (recruiting)"


def test_match_pages_with_next_links_stable_across_pages(fhir):
    for i in range(5):
        study = {"resourceType": "ResearchStudy", "status": "active", "title": f"Glioblastoma study {i}",
                 "condition": [{"text": "Glioblastoma"}]}
        assert fhir.post("/fhir/ResearchStudy", json=study).status_code == 201
    body = _anonymous("glioblastoma")
    everything = _titles(_match(fhir, body, "/fhir/ResearchStudy/$match?_count=10"))
    assert len(everything) == 5
    seen, url, pages = [], "/fhir/ResearchStudy/$match?_count=2", 0
    while url:
        page = _match(fhir, body, url)
        pages += 1
        assert len(_titles(page)) == (2 if pages < 3 else 1)
        seen += _titles(page)
        assert page["total"] == 5 and "_count=2" in page["link"][0]["url"]
        url = next((lk["url"].replace("http://localhost", "") for lk in page["link"] if lk["relation"] == "next"),
                   None)
    assert seen == everything and pages == 3


def test_candidates_links_keep_parameters(fhir, demo):
    sid = fhir.get("/fhir/ResearchStudy?_text=glioblastoma").get_json()["entry"][0]["resource"]["id"]
    body = fhir.get(f"/fhir/ResearchStudy/{sid}/$candidates?consent=any&maxDistanceKm=80&_count=5",
                    headers=FHIR_JSON).get_json()
    assert "consent=any" in body["link"][0]["url"] and "maxDistanceKm=80" in body["link"][0]["url"]
    assert "_count=5" in body["link"][0]["url"]


@pytest.mark.parametrize("params, words", [
    ([{"name": "age", "valueInteger": 40}, {"name": "birthdate", "valueDate": "1980-01-01"}], "not both"),
    ([{"name": "age", "valueInteger": 400}], "at most 130"),
    ([{"name": "birthdate", "valueString": "yesterday"}], "birthdate"),
    ([{"name": "gender", "valueCode": "f"}], "gender"),
    ([{"name": "postcode", "valueString": "ZZ9 9ZZ"}], "postcode"),
    ([{"name": "condition-text", "valueString": " "}], "condition-text"),
])
def test_anonymous_profile_refusals(fhir, demo, params, words):
    resp = fhir.post("/fhir/ResearchStudy/$match", json=_params(*params))
    assert resp.status_code == 400
    assert words in resp.get_json()["issue"][0]["diagnostics"] and "9ZZ" not in resp.get_data(as_text=True)
