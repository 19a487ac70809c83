"""The caller of one request: who (client), as what (role), for which organisation or person, with which scopes."""

from __future__ import annotations

from dataclasses import dataclass, field

ROLES = ("admin", "sponsor", "hospital", "research-team", "patient-app")


@dataclass(frozen=True)
class Caller:
    """A resolved caller. ``tenant`` is the organisation identifier value (ODS code or sponsor id);
    ``nhs_number`` is the one person a patient app acts for; ``studies`` are the study identifiers
    ("system|value") a research team works on."""

    client_id: str
    role: str  # one of ROLES
    tenant: str | None = None
    scopes: frozenset[str] = field(default_factory=frozenset)
    nhs_number: str | None = None
    studies: frozenset[str] = field(default_factory=frozenset)
    authenticated: bool = True  # False only for the development-mode local administrator

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"


LOCAL_ADMIN = Caller(client_id="local-admin", role="admin", scopes=frozenset({"system/*.cruds"}),
                     authenticated=False)
