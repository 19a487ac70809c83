"""Consent evaluation (ARCHITECTURE.md "Consent"): who may be proposed to a research team or alerted."""

from __future__ import annotations

from datetime import UTC, datetime

from gateway.fhir import conventions as cv
from gateway.matching.consent import decide
from tests.matching import builders as b

NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
HRESCH, ALERTS = cv.PURPOSE_RESEARCH, cv.PURPOSE_TRIAL_ALERTS


def test_no_consent_no_proposal():
    d = decide([], HRESCH, NOW)
    assert not d.allowed and "No research Consent" in d.reason


def test_permit_with_hresch_allows_research_but_not_alerts():
    c = [b.consent("c1", "p", purposes=[HRESCH])]
    assert decide(c, HRESCH, NOW).allowed
    assert not decide(c, ALERTS, NOW).allowed


def test_permit_without_purpose_permits_both():
    c = [b.consent("c1", "p")]
    assert decide(c, HRESCH, NOW).allowed and decide(c, ALERTS, NOW).allowed


def test_deny_inactive_rejected_withdraw():
    for consent in (b.consent("c1", "p", ptype="deny"), b.consent("c1", "p", status="inactive"),
                    b.consent("c1", "p", status="rejected"), b.consent("c1", "p", status="entered-in-error")):
        assert not decide([consent], HRESCH, NOW).allowed


def test_period_not_started_or_ended():
    assert not decide([b.consent("c1", "p", start="2027-01-01")], HRESCH, NOW).allowed
    assert not decide([b.consent("c1", "p", end="2026-11-22")], HRESCH, NOW).allowed
    assert decide([b.consent("c1", "p", end="2026-11-23")], HRESCH, NOW).allowed  # the end day is included
    assert decide([b.consent("c1", "p", start="2026-01-01", end="2027-01-01")], HRESCH, NOW).allowed


def test_latest_consent_decides_whichever_hospital_sent_it():
    leeds_permit = b.consent("leeds", "p-leeds", purposes=[HRESCH], when="2026-01-01T00:00:00Z")
    christie_deny = b.consent("christie", "p-christie", ptype="deny", purposes=[HRESCH],
                              when="2026-06-01T00:00:00Z")
    d = decide([leeds_permit, christie_deny], HRESCH, NOW)
    assert not d.allowed and d.consent_id == "christie"
    renewed = b.consent("leeds2", "p-leeds", purposes=[HRESCH], when="2026-09-01T00:00:00Z")
    assert decide([leeds_permit, christie_deny, renewed], HRESCH, NOW).allowed


def test_deny_for_other_purpose_does_not_withdraw_research():
    c = [b.consent("c1", "p", purposes=[HRESCH], when="2026-01-01T00:00:00Z"),
         b.consent("c2", "p", ptype="deny", purposes=[ALERTS], when="2026-05-01T00:00:00Z")]
    assert decide(c, HRESCH, NOW).allowed and not decide(c, ALERTS, NOW).allowed


def test_nested_deny_provision():
    c = b.consent("c1", "p")
    c["provision"]["provision"] = [{"type": "deny", "purpose": [b.coding(ALERTS)]}]
    assert decide([c], HRESCH, NOW).allowed and not decide([c], ALERTS, NOW).allowed


def test_non_research_consent_is_ignored():
    c = b.consent("c1", "p")
    c["scope"] = b.concept((cv.CONSENT_SCOPE, "patient-privacy"))
    assert not decide([c], HRESCH, NOW).allowed


def test_consent_fixture_is_valid_r4():
    from gateway.fhir.validate import validate_resource

    validate_resource(b.consent("c1", "p", purposes=[HRESCH], start="2026-01-01"))
