"""Sponsor-pushed eligibility Groups are extracted before validation and storage on every write path (REST create and
update, transaction and batch entries, ``gateway load``); sponsor characteristics win, a reviewed Group is stored as
sent, a re-push is unchanged, and $match still finds the demo study (SQLite and PostgreSQL)."""

from __future__ import annotations

import copy
import json

import pytest
from click.testing import CliRunner

from gateway.cli import cli
from gateway.fhir import conventions as cv
from gateway.fhir.search import parse_search
from gateway.mapping.eligibility import annotate_pushed_group
from tests.conftest import FHIR_JSON, ROOT

DEMO = ROOT / "fixtures" / "demo"
GBM_KEY = "https://neuro-onc-trials.example.org/id|NOTC-GBM-01-eligibility"
ECOG = ("http://loinc.org", "89247-1")


def _demo(name: str = "01-sponsor-glioblastoma-study.json") -> dict:
    return json.loads((DEMO / name).read_text())


def _group_entry(bundle: dict) -> dict:
    (entry,) = [e for e in bundle["entry"] if e["resource"]["resourceType"] == "Group"]
    return entry


def _without_sponsor_ecog_and_bevacizumab(bundle: dict) -> dict:
    """The demo study as a sponsor who sends only the diagnosis and age as characteristics."""
    out = copy.deepcopy(bundle)
    group = _group_entry(out)["resource"]
    group["characteristic"] = group["characteristic"][:2]
    return out


def _stored_group(store) -> tuple[str, int, dict]:
    _, found = store.search(parse_search("Group", [("identifier", GBM_KEY)]))
    assert len(found) == 1
    return found[0].id, found[0].version, found[0].resource()


def _source(ch: dict) -> dict | None:
    ext = next((e for e in ch.get("extension") or [] if e["url"] == cv.EXT_CRITERION_SOURCE), None)
    return None if ext is None else {x["url"]: next(v for k, v in x.items() if k.startswith("value"))
                                     for x in ext["extension"]}


def _codes(ch: dict) -> set[tuple[str, str]]:
    return {(x["system"], x["code"]) for x in ch["code"]["coding"]}


def _ext(group: dict, url: str) -> list[dict]:
    return [e for e in group.get("extension") or [] if e["url"] == url]


def _count(group: dict) -> dict:
    (ext,) = _ext(group, cv.EXT_CRITERIA_COUNT)
    return {x["url"]: x["valueInteger"] for x in ext["extension"]}


def _post(client, bundle: dict) -> dict:
    r = client.post("/fhir", json=bundle, headers=FHIR_JSON)
    assert r.status_code == 200, r.get_json()
    return r.get_json()


def test_a_transaction_push_gets_extracted_characteristics(client, store):
    _post(client, _without_sponsor_ecog_and_bevacizumab(_demo()))
    _, _, group = _stored_group(store)
    extracted = {ch["code"]["coding"][0]["code"]: (ch, _source(ch)) for ch in group["characteristic"] if _source(ch)}
    ecog, ecog_src = extracted["89247-1"]
    assert ecog["valueRange"] == {"low": {"value": 0}, "high": {"value": 1}} and ecog["exclude"] is False
    assert ecog_src["text"] == "ECOG performance status 0-1" and ecog_src["section"] == "inclusion"
    assert ecog_src["confidence"] == "high" and ecog_src["rule"] == "ecog-range"
    bev, bev_src = extracted["prior-therapy"]
    assert bev["exclude"] is True and bev["valueCodeableConcept"]["coding"][0]["code"] == "253337"  # RxNorm
    assert bev_src["section"] == "exclusion" and "bevacizumab" in bev_src["text"]
    # the sponsor's diagnosis and age are kept, first and unmarked
    assert [_source(ch) for ch in group["characteristic"][:2]] == [None, None]
    # the two lines the sponsor's own diagnosis and age state are not left as unchecked text
    assert _count(group) == {"total": 4, "structured": 4}
    assert _ext(group, cv.EXT_UNSTRUCTURED_CRITERION) == []


