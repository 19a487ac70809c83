"""FHIR interaction semantics over the store: create, conditional create/update, delete, Bundles.

No Flask here: the REST API, ``gateway load`` and the ingest pipeline all call these.

>>> svc.create({"resourceType": "Patient"}).outcome
'created'
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, field
from http import HTTPStatus
from urllib.parse import parse_qsl, unquote_plus

import orjson

from gateway.fhir.conventions import normalise_ctgov_system
from gateway.fhir.errors import (
    FhirError,
    InvalidResource,
    Issue,
    MethodNotAllowed,
    NotFound,
    PreconditionFailed,
    TooLarge,
)
from gateway.fhir.interaction import parse_interaction
from gateway.fhir.models import SUPPORTED_TYPES
from gateway.fhir.rewrite import normalise_systems
from gateway.fhir.rewrite import replace_strings as _replace_strings
from gateway.fhir.search import SearchQuery, parse_search, parse_token, split_values
from gateway.fhir.search_params import params_for
from gateway.fhir.validate import validate_resource
from gateway.store.repo import Store, Stored, Tx, WriteResult

# Hooks run inside the write transaction after each successful write, e.g. to enqueue outbox jobs
# in the same transaction: fn(tx, write_result, resource_dict).
WriteHook = Callable[[Tx, WriteResult, dict], None]
# Guards run inside the write transaction on the current row of a resource about to be updated or deleted,
# BEFORE any version check (If-Match), so a caller learns nothing about a resource it may not change:
# fn(rtype, id, current_row_or_None, named) raises to refuse; ``named``: the caller gave the id itself.
ExistingGuard = Callable[[str, str, "Stored | None", bool], None]
# Transforms run on each resource about to be written (REST create/update, transaction and batch entries), after
# its systems are normalised and BEFORE it is validated and stored: fn(resource) -> resource (a new dict, or the
# same object when nothing changes; a resource it does not recognise, even a malformed one, passes unchanged for
# validation to judge). The composition code installs them (gateway/api/app.py: eligibility extraction), so the
# store imports nothing from the layers above. Entries a caller passes as already validated are not transformed.
ResourceTransform = Callable[[object], object]


def new_id() -> str:
    return str(uuid.uuid4())


def _status_line(status: HTTPStatus) -> str:
    return f"{status.value} {status.phrase}"


@dataclass
class EntryResult:
    """What one Bundle entry (or one REST call) produced."""

    status: HTTPStatus
    write: WriteResult | None = None
    outcome: dict | None = None
    resource: dict | None = None  # for GET entries

    def response(self, include_resource: bool) -> dict:
        entry: dict = {}
        resp: dict = {"status": _status_line(self.status)}
        if self.write is not None:
            st = self.write.stored
            resp["location"] = f"{st.type}/{st.id}/_history/{st.version}"
            resp["etag"] = st.etag
            resp["lastModified"] = st.last_updated
            if include_resource and st.content:
                entry["resource"] = st.resource()
        if self.outcome is not None:
            resp["outcome"] = self.outcome
        if self.resource is not None:
            entry["resource"] = self.resource
        entry["response"] = resp
        return entry


@dataclass
class FhirService:
    store: Store
    max_bundle_entries: int = 1000
    hooks: list[WriteHook] = field(default_factory=list)
    guards: list[ExistingGuard] = field(default_factory=list)
    transforms: list[ResourceTransform] = field(default_factory=list)
    # The caller's view for conditional searches (If-None-Exist, conditional update/delete): returns a predicate
    # on resource content, or None when the caller sees everything (administrators, tools without a caller).
    visibility: Callable[[], Callable[[dict], bool] | None] | None = None

    # -- single interactions -------------------------------------------------------------------
    def create(self, resource: dict, *, if_none_exist: str | None = None, validated: bool = False,
               resource_type: str | None = None) -> WriteResult:
        """``resource_type``: the type the caller addressed (``POST /Patient``); the body must be one."""
        self.check_size(resource)
        resource = normalise_systems(resource)
        if not validated:
            resource = self.prepare(resource)
            validate_resource(resource, resource_type)
        elif resource_type and resource.get("resourceType") != resource_type:
            validate_resource(resource, resource_type)  # raises the mismatch
        with self.store.write() as tx:
            return self._create(tx, resource, if_none_exist)

    def update(self, rtype: str, rid: str, resource: dict, *, if_match: str | None = None) -> WriteResult:
        self.check_size(resource)
        resource = self.prepare(normalise_systems(resource))
        validate_resource(resource, rtype)
        if resource.get("id") != rid:
            raise InvalidResource(f"The resource id '{resource.get('id')}' does not match the URL id '{rid}'",
                                  f"{rtype}.id")
        with self.store.write() as tx:
            return self._put(tx, resource, if_match)

    def conditional_update(self, rtype: str, query: str, resource: dict, *,
                           if_match: str | None = None) -> WriteResult:
        self.check_size(resource)
        resource = self.prepare(normalise_systems(resource))
        validate_resource(resource, rtype)
        with self.store.write() as tx:
            return self._conditional_update(tx, rtype, query, resource, if_match)

    def delete(self, rtype: str, rid: str, *, if_match: str | None = None) -> WriteResult:
        with self.store.write() as tx:
            self.current_for_change(tx, rtype, rid, if_match=if_match)
            result = tx.delete(rtype, rid, if_match=if_match)
            self._run_hooks(tx, result, {})
            return result

    def conditional_delete(self, rtype: str, query: str) -> WriteResult | None:
        with self.store.write() as tx:
            q = self._query(rtype, query)
            _lock_search(tx, rtype, query)
            ids = self._matching_ids(tx, q)
            if len(ids) > 1:
                raise PreconditionFailed(f"Conditional delete matched {len(ids)}+ {rtype} resources",
                                         f"{rtype}")
            if not ids:
                return None
            self.current_for_change(tx, rtype, ids[0], named=False)
            result = tx.delete(rtype, ids[0])
            self._run_hooks(tx, result, {})
            return result

    def conditional_matches(self, tx: Tx, rtype: str, query: str) -> list[Stored]:
        """Current resources a conditional search ('identifier=s|v,s2|v2') matches, read inside ``tx`` after
        locking its key: what a conditional update would find."""
        key = _token_key(rtype, query)
        if key is None:
            _lock_search(tx, rtype, query)
            rows = [tx.current(rtype, rid) for rid in tx.search_ids(self._query(rtype, query))]
            return [r for r in rows if r is not None]
        for name in key.lock_names:
            tx.lock(name)
        return key.matches(tx.find_tokens(key.param, key.pairs))

    def _matching_ids(self, tx: Tx, q: SearchQuery) -> list[str]:
        """A conditional search's matches as the caller sees them: a resource it may not see never matches
        (otherwise If-None-Exist on an NHS number would tell whether another hospital knows that person)."""
        ids = tx.search_ids(q)
        see = self.visibility() if self.visibility is not None else None
        if see is None or not ids or q.resource_type is None:
            return ids
        rows = [tx.current(q.resource_type, rid) for rid in ids]
        return [r.id for r in rows if r is not None and r.content and see(r.resource())]

    def _visible_rows(self, rows: list[Stored]) -> list[Stored]:
        see = self.visibility() if self.visibility is not None else None
        return rows if see is None else [r for r in rows if r.content and see(r.resource())]

    def check_size(self, resource: object) -> None:
        """A Bundle stored as a resource (``POST /Bundle``, ``PUT /Bundle/x``, a Bundle entry) obeys the same
        entry limit as a transaction: 413 past GATEWAY_MAX_BUNDLE_ENTRIES, before it is validated."""
        if isinstance(resource, dict) and resource.get("resourceType") == "Bundle":
            entries = resource.get("entry")
            if isinstance(entries, list) and len(entries) > self.max_bundle_entries:
                raise TooLarge(f"Bundle has {len(entries)} entries; the maximum is {self.max_bundle_entries} "
                               "(GATEWAY_MAX_BUNDLE_ENTRIES)", "Bundle.entry")

    def current_for_change(self, tx: Tx, rtype: str, rid: str, *, named: bool = True, if_match: str | None = None,
                           current: Stored | None = None, fetched: bool = False) -> Stored | None:
        """The current row of a resource about to be updated or deleted, after every guard accepted it: the
        caller's authorization is decided before any version check. ``current``/``fetched``: a row already read
        in this transaction.

        ``if_match`` on a resource with no current version (never stored, or deleted) is NotFound, as a read
        of it would be: the answer for another's resource (guards) and for a missing one is the same 404.
        """
        cur = current if fetched else tx.current(rtype, rid)
        for guard in self.guards:
            guard(rtype, rid, cur, named)
        if if_match is not None and (cur is None or cur.deleted):
            what = f"{rtype}/{rid}" if named else f"The {rtype} this conditional request matched"
            raise NotFound(f"{what} is not known", f"{rtype}.id")  # like a read, and like another's
        return cur

    def prepare(self, resource: object) -> object:
        """The resource after every pre-write transform (systems already normalised), ready for validation."""
        for transform in self.transforms:
            resource = transform(resource)
        return resource

    # -- internals shared by REST and Bundles --------------------------------------------------
    def _query(self, rtype: str, query: str) -> SearchQuery:
        items = parse_qsl(query, keep_blank_values=True)
        if not items:
            raise InvalidResource(f"Conditional request on {rtype} has no search parameters", rtype)
        q = parse_search(rtype, items, strict=True)
        return q

    def _create(self, tx: Tx, resource: dict, if_none_exist: str | None) -> WriteResult:
        rtype = resource["resourceType"]
        if if_none_exist:
            q = self._query(rtype, if_none_exist.lstrip("?").split("?", 1)[-1])
            # Serialise on the search key: two concurrent creates with the same key cannot both miss.
            _lock_search(tx, rtype, if_none_exist.lstrip("?").split("?", 1)[-1])
            ids = self._matching_ids(tx, q)
            if len(ids) > 1:
                raise PreconditionFailed(f"If-None-Exist '{if_none_exist}' matched {len(ids)}+ {rtype} resources",
                                         f"{rtype}")
            if ids:
                cur = tx.current(rtype, ids[0])
                assert cur is not None
                return WriteResult("unchanged", cur)
        result = tx.create(resource, new_id())
        self._run_hooks(tx, result, resource)
        return result

    def _put(self, tx: Tx, resource: dict, if_match: str | None, fresh: bool = False,
             current: Stored | None = None, named: bool = True) -> WriteResult:
        """``fresh``: the id was just generated here, so there is no current row to read or race with.
        ``current``: the current row, already read in this transaction (and locked, on PostgreSQL).
        ``named``: the caller gave the id (False: a conditional search found it)."""
        if fresh:
            result = tx.put(resource, if_match=if_match, current=None, fetched=True, fresh_id=True)
        else:
            cur = self.current_for_change(tx, resource["resourceType"], resource["id"], named=named,
                                          if_match=if_match, current=current, fetched=current is not None)
            result = tx.put(resource, if_match=if_match, current=cur, fetched=True)
        if result.outcome != "unchanged":
            self._run_hooks(tx, result, resource)
        return result

    def _conditional_update(self, tx: Tx, rtype: str, query: str, resource: dict,
                            if_match: str | None) -> WriteResult:
        q = self._query(rtype, query)
        _lock_search(tx, rtype, query)
        ids = self._matching_ids(tx, q)
        if len(ids) > 1:
            raise PreconditionFailed(f"Conditional update '{rtype}?{query}' matched {len(ids)}+ resources", rtype)
        if ids:
            if resource.get("id") not in (None, ids[0]):
                raise InvalidResource(f"The resource id '{resource['id']}' does not match the resource found by "
                                      f"'{query}' ({ids[0]})", f"{rtype}.id")
            return self._put(tx, {**resource, "id": ids[0]}, if_match, named=False)
        if resource.get("id"):
            return self._put(tx, resource, if_match)
        result = tx.create(resource, new_id())
        self._run_hooks(tx, result, resource)
        return result

    def _run_hooks(self, tx: Tx, result: WriteResult, resource: dict) -> None:
        for hook in self.hooks:
            hook(tx, result, resource)

    # -- Bundles -------------------------------------------------------------------------------
    def process_bundle(self, bundle: object, *, include_resources: bool = False,
                       read: Callable[[str], dict] | None = None) -> dict:
        """A transaction or batch Bundle -> its transaction-response / batch-response Bundle."""
        btype, results = self.run_bundle(bundle, read=read)
        return {"resourceType": "Bundle", "id": new_id(), "type": f"{btype}-response",
                "entry": [r.response(include_resources) for r in results]}

    def run_bundle(self, bundle: object, *, read: Callable[[str], dict] | None = None, tx: Tx | None = None,
                   validated: frozenset[int] = frozenset()) -> tuple[str, list[EntryResult]]:
        """Process a transaction or batch Bundle; return its type and one EntryResult per entry.

        ``tx``: run a transaction Bundle inside this open transaction (the caller commits, and wraps the call
        in ``tx.savepoint()`` if a failure must undo only this Bundle) instead of one of its own.
        ``validated``: indexes of entries whose resource is already ``normalise_systems``'d and passed
        ``validate_resource`` (the import pipeline validates in worker processes); the rest are checked here.
        """
        if not isinstance(bundle, dict) or bundle.get("resourceType") != "Bundle":
            raise InvalidResource("POST to the base URL needs a Bundle", "Bundle")
        btype = bundle.get("type")
        if btype not in ("transaction", "batch"):
            raise InvalidResource(f"Bundle.type must be 'transaction' or 'batch' to be processed, got '{btype}'",
                                  "Bundle.type")
        entries = bundle.get("entry") or []
        if not isinstance(entries, list):
            raise InvalidResource("Bundle.entry must be an array", "Bundle.entry")
        if len(entries) > self.max_bundle_entries:
            raise TooLarge(f"Bundle has {len(entries)} entries; the maximum is {self.max_bundle_entries} "
                           "(GATEWAY_MAX_BUNDLE_ENTRIES)", "Bundle.entry")
        _check_unique_full_urls(entries)
        for i, entry in enumerate(entries):
            try:
                self.check_size(entry.get("resource") if isinstance(entry, dict) else None)
            except FhirError as exc:
                raise exc.prefixed(f"Bundle.entry[{i}].resource") from None
        if btype == "transaction":
            return btype, self._transaction(entries, read, tx, validated)
        if tx is not None:
            raise InvalidResource("Only a transaction Bundle can join an open transaction", "Bundle.type")
        return btype, self._batch(entries, read)

    def _transaction(self, entries: list, read, outer: Tx | None = None,
                     validated: frozenset[int] = frozenset()) -> list[EntryResult]:
        parsed = _parse_entries(entries, transaction=True, validated=validated, prepare=self.prepare)
        errors = [e for e in parsed if isinstance(e, FhirError)]
        if errors:
            issues = [i for e in errors for i in e.issues]
            status_cls = type(errors[0]) if all(type(e) is type(errors[0]) for e in errors) else InvalidResource
            raise status_cls("; ".join(e.diagnostics for e in errors[:5]), issues=issues)
        plan: list[_Entry] = parsed  # type: ignore[assignment]
        _check_duplicate_targets(plan)
        results: dict[int, EntryResult] = {}
        with nullcontext(outer) if outer is not None else self.store.write() as tx:
            # Resolve the id every POST and conditional PUT will get, so references can be rewritten.
            found = self._lookup_conditionals(tx, plan)
            idmap: dict[str, str] = {}
            for e in plan:
                try:
                    self._resolve_target(tx, e, found)
                except FhirError as exc:
                    raise exc.prefixed(f"Bundle.entry[{e.index}]") from None
                if e.full_url and e.target_id:
                    idmap[e.full_url] = f"{e.rtype}/{e.target_id}"
            _forget_shared_targets(plan)
            absolute = [k.encode() for k in idmap if not k.startswith("urn:")]
            for e in plan:
                if e.resource is not None and _mentions(e.resource, b"urn:", *absolute):
                    e.resource, unresolved = _rewrite_references(e.resource, idmap)
                    if unresolved:
                        raise InvalidResource(
                            f"Bundle.entry[{e.index}].resource: reference '{unresolved[0]}' does not resolve to "
                            "any entry's fullUrl", f"Bundle.entry[{e.index}].resource")
            order = {"DELETE": 0, "POST": 1, "PUT": 2, "GET": 3}
            for e in sorted(plan, key=lambda x: (order[x.method], x.index)):
                try:
                    results[e.index] = self._apply(tx, e, read)
                except FhirError as exc:
                    raise exc.prefixed(f"Bundle.entry[{e.index}]") from None
        return [results[i] for i in range(len(plan))]

    def _batch(self, entries: list, read) -> list[EntryResult]:
        out = []
        for item in _parse_entries(entries, transaction=False, prepare=self.prepare):
            if isinstance(item, FhirError):
                out.append(EntryResult(item.status, outcome=item.outcome()))
                continue
            try:
                with self.store.write() as tx:
                    self._resolve_target(tx, item)
                    out.append(self._apply(tx, item, read))
            except FhirError as exc:
                err = exc.prefixed(f"Bundle.entry[{item.index}]")
                out.append(EntryResult(exc.status, outcome=err.outcome()))
        return out

    def _lookup_conditionals(self, tx: Tx, plan: list[_Entry]) -> dict[int, list[Stored]]:
        """Entry index -> current resources its conditional search matches, for every entry whose search is
        one token parameter with 'system|code' values (the usual 'identifier=system|value' key): one query
        per search parameter for the whole Bundle instead of one per entry. Other searches are left to
        ``_resolve_target``.

        Every key is locked first (in a fixed order, so two Bundles sharing keys cannot deadlock), then looked
        up: a concurrent transaction cannot create a resource under one of these keys in between.
        """
        keyed: dict[int, _TokenKey] = {}
        for e in plan:
            query = e.if_none_exist.lstrip("?") if e.method == "POST" and e.if_none_exist else \
                e.query if e.method == "PUT" else None
            if query is not None:
                key = _token_key(e.rtype, query)
                if key is not None:
                    keyed[e.index] = key
        if not keyed:
            return {}
        for name in sorted({n for k in keyed.values() for n in k.lock_names}):
            tx.lock(name)
        by_param: dict[str, set[tuple[str, str]]] = {}
        for k in keyed.values():
            by_param.setdefault(k.param, set()).update(k.pairs)
        rows = {param: tx.find_tokens(param, pairs) for param, pairs in by_param.items()}
        return {index: k.matches(rows[k.param]) for index, k in keyed.items()}

    def _resolve_target(self, tx: Tx, e: _Entry, found: dict[int, list[Stored]] | None = None) -> None:
        """Decide the id an entry writes; ``found`` holds the results of conditional searches already run."""
        hits = found.get(e.index) if found is not None else None
        if hits is not None:
            hits = self._visible_rows(hits)
        if e.method == "POST":
            if e.if_none_exist:
                if hits is not None:
                    ids = [st.id for st in hits]
                else:
                    q = self._query(e.rtype, e.if_none_exist.lstrip("?"))
                    _lock_search(tx, e.rtype, e.if_none_exist.lstrip("?"))
                    ids = self._matching_ids(tx, q)
                if len(ids) > 1:
                    raise PreconditionFailed(f"ifNoneExist '{e.if_none_exist}' matched {len(ids)}+ resources",
                                             "request.ifNoneExist")
                if ids:
                    e.target_id, e.existing = ids[0], True
                    e.current = hits[0] if hits else None
                    return
            e.target_id = new_id()
        elif e.method == "PUT":
            if e.query is not None:
                if hits is not None:
                    ids = [st.id for st in hits]
                    e.current = hits[0] if len(hits) == 1 else None
                else:
                    q = self._query(e.rtype, e.query)
                    _lock_search(tx, e.rtype, e.query)
                    ids = self._matching_ids(tx, q)
                if len(ids) > 1:
                    raise PreconditionFailed(f"Conditional update '{e.url}' matched {len(ids)}+ resources",
                                             "request.url")
                rid = (e.resource or {}).get("id")
                if ids and rid not in (None, ids[0]):
                    raise InvalidResource(f"resource id '{rid}' does not match the resource found by '{e.url}' "
                                          f"({ids[0]})", "resource.id")
                e.target_id = ids[0] if ids else (rid or new_id())
                e.fresh = not ids and not rid
            else:
                e.target_id = e.url_id

    def _apply(self, tx: Tx, e: _Entry, read) -> EntryResult:
        if e.method == "POST":
            if e.existing:
                cur = e.current or tx.current(e.rtype, e.target_id)
                assert cur is not None
                return EntryResult(HTTPStatus.OK, WriteResult("unchanged", cur))
            result = tx.create(e.resource, e.target_id)
            self._run_hooks(tx, result, e.resource)
            return EntryResult(HTTPStatus.CREATED, result)
        if e.method == "PUT":
            result = self._put(tx, {**e.resource, "id": e.target_id}, e.if_match, fresh=e.fresh, current=e.current,
                               named=e.query is None)
            return EntryResult(HTTPStatus.CREATED if result.created else HTTPStatus.OK, result)
        if e.method == "DELETE":
            if e.query is not None:
                q = self._query(e.rtype, e.query)
                ids = self._matching_ids(tx, q)
                if len(ids) > 1:
                    raise PreconditionFailed(f"Conditional delete '{e.url}' matched {len(ids)}+ resources",
                                             "request.url")
                if not ids:
                    return EntryResult(HTTPStatus.NO_CONTENT)
                e.url_id = ids[0]
            self.current_for_change(tx, e.rtype, e.url_id, named=e.query is None, if_match=e.if_match)
            result = tx.delete(e.rtype, e.url_id, if_match=e.if_match)
            self._run_hooks(tx, result, {})
            return EntryResult(HTTPStatus.NO_CONTENT if result.outcome == "not-found" else HTTPStatus.OK, result)
        # GET
        if read is None:
            raise MethodNotAllowed("GET entries are not supported here", "request.method")
        tx.flush()
        return EntryResult(HTTPStatus.OK, resource=read(e.url))


@dataclass
class _Entry:
    index: int
    method: str
    url: str
    rtype: str
    resource: dict | None = None
    full_url: str | None = None
    url_id: str | None = None
    query: str | None = None
    if_none_exist: str | None = None
    if_match: str | None = None
    target_id: str | None = None
    existing: bool = False
    fresh: bool = False  # target_id was generated by the server for this entry
    current: Stored | None = None  # the target's current row, when a conditional search already read it


@dataclass(frozen=True)
class _TokenKey:
    """A conditional search that is one token parameter with 'system|code' values ('identifier=s|v,s2|v2')."""

    param: str  # index key, 'Location:identifier'
    pairs: tuple[tuple[str, str], ...]
    lock_names: tuple[str, ...]  # one per value: any search naming that value serialises with this one

    def matches(self, found: dict[tuple[str, str], list[Stored]]) -> list[Stored]:
        """The resources matching any of the values, once each, in pk order, from ``Tx.find_tokens``."""
        hits = {st.pk: st for pair in self.pairs for st in found.get(pair, ())}
        return [hits[pk] for pk in sorted(hits)]


def _token_key(rtype: str, query: str) -> _TokenKey | None:
    """'identifier=https://x|A1' on Location -> _TokenKey('Location:identifier', (('https://x', 'A1'),), ...);
    None for any other search (several parameters, modifiers, a value without a system), which then runs
    as a normal search."""
    # Read directly rather than through parse_search: this runs for every entry of every imported record.
    name, eq, raw = query.partition("=")
    if not eq or "&" in raw or ";" in raw or ":" in name:
        return None
    sp = params_for(rtype).get(name)
    if sp is None or sp.kind != "token":
        return None  # unknown parameters, modifiers, _id: the normal path decides (and reports)
    if "%" in raw or "+" in raw:
        raw = unquote_plus(raw)
    pairs = []
    for value in split_values(raw):
        system, code, has_bar = parse_token(value)
        if not has_bar or system is None or code is None:
            return None
        pairs.append((normalise_ctgov_system(system), code[:255]))
    if not pairs:
        return None
    names = tuple(sorted({f"{rtype}?{name}={system}|{code}" for system, code in pairs}))
    return _TokenKey(f"{rtype}:{name}", tuple(pairs), names)


def _forget_shared_targets(plan: list[_Entry]) -> None:
    """A row read up front is only current if no other entry of the Bundle writes the same resource first."""
    count: dict[tuple[str, str | None], int] = {}
    for e in plan:
        key = (e.rtype, e.target_id or e.url_id)
        count[key] = count.get(key, 0) + 1
    # A conditional DELETE finds its target only when it runs (before any PUT), so it may hit any of its type.
    deleting = {e.rtype for e in plan if e.method == "DELETE" and e.query is not None}
    for e in plan:
        if e.current is not None and (count[(e.rtype, e.target_id or e.url_id)] > 1 or e.rtype in deleting):
            e.current = None


def _parse_entries(entries: list, *, transaction: bool, validated: frozenset[int] = frozenset(),
                   prepare: ResourceTransform | None = None) -> list[_Entry | FhirError]:
    """``prepare``: the service's pre-write transforms, run on each resource not already validated."""
    out: list[_Entry | FhirError] = []
    for i, entry in enumerate(entries):
        where = f"Bundle.entry[{i}]"
        try:
            out.append(_parse_entry(i, entry, where, i in validated, prepare))
        except FhirError as exc:
            out.append(exc if exc.issues and exc.issues[0].expression and
                       exc.issues[0].expression[0].startswith("Bundle") else exc.prefixed(where))
    return out


