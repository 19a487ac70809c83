"""A patient signed in with OpenID Connect (NHS login in production): the claims we use and the Caller it becomes.

The sign-in itself (authorization code + PKCE, state, nonce, ID token checks) is authlib's, wired in
``gateway.api.signin``; this module holds the pure rules, so the API and the pages share them.

>>> session_caller("9434765919", "web-a1b2").role
'patient-app'
"""

from __future__ import annotations

from gateway.fhir.nhs_number import is_valid_nhs_number, normalise_nhs_number
from gateway.security.principal import Caller

# What a signed-in patient may do, in SMART terms: see studies, see their own records, make contact requests,
# and keep their alert preferences (Consent + Subscription). The policy narrows every one to their NHS number.
PATIENT_SESSION_SCOPES = frozenset({
    "patient/ResearchStudy.rs", "patient/Location.rs", "patient/Group.rs", "patient/Patient.rs",
    "patient/ResearchSubject.crus", "patient/Consent.cruds", "patient/Subscription.cruds",
})
SESSION_CLIENT_PREFIX = "patient-web/"


class NoNhsNumber(ValueError):
    """The identity provider did not give a valid NHS number for the person (e.g. identity not verified)."""


def nhs_number_of(claims: dict, claim: str = "nhs_number") -> str:
    """ID token or userinfo claims -> the person's NHS number (10 digits, check digit valid); NoNhsNumber else.

    >>> nhs_number_of({"nhs_number": "943 476 5919"})
    '9434765919'
    """
    raw = claims.get(claim)
    nhs = normalise_nhs_number(str(raw)) if isinstance(raw, str | int) else ""
    if not is_valid_nhs_number(nhs):
        raise NoNhsNumber(f"the identity provider gave no valid NHS number in the '{claim}' claim")
    return nhs


def session_caller(nhs_number: str, session_id: str) -> Caller:
    """The Caller of a signed-in browser session: a patient app acting for this one person.

    ``session_id`` is random per sign-in (never derived from the person), so rate limits and audit
    entries are per session without putting an identifier in them.
    """
    return Caller(client_id=f"{SESSION_CLIENT_PREFIX}{session_id}", role="patient-app", tenant=None,
                  scopes=PATIENT_SESSION_SCOPES, nhs_number=nhs_number)


__all__ = ["NoNhsNumber", "PATIENT_SESSION_SCOPES", "nhs_number_of", "session_caller"]