def test_a_sponsor_characteristic_wins_and_is_not_duplicated(client, store):
    sent = _group_entry(_demo())["resource"]
    _post(client, _demo())
    _, _, group = _stored_group(store)
    ecogs = [ch for ch in group["characteristic"] if ECOG in _codes(ch)]
    assert len(ecogs) == 1 and _source(ecogs[0]) is None  # the sponsor's, not an extracted copy
    assert group["characteristic"] == sent["characteristic"]  # all four criteria were the sponsor's
    assert _count(group) == {"total": 4, "structured": 4}


def test_rest_create_update_and_batch_entries_are_extracted(client, store):
    group = _group_entry(_without_sponsor_ecog_and_bevacizumab(_demo()))["resource"]
    r = client.post("/fhir/Group", json=group, headers=FHIR_JSON)
    assert r.status_code == 201, r.get_json()
    created = r.get_json()
    assert any(_source(ch) and ECOG in _codes(ch) for ch in created["characteristic"])
    # PUT with a changed text: extracted afresh (ECOG 0-2), the old extracted characteristic replaced
    changed = copy.deepcopy(group)
    changed["id"] = created["id"]
    changed["extension"][0]["valueMarkdown"] = changed["extension"][0]["valueMarkdown"].replace("0-1", "0-2")
    r = client.put(f"/fhir/Group/{created['id']}", json=changed, headers=FHIR_JSON)
    assert r.status_code == 200, r.get_json()
    ecogs = [ch for ch in r.get_json()["characteristic"] if ECOG in _codes(ch)]
    assert [ch["valueRange"]["high"]["value"] for ch in ecogs] == [2]
    # a batch entry
    other = copy.deepcopy(group)
    other["identifier"][0]["value"] = "NOTC-GBM-02-eligibility"
    batch = {"resourceType": "Bundle", "type": "batch", "entry": [
        {"resource": other, "request": {"method": "POST", "url": "Group"}}]}
    out = _post(client, batch)
    assert out["entry"][0]["response"]["status"].startswith("201")
    _, found = store.search(parse_search("Group", [("identifier", "https://neuro-onc-trials.example.org/id|"
                                                                  "NOTC-GBM-02-eligibility")]))
    assert any(_source(ch) and ECOG in _codes(ch) for ch in found[0].resource()["characteristic"])


def test_a_reviewed_group_is_stored_as_sent(client, store):
    bundle = _without_sponsor_ecog_and_bevacizumab(_demo())
    group = _group_entry(bundle)["resource"]
    group["extension"].append({"url": cv.EXT_CRITERIA_REVIEWED, "valueDateTime": "2026-12-04T10:00:00Z"})
    _post(client, bundle)
    _, _, stored = _stored_group(store)
    assert stored["characteristic"] == group["characteristic"]
    assert stored["extension"] == group["extension"]  # no count, no criteria left as text: nothing added


def test_an_unchanged_repush_is_unchanged(client, store):
    first = _post(client, _demo())
    gid, version, _ = _stored_group(store)
    again = _post(client, _demo())
    assert [e["response"]["status"] for e in again["entry"]] == ["200 OK"] * len(first["entry"])
    assert _stored_group(store)[:2] == (gid, version)
    # pushing back what GET returned (extracted parts, meta and all) changes nothing either
    _post(client, _without_sponsor_ecog_and_bevacizumab(_demo()))
    gid, version, stored = _stored_group(store)
    r = client.put(f"/fhir/Group/{gid}", json=stored, headers=FHIR_JSON)
    assert r.status_code == 200 and r.headers["ETag"] == f'W/"{version}"'
    assert _stored_group(store)[1] == version


def test_malformed_or_other_groups_pass_unchanged_to_validation(client):
    bad = _group_entry(_demo())["resource"]
    bad["extension"] = {"url": cv.EXT_ELIGIBILITY_TEXT, "valueMarkdown": "Inclusion criteria:\n* ECOG 0-1"}
    r = client.post("/fhir/Group", json=bad, headers=FHIR_JSON)
    assert r.status_code == 400 and r.get_json()["resourceType"] == "OperationOutcome"
    actual = {"resourceType": "Group", "type": "person", "actual": True,
              "extension": [{"url": cv.EXT_ELIGIBILITY_TEXT, "valueMarkdown": "Inclusion criteria:\n* ECOG 0-1"}]}
    assert annotate_pushed_group(actual) is actual
    assert annotate_pushed_group("not a resource") == "not a resource"


