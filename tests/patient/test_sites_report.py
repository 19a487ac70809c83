"""``gateway sites link --report`` on a real ClinicalTrials.gov record imported as the operator does (issue #14:
"Registry sites in England are linked to their NHS trust ...; report what could not be linked")."""

from __future__ import annotations

import json

from click.testing import CliRunner

from gateway.cli import cli
from tests.patient.test_sitelink import EXPECTED, RECORD


def test_the_report_names_every_uk_site_that_could_not_be_linked_and_why(tmp_path):
    runner = CliRunner(env={"GATEWAY_DATABASE_URL": f"sqlite:///{tmp_path / 'g.sqlite3'}",
                            "GATEWAY_INSTANCE_PATH": str(tmp_path)})
    done = runner.invoke(cli, ["import", "--mapping", "ctgov-v2", str(RECORD)])
    assert done.exit_code == 0, done.output
    report = runner.invoke(cli, ["sites", "link", "--report"])
    assert report.exit_code == 0, report.output
    lines = report.output.strip().splitlines()
    unlinked = {line.split("\t")[1]: line.split("\t")[3] for line in lines if line.startswith("Location/")}
    assert set(unlinked) == {name for name, ods in EXPECTED.items() if ods is None}
    assert all(why for why in unlinked.values())  # each with its reason
    assert "RRK" in unlinked["City Hospital Birmingham"]  # ambiguous: the candidates are named
    linked = sum(1 for ods in EXPECTED.values() if ods)
    assert lines[-1].startswith(f"linked {linked}, not linked {len(unlinked)}, outside the UK ")
    as_json = runner.invoke(cli, ["sites", "link", "--json"])
    rows = [json.loads(line) for line in as_json.output.splitlines() if line.startswith("{")]
    assert {r["name"]: r["ods"] for r in rows} == EXPECTED  # the same links as the linker gives each site