def _parse_entry(i: int, entry: object, where: str, validated: bool = False,
                 prepare: ResourceTransform | None = None) -> _Entry:
    if not isinstance(entry, dict):
        raise InvalidResource(f"{where} must be an object", where)
    req = entry.get("request")
    if not isinstance(req, dict):
        raise InvalidResource(f"{where}.request is required in a transaction or batch", f"{where}.request")
    method, url = req.get("method"), req.get("url")
    if method not in ("GET", "POST", "PUT", "DELETE"):
        raise InvalidResource(f"{where}.request.method '{method}' is not supported (GET, POST, PUT, DELETE)",
                              f"{where}.request.method")
    if not isinstance(url, str) or not url:
        raise InvalidResource(f"{where}.request.url is required", f"{where}.request.url")
    it = parse_interaction(method, url)  # the one URL -> interaction parser (routes use it too)
    rtype = it.rtype or ""
    if method != "GET" and rtype not in SUPPORTED_TYPES:
        raise NotFound(f"{where}.request.url: unknown resource type '{rtype}'", f"{where}.request.url")
    e = _Entry(i, method, url, rtype, full_url=entry.get("fullUrl"),
               if_none_exist=req.get("ifNoneExist"), if_match=req.get("ifMatch"))
    if method in ("POST", "PUT"):
        # a pre-validated resource was normalised before it was validated
        res = entry.get("resource") if validated else normalise_systems(entry.get("resource"))
        if not validated and prepare is not None:
            res = prepare(res)
        try:
            trusted = validated and isinstance(res, dict) and res.get("resourceType") == rtype
            e.resource = res if trusted else validate_resource(res, rtype)
        except FhirError as exc:
            raise exc.prefixed(f"{where}.resource") from None
        if method == "POST" and it.name != "create":
            raise InvalidResource(f"{where}.request.url for POST must be a type ('{rtype}')",
                                  f"{where}.request.url")
    if method in ("PUT", "DELETE"):
        if it.name in ("update", "delete") and it.rid is not None and not it.query:
            e.url_id = it.rid
            if method == "PUT" and e.resource is not None and e.resource.get("id") != it.rid:
                raise InvalidResource(f"{where}.resource.id '{e.resource.get('id')}' does not match the URL id "
                                      f"'{it.rid}'", f"{where}.resource.id")
        elif it.conditional:
            e.query = it.query
        else:
            raise InvalidResource(f"{where}.request.url '{url}' must be Type/id or Type?search",
                                  f"{where}.request.url")
    return e


