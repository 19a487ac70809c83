"""The matching state of one process: the study side in memory, built from stored rows; the patient side in the
database.

Studies (tens of thousands) are indexed in each process (StudyIndex), built from their pre-computed rows
(studies.StudyRows, schema.match_studies: the extracted criteria, recruiting sites and status of each study, kept
current by a write hook in the transaction that writes the study, its Group or a Location), one streamed SELECT at
the first ``refresh()``; later refreshes read only the rows rebuilt since the last one seen (``seq``), so several
processes sharing one PostgreSQL store all see each other's writes. No FHIR JSON is held: ``raw`` reads a study's
JSON from the store when a response needs it (a small cache). People (millions) are never held by a process: their
profiles are rows kept current by the store's write hook (people.People), read a page at a time.
``matching_state(store, term)`` is the one way to build it.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Iterable

import orjson

from gateway.matching.criteria import DOC_FORMAT, index_keys_of
from gateway.matching.index import StudyIndex
from gateway.matching.people import PERSON_TYPES, People
from gateway.matching.studies import STUDY_TYPES, StudyRows
from gateway.matching.terms import Terminology
from gateway.store import study_rows as db
from gateway.store.repo import Store

TYPES = STUDY_TYPES + PERSON_TYPES
_CACHE = 512  # study JSON texts kept for responses ($match pages, the flows)


def matching_state(store: Store, term: Terminology) -> MatchingState:
    """The matching state over ``store``, its write hooks installed (every process that writes needs them)."""
    return MatchingState(store, term)


class MatchingState:
    """The StudyIndex of the stored study rows; the people (``patients``) in the database."""

    def __init__(self, store: Store, term: Terminology):
        self.store = store
        self.term = term
        self.seq = 0  # every study row built up to this change-feed position is in the index
        self.studies = StudyIndex(term)
        self.rows = StudyRows(store, term)
        self.rows.attach()
        self.patients = People(store, term)
        self.patients.attach()
        self.raw = StudyResources(self)
        self.studies_of_group = Referring(store, "Group")
        self.studies_of_location = Referring(store, "Location")
        self._loaded = False
        self._removed = 0
        # Held by refresh and by readers (the views), so a query never sees an index mid-update.
        self.lock = threading.RLock()

    # -- refresh from the stored rows ------------------------------------------------------------
    def refresh(self) -> int:
        """Apply every study row rebuilt since the last call (all of them the first time) and catch up the rows
        of writes no hook applied; returns how many changes and rows were applied."""
        with self.lock:
            applied = self.rows.catch_up()
            applied += self._apply_rows()
            # after the studies, so that people are indexed with the hierarchies the studies taught
            return applied + self.patients.catch_up()

    def _apply_rows(self) -> int:
        first = not self._loaded
        stale: list[str] = []
        n = 0
        with self.store.read_connection() as conn:
            upto = db.cursor(conn)  # read before the rows: a row built later is read again next time
            if first:
                self._learn(db.all_hierarchies(conn))
                rows: Iterable = db.rows_since(conn, 0)
            else:
                rows = list(db.rows_since(conn, self.seq))
                learned = [r[0] for r in rows if r[4] is not None]
                if learned:
                    self._learn(entries for _, entries in self.store.hierarchies("ResearchStudy", learned))
            for sid, version, _seq, fmt, doc, keys, healthy in rows:
                n += 1
                if doc is None:
                    self.studies.remove(sid)
                    self._removed += 1
                elif fmt != DOC_FORMAT:
                    stale.append(sid)
                else:  # filed now, its criteria decoded when a query first screens it
                    self.studies.add_stored(sid, version, doc, *index_keys_of(keys), healthy, related=not first)
            if first:
                self.studies.build_related()
        if stale:  # written by another version of the extraction: re-derived here and stored again
            for row in self.rows.rewrite(stale):
                if row.doc is None:
                    self.studies.remove(row.study_id)
                else:
                    self.studies.add_stored(row.study_id, row.version, row.doc, *index_keys_of(row.index_keys),
                                            row.healthy)
        self._loaded = True
        self.seq = max(self.seq, upto)
        if self._removed > 1000:  # forget the criteria no study states any more
            self.studies.decoder.forget(c for c in self.studies._shared)
            self._removed = 0
        return n

    def _learn(self, hierarchies: Iterable[list[dict]]) -> None:
        """Teach the terminology the concept hierarchies kept with the studies (ClinicalTrials.gov MeSH ancestors,
        see Tx.set_hierarchy) before they are indexed: whichever process imported them."""
        learn = getattr(self.term, "add_registry_hierarchy", None)
        if learn is None:
            return
        taught = False
        for entries in hierarchies:
            learn(entries)
            taught = True
        if taught:
            self.studies.forget_ancestors()

    # -- lookups -----------------------------------------------------------------------------------
    def alerts_only(self, key: str) -> bool:
        """True when every Patient record of person ``key`` is an alerts-only one (cv.ALERTS_ONLY_TAG): the
        person shared no clinical data, so they are never a candidate for a research team."""
        return self.patients.alerts_only(key)

    def person_for_patient(self, patient_id: str) -> str | None:
        return self.patients.person_for_patient(patient_id)

    def study_ids(self) -> Iterable[str]:
        return self.studies.studies.keys()


class StudyResources:
    """``state.raw[type][id]``: the FHIR JSON of the study side, read from the store when asked for.

    A ResearchStudy is the version the index holds (its history when it changed since the last refresh), and
    only for studies the index holds; a Group or Location is the current one. A few hundred study texts are cached.
    """

    def __init__(self, state: MatchingState):
        self._state = state
        self._cache: OrderedDict[tuple[str, int], str] = OrderedDict()
        self._views = {t: _TypeView(self, t) for t in STUDY_TYPES}

    def __getitem__(self, rtype: str) -> _TypeView:
        return self._views[rtype]

    def get(self, rtype: str, default=None):
        return self._views.get(rtype, default)

    def read(self, rtype: str, rid: str) -> dict | None:
        if rtype != "ResearchStudy":
            with self._state.store.read_connection() as conn:
                text = db.content_at(conn, rtype, rid, None)
            return orjson.loads(text) if text else None
        sc = self._state.studies.studies.get(rid)
        if sc is None:
            return None
        key = (rid, sc.version)
        text = self._cache.get(key)
        if text is None:
            with self._state.store.read_connection() as conn:
                text = db.content_at(conn, rtype, rid, sc.version or None)
            if text is None:
                return None
            self._cache[key] = text
            if len(self._cache) > _CACHE:
                self._cache.popitem(last=False)
        else:
            self._cache.move_to_end(key)
        return orjson.loads(text)  # a fresh dict: callers may change theirs


class _TypeView:
    def __init__(self, owner: StudyResources, rtype: str):
        self._owner = owner
        self._type = rtype

    def get(self, rid: str, default=None):
        found = self._owner.read(self._type, rid)
        return default if found is None else found

    def __getitem__(self, rid: str) -> dict:
        found = self._owner.read(self._type, rid)
        if found is None:
            raise KeyError(rid)
        return found

    def __contains__(self, rid: object) -> bool:
        return isinstance(rid, str) and self._owner.read(self._type, rid) is not None


class Referring:
    """``state.studies_of_group[id]`` / ``studies_of_location[id]``: the studies whose stored row refers to it."""

    def __init__(self, store: Store, rtype: str):
        self._store = store
        self._type = rtype

    def get(self, rid: str, default=None) -> set[str]:
        with self._store.read_connection() as conn:
            found = db.studies_referring_to(conn, [(self._type, rid)])
        return found if found or default is None else default

    def __getitem__(self, rid: str) -> set[str]:
        found = self.get(rid)
        if not found:
            raise KeyError(rid)
        return found
