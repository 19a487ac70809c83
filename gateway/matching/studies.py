"""The study side of matching, pre-computed in the database (gateway.store.study_rows), not re-extracted per process.

A write hook on the store rebuilds, in the transaction that writes a ResearchStudy, its eligibility Group or one of
its site Locations, that study's row: its extracted criteria (criteria.study_criteria, encoded by criteria_doc),
its recruiting sites with their positions, its status and version. Every process then builds its StudyIndex from
the rows (one streamed SELECT, no FHIR JSON parsed, no criterion re-extracted) and keeps it current by reading the
rows rebuilt since (state.MatchingState.refresh). A database from before the rows, or writes of a process without
the hook, are caught up from the change feed (``catch_up``, cursor ``matching:studies-seq`` in ``counters``); the
hook moves that cursor only when no older study change is left to it.
"""

from __future__ import annotations

from gateway.matching.criteria import (
    DOC_FORMAT,
    criteria_doc,
    group_id_of,
    index_keys_doc,
    location_ids_of,
    study_criteria,
)
from gateway.matching.derived import DerivedRows
from gateway.matching.terms import Terminology
from gateway.store import study_rows as db
from gateway.store.repo import Store

STUDY_TYPES = ("ResearchStudy", "Group", "Location")
HOOK = "matching.studies"


class StudyRows(DerivedRows):
    """Keeps the ``match_studies`` rows of one store current, extracting with ``term``."""

    HOOK, TYPES, ROWS = HOOK, STUDY_TYPES, db

    def __init__(self, store: Store, term: Terminology):
        self.store = store
        self.term = term

    # -- deriving rows ---------------------------------------------------------------------------------------
    def derive(self, conn, study_ids: set[str]) -> list[db.StudyRow]:
        """The rows of these studies as the store holds them now (tombstones for those that do not exist)."""
        ids = sorted(study_ids)
        studies = db.read_current(conn, [("ResearchStudy", sid) for sid in ids])
        parts: list[tuple[str, str]] = []
        for _, study in studies.values():
            gid = group_id_of(study)
            if gid:
                parts.append(("Group", gid))
            parts += [("Location", lid) for lid in location_ids_of(study)]
        found = db.read_current(conn, parts)
        learn = getattr(self.term, "add_registry_hierarchy", None)
        if learn is not None and studies:
            # the concept hierarchies kept with these studies (ClinicalTrials.gov MeSH ancestors, Tx.set_hierarchy)
            # are taught first, as every process reading the rows learns them before it indexes the studies
            for entries in db.hierarchies_of(conn, [sid for (_, sid) in studies]):
                learn(entries)
        rows = []
        for sid in ids:
            cur = studies.get(("ResearchStudy", sid))
            if cur is None:
                rows.append(db.StudyRow(sid, 0, "", None))
                continue
            version, study = cur
            gid = group_id_of(study)
            lids = location_ids_of(study)
            group = found.get(("Group", gid), (0, None))[1] if gid else None
            locs = {lid: found[("Location", lid)][1] for lid in lids if ("Location", lid) in found}
            sc = study_criteria(study, group, locs, self.term)
            refs = ((("Group", gid),) if gid else ()) + tuple(("Location", lid) for lid in dict.fromkeys(lids))
            rows.append(db.StudyRow(sid, version, sc.status, criteria_doc(sc), refs, index_keys_doc(sc),
                                    bool(sc.healthy_volunteers)))
        return rows

    def apply(self, conn, refs: list[tuple[str, str]], seq: int) -> int:
        """Re-derive the studies these (type, id) writes touch, built at ``seq``; returns how many.

        A fixed number of statements whatever the number of studies (an import batch of hundreds)."""
        ids = {i for t, i in refs if t == "ResearchStudy"}
        ids |= db.studies_referring_to(conn, [(t, i) for t, i in refs if t in ("Group", "Location")])
        if not ids:
            return 0
        db.replace_studies(conn, self.derive(conn, ids), seq, DOC_FORMAT)
        return len(ids)

    def rewrite(self, study_ids: list[str]) -> list[db.StudyRow]:
        """Re-derive rows of another DOC_FORMAT in place (their ``seq`` kept: what they say has not changed)."""
        out: list[db.StudyRow] = []
        for i in range(0, len(study_ids), 500):
            with self.store.write() as tx:
                tx.lock(db.CURSOR)
                have = db.row_seqs(tx.conn, study_ids[i:i + 500])
                rows = self.derive(tx.conn, set(have))
                for seq in sorted({have[r.study_id] for r in rows}):
                    db.replace_studies(tx.conn, [r for r in rows if have[r.study_id] == seq], seq, DOC_FORMAT)
                out += rows
        return out

