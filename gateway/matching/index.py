"""In-memory indexes so that matching cost grows with the number of matches, not the size of the database.

StudyIndex: every (system, code) a study requires -> studies; probed with a patient's terminology
ancestors (a patient with glioblastoma probes 'Glioma', 'Neoplasm of brain', ... and finds the studies
filed under any of them). PatientIndex: every ancestor code of a patient's conditions -> patients; probed
with a study's required codes. Both are plain Python objects built from FHIR JSON (see state.py).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date

from gateway.matching.criteria import StudyCriteria
from gateway.matching.engine import MatchResult, evaluate
from gateway.matching.profile import PatientProfile
from gateway.matching.terms import Code, Terminology

DEFAULT_STATUSES = frozenset({"active"})  # R4 ResearchStudy.status 'active' = recruiting


@dataclass(frozen=True)
class MatchQuery:
    statuses: frozenset[str] = DEFAULT_STATUSES
    phases: frozenset[str] = frozenset()  # empty: any phase
    max_distance_km: float | None = None
    near_misses: bool = False
    today: date | None = None

    def admits(self, study: StudyCriteria) -> bool:
        return study.status in self.statuses and (not self.phases or bool(self.phases & study.phases))


def _order(r: MatchResult) -> tuple:
    return (-r.score, r.distance_km if r.distance_km is not None else float("inf"), r.study_id)


class StudyIndex:
    """Studies by required code / text, plus the studies open to anyone (no condition required)."""

    def __init__(self, term: Terminology):
        self.term = term
        self.studies: dict[str, StudyCriteria] = {}
        self.by_code: dict[Code, set[str]] = {}
        self.by_text: dict[str, set[str]] = {}
        self.open: set[str] = set()  # no condition required: open to anyone
        self.healthy: set[str] = set()  # accept healthy volunteers: open to people with no active condition
        # ancestor of a required code -> studies; finds related studies for near misses
        self.by_related: dict[Code, set[str]] = {}
        self._keys: dict[str, tuple[tuple[Code, ...], tuple[str, ...], tuple[Code, ...]]] = {}

    def __len__(self) -> int:
        return len(self.studies)

    def add(self, sc: StudyCriteria) -> None:
        self.remove(sc.study_id)
        self.studies[sc.study_id] = sc
        if sc.healthy_volunteers:
            self.healthy.add(sc.study_id)
        keys = sc.index_keys()
        if keys is None:
            self.open.add(sc.study_id)
            self._keys[sc.study_id] = ((), (), ())
            return
        codes, texts = keys
        related: set[Code] = set()
        for code in codes:
            self.by_code.setdefault(code, set()).add(sc.study_id)
            related |= self.term.ancestors(*code)
        for t in texts:
            self.by_text.setdefault(t, set()).add(sc.study_id)
        for code in related:
            self.by_related.setdefault(code, set()).add(sc.study_id)
        self._keys[sc.study_id] = (tuple(codes), tuple(texts), tuple(related))

    def remove(self, study_id: str) -> None:
        if self.studies.pop(study_id, None) is None:
            return
        self.open.discard(study_id)
        self.healthy.discard(study_id)
        codes, texts, related = self._keys.pop(study_id, ((), (), ()))
        for table, keys in ((self.by_code, codes), (self.by_text, texts), (self.by_related, related)):
            for k in keys:
                ids = table.get(k)
                if ids is not None:
                    ids.discard(study_id)
                    if not ids:
                        del table[k]

    def candidates(self, p: PatientProfile) -> set[str]:
        """Studies the patient may match: those filed under one of the patient's ancestor codes or texts."""
        out = set(self.open)
        if not p.conditions:
            out |= self.healthy
        for code in p.ancestors:
            ids = self.by_code.get(code)
            if ids:
                out |= ids
        for t in p.texts:
            ids = self.by_text.get(t)
            if ids:
                out |= ids
        return out

    def related(self, p: PatientProfile) -> set[str]:
        """Studies close to the patient's conditions in the hierarchy (for near misses).

        Shared ancestors that most studies share ('Neoplasm', 'Disease') say nothing, so an ancestor counts
        only when it is specific: it covers at most 1 in 50 studies (or 25, for small databases).
        """
        limit = max(25, len(self.studies) // 50)
        out: set[str] = set()
        for code in p.ancestors:
            ids = self.by_related.get(code)
            if ids and len(ids) <= limit:
                out |= ids
        return out

    def match(self, p: PatientProfile, q: MatchQuery) -> tuple[list[MatchResult], list[MatchResult]]:
        """Profile -> (matches ordered by score, near misses ordered by fewest reasons)."""
        return self._run(self.candidates(p), p, q)

    def brute_force(self, p: PatientProfile, q: MatchQuery) -> tuple[list[MatchResult], list[MatchResult]]:
        """The same answer by evaluating every study: the reference the index is tested and timed against."""
        matches, _ = self._run(self.studies.keys(), p, MatchQuery(q.statuses, q.phases, q.max_distance_km,
                                                                  False, q.today))
        return matches, []

    def _run(self, ids: Iterable[str], p: PatientProfile, q: MatchQuery
             ) -> tuple[list[MatchResult], list[MatchResult]]:
        matches, near = [], []
        seen = set()
        for sid in ids:
            sc = self.studies[sid]
            if not q.admits(sc):
                continue
            seen.add(sid)
            r = evaluate(sc, p, self.term, q.today, q.max_distance_km, stop_early=not q.near_misses)
            (matches if r.is_match else near).append(r)
        if q.near_misses:
            for sid in self.related(p) - seen:
                sc = self.studies[sid]
                if q.admits(sc):
                    r = evaluate(sc, p, self.term, q.today, q.max_distance_km)
                    (matches if r.is_match else near).append(r)
        matches.sort(key=_order)
        near.sort(key=lambda r: (len(r.reasons_not()), _order(r)))
        return matches, (near if q.near_misses else [])


class PatientIndex:
    """Person profiles by every ancestor code and text of their conditions."""

    def __init__(self, term: Terminology):
        self.term = term
        self.profiles: dict[str, PatientProfile] = {}
        self.by_code: dict[Code, set[str]] = {}
        self.by_text: dict[str, set[str]] = {}
        self.no_condition: set[str] = set()  # possible healthy volunteers

    def __len__(self) -> int:
        return len(self.profiles)

    def add(self, p: PatientProfile) -> None:
        self.remove(p.key)
        self.profiles[p.key] = p
        if not p.conditions:
            self.no_condition.add(p.key)
        for code in p.ancestors:
            self.by_code.setdefault(code, set()).add(p.key)
        for t in p.texts:
            self.by_text.setdefault(t, set()).add(p.key)

    def remove(self, key: str) -> None:
        old = self.profiles.pop(key, None)
        if old is None:
            return
        self.no_condition.discard(key)
        for table, keys in ((self.by_code, old.ancestors), (self.by_text, old.texts)):
            for k in keys:
                ids = table.get(k)
                if ids is not None:
                    ids.discard(key)
                    if not ids:
                        del table[k]

    def candidates(self, sc: StudyCriteria) -> Iterable[str]:
        """People who may fit the study: those with a condition under one of its required codes."""
        keys = sc.index_keys()
        if keys is None:
            return self.profiles.keys()
        codes, texts = keys
        out: set[str] = set(self.no_condition) if sc.healthy_volunteers else set()
        for code in codes:
            ids = self.by_code.get(code)
            if ids:
                out |= ids
        for t in texts:
            ids = self.by_text.get(t)
            if ids:
                out |= ids
        return out

    def match(self, sc: StudyCriteria, q: MatchQuery, allowed=None) -> list[MatchResult]:
        """Study -> matching people ordered by score; ``allowed(profile)`` filters (e.g. consent)."""
        return self._run(self.candidates(sc), sc, q, allowed)

    def brute_force(self, sc: StudyCriteria, q: MatchQuery, allowed=None) -> list[MatchResult]:
        return self._run(self.profiles.keys(), sc, q, allowed)

    def _run(self, keys: Iterable[str], sc: StudyCriteria, q: MatchQuery, allowed) -> list[MatchResult]:
        out = []
        for key in keys:
            p = self.profiles[key]
            r = evaluate(sc, p, self.term, q.today, q.max_distance_km, stop_early=True)
            # consent is checked for those who fit only (it costs more than screening)
            if r.is_match and (allowed is None or allowed(p)):
                out.append(r)
        out.sort(key=lambda r: (-r.score, r.distance_km if r.distance_km is not None else float("inf"),
                                r.patient_key))
        return out
