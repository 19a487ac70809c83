"""Store mapped records through FhirService, each record atomically (no Flask).

``ingest(service, map_payload("ctgov-v2", data))`` -> [IngestResult(status=201, outcome='created', ...)].
A record that fails (mapping error, invalid resource, ambiguous identifiers) stores nothing and never
stops the others; its OperationOutcome names the source field where we know it.
"""

from __future__ import annotations

import logging
import re
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from http import HTTPStatus

from sqlalchemy.exc import DBAPIError

from gateway.fhir import conventions
from gateway.fhir.errors import FhirError, Issue, PreconditionFailed, operation_outcome
from gateway.fhir.validate import validate_resource
from gateway.mapping.engine import MappedRecord
from gateway.store.interactions import FhirService, normalise_systems
from gateway.store.repo import Tx

log = logging.getLogger(__name__)

_ENTRY_EXPR = re.compile(r"^Bundle\.entry\[(\d+)\](?:\.resource\.?([A-Za-z]*))?")


@dataclass
class IngestResult:
    """What one source record became: created / updated / unchanged, or rejected with an OperationOutcome."""

    index: int
    source_id: str | None
    status: HTTPStatus
    outcome: str  # created | updated | unchanged | rejected
    writes: Counter = field(default_factory=Counter)  # resource-level outcomes
    locations: list[str] = field(default_factory=list)  # Type/id/_history/n of every stored resource
    operation_outcome: dict | None = None
    reasons: list[str] = field(default_factory=list)

    def bundle_entry(self) -> dict:
        """This record as one entry of the /ingest batch-response Bundle."""
        resp: dict = {"status": f"{self.status.value} {self.status.phrase}"}
        if self.locations:
            resp["location"] = self.locations[-1]  # the record's main resource is mapped last
        if self.operation_outcome is not None:
            resp["outcome"] = self.operation_outcome
        return {"response": resp}


def _record_error(rec: MappedRecord) -> IngestResult:
    # An unreadable record is a malformed request (400); a readable one with wrong values breaks a rule (422).
    code = "structure" if rec.unreadable else "value"
    issues = [Issue(code, f"{path}: {msg}", [path]) for path, msg in rec.errors]
    status = HTTPStatus.BAD_REQUEST if rec.unreadable else HTTPStatus.UNPROCESSABLE_ENTITY
    return IngestResult(rec.index, rec.source_id, status, "rejected", operation_outcome=operation_outcome(issues),
                        reasons=[i.diagnostics for i in issues])


def _to_source(rec: MappedRecord, exc: FhirError) -> FhirError:
    """Re-anchor store/validation errors on the source field the bad element came from."""
    issues = []
    for issue in exc.issues:
        exprs = list(issue.expression)
        diag = issue.diagnostics
        for e in issue.expression:
            m = _ENTRY_EXPR.match(e)
            if m and m.group(2):
                src = rec.provenance.get(int(m.group(1)), {}).get(m.group(2))
                if src:
                    exprs.insert(0, src)
                    diag = f"{src}: {diag}"
                    break
        issues.append(Issue(issue.code, diag, exprs, issue.severity))
    return type(exc)("; ".join(i.diagnostics for i in issues), issues=issues)


def _merge_existing(service: FhirService, tx: Tx, rec: MappedRecord) -> tuple[dict, frozenset[int]]:
    """(the record's Bundle with entries keyed on 'any of its identifiers' pointed at the resource that already
    has one of them, the entries still pre-validated).

    A transaction PUT replaces the whole resource, so identifiers the existing one carries (a sponsor's own
    id, another registry's) are kept after ours. Runs inside the record's transaction, after locking the
    search key, so a concurrent import of the same study under another identifier cannot slip in between.
    The record itself is not changed: it may be stored again if this transaction fails.
    """
    assert rec.bundle is not None
    entries = rec.bundle["entry"]
    merged: list | None = None
    validated = set(rec.validated)
    for idx in rec.lookups:
        entry = entries[idx]
        rtype, _, query = entry["request"]["url"].partition("?")
        found = service.conditional_matches(tx, rtype, query)
        if len(found) > 1:
            raise PreconditionFailed(
                f"the record's identifiers name {len(found)} different {rtype} resources "
                f"({', '.join(st.id for st in found[:3])}); merge them before importing",
                rec.provenance.get(idx, {}).get("identifier", "identifier"))
        if not found:
            continue
        existing = found[0].resource()
        ours = entry["resource"].get("identifier") or []
        keys = {(i.get("system"), i.get("value")) for i in ours}
        extra = [i for i in existing.get("identifier") or [] if (i.get("system"), i.get("value")) not in keys]
        merged = merged or list(entries)
        merged[idx] = {**entry, "resource": {**entry["resource"], "id": found[0].id, "identifier": ours + extra},
                       "request": {"method": "PUT", "url": f"{rtype}/{found[0].id}"}}
        if extra:
            validated.discard(idx)  # more than a stored id added: validated again when stored
    bundle = rec.bundle if merged is None else {**rec.bundle, "entry": merged}
    return bundle, frozenset(validated)


