"""Consent evaluation (ARCHITECTURE.md "Consent"), a pure function over Consent JSON.

A person may be proposed to a research team (purpose HRESCH) or receive trial alerts (purpose
trial-alerts) when their latest research Consent that speaks to that purpose is active, a permit, within its
period, and has no nested deny for it. A permit with no purpose permits every purpose. A deny, status
inactive / rejected / entered-in-error, or an ended period withdraws. Consents from every hospital that
share the NHS number are passed together: consent belongs to the person.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

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
