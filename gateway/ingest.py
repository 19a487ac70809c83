"""Store mapped records through FhirService, each record atomically (no Flask): the caller of the mapping layer,
used by ``POST /ingest/<mapping>`` and ``gateway import``.

``ingest(service, map_payload("ctgov-v2", data))`` -> [IngestResult(status=201, outcome='created', ...)].
A record that fails (mapping error, invalid resource, ambiguous identifiers) stores nothing and never
stops the others; its OperationOutcome names the source field where we know it.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Iterable
from http import HTTPStatus

from sqlalchemy.exc import DBAPIError

from gateway.fhir import conventions
from gateway.fhir.errors import FhirError, PreconditionFailed
from gateway.mapping.engine import MappedRecord
from gateway.mapping.ingest import IngestResult, record_error, to_source
from gateway.store.interactions import FhirService
from gateway.store.repo import Tx

log = logging.getLogger(__name__)


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
        return record_error(rec)
    try:
        if tx is None:
            with service.store.write() as own:
                return _store(service, own, rec)
        with tx.savepoint():
            return _store(service, tx, rec)
    except FhirError as exc:
        err = to_source(rec, exc)
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


__all__ = ["BULK_RECORDS_PER_TRANSACTION", "RECORDS_PER_TRANSACTION", "IngestResult", "ingest", "ingest_record"]