_EXTRACTED_GROUP_EXTS = frozenset({conventions.EXT_UNSTRUCTURED_CRITERION, conventions.EXT_CRITERIA_COUNT})


def _without_extracted(resource: object) -> object:
    """A Group without the characteristics and extensions the eligibility extractor wrote: those are our own output,
    in shapes the extractor's tests validate, and re-validating them doubled an import's cost (a study's Group
    carries dozens). Everything that came from the source is still validated. Other resources: unchanged."""
    if not isinstance(resource, dict) or resource.get("resourceType") != "Group":
        return resource
    chars = resource.get("characteristic") or []
    kept = [ch for ch in chars if not (isinstance(ch, dict) and any(
        isinstance(e, dict) and e.get("url") == conventions.EXT_CRITERION_SOURCE for e in ch.get("extension") or []))]
    exts = [e for e in resource.get("extension") or [] if not (isinstance(e, dict) and e.get("url") in
                                                               _EXTRACTED_GROUP_EXTS)]
    if len(kept) == len(chars) and len(exts) == len(resource.get("extension") or []):
        return resource
    out = {k: v for k, v in resource.items() if k not in ("characteristic", "extension")}
    if kept:
        out["characteristic"] = kept
    if exts:
        out["extension"] = exts
    return out


def prevalidate(rec: MappedRecord) -> MappedRecord:
    """Validate the record's resources now, as the store would (e.g. in a worker process, in parallel with the
    process that stores); they are not validated again when stored. A resource that fails is left for the
    store, which rejects the record with the usual message.
    """
    if rec.ok:
        assert rec.bundle is not None
        for i, entry in enumerate(rec.bundle["entry"]):
            resource = normalise_systems(entry.get("resource"))
            try:
                validate_resource(_without_extracted(resource))
            except FhirError:
                continue
            entry["resource"] = resource
            rec.validated.add(i)
    return rec


def _keep_reviewed(service: FhirService, tx: Tx, bundle: dict, validated: frozenset[int]
                   ) -> tuple[dict, frozenset[int]]:
    """A Group a person corrected and pushed back (it carries eligibility-criteria-reviewed) is kept while the
    registry's criteria text is unchanged: the record's Group entry is replaced by the stored one (the PUT then
    changes nothing). When the text changed, the new extraction replaces it (docs/eligibility.md)."""
    entries = bundle["entry"]
    out: list | None = None
    for i, entry in enumerate(entries):
        res = entry.get("resource") or {}
        if res.get("resourceType") != "Group" or entry.get("request", {}).get("method") != "PUT":
            continue
        text = _criteria_text(res)
        if text is None:
            continue
        rtype, _, query = entry["request"]["url"].partition("?")
        if not query:
            continue
        found = service.conditional_matches(tx, rtype, query)
        if len(found) != 1:
            continue
        stored = found[0].resource()
        reviewed = any(e.get("url") == conventions.EXT_CRITERIA_REVIEWED for e in stored.get("extension") or [])
        if reviewed and _criteria_text(stored) == text:
            out = out or list(entries)
            kept = {k: v for k, v in stored.items() if k not in ("meta", "text")}
            out[i] = {**entry, "resource": kept}
            validated = validated - {i}
    return (bundle if out is None else {**bundle, "entry": out}), validated


def _criteria_text(group: dict) -> str | None:
    return next((e.get("valueMarkdown") for e in group.get("extension") or []
                 if e.get("url") == conventions.EXT_ELIGIBILITY_TEXT), None)


def _store(service: FhirService, tx: Tx, rec: MappedRecord) -> IngestResult:
    bundle, validated = _merge_existing(service, tx, rec)
    bundle, validated = _keep_reviewed(service, tx, bundle, validated)
    _, results = service.run_bundle(bundle, tx=tx, validated=validated)
    writes: Counter = Counter()
    locations = []
    for r in results:
        if r.write is not None:
            writes[r.write.outcome] += 1
            st = r.write.stored
            locations.append(f"{st.type}/{st.id}/_history/{st.version}")
    main = next((r.write.stored for r in reversed(results) if r.write is not None), None)
    if rec.hierarchy and main is not None:
        # Kept with the record's main resource (mapped last), so that every process's terminology learns it.
        tx.set_hierarchy(main.type, main.id, rec.hierarchy)
    outcome = "created" if writes["created"] else "updated" if writes["updated"] else "unchanged"
    status = HTTPStatus.CREATED if writes["created"] else HTTPStatus.OK
    return IngestResult(rec.index, rec.source_id, status, outcome, writes, locations)


