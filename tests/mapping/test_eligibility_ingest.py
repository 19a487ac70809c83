"""Extracted eligibility through ingest and the CLI: a reviewed Group is kept on re-import; dry runs show the
extraction; the lexicons are checked (SQLite and PostgreSQL)."""

from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from gateway.cli import cli
from gateway.fhir import conventions as cv
from gateway.fhir.search import parse_search
from gateway.ingest import ingest
from gateway.mapping import map_payload
from gateway.terminology.lexicons import LexiconError, default_lexicons, load_lexicons
from tests.conftest import ROOT

RECORD = json.loads((ROOT / "tests" / "data" / "ctgov" / "NCT02513394.json").read_text())
NCT = "NCT02513394"


def _group(store) -> tuple[str, dict]:
    _, found = store.search(parse_search("Group", [("identifier", f"{cv.ELIGIBILITY_GROUP_ID}|{NCT}")]))
    assert len(found) == 1
    return found[0].id, found[0].resource()


def test_a_reviewed_group_is_kept_on_reimport_until_the_registry_text_changes(service, store):
    assert [r.outcome for r in ingest(service, map_payload("ctgov-v2", RECORD))] == ["created"]
    gid, group = _group(store)
    assert any(e["url"] == cv.EXT_CRITERIA_COUNT for e in group["extension"])
    # A research nurse removes one extracted characteristic, marks the Group reviewed and pushes it back.
    corrected = copy.deepcopy(group)
    removed = corrected["characteristic"].pop(-1)
    corrected["extension"].append({"url": cv.EXT_CRITERIA_REVIEWED, "valueDateTime": "2026-12-04T10:00:00Z"})
    corrected.pop("meta", None)
    service.update("Group", gid, corrected)
    # Re-import with the same text: the reviewed Group stays as the nurse left it.
    assert [r.outcome for r in ingest(service, map_payload("ctgov-v2", RECORD))] == ["unchanged"]
    _, kept = _group(store)
    assert removed not in kept["characteristic"]
    assert any(e["url"] == cv.EXT_CRITERIA_REVIEWED for e in kept["extension"])
    # The registry changes the criteria: the new text is extracted again and the review no longer applies.
    changed = copy.deepcopy(RECORD)
    module = changed["protocolSection"]["eligibilityModule"]
    module["eligibilityCriteria"] = module["eligibilityCriteria"].replace("ECOG performance status 0-1.",
                                                                          "ECOG performance status 0-2.")
    assert [r.outcome for r in ingest(service, map_payload("ctgov-v2", changed))] == ["updated"]
    _, fresh = _group(store)
    assert not any(e["url"] == cv.EXT_CRITERIA_REVIEWED for e in fresh["extension"])
    ecog = [ch for ch in fresh["characteristic"] if ch["code"]["coding"][0]["code"] == "89247-1"]
    assert ecog[0]["valueRange"] == {"low": {"value": 0}, "high": {"value": 2}}


def test_import_dry_run_shows_the_extraction_and_stores_nothing(db_url, tmp_path, store):
    env = {"GATEWAY_DATABASE_URL": db_url, "GATEWAY_INSTANCE_PATH": str(tmp_path),
           "GATEWAY_MAPPINGS_PATH": str(ROOT / "mappings")}
    src = ROOT / "tests" / "data" / "ctgov" / "NCT02513394.json"
    result = CliRunner().invoke(cli, ["import", "--mapping", "ctgov-v2", "--dry-run", str(src)], env=env)
    assert result.exit_code == 0, result.output
    assert "NCT02513394.json record 0 (NCT02513394): ok" in result.output
    assert "eligibility: " in result.output and " criteria structured" in result.output
    assert "[high  ] include ECOG Performance Status score = 0-1  <- inclusion 783-811 'ECOG performance status " \
           "0-1.' (ecog-range)" in result.output
    assert "[text: not-checkable]" in result.output
    assert store.count("Group") == 0


def test_ingest_api_dry_run_returns_the_extracted_group(client):
    resp = client.post("/ingest/ctgov-v2?dry-run=true", json=RECORD)
    assert resp.status_code == 200, resp.get_json()
    groups = [e["resource"] for e in resp.get_json()["entry"] if e["resource"]["resourceType"] == "Group"]
    chars = groups[0]["characteristic"]
    sources = [e for ch in chars for e in ch.get("extension", []) if e["url"] == cv.EXT_CRITERION_SOURCE]
    assert len(sources) >= 10
    assert any(e["url"] == cv.EXT_UNSTRUCTURED_CRITERION for e in groups[0]["extension"])


# -- lexicons ----------------------------------------------------------------------------------------------------
def test_lexicon_api_for_the_matching_side():
    lx = default_lexicons()
    assert lx.drug_classes("1873980") == {"cdk4-6-inhibitor"}  # ribociclib Oral Product (a patient's code)
    assert lx.is_member("1601377", "cdk4-6-inhibitor") and lx.is_member("1946827", "1946825")
    assert lx.drug_classes("1547545") == {"anti-pd-1", "immune-checkpoint-inhibitor"}
    assert not lx.is_member("253337", "cdk4-6-inhibitor")
    assert lx.stage_ancestors("IIIB") == ["IIIB", "III"]
    assert lx.analytes["platelets"].loinc[0] == "777-3"


def test_a_broken_lexicon_names_the_file_and_field(tmp_path):
    folder = tmp_path / "lexicons"
    shutil.copytree(ROOT / "mappings" / "lexicons", folder)
    genes = folder / "genes.yaml"
    genes.write_text(genes.read_text().replace('hgnc: "HGNC:3236"', 'hgnc: "3236"'))
    with pytest.raises(LexiconError, match=r"genes.yaml: genes.EGFR.value.hgnc"):
        load_lexicons(folder)
    drugs = folder / "drugs.yaml"
    shutil.copy(ROOT / "mappings" / "lexicons" / "genes.yaml", genes)
    drugs.write_text(drugs.read_text().replace("classes: [cdk4-6-inhibitor]", "classes: [cdk46]", 1))
    with pytest.raises(LexiconError, match=r"drugs.yaml: drugs.palbociclib.classes: unknown class 'cdk46'"):
        load_lexicons(folder)


def test_mappings_check_covers_the_lexicons(tmp_path):
    folder = tmp_path / "mappings"
    shutil.copytree(ROOT / "mappings", folder)
    ok = CliRunner().invoke(cli, ["mappings", "check"], env={"GATEWAY_MAPPINGS_PATH": str(folder)})
    assert ok.exit_code == 0 and "ok  lexicons under" in ok.output
    stages: Path = folder / "lexicons" / "stages.yaml"
    stages.write_text(stages.read_text().replace('"IIIB": {snomed: null, parent: "III"}',
                                                 '"IIIB": {snomed: null, parent: "VIII"}'))
    bad = CliRunner().invoke(cli, ["mappings", "check"], env={"GATEWAY_MAPPINGS_PATH": str(folder)})
    assert bad.exit_code == 1 and "stages.yaml: stages.IIIB.parent: unknown stage 'VIII'" in bad.output
