"""Consent evaluation (ARCHITECTURE.md "Consent"), pure functions over Consent JSON, and the one consent gate
(``ConsentGate``) that ``$candidates`` and the automatic flows both apply.

A person may be proposed to a research team (purpose HRESCH) or receive trial alerts (purpose
trial-alerts) when their latest research Consent that speaks to that purpose is active, a permit, within its
period, and has no nested deny for it. A permit with no purpose permits every purpose. A deny, status
inactive / rejected / entered-in-error, or an ended period withdraws. Consents from every hospital that
share the NHS number are passed together: consent belongs to the person.
"""

from __future__ import annotations

from collections.abc import Container
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Protocol

from gateway.fhir import conventions as cv
from gateway.matching.terms import Code


@dataclass(frozen=True)
class ConsentDecision:
    allowed: bool
    reason: str
    consent_id: str | None = None


def _purposes(provision: dict) -> set[Code]:
    return {(p.get("system"), p.get("code")) for p in provision.get("purpose") or [] if isinstance(p, dict)}


def _is_research(consent: dict) -> bool:
    scope = consent.get("scope") or {}
    return any(c.get("system") == cv.CONSENT_SCOPE and c.get("code") == "research" for c in scope.get("coding") or [])


def _speaks_to(provision: dict, purpose: Code) -> bool:
    purposes = _purposes(provision)
    return not purposes or purpose in purposes


def _parse(ts: str | None) -> datetime | None:
    if not ts:
        return None
    try:
        dt = datetime.fromisoformat(ts.replace("Z", "+00:00") if "T" in ts else ts[:10] + "T00:00:00+00:00")
    except ValueError:
        return None
    return dt if dt.tzinfo else dt.replace(tzinfo=UTC)


def _period_ok(period: dict | None, at: datetime) -> tuple[bool, str]:
    if not period:
        return True, ""
    start, end = _parse(period.get("start")), _parse(period.get("end"))
    if start and at < start:
        return False, f"its period starts {period['start']}"
    if end:
        # A date-only end includes that whole day.
        end_ok = at.date() <= end.date() if "T" not in period["end"] else at <= end
        if not end_ok:
            return False, f"its period ended {period['end']}"
    return True, ""


def _recency(consent: dict) -> str:
    return max(consent.get("dateTime") or "", (consent.get("meta") or {}).get("lastUpdated") or "")


def decide(consents: list[dict], purpose: Code = cv.PURPOSE_RESEARCH, at: datetime | None = None
           ) -> ConsentDecision:
    """Consents of one person -> may they be used for ``purpose`` at ``at``?

    >>> decide([], cv.PURPOSE_RESEARCH).allowed
    False
    """
    at = at or datetime.now(UTC)
    name = purpose[1]
    relevant = [c for c in consents if isinstance(c, dict) and c.get("resourceType", "Consent") == "Consent"
                and _is_research(c) and _speaks_to(c.get("provision") or {}, purpose)]
    if not relevant:
        return ConsentDecision(False, f"No research Consent covers purpose {name}")
    latest = max(relevant, key=_recency)
    cid = latest.get("id")
    status = latest.get("status")
    prov = latest.get("provision") or {}
    if status != "active":
        return ConsentDecision(False, f"Consent/{cid} is {status}", cid)
    if prov.get("type", "permit") == "deny":
        return ConsentDecision(False, f"Consent/{cid} denies purpose {name}", cid)
    ok, why = _period_ok(prov.get("period"), at)
    if not ok:
        return ConsentDecision(False, f"Consent/{cid} does not apply now: {why}", cid)
    for sub in prov.get("provision") or []:
        if isinstance(sub, dict) and sub.get("type") == "deny" and purpose in _purposes(sub) \
                and _period_ok(sub.get("period"), at)[0]:
            return ConsentDecision(False, f"Consent/{cid} has a deny provision for purpose {name}", cid)
    return ConsentDecision(True, f"Consent/{cid} permits purpose {name}", cid)


def may_ever(consents: list[dict], purpose: Code) -> bool:
    """True when ``decide`` may allow ``purpose`` now or later without a new record: the latest research Consent
    for it is an active permit (its period and nested denies depend on the day, so ``decide`` checks them).

    What a person's stored profile row says (gateway.store.profiles), so the candidate queries start from the
    people who may be told or proposed; never looser than ``decide`` on the same records.
    """
    relevant = [c for c in consents if isinstance(c, dict) and c.get("resourceType", "Consent") == "Consent"
                and _is_research(c) and _speaks_to(c.get("provision") or {}, purpose)]
    if not relevant:
        return False
    latest = max(relevant, key=_recency)
    return latest.get("status") == "active" and (latest.get("provision") or {}).get("type", "permit") != "deny"


# -- the one gate of every action on a person (ARCHITECTURE.md "Consent") --------------------------------------
# - Alerts to a patient need an active ``trial-alerts`` permit.
# - Proposing a patient to a research team (the automatic proposals and ``$candidates`` alike) needs an active
#   ``HRESCH`` permit, or a legal basis configured for that study (mappings/legal-bases/*.yaml); under a legal basis
#   never for a person on the national data opt-out list, nor without an NHS number to check it against.
# - A person who shared no clinical record (an alerts-only opt-in) is never proposed.
# Patient-initiated actions (search, contact request) never come through here.


@dataclass(frozen=True)
class Decision:
    allowed: bool
    basis: str | None  # consent | legal-basis | None
    reason: str
    blocked_by_optout: bool = False


class LegalBasisLike(Protocol):
    name: str
    reference: str
    studies: frozenset[tuple[str, str]]


@dataclass
class ConsentGate:
    """The consent rules with the deployment's legal bases and national data opt-out list."""

    legal_bases: list = field(default_factory=list)  # [LegalBasisLike]
    optout: Container[object] = field(default_factory=frozenset)

    def may_alert(self, consents: list[dict], at: datetime | None = None) -> Decision:
        d = decide(consents, cv.PURPOSE_TRIAL_ALERTS, at)
        return Decision(d.allowed, "consent" if d.allowed else None, d.reason)

    def basis_for(self, study: dict) -> LegalBasisLike | None:
        """The legal basis that covers ``study`` (by its identifiers), if any."""
        ids = {(cv.normalise_ctgov_system(i.get("system")), i.get("value")) for i in study.get("identifier") or []
               if isinstance(i, dict)}
        return next((b for b in self.legal_bases if b.studies & ids), None)

    def may_propose(self, study: dict, consents: list[dict], nhs_number: str | None, at: datetime | None = None,
                    alerts_only: bool = False) -> Decision:
        if alerts_only:
            return Decision(False, None, "Opted in to trial alerts only: no clinical record was shared")
        d = decide(consents, cv.PURPOSE_RESEARCH, at)
        if d.allowed:
            return Decision(True, "consent", d.reason)
        basis = self.basis_for(study)
        if basis is None:
            return Decision(False, None, f"{d.reason}, and no legal basis covers this study")
        if nhs_number is None:
            return Decision(False, None, "Legal basis needs an NHS number to check the national data opt-out")
        if nhs_number in self.optout:
            return Decision(False, None, f"On the national data opt-out list (legal basis {basis.reference} "
                                         "does not apply)", blocked_by_optout=True)
        return Decision(True, "legal-basis", f"Legal basis {basis.reference} ({basis.name})")
