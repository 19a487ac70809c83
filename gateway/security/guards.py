"""The store's security hooks: this request's ``Access`` (``gateway.security.policy.current_access``) checks each
write inside the transaction. Outside a request (the CLI, the worker, the automatic flows) there is no Access
and each hook lets the write through. The composition root (gateway/compose.py) installs them first."""

from __future__ import annotations

from collections.abc import Callable

from gateway.security.policy import current_access
from gateway.store.repo import Tx, WriteResult


def write_guard(tx: Tx, result: WriteResult, resource: dict) -> None:
    """A write the caller may not make rolls back before anything else is queued."""
    acc = current_access.get()
    if acc is not None:
        acc.write_hook(tx, result, resource)


def existing_guard(rtype: str, rid: str, current, named: bool) -> None:
    """Before any If-Match check: another's resource is answered like a missing one (no existence oracle)."""
    acc = current_access.get()
    if acc is not None:
        acc.check_existing(rtype, rid, current, named=named)


def caller_view() -> Callable | None:
    """This request's visibility predicate for conditional searches; None for administrators (see all)."""
    acc = current_access.get()
    return None if acc is None or acc.caller.is_admin else acc.can_see
