"""Who is calling (tokens, clients, scopes), what they may touch (policy), the audit trail, erasure, limits.

The small public API: ``Caller``; ``Access`` (one caller's view of the store for one request; views get
theirs from ``gateway.api.authstate.access()``); ``authorize`` for code outside the REST views;
``register_operation`` to let roles other than admin invoke an operation; ``record_automatic`` to audit
an automatic action.
"""

from __future__ import annotations

from gateway.fhir.errors import NotFound
from gateway.security.policy import Access, current_access, patient_refs, register_operation, tenant_of
from gateway.security.principal import LOCAL_ADMIN, Caller
from gateway.store.audit import record_automatic


def authorize(access: Access, interaction: str, resource_type: str, resource: dict | None = None) -> None:
    """The one check for code outside the REST views (operations, ingest, workers acting for a caller).

    authorize(acc, "read", "Patient", patient) -> None, or Forbidden (403) / NotFound (404).
    ``interaction``: read | vread | search | create | update | delete | history-instance | history-type.
    """
    access.check(interaction, resource_type)
    if resource is None:
        return
    if interaction in ("read", "vread", "search", "history-instance", "history-type"):
        if not access.can_see(resource):
            raise NotFound(f"{resource_type}/{resource.get('id')} is not known", f"{resource_type}.id")
        access.note(resource_type, str(resource.get("id")), resource)
    elif interaction in ("create", "update"):
        access.prepare_write(resource_type, resource)
        access.check_new_content(resource)


__all__ = ["Access", "Caller", "LOCAL_ADMIN", "authorize", "current_access", "patient_refs", "record_automatic",
           "register_operation", "tenant_of"]
