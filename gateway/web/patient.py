"""The signed-in patient on the pages: who it is (the OIDC session of ``gateway.api.signin``) and the patient's
actions on a study, each one call to the service the ``/patient`` API calls (``gateway.api.patient``), with the
patient's own ``Caller``: the same authorization, the same outbox routes, the same audit.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlencode

from flask import request

from gateway.api import patient as actions
from gateway.api import signin
from gateway.fhir.errors import NotFound, Unauthorized
from gateway.security.principal import Caller
from gateway.web.present import StudyView

OPEN_STATUSES = frozenset({"candidate", "eligible", "pending-on-study", "on-study"})


@dataclass(frozen=True)
class ContactState:
    status: str  # requested | withdrawn
    subject_id: str


def current_caller() -> Caller | None:
    """The signed-in patient's Caller (role patient-app, their NHS number), or None."""
    p = signin.current_patient()
    return p.caller if p else None


def sign_in_url(next_path: str | None = None) -> str:
    """Where 'Sign in' goes; ``next`` is the page path to come back to (never any personal data)."""
    path = next_path or request.path
    if next_path is None and request.method != "GET":  # a refused action: come back to the study page
        path = path.rsplit("/", 1)[0] if path.startswith("/trials/") and path.count("/") >= 3 else "/trials"
    return f"/patient/login?{urlencode({'next': path})}"


SIGN_OUT_URL = "/patient/logout"  # POST with the session's own CSRF token (signin.csrf_token())


def sign_out_token() -> str | None:
    return signin.csrf_token()


def require_signed_in() -> Caller:
    caller = current_caller()
    if caller is None or caller.role != "patient-app":
        raise Unauthorized("Sign in to do this", "session")
    return caller


def contact_state(caller: Caller, study_id: str) -> ContactState | None:
    """The patient's latest contact request about this study: requested (still open) or withdrawn; None if none."""
    ref = f"ResearchStudy/{study_id}"
    for subject in actions.contact_requests(caller):  # newest first
        if ((subject.get("study") or {}).get("reference") or "").endswith(ref):
            status = "requested" if subject.get("status") in OPEN_STATUSES else "withdrawn"
            return ContactState(status, str(subject.get("id")))
    return None


def request_contact(caller: Caller, study_id: str) -> None:
    actions.request_contact(caller, study_id)


def withdraw(caller: Caller, study_id: str) -> None:
    state = contact_state(caller, study_id)
    if state is None or state.status != "requested":
        raise NotFound("There is no open contact request about this study", "ResearchSubject")
    actions.withdraw_contact(caller, state.subject_id)


@dataclass(frozen=True)
class AlertInterest:
    """What one active opt-in asks for, as the patient chose it (read back from its Subscription)."""

    condition: str
    area: str | None  # a postcode district (the full postcode is never stored); None: anywhere
    distance_km: int | None


def alert_interests(caller: Caller) -> list[AlertInterest] | None:
    """The patient's active alert opt-ins, each with its condition and area; None when alerts are off."""
    found = actions.alerts(caller)
    if not any(r.get("resourceType") == "Consent" for r in found):
        return None
    out = []
    for sub in (r for r in found if r.get("resourceType") == "Subscription"):
        for ext in sub.get("extension") or []:
            if ext.get("url") != actions.EXT_ALERT_INTEREST:
                continue
            parts = {x.get("url"): x for x in ext.get("extension") or []}
            distance = (parts.get("distance") or {}).get("valueQuantity", {}).get("value")
            out.append(AlertInterest(str((parts.get("condition") or {}).get("valueString") or ""),
                                     (parts.get("postcode") or {}).get("valueString"),
                                     int(distance) if isinstance(distance, int | float) else None))
    return out


def opt_in(caller: Caller, study: StudyView, postcode: str, distance_km: int) -> None:
    """Alerts about trials like this one: its first condition (else its title), near the postcode the patient
    gave on the study page (prefilled from their last search), or anywhere when they gave none."""
    condition = (study.conditions[0] if study.conditions else study.title)[:200]
    actions.opt_in_alerts(caller, condition, postcode or None, distance_km)


def opt_out(caller: Caller) -> int:
    return actions.opt_out_alerts(caller)
