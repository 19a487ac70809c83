"""The plain-English study view (gateway/web/present.py): pure functions over FHIR JSON."""

from __future__ import annotations

import json

from gateway.fhir import conventions as cv
from gateway.web.present import age_sentence, describe, describe_status, site_recruiting, who_can_take_part
from tests.web.pages import DEMO

LEEDS = (53.8195, -1.5751)  # the LS6 district centroid


def _demo(name: str) -> tuple[dict, dict, dict[str, dict]]:
    bundle = json.loads((DEMO / name).read_text())
    by_type: dict[str, list[dict]] = {}
    for e in bundle["entry"]:
        by_type.setdefault(e["resource"]["resourceType"], []).append(e["resource"])
    study, group = by_type["ResearchStudy"][0], by_type["Group"][0]
    locations = {}
    for i, loc in enumerate(by_type["Location"]):
        locations[f"loc{i}"] = loc
    study = {**study, "id": "s1", "site": [{"reference": f"Location/{k}"} for k in locations]}
    return study, group, locations


def _status(code: str) -> dict:
    return {"url": cv.EXT_SITE_RECRUITMENT_STATUS, "valueCode": code}


def test_demo_study_in_plain_words():
    study, group, locations = _demo("01-sponsor-glioblastoma-study.json")
    view = describe(study, group, locations, LEEDS)
    assert view.status.label == "Recruiting"
    assert view.who == ["People with glioblastoma multiforme", "Aged 18 to 70",
                        "Able to look after yourself and do light work (ECOG performance status 0 to 1)",
                        "Anyone of any sex"]
    assert view.not_for == ["People who have had bevacizumab"]
    assert [s.town for s in view.sites] == ["Leeds", "Manchester"]  # nearest first
    assert view.nearest.town == "Leeds" and view.nearest.distance_text == "4 km"
    assert ("ul", ["Prior treatment with bevacizumab"]) in view.eligibility_blocks


def test_the_nearest_site_is_always_a_recruiting_one():
    """A site 1 km away that is not yet recruiting is never offered as the nearest (issue #14's Liverpool case)."""
    study, group, locations = _demo("01-sponsor-glioblastoma-study.json")
    near = {**locations["loc1"], "position": {"latitude": LEEDS[0], "longitude": LEEDS[1]},
            "extension": [_status("not-yet-recruiting")]}
    view = describe(study, group, {**locations, "loc1": near}, LEEDS)
    assert view.nearest.town == "Manchester" and view.nearest.recruiting
    assert [s.town for s in view.recruiting_sites] == ["Manchester"]
    view = describe(study, group, {**locations, "loc1": near}, LEEDS)
    view.nearest_id = "loc1"  # even if a search named it, a non-recruiting site is not shown as the nearest
    assert view.nearest.town == "Manchester"


def test_site_recruiting_rule():
    assert site_recruiting({"extension": [_status("recruiting")]}, {"status": "closed-to-accrual"})
    assert not site_recruiting({"extension": [_status("completed")]}, {"status": "active"})
    assert site_recruiting({}, {"status": "active"})  # no site status: the study's
    assert not site_recruiting(None, {"status": "approved"})


def test_status_age_and_sex_words():
    assert describe_status({"status": "approved"}).label == "Not yet recruiting"
    assert describe_status({"status": "made-up"}).label == "Status not known"
    assert age_sentence({"low": {"value": 16, "code": "a"}}) == "Aged 16 or over"
    assert age_sentence({"high": {"value": 6, "code": "mo"}}) == "Aged up to 6 months"
    women = {"characteristic": [{"code": {"coding": [{"system": cv.SEX[0], "code": cv.SEX[1]}]},
                                 "valueCodeableConcept": {"coding": [{"system": cv.ADMIN_GENDER, "code": "female"}]}}]}
    assert who_can_take_part(women) == (["Women only"], [])
