"""What a mapping makes of a source file, as lines a person can check (``gateway import --dry-run``).

For each record: its source id and the resources made; for an eligibility Group, each extracted characteristic with
its source span, rule and confidence, and each criterion left as text with the reason (docs/eligibility.md).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from gateway.fhir import conventions as c
from gateway.fhir.errors import FhirError
from gateway.fhir.validate import validate_resource
from gateway.mapping.eligibility import review_lines
from gateway.mapping.engine import map_payload
from gateway.mapping.readers import PayloadError
from gateway.mapping.registry import MappingRegistry


def dry_run_report(folder: Path, mapping_name: str, path: Path) -> Iterator[tuple[str, bool]]:
    """(line, record ok) for every record of one file; stores nothing."""
    registry = MappingRegistry(folder)
    try:
        records = map_payload(registry.get(mapping_name), path.read_bytes(), conceptmaps=registry.conceptmaps)
    except (PayloadError, OSError) as exc:
        yield f"{path}: unreadable: {exc}", False
        return
    for rec in records:
        label = f"{path.name} record {rec.index}" + (f" ({rec.source_id})" if rec.source_id else "")
        if not rec.ok:
            for where, msg in rec.errors:
                yield f"{label}: rejected: {where}: {msg}", False
            continue
        assert rec.bundle is not None
        problems = []
        for e in rec.bundle["entry"]:
            try:
                validate_resource(e["resource"])
            except FhirError as exc:
                problems.append(f"{e['resource'].get('resourceType')}: {exc.diagnostics}")
        kinds = ", ".join(sorted({e["resource"]["resourceType"] for e in rec.bundle["entry"]}))
        yield f"{label}: {'invalid: ' + '; '.join(problems) if problems else 'ok'} ({kinds})", not problems
        for e in rec.bundle["entry"]:
            res = e["resource"]
            if res.get("resourceType") == "ResearchStudy":
                for cc in res.get("condition") or []:
                    if any((x.get("system"), x.get("code")) == c.UNRESOLVED_QUALIFIED for x in cc.get("coding") or []):
                        yield f"  condition left unresolved (qualifiers no code carries): {cc.get('text')!r}", True
            if res.get("resourceType") == "Group":
                count = next((x for x in res.get("extension") or [] if x.get("url") == c.EXT_CRITERIA_COUNT), None)
                if count:
                    n = {x["url"]: x["valueInteger"] for x in count["extension"]}
                    yield f"  eligibility: {n['structured']} of {n['total']} criteria structured", True
                for line in review_lines(res):
                    yield line, True


__all__ = ["dry_run_report"]