def _check_unique_full_urls(entries: list) -> None:
    """Every fullUrl in a transaction or batch is unique (FHIR bdl-7): with two alike, references to it
    would silently resolve to one of them. 400 naming both entries."""
    seen: dict[str, int] = {}
    for i, entry in enumerate(entries):
        url = entry.get("fullUrl") if isinstance(entry, dict) else None
        if not isinstance(url, str):
            continue
        if url in seen:
            raise InvalidResource(f"Bundle.entry[{i}].fullUrl is the same as Bundle.entry[{seen[url]}].fullUrl; "
                                  "every fullUrl in a Bundle must be unique", f"Bundle.entry[{i}].fullUrl")
        seen[url] = i


def _check_duplicate_targets(plan: list[_Entry]) -> None:
    seen: dict[str, int] = {}
    for e in plan:
        if e.method == "PUT" and e.url_id:
            key = f"{e.rtype}/{e.url_id}"
            if key in seen:
                raise InvalidResource(f"Bundle.entry[{e.index}] and Bundle.entry[{seen[key]}] both write {key}",
                                      f"Bundle.entry[{e.index}].request.url")
            seen[key] = e.index


def _mentions(resource: object, *needles: bytes) -> bool:
    """Whether the JSON of ``resource`` contains any needle: a C-speed test that lets the common case skip a
    Python walk of the whole tree (which cost as much as storing a typical resource)."""
    try:
        raw = orjson.dumps(resource)
    except TypeError:  # not plain JSON data: let the walk decide
        return True
    return any(n in raw for n in needles)


def _rewrite_references(node: object, idmap: dict[str, str]) -> tuple[object, list[str]]:
    """(``node`` with Reference.reference values found in ``idmap`` rewritten, unresolved urn: references).

    Copy on write: the caller's Bundle is left as it was (a batch of import records may be stored a second
    time from the same data after its shared transaction failed), and unchanged branches are shared.
    """
    unresolved: list[str] = []

    def rewrite(v: str) -> str:
        nv = idmap.get(v, v)
        if nv is v and (v.startswith("urn:uuid:") or v.startswith("urn:oid:")):
            unresolved.append(v)
        return nv

    return _replace_strings(node, "reference", rewrite), unresolved


def _canonical_query(query: str) -> str:
    return "&".join(sorted(query.lstrip("?").split("&")))


def _lock_search(tx: Tx, rtype: str, query: str) -> None:
    """Serialise transactions that run the same conditional search (PostgreSQL; SQLite writers are serial).

    A one-parameter token search locks each of its values, under the same names as the batched lookups.
    """
    key = _token_key(rtype, query.lstrip("?"))
    for name in key.lock_names if key is not None else (f"{rtype}?{_canonical_query(query)}",):
        tx.lock(name)


__all__ = ["FhirService", "EntryResult", "Issue", "new_id"]