def ingest_record(service: FhirService, rec: MappedRecord, tx: Tx | None = None) -> IngestResult:
    """Store one mapped record atomically: in a transaction of its own, or in a savepoint of ``tx``."""
    if not rec.ok:
        return _record_error(rec)
    try:
        if tx is None:
            with service.store.write() as own:
                return _store(service, own, rec)
        with tx.savepoint():
            return _store(service, tx, rec)
    except FhirError as exc:
        err = _to_source(rec, exc)
        return IngestResult(rec.index, rec.source_id, exc.status, "rejected", operation_outcome=err.outcome(),
                            reasons=[i.diagnostics for i in err.issues])


# Records per database transaction. One commit per record cost as much as mapping and validating it; a few
# hundred milliseconds of records per transaction amortise it while other writers wait only that long.
RECORDS_PER_TRANSACTION = 100
# ``gateway import``: fewer, larger commits (each rewrites the index pages it touched). On SQLite other writers
# wait for one transaction, under a second at the import's usual speed.
BULK_RECORDS_PER_TRANSACTION = 250


def ingest(service: FhirService, records: Iterable[MappedRecord],
           hierarchy_sink: Callable[[list[dict]], object] | None = None, *,
           per_transaction: int = RECORDS_PER_TRANSACTION,
           on_result: Callable[[MappedRecord, IngestResult], object] | None = None) -> list[IngestResult]:
    """Store every record; one bad record never stops the others and stores nothing of itself.

    Records are stored ``per_transaction`` at a time in one database transaction, each in its own savepoint.
    ``hierarchy_sink`` receives the hierarchy side output of each stored record (ClinicalTrials.gov MeSH
    terms and ancestors), e.g. ``Terminology.add_registry_hierarchy``; it and ``on_result`` (progress) are
    called once the record is committed.
    """
    results: list[IngestResult] = []
    chunk: list[MappedRecord] = []

    def run() -> None:
        done = _ingest_chunk(service, chunk)
        for rec, result in zip(chunk, done, strict=True):
            if hierarchy_sink is not None and rec.hierarchy and result.outcome != "rejected":
                hierarchy_sink(rec.hierarchy)
            if on_result is not None:
                on_result(rec, result)
        results.extend(done)
        chunk.clear()

    for rec in records:
        chunk.append(rec)
        if len(chunk) >= max(1, per_transaction):
            run()
    if chunk:
        run()
    return results


def _ingest_chunk(service: FhirService, chunk: list[MappedRecord]) -> list[IngestResult]:
    if len(chunk) == 1 or not any(rec.ok for rec in chunk):
        return [ingest_record(service, rec) for rec in chunk]
    try:
        with service.store.write() as tx:
            return [ingest_record(service, rec, tx) for rec in chunk]
    except DBAPIError as exc:
        # The shared transaction failed as a whole (a lock timeout, a serialisation failure): nothing of it
        # was committed, so store the records one transaction each, where a failure is the record's own.
        log.warning("ingest: a transaction of %d records failed (%s); storing them one by one", len(chunk),
                    exc.__class__.__name__)
        return [ingest_record(service, rec) for rec in chunk]


def dry_run_bundle(records: list[MappedRecord]) -> dict:
    """A collection Bundle of what would be stored (each resource validated), with an OperationOutcome entry
    for every record that would be rejected. Stores nothing."""
    entries: list[dict] = []
    for rec in records:
        if not rec.ok:
            entries.append({"resource": _record_error(rec).operation_outcome})
            continue
        assert rec.bundle is not None
        try:
            for i, e in enumerate(rec.bundle["entry"]):
                try:
                    validate_resource(e["resource"])
                except FhirError as exc:
                    raise exc.prefixed(f"Bundle.entry[{i}].resource") from None
        except FhirError as exc:
            entries.append({"resource": _to_source(rec, exc).outcome()})
            continue
        entries.extend({"fullUrl": e["fullUrl"], "resource": e["resource"]} for e in rec.bundle["entry"])
    return {"resourceType": "Bundle", "type": "collection", "entry": entries}


def summary(results: list[IngestResult]) -> Counter:
    """Counts of records by outcome: created, updated, unchanged, rejected."""
    return Counter(r.outcome for r in results)


__all__ = ["BULK_RECORDS_PER_TRANSACTION", "RECORDS_PER_TRANSACTION", "IngestResult", "ingest", "ingest_record",
           "prevalidate", "dry_run_bundle", "summary"]
