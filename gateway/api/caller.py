"""Who is calling: resolved in exactly one place for every request.

Until the security layer is configured, every caller is the local administrator (development
mode). ``resolve_caller`` is the single seam the security layer replaces.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from flask import Request


@dataclass(frozen=True)
class Caller:
    client_id: str
    role: str  # admin | sponsor | hospital | research-team | patient
    tenant: str | None = None
    scopes: frozenset[str] = field(default_factory=frozenset)
    nhs_number: str | None = None

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"


LOCAL_ADMIN = Caller(client_id="local-admin", role="admin", scopes=frozenset({"system/*.cruds"}))


def resolve_caller(_request: Request) -> Caller:
    """Request -> Caller. Development mode: the local administrator."""
    return LOCAL_ADMIN
