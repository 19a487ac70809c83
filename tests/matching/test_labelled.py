"""The labelled patient x study set (tests/data/matching): 100% precision and recall, via the script."""

from __future__ import annotations

import json

from gateway.matching.labelled import main, precision_recall, run
from tests.conftest import DATA

FOLDER = DATA / "matching"


def test_labelled_set_has_at_least_30_cases_with_reasons():
    spec = json.loads((FOLDER / "cases.json").read_text())
    assert len(spec["cases"]) >= 30
    assert all(c["reason"].strip() and c["expected"] in ("match", "no-match") for c in spec["cases"])
    assert {"match", "no-match"} == {c["expected"] for c in spec["cases"]}


def test_labelled_set_precision_and_recall_are_100_percent(capsys):
    results = run(FOLDER)
    failures = [r for r in results if not r.ok]
    assert not failures, "\n".join(f"{r.patient} x {r.study}: expected {r.expected}, got {r.got} ({r.why})"
                                   for r in failures)
    assert precision_recall(results) == (1.0, 1.0)
    assert main([str(FOLDER)]) == 0
    out = capsys.readouterr().out
    assert "precision 100.0%, recall 100.0%, failures 0" in out


def test_every_matched_case_explains_itself():
    for r in run(FOLDER):
        assert r.why, r
        if r.got == "match":
            assert 0 < r.score <= 1 and ("required by the study" in r.why or "kind of" in r.why)
