"""gateway import --mapping, gateway mappings check|list."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from gateway.cli import cli
from gateway.mapping import pipeline
from tests.conftest import ROOT

EXTRACT = ROOT / "fixtures" / "problem-list" / "problem-list-extract.csv"
CTGOV = ROOT / "tests" / "data" / "ctgov"


@pytest.fixture
def env(db_url, tmp_path) -> dict:
    return {"GATEWAY_DATABASE_URL": db_url, "GATEWAY_INSTANCE_PATH": str(tmp_path),
            "GATEWAY_MAPPINGS_PATH": str(ROOT / "mappings")}


def test_import_summary_and_reasons(env):
    runner = CliRunner()
    first = runner.invoke(cli, ["import", "--mapping", "problem-list", "--quiet", str(EXTRACT)], env=env)
    assert first.exit_code == 1  # one row is rejected
    assert "created 13, updated 0, unchanged 0, rejected 1" in first.output
    assert ("rejected: problem-list-extract.csv record 13 (PL-0005012): nhs_number: '999 074 1825' is not a valid "
            "NHS number (10 digits, Modulus 11 check digit)") in first.output
    again = runner.invoke(cli, ["import", "--mapping", "problem-list", "--quiet", str(EXTRACT)], env=env)
    assert "created 0, updated 0, unchanged 13, rejected 1" in again.output


def test_a_large_extract_is_shared_between_processes_with_the_same_answer(env, monkeypatch):
    """One CSV extract above the size limit (lowered here) is split into parts; the summary, the record numbers in
    the reasons and the progress bar's count are those of the whole file."""
    monkeypatch.setattr(pipeline, "START_METHOD", "fork")  # the worker sees the lowered limits
    monkeypatch.setattr(pipeline, "WINDOW_BYTES", EXTRACT.stat().st_size // 2)
    monkeypatch.setattr(pipeline, "SLICE_BYTES", EXTRACT.stat().st_size // 5)
    result = CliRunner().invoke(cli, ["import", "--mapping", "problem-list", "--workers", "1", str(EXTRACT)],
                                env=env)
    assert "created 13, updated 0, unchanged 0, rejected 1" in result.output
    assert "rejected: problem-list-extract.csv record 13 (PL-0005012): nhs_number:" in result.output
    assert "14/14" in result.output  # the progress bar (stderr, mixed into output by CliRunner)
    assert result.exit_code == 1


@pytest.mark.parametrize("workers", ["0", "2"])
def test_import_a_folder_of_ctgov_records(env, workers):
    """In this process or with worker processes mapping and validating ahead: the same answer."""
    result = CliRunner().invoke(cli, ["import", "--mapping", "ctgov-v2", "--quiet", "--workers", workers,
                                      str(CTGOV / "expected"), str(CTGOV / "search_phelan_next_20260811.json")],
                                env=env)
    # the expected/ golden files are not ClinicalTrials.gov records: each is rejected with a reason
    assert "created 5, updated 0, unchanged 0, rejected 12" in result.output
    assert "expected a study object with a 'protocolSection'" in result.output
    assert result.exit_code == 1


def test_unknown_mapping(env):
    result = CliRunner().invoke(cli, ["import", "--mapping", "nope", str(EXTRACT)], env=env)
    assert result.exit_code != 0 and "no mapping named 'nope'" in result.output


def test_mappings_list_and_check(env):
    runner = CliRunner()
    listed = runner.invoke(cli, ["mappings", "list"], env=env)
    assert listed.exit_code == 0
    assert listed.output.startswith("ctgov-v2\tctgov-studies\tLocation + Group + ResearchStudy\t")
    assert "problem-list\trows\tPatient + Condition\t" in listed.output
    checked = runner.invoke(cli, ["mappings", "check"], env=env)
    assert checked.exit_code == 0, checked.output
    assert "ok  " in checked.output and "ConceptMap(s)" in checked.output


def test_check_reports_a_broken_file(env, tmp_path):
    folder = tmp_path / "maps"
    folder.mkdir()
    (folder / "ctgov-v2.yaml").write_text((ROOT / "mappings" / "ctgov-v2.yaml").read_text().replace(
        "table: status, required: true", "table: statuses, required: true"))
    (folder / "cm.json").write_text('{"resourceType": "ConceptMap", "status": "active"}')
    result = CliRunner().invoke(cli, ["mappings", "check"], env={**env, "GATEWAY_MAPPINGS_PATH": str(folder)})
    assert result.exit_code == 1
    assert (f"error  {folder}/ctgov-v2.yaml: resources[2].fields.status.table: unknown table 'statuses' "
            "(expected one of: by-invitation, phase, sex, status, study-type)") in result.output
    assert "ConceptMap (a ConceptMap without url): url is missing" in result.output
