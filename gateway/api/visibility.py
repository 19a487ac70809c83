"""What the caller may see and write, for the FHIR views (one call each): reads that answer NotFound for
another's resource, rows filtered, searches narrowed, tenants stamped, Bundle entries checked.

Every helper works through this request's ``Access`` (``gateway.api.authstate.access``).
"""

from __future__ import annotations

from flask import current_app

from gateway.api.authstate import access
from gateway.fhir.errors import FhirError, Forbidden, Gone, NotFound
from gateway.fhir.interaction import parse_interaction
from gateway.fhir.search import SearchQuery
from gateway.store.repo import Store, Stored


def see(st):
    """A stored version the caller asked for by id: returned if visible, else NotFound (no existence leak)."""
    acc = access()
    res = st.resource() if st.content else None
    if not acc.can_see(res):
        raise NotFound(f"{st.type}/{st.id} is not known", f"{st.type}.id")
    acc.note(st.type, st.id, res)
    return st


def read(rtype: str, rid: str, version: int | None = None):
    """read / vread as the caller: NotFound (not Gone) when the caller may not see the resource, so a
    deleted resource of someone else does not reveal that its id once existed. A vread is authorized on the
    resource before its versions are looked at: another's resource answers like a missing one, whichever
    version is asked for."""
    store: Store = current_app.extensions["gateway.store"]
    if version is not None and not access().caller.is_admin:
        _visible_or_not_found(store, rtype, rid)
    try:
        return see(store.read(rtype, rid) if version is None else store.vread(rtype, rid, version))
    except Gone:
        if not access().caller.is_admin:
            _visible_or_not_found(store, rtype, rid)
        raise


def _visible_or_not_found(store: Store, rtype: str, rid: str) -> None:
    """NotFound ("is not known", as for an id never stored) unless the caller may see the resource: its
    current content, or for a deleted one its last content."""
    current = store.read_many([(rtype, rid)])
    if current:
        last = current[0]
    else:
        try:
            _, rows = store.history(rtype, rid, count=50)
        except NotFound:
            rows = []
        last = next((r for r in rows if r.content), None)
    if last is None or not access().can_see(last.resource()):
        raise NotFound(f"{rtype}/{rid} is not known", f"{rtype}.id")


def filter_rows(rows: list) -> list:
    """Search, _include and history rows -> the ones the caller may see."""
    return access().filter(rows)


def can_see_row(st: Stored) -> bool:
    """May the caller read this stored row (nothing noted for the audit trail: it is not returned yet)?"""
    return access().can_see(st.resource() if st.content else None)


def narrow_search(rtype: str, items: list[tuple[str, str]]) -> list[tuple[str, str]]:
    return access().narrow_search(rtype, items)


def limit_chains(query: SearchQuery) -> None:
    """Chained criteria follow only the targets the caller may read (see ``Access.limit_chains``)."""
    access().limit_chains(query)


def show_total(rtype: str | None) -> bool:
    return access().exact_totals(rtype)


def prepare_write(rtype: str, resource: object) -> object:
    """Stamp the caller's tenant on content about to be written (checked again inside the transaction)."""
    if isinstance(resource, dict):
        access().prepare_write(rtype, resource)
    return resource


def check_bundle(bundle: object) -> None:
    """Every entry of a transaction or batch is checked like the REST call it stands for."""
    if not isinstance(bundle, dict) or not isinstance(bundle.get("entry"), list):
        return
    acc = access()
    for i, entry in enumerate(bundle["entry"]):
        if not isinstance(entry, dict) or not isinstance(entry.get("request"), dict):
            continue
        req = entry["request"]
        method, url = req.get("method"), req.get("url")
        if not isinstance(url, str) or method not in ("GET", "POST", "PUT", "DELETE"):
            continue
        it = parse_interaction(method, url)
        if it.name in (None, "transaction"):
            continue  # names no interaction: the entry is refused (400) when the Bundle is processed
        try:
            if it.name in ("operation", "history-system"):
                raise Forbidden("History and operations are not allowed inside a Bundle here", "request.url")
            acc.check_interaction(it, entry.get("resource"), "Bundle.entry.resource.resourceType")
        except FhirError as exc:
            raise exc.prefixed(f"Bundle.entry[{i}]") from None
    acc.prepare_body(bundle)  # the tenant stamp, also when the request hook could not read the body


def filter_bundle_response(result: dict) -> dict:
    """transaction-response / batch-response: resources the caller may not see are left out."""
    acc = access()
    for e in result.get("entry") or []:
        res = e.get("resource")
        if isinstance(res, dict) and res.get("resourceType") != "Bundle" and not acc.can_see(res):
            e.pop("resource")
    return result


def read_for_bundle(st) -> dict:
    return see(st).resource()


def filter_history(rtype: str | None, rid: str | None, rows: list) -> list:
    """History entries the caller may see; an instance the caller may not see is NotFound."""
    acc = access()
    if acc.caller.is_admin:
        return rows
    if rid is not None and rtype is not None:
        current = current_app.extensions["gateway.store"].read_many([(rtype, rid)])
        shown = current[0] if current else next((r for r in rows if r.content), None)
        if shown is None or not acc.can_see(shown.resource()):
            raise NotFound(f"{rtype}/{rid} is not known", f"{rtype}.id")
        return [r for r in rows if r.content is None or acc.can_see(r.resource())]
    return acc.filter(r for r in rows if r.content)
