"""Erasure on request (UK GDPR art. 17): remove a person's resources and their whole history.

``erase_person(store, nhs_number=...)`` finds every Patient with that NHS number, then every resource
whose current or past content references one of them (any reference, NHS-number identifiers and
Subscription filter strings), and deletes physically: resources, every version, every search-index row.
Change-feed rows stay (they hold only type, id and version, which identify no one once the content is gone).
AuditEvents are kept: they hold only ids. The caller records an AuditEvent that the erasure happened.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field

import orjson
from sqlalchemy import delete, or_, select

from gateway.fhir.conventions import NHS_NUMBER
from gateway.fhir.errors import InvalidResource, NotFound
from gateway.fhir.search import parse_search
from gateway.security.policy import patient_refs
from gateway.store import schema as s
from gateway.store.repo import Store

KEEP_TYPES = frozenset({"AuditEvent"})


@dataclass
class ErasureReport:
    patients: list[str] = field(default_factory=list)
    removed: Counter = field(default_factory=Counter)  # type -> resources removed
    versions: int = 0
    references: list[str] = field(default_factory=list)  # 'Type/id' removed (ids only)
    other_rows: int = 0  # outbox jobs, match notices, subscription state of the person

    def to_parameters(self) -> dict:
        """As a FHIR Parameters resource (ids and counts only)."""
        params: list[dict] = [{"name": "patient", "valueReference": {"reference": p}} for p in self.patients]
        params += [{"name": "removed", "part": [{"name": "type", "valueCode": t},
                                                {"name": "count", "valueInteger": n}]}
                   for t, n in sorted(self.removed.items())]
        params.append({"name": "versionsRemoved", "valueInteger": self.versions})
        params.append({"name": "otherRowsRemoved", "valueInteger": self.other_rows})
        return {"resourceType": "Parameters", "parameter": params}


def erase_person(store: Store, *, nhs_number: str | None = None, patient_id: str | None = None,
                 dry_run: bool = False) -> ErasureReport:
    """Remove everything about one person; ``dry_run`` reports without removing."""
    if not nhs_number and not patient_id:
        raise InvalidResource("Say whom to erase: nhsNumber or patient", "Parameters.parameter")
    ids: set[str] = set()
    if patient_id:
        ids.add(patient_id)
    if nhs_number:
        q = parse_search("Patient", [("identifier", f"{NHS_NUMBER}|{nhs_number}")], default_count=1000)
        ids.update(store.search_ids(q, limit=1000))
    if patient_id and not store.read_many([("Patient", patient_id)]) and not _ever_existed(store, patient_id):
        raise NotFound(f"Patient/{patient_id} is not known", "Patient.id")
    if not ids:
        raise NotFound("No Patient has that NHS number", "Parameters.parameter")
    people = {f"Patient/{i}" for i in ids} | ({f"nhs:{nhs_number}"} if nhs_number else set())
    report = ErasureReport(patients=sorted(f"Patient/{i}" for i in ids))
    r, v = s.resources, s.resource_versions
    needles = [f"Patient/{i}" for i in ids] + ([nhs_number] if nhs_number else [])
    with store.write() as tx:
        conn = tx.conn
        # Candidates by a cheap substring test on any version; then checked exactly on the parsed content.
        cond = or_(*[v.c.content.contains(n, autoescape=True) for n in needles])
        pks: dict[int, tuple[str, str]] = {}
        for row in conn.execute(select(v.c.res_pk, v.c.type, v.c.id, v.c.content).where(cond)):
            if row.type in KEEP_TYPES or row.res_pk in pks:
                continue
            if patient_refs(orjson.loads(row.content)) & people or \
                    (row.type == "Patient" and row.id in ids):
                pks[row.res_pk] = (row.type, row.id)
        for row in conn.execute(select(r.c.pk, r.c.type, r.c.id).where(r.c.type == "Patient",
                                                                        r.c.id.in_(sorted(ids)))):
            pks[row.pk] = (row.type, row.id)
        if pks:
            keys = sorted(pks)
            report.versions = len(conn.execute(select(v.c.res_pk).where(v.c.res_pk.in_(keys))).all())
            for t, _ in pks.values():
                report.removed[t] += 1
            report.references = sorted(f"{t}/{i}" for t, i in pks.values())
            if not dry_run:
                for tbl in s.INDEX_TABLES.values():
                    conn.execute(delete(tbl).where(tbl.c.res_pk.in_(keys)))
                conn.execute(delete(v).where(v.c.res_pk.in_(keys)))
                conn.execute(delete(r).where(r.c.pk.in_(keys)))
        if not dry_run:
            report.other_rows = _erase_other_tables(conn, pks.values(), people, nhs_number)
    return report


def _erase_other_tables(conn, removed: object, people: set[str], nhs_number: str | None) -> int:
    """Rows of other layers that name the person: match notices, outbox jobs (with their attempts) and
    subscription state/events of the removed resources."""
    refs = list(removed)
    n = 0
    persons = sorted(p for p in people if p.startswith("Patient/")) + ([nhs_number] if nhs_number else [])
    n += conn.execute(delete(s.match_notices).where(s.match_notices.c.person.in_(persons))).rowcount or 0
    o = s.outbox
    for rtype in sorted({t for t, _ in refs}):
        ids = sorted(i for t, i in refs if t == rtype)
        jobs = [row[0] for row in conn.execute(select(o.c.id).where(o.c.resource_type == rtype,
                                                                     o.c.resource_id.in_(ids)))]
        if jobs:
            conn.execute(delete(s.outbox_attempts).where(s.outbox_attempts.c.job_id.in_(jobs)))
            n += conn.execute(delete(o).where(o.c.id.in_(jobs))).rowcount or 0
    subs = sorted(i for t, i in refs if t == "Subscription")
    if subs:
        for tbl in (s.subscription_events, s.subscription_state):
            n += conn.execute(delete(tbl).where(tbl.c.subscription_id.in_(subs))).rowcount or 0
    return n


def _ever_existed(store: Store, rid: str) -> bool:
    v = s.resource_versions
    with store.engine.connect() as conn:
        return conn.execute(select(v.c.res_pk).where(v.c.type == "Patient", v.c.id == rid).limit(1)).first() \
            is not None


_NHS = re.compile(r"^\d{10}$")


def check_nhs_number(value: str) -> str:
    value = value.replace(" ", "")
    if not _NHS.match(value):
        raise InvalidResource("nhsNumber must be 10 digits", "Parameters.parameter.valueString")
    return value