def test_sponsor_coverage_is_narrow():
    """Only inclusion lines naming the sponsor's included diagnosis, or an age limit beside the sponsor's Age, are
    counted as the sponsor's; other unrecognised lines stay unchecked text."""
    group = _group_entry(_demo())["resource"]
    group = copy.deepcopy(group)
    group["extension"][0]["valueMarkdown"] = (
        "Inclusion criteria:\n* Histologically confirmed glioblastoma\n* Aged 18 to 70\n"
        "* Adequate contraception\n\nExclusion criteria:\n* Prior glioblastoma surgery within 2 weeks")
    out = annotate_pushed_group(group)
    left = [{x["url"]: next(v for k, v in x.items() if k.startswith("value")) for x in e["extension"]}["text"]
            for e in _ext(out, cv.EXT_UNSTRUCTURED_CRITERION)]
    assert "Histologically confirmed glioblastoma" not in left and "Aged 18 to 70" not in left
    assert "Adequate contraception" in left and any("surgery" in t for t in left)
    assert annotate_pushed_group(out) == out  # deterministic and idempotent
    no_age = copy.deepcopy(group)
    no_age["characteristic"] = no_age["characteristic"][:1]
    left = [e for e in _ext(annotate_pushed_group(no_age), cv.EXT_UNSTRUCTURED_CRITERION)
            if "Aged" in e["extension"][0]["valueString"]]
    assert len(left) == 1  # without the sponsor's Age, the age line stays unchecked


def test_gateway_load_extracts_a_pushed_group(db_url, tmp_path, store):
    path = tmp_path / "study.json"
    path.write_text(json.dumps(_without_sponsor_ecog_and_bevacizumab(_demo())))
    env = {"GATEWAY_DATABASE_URL": db_url, "GATEWAY_INSTANCE_PATH": str(tmp_path)}
    r = CliRunner().invoke(cli, ["load", "--quiet", str(path)], env=env, catch_exceptions=False)
    assert r.exit_code == 0, r.output
    _, version, group = _stored_group(store)
    assert any(_source(ch) and ECOG in _codes(ch) for ch in group["characteristic"])
    again = CliRunner().invoke(cli, ["load", "--quiet", str(path)], env=env, catch_exceptions=False)
    assert "updated 0" in again.stdout and _stored_group(store)[1] == version


@pytest.mark.parametrize("strip", [False, True])
def test_match_still_returns_the_glioblastoma_study(client, strip):
    study = _demo()
    _post(client, _without_sponsor_ecog_and_bevacizumab(study) if strip else study)
    _post(client, _demo("03-leeds-patient-glioblastoma.json"))
    r = client.get(f"/fhir/Patient?identifier={cv.NHS_NUMBER}|9449306060", headers=FHIR_JSON).get_json()
    pid = r["entry"][0]["resource"]["id"]
    out = client.get(f"/fhir/ResearchStudy/$match?patient-id={pid}", headers=FHIR_JSON).get_json()
    assert out["total"] == 1 and out["entry"][0]["resource"]["title"].startswith("ReGlio")
    # the same four criteria are judged whether the sponsor or the extractor structured ECOG and bevacizumab
    assert out["entry"][0]["search"]["score"] == 0.8333


def test_a_patch_of_the_criteria_text_is_extracted(client, store):
    _post(client, _without_sponsor_ecog_and_bevacizumab(_demo()))
    gid, _, group = _stored_group(store)
    text = group["extension"][0]["valueMarkdown"].replace("0-1", "0-2")
    ops = [{"op": "replace", "path": "/extension/0/valueMarkdown", "value": text}]
    r = client.patch(f"/fhir/Group/{gid}", json=ops,
                     headers={**FHIR_JSON, "Content-Type": "application/json-patch+json"})
    assert r.status_code == 200, r.get_json()
    ecogs = [ch for ch in _stored_group(store)[2]["characteristic"] if ECOG in _codes(ch)]
    assert [(ch["valueRange"]["high"]["value"], _source(ch)["text"]) for ch in ecogs] == \
        [(2, "ECOG performance status 0-2")]
