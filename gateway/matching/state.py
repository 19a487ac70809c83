"""The matching indexes of one process, built from the store and kept fresh from its change feed.

Every gateway process holds its own copy; ``refresh()`` reads the committed changes since the last
sequence number it saw (Store.changes_since) and re-derives only the studies and people they touch, so
several processes sharing one PostgreSQL store all see each other's writes.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable

from gateway.fhir import conventions as cv
from gateway.matching.criteria import group_id_of, location_ids_of, study_criteria
from gateway.matching.index import PatientIndex, StudyIndex
from gateway.matching.profile import THERAPY_TYPES, build_profile, person_key, subject_ref
from gateway.matching.terms import Terminology
from gateway.store.repo import Store

STUDY_TYPES = ("ResearchStudy", "Group", "Location")
PERSON_TYPES = ("Patient", "Condition", "Observation", "Consent", *THERAPY_TYPES)
TYPES = STUDY_TYPES + PERSON_TYPES
_BATCH = 2000
_READ_CHUNK = 200


def _patient_id(resource: dict) -> str | None:
    ref = subject_ref(resource)
    return ref.split("/", 1)[1] if ref and ref.startswith("Patient/") else None


class MatchingState:
    """Raw JSON of the resource types matching reads, plus the StudyIndex and PatientIndex over it."""

    def __init__(self, store: Store, term: Terminology):
        self.store = store
        self.term = term
        self.seq = 0
        self.raw: dict[str, dict[str, dict]] = {t: {} for t in TYPES}
        self.studies = StudyIndex(term)
        self.patients = PatientIndex(term)
        self.person_of: dict[str, str] = {}  # patient id -> person key
        self.members: dict[str, set[str]] = {}  # person key -> patient ids
        self.about: dict[str, set[tuple[str, str]]] = {}  # patient id -> (type, id) of its records
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
                changes = self.store.changes_since(self.seq, limit=_BATCH, types=TYPES)
                if not changes:
                    return applied
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
        dirty_patients: set[str] = set()
        for rtype, rid in refs:
            old = self.raw[rtype].pop(rid, None)
            new = current.get((rtype, rid))
            if new is not None:
                self.raw[rtype][rid] = new
            if rtype == "ResearchStudy":
                dirty_studies.add(rid)
            elif rtype == "Group":
                dirty_studies |= self.studies_of_group.get(rid, set())
            elif rtype == "Location":
                dirty_studies |= self.studies_of_location.get(rid, set())
            elif rtype == "Patient":
                dirty_patients.add(rid)
            else:
                for res in (old, new):
                    pid = _patient_id(res) if res else None
                    if pid:
                        dirty_patients.add(pid)
                        if res is new:
                            self.about.setdefault(pid, set()).add((rtype, rid))
                        elif new is None or _patient_id(new) != pid:
                            self.about.get(pid, set()).discard((rtype, rid))
        self._learn_hierarchies(dirty_studies)
        for sid in dirty_studies:
            self._rebuild_study(sid)
        dirty_people: set[str] = set()
        for pid in dirty_patients:
            old_key = self.person_of.pop(pid, None)
            if old_key:
                dirty_people.add(old_key)
                self.members.get(old_key, set()).discard(pid)
            pat = self.raw["Patient"].get(pid)
            if pat is not None:
                key = person_key(pat)
                self.person_of[pid] = key
                self.members.setdefault(key, set()).add(pid)
                dirty_people.add(key)
        for key in dirty_people:
            self._rebuild_person(key)

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

    def resources_of(self, key: str) -> list[dict]:
        """Every stored resource of one person (all their Patient records and what references them)."""
        out: list[dict] = []
        for pid in sorted(self.members.get(key, ())):
            out.append(self.raw["Patient"][pid])
            for rtype, rid in sorted(self.about.get(pid, ())):
                res = self.raw[rtype].get(rid)
                if res is not None:
                    out.append(res)
        return out

    def _rebuild_person(self, key: str) -> None:
        if not self.members.get(key):
            self.members.pop(key, None)
            self.patients.remove(key)
            return
        self.patients.add(build_profile(self.resources_of(key), self.term, key=key))

    # -- lookups -----------------------------------------------------------------------------------
    def alerts_only(self, key: str) -> bool:
        """True when every Patient record of person ``key`` is an alerts-only one (cv.ALERTS_ONLY_TAG): the
        person shared no clinical data, so they are never a candidate for a research team."""
        pats = [self.raw["Patient"].get(pid) for pid in self.members.get(key, ())]
        return bool(pats) and all(
            pat is not None and any(isinstance(t, dict) and (t.get("system"), t.get("code")) == cv.ALERTS_ONLY_TAG
                                    for t in (pat.get("meta") or {}).get("tag") or [])
            for pat in pats)

    def person_for_patient(self, patient_id: str) -> str | None:
        return self.person_of.get(patient_id)

    def study_ids(self) -> Iterable[str]:
        return self.studies.studies.keys()
