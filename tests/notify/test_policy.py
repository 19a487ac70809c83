"""Consent, legal bases and the national data opt-out for automatic actions."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.fhir import conventions as cv
from gateway.notify.policy import LegalBasisFileError, OptOutList, Policy, load_legal_bases

STUDY = {"resourceType": "ResearchStudy", "identifier": [{"system": "http://clinicaltrials.gov/", "value": "NCT1"}]}


def consent(*purposes, status="active", kind="permit", end=None) -> dict:
    prov: dict = {"type": kind, "purpose": [{"system": s, "code": c} for s, c in purposes]}
    if end:
        prov["period"] = {"start": "2020-01-01", "end": end}
    return {"resourceType": "Consent", "id": "c1", "status": status,
            "scope": {"coding": [{"system": cv.CONSENT_SCOPE, "code": "research"}]},
            "category": [{"text": "research"}], "provision": prov}


def basis_file(tmp_path: Path, enabled: bool = True) -> Path:
    (tmp_path / "b.yaml").write_text(
        "name: Programme\nreference: CAG-1\nstudies: ['https://clinicaltrials.gov|NCT1']\n"
        f"enabled: {'true' if enabled else 'false'}\n")
    return tmp_path


def test_alerts_need_a_trial_alerts_permit():
    p = Policy()
    assert p.may_alert([consent(cv.PURPOSE_TRIAL_ALERTS)]).allowed
    assert p.may_alert([consent()]).allowed, "a permit with no purpose permits both"
    assert not p.may_alert([consent(cv.PURPOSE_RESEARCH)]).allowed
    assert not p.may_alert([consent(cv.PURPOSE_TRIAL_ALERTS, status="inactive")]).allowed
    assert not p.may_alert([consent(cv.PURPOSE_TRIAL_ALERTS, kind="deny")]).allowed
    assert not p.may_alert([consent(cv.PURPOSE_TRIAL_ALERTS, end="2021-01-01")]).allowed
    assert not p.may_alert([]).allowed


def test_proposal_by_consent_or_legal_basis_respecting_optout(tmp_path):
    p = Policy(load_legal_bases(basis_file(tmp_path)), OptOutList(["9449306060"]))
    assert p.may_propose(STUDY, [consent(cv.PURPOSE_RESEARCH)], "9449306060").basis == "consent", \
        "explicit consent is not subject to the opt-out"
    by_law = p.may_propose(STUDY, [], "9434765919")
    assert by_law.allowed and by_law.basis == "legal-basis" and "CAG-1" in by_law.reason
    blocked = p.may_propose(STUDY, [], "9449306060")
    assert not blocked.allowed and blocked.blocked_by_optout
    other = {"resourceType": "ResearchStudy", "identifier": [{"system": cv.CTGOV, "value": "NCT2"}]}
    assert not p.may_propose(other, [], "9434765919").allowed


def test_disabled_basis_is_not_applied(tmp_path):
    assert load_legal_bases(basis_file(tmp_path, enabled=False)) == []


def test_broken_legal_basis_file_names_file_and_field(tmp_path):
    (tmp_path / "x.yaml").write_text("name: P\nstudies: ['nobar']\n")
    with pytest.raises(LegalBasisFileError) as err:
        load_legal_bases(tmp_path)
    assert "x.yaml" in str(err.value) and "reference" in str(err.value)


def test_optout_formats():
    assert "944 930 6060" in OptOutList.from_lines("9449306060  # requested 2025\n")
    assert "9449306060" in OptOutList.from_lines('["9449306060"]')
    assert len(OptOutList.from_lines("\n# nobody\n")) == 0


def test_shipped_legal_basis_example_loads():
    root = Path(__file__).resolve().parents[2]
    assert load_legal_bases(root / "mappings" / "legal-bases") == [], "the shipped example is disabled"
