"""Mapped records on their way to the store, without the store: what a record became (``IngestResult``), its
errors anchored on the source fields, validation ahead of the store (``prevalidate``) and the dry run.

The mapping layer returns resources; the caller stores them (``gateway.ingest.ingest``).
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from http import HTTPStatus

from gateway.fhir import conventions
from gateway.fhir.errors import FhirError, Issue, operation_outcome
from gateway.fhir.rewrite import normalise_systems
from gateway.fhir.validate import validate_resource
from gateway.mapping.engine import MappedRecord

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


def record_error(rec: MappedRecord) -> IngestResult:
    # An unreadable record is a malformed request (400); a readable one with wrong values breaks a rule (422).
    code = "structure" if rec.unreadable else "value"
    issues = [Issue(code, f"{path}: {msg}", [path]) for path, msg in rec.errors]
    status = HTTPStatus.BAD_REQUEST if rec.unreadable else HTTPStatus.UNPROCESSABLE_ENTITY
    return IngestResult(rec.index, rec.source_id, status, "rejected", operation_outcome=operation_outcome(issues),
                        reasons=[i.diagnostics for i in issues])


def to_source(rec: MappedRecord, exc: FhirError) -> FhirError:
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


def dry_run_bundle(records: list[MappedRecord]) -> dict:
    """A collection Bundle of what would be stored (each resource validated), with an OperationOutcome entry
    for every record that would be rejected. Stores nothing."""
    entries: list[dict] = []
    for rec in records:
        if not rec.ok:
            entries.append({"resource": record_error(rec).operation_outcome})
            continue
        assert rec.bundle is not None
        try:
            for i, e in enumerate(rec.bundle["entry"]):
                try:
                    validate_resource(e["resource"])
                except FhirError as exc:
                    raise exc.prefixed(f"Bundle.entry[{i}].resource") from None
        except FhirError as exc:
            entries.append({"resource": to_source(rec, exc).outcome()})
            continue
        entries.extend({"fullUrl": e["fullUrl"], "resource": e["resource"]} for e in rec.bundle["entry"])
    return {"resourceType": "Bundle", "type": "collection", "entry": entries}


def summary(results: list[IngestResult]) -> Counter:
    """Counts of records by outcome: created, updated, unchanged, rejected."""
    return Counter(r.outcome for r in results)


__all__ = ["IngestResult", "dry_run_bundle", "prevalidate", "record_error", "summary", "to_source"]
