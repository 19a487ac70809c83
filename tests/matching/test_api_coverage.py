"""$match and $candidates carry coverage and a plain-English summary, and order by score then coverage (#12)."""

from __future__ import annotations

from gateway.fhir import conventions as cv
from gateway.fhir.validate import validate_resource
from tests.conftest import FHIR_JSON
from tests.matching import builders as b
from tests.matching.test_api import _explanations, _id_of, _load_demo, _params


def _ext(entry: dict, url: str) -> dict:
    (ext,) = [e for e in entry["search"]["extension"] if e["url"] == url]
    return ext


def test_match_reports_coverage_and_a_summary_for_patients(client):
    _load_demo(client)
    # the same study again, with two criteria left as text: lower score, and listed after the original
    bundle = b.demo_bundle("01-sponsor-glioblastoma-study.json")
    pid = _id_of(client, "Patient", f"{cv.NHS_NUMBER}|9449306060")
    group = next(e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == "Group")
    study = next(e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == "ResearchStudy")
    # marked reviewed (a person's correction), so the push stores these criteria as sent instead of re-extracting
    group = {**group, "id": "text-heavy-g", "extension": [*group.get("extension", []), *[
        {"url": cv.EXT_UNSTRUCTURED_CRITERION, "extension": [{"url": "text", "valueString": t},
                                                             {"url": "section", "valueCode": "inclusion"}]}
        for t in ("Life expectancy of at least 12 weeks", "Able to undergo MRI")],
        {"url": cv.EXT_CRITERIA_REVIEWED, "valueDateTime": "2026-12-01T09:00:00Z"}]}
    group.pop("identifier", None)
    study = {**study, "id": "text-heavy", "title": "ReGlio text-heavy copy", "enrollment": [
        {"reference": "Group/text-heavy-g"}]}
    study.pop("identifier", None)
    study.pop("site", None)
    for res in (group, study):
        r = client.put(f"/fhir/{res['resourceType']}/{res['id']}", json=res, headers=FHIR_JSON)
        assert r.status_code in (200, 201), r.get_json()
    r = client.post("/fhir/ResearchStudy/$match", headers=FHIR_JSON,
                    json=_params({"name": "patient", "valueReference": {"reference": f"Patient/{pid}"}}))
    bundle = r.get_json()
    validate_resource(bundle)
    first, second = bundle["entry"][:2]
    assert first["resource"]["id"] != "text-heavy" and second["resource"]["id"] == "text-heavy"
    assert first["search"]["score"] > second["search"]["score"]
    cov = {e["url"]: e["valueInteger"] for e in _ext(second, cv.EXT_MATCH_COVERAGE)["extension"]}
    assert cov == {"evaluated": 4, "total": 7}
    assert _ext(second, cv.EXT_MATCH_SUMMARY)["valueString"] == (
        "You may be able to take part. 4 of 7 criteria could be checked from your records; the research team "
        "will check the rest.")
    results = [x["result"] for x in _explanations(second)]
    assert results.count("not-checked") == 2
    assert not any("http" in x["text"] for x in _explanations(second))
