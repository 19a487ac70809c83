"""The matching state of one process: the study side in memory, the patient side in the database.

Studies (tens of thousands) are indexed in each process (StudyIndex); ``refresh()`` reads the committed study
changes since the last sequence number it saw (Store.changes_since) and re-derives only the studies they touch, so
several processes sharing one PostgreSQL store all see each other's writes. People (millions) are never held by a
process: their profiles are rows kept current by the store's write hook (people.People), read a page at a time.
``matching_state(store, term)`` is the one way to build it.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable

from gateway.matching.criteria import group_id_of, location_ids_of, study_criteria
from gateway.matching.index import StudyIndex
from gateway.matching.people import PERSON_TYPES, People
from gateway.matching.terms import Terminology
from gateway.store.repo import Store

STUDY_TYPES = ("ResearchStudy", "Group", "Location")
TYPES = STUDY_TYPES + PERSON_TYPES
_BATCH = 2000
_READ_CHUNK = 200


def matching_state(store: Store, term: Terminology) -> MatchingState:
    """The matching state over ``store``, its write hook installed (every process that writes people needs it)."""
    return MatchingState(store, term)


class MatchingState:
    """Raw JSON of the study side (ResearchStudy, Group, Location) and its StudyIndex; the people (``patients``)
    in the database."""

    def __init__(self, store: Store, term: Terminology):
        self.store = store
        self.term = term
        self.seq = 0
        self.raw: dict[str, dict[str, dict]] = {t: {} for t in STUDY_TYPES}
        self.studies = StudyIndex(term)
        self.patients = People(store, term)
        self.patients.attach()
        self.studies_of_group: dict[str, set[str]] = {}
        self.studies_of_location: dict[str, set[str]] = {}
        # Held by refresh and by readers (the views), so a query never sees an index mid-update.
        self.lock = threading.RLock()

    # -- refresh from the change feed ------------------------------------------------------------
    def refresh(self) -> int:
        """Apply every committed change since the last call; returns how many changes were applied."""
        with self.lock:
            applied = 0
            while True:
                changes = self.store.changes_since(self.seq, limit=_BATCH, types=STUDY_TYPES)
                if not changes:
                    # after the studies, so that people are indexed with the hierarchies the studies taught
                    return applied + self.patients.catch_up()
                self.seq = changes[-1]["seq"]
                refs = list(dict.fromkeys((c["type"], c["id"]) for c in changes))
                self._apply(refs)
                applied += len(changes)

    def _apply(self, refs: list[tuple[str, str]]) -> None:
        current: dict[tuple[str, str], dict] = {}
        for i in range(0, len(refs), _READ_CHUNK):
            for st in self.store.read_many(refs[i:i + _READ_CHUNK]):
                current[(st.type, st.id)] = st.resource()
        dirty_studies: set[str] = set()
        for rtype, rid in refs:
            new = current.get((rtype, rid))
            self.raw[rtype].pop(rid, None)
            if new is not None:
                self.raw[rtype][rid] = new
            if rtype == "ResearchStudy":
                dirty_studies.add(rid)
            elif rtype == "Group":
                dirty_studies |= self.studies_of_group.get(rid, set())
            elif rtype == "Location":
                dirty_studies |= self.studies_of_location.get(rid, set())
        self._learn_hierarchies(dirty_studies)
        for sid in dirty_studies:
            self._rebuild_study(sid)

    def _learn_hierarchies(self, study_ids: set[str]) -> None:
        """Teach the terminology the concept hierarchies kept with these studies (ClinicalTrials.gov MeSH
        ancestors, see Tx.set_hierarchy) before they are indexed: whichever process imported them."""
        learn = getattr(self.term, "add_registry_hierarchy", None)
        if learn is None or not study_ids:
            return
        for _, entries in self.store.hierarchies("ResearchStudy", study_ids):
            learn(entries)

    def _rebuild_study(self, sid: str) -> None:
        study = self.raw["ResearchStudy"].get(sid)
        old = self.studies.studies.get(sid)
        if old is not None:
            if old.group_id:
                self.studies_of_group.get(old.group_id, set()).discard(sid)
            for lid in old.location_ids:
                self.studies_of_location.get(lid, set()).discard(sid)
        if study is None:
            self.studies.remove(sid)
            return
        gid = group_id_of(study)
        locs = {lid: self.raw["Location"][lid] for lid in location_ids_of(study) if lid in self.raw["Location"]}
        sc = study_criteria(study, self.raw["Group"].get(gid) if gid else None, locs, self.term)
        if gid:
            self.studies_of_group.setdefault(gid, set()).add(sid)
        for lid in sc.location_ids:
            self.studies_of_location.setdefault(lid, set()).add(sid)
        self.studies.add(sc)

    # -- lookups -----------------------------------------------------------------------------------
    def alerts_only(self, key: str) -> bool:
        """True when every Patient record of person ``key`` is an alerts-only one (cv.ALERTS_ONLY_TAG): the
        person shared no clinical data, so they are never a candidate for a research team."""
        return self.patients.alerts_only(key)

    def person_for_patient(self, patient_id: str) -> str | None:
        return self.patients.person_for_patient(patient_id)

    def study_ids(self) -> Iterable[str]:
        return self.studies.studies.keys()
