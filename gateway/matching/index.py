"""In-memory indexes so that matching cost grows with the number of matches, not the size of the database.

StudyIndex: every (system, code) a study requires -> studies; probed with a patient's terminology
ancestors (a patient with glioblastoma probes 'Glioma', 'Neoplasm of brain', ... and finds the studies
filed under any of them); each process holds one (see state.py). PatientIndex: every ancestor code of a
patient's conditions -> patients; probed with a study's required codes. No process holds one any more (people
live in the database, see people.py): it is the in-memory reference the database path is tested against.

``match`` evaluates every candidate with its sentences. ``page`` (what the API serves) gives the same
results, order, scores and findings text for the first ``limit`` results, more cheaply:

- every candidate is screened without sentences (engine.screen: the same decisions and score);
- the distance to the nearest site only breaks ties of score (unless a distance limit is asked for), so
  it is computed only for the results tied with or ahead of the last one on the page;
- a person with no active condition (who may match thousands of healthy-volunteer studies) is screened
  once per *kind* of study, not once per study: for them a study's outcome depends only on its status,
  phases, healthy-volunteer flag and criteria, with the codes of condition criteria irrelevant (nothing
  is a kind of them), so studies that state the same age range, sex, scores, ... share one screening;
- only the page is explained (engine.evaluate).
"""

from __future__ import annotations

import threading
from bisect import bisect_right
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import date

from gateway.matching.criteria import Criterion, Decoder, StudyCriteria, blank_signature
from gateway.matching.engine import (
    CONFLICT,
    MET,
    NOT_MET,
    MatchResult,
    Screened,
    _score,
    decide,
    evaluate,
    nearest_site,
    place,
    screen,
    tally,
)
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


def _order(r: MatchResult | Screened) -> tuple:
    """Score, then coverage (criteria checked / criteria in the study), then distance, then id."""
    return (-r.score, -r.coverage, r.distance_km if r.distance_km is not None else float("inf"), r.study_id)


def _patient_order(r: MatchResult | Screened) -> tuple:
    return (-r.score, -r.coverage, r.distance_km if r.distance_km is not None else float("inf"), r.patient_key)


def _coarse(r: Screened) -> tuple:
    return (-r.score, -r.coverage)


def _near_coarse(r: Screened) -> tuple:
    return (r.not_met, -r.score, -r.coverage)


def _near_order(r: MatchResult | Screened) -> tuple:
    return (r.not_met if isinstance(r, Screened) else len(r.reasons_not()), *_order(r))


def _arrange(rows: list[Screened], limit: int | None, coarse: Callable[[Screened], tuple],
             full: Callable[[Screened], tuple], distance: Callable[[Screened], float | None] | None) -> None:
    """Sort ``rows`` in place so that the first ``limit`` (all when None) are in ``full`` order.

    ``distance`` is given when the rows have no distance yet: it is then computed only for the rows
    that tie with or come before the ``limit``-th on ``coarse`` (the order without the distance); the
    rest stay unordered within their ``coarse`` group and keep no distance.
    """
    if distance is None:
        rows.sort(key=full)
        return
    rows.sort(key=coarse)
    end = len(rows)
    if limit is not None and limit < len(rows):
        end = 0 if limit <= 0 else bisect_right(rows, coarse(rows[limit - 1]), key=coarse)
    head = rows[:end]
    for r in head:
        r.distance_km = distance(r)
    head.sort(key=full)
    rows[:end] = head


def _copy(base: Screened, sid: str, key: str) -> Screened:
    """A kind's screening as the row of one of its studies (same decisions, counts and score)."""
    return Screened(sid, key, base.score, base.not_met, None, base.met, base.unknown, base.evaluated, base.total,
                    base.conflicts)


@dataclass
class MatchPage:
    """One page of an answer: the first ``limit`` results explained in full, and how many there are."""

    matches: list[MatchResult]
    total: int
    near: list[MatchResult] = field(default_factory=list)  # near misses ($match with near_misses only)
    near_total: int = 0


class _Pending:
    """A study filed from its stored row whose criteria are not decoded yet (StudyIndex.add_stored)."""

    __slots__ = ("version", "doc")

    def __init__(self, version: int, doc: str):
        self.version = version
        self.doc = doc


class _Studies(dict):
    """study id -> StudyCriteria. A study filed from its stored row is decoded the first time it is asked for (a
    $match decodes the studies it screens), so that a process starts without decoding 70,000 studies."""

    __slots__ = ("_decode",)

    def __init__(self, decode: Callable[[str, _Pending], StudyCriteria]):
        super().__init__()
        self._decode = decode

    def __getitem__(self, sid: str) -> StudyCriteria:
        v = dict.__getitem__(self, sid)
        return self._decode(sid, v) if v.__class__ is _Pending else v

    def get(self, sid, default=None):
        v = dict.get(self, sid, default)
        return self._decode(sid, v) if v.__class__ is _Pending else v

    def values(self):  # type: ignore[override]
        return [self[k] for k in list(self)]

    def items(self):  # type: ignore[override]
        return [(k, self[k]) for k in list(self)]


class StudyIndex:
    """Studies by required code / text, plus the studies open to anyone (no condition required)."""

    def __init__(self, term: Terminology):
        self.term = term
        self.decoder = Decoder()  # stored rows -> StudyCriteria, sharing equal criteria
        self._anc: dict[Code, frozenset[Code]] = {}
        self._decode_lock = threading.Lock()
        self.studies: _Studies = _Studies(self._materialise)
        self.by_code: dict[Code, set[str]] = {}
        self.by_text: dict[str, set[str]] = {}
        self.open: set[str] = set()  # no condition required: open to anyone
        self.healthy: set[str] = set()  # accept healthy volunteers: open to people with no active condition
        # ancestor of a required code -> studies; finds related studies for near misses
        self.by_related: dict[Code, set[str]] = {}
        self._keys: dict[str, tuple[tuple[Code, ...], tuple[str, ...], tuple[Code, ...]]] = {}
        # open and healthy-volunteer studies by _blank_signature: screened once per signature for
        # a person with no active condition
        self.blank_groups: dict[str, set[str]] = {}
        self._blank_of: dict[str, str] = {}
        # one shared object per distinct criterion (with how many studies hold it), so that screening a person
        # decides "Platelets >= 100,000/mm3" once for every study stating it (engine.tally's memo)
        self._shared: dict[Criterion, list] = {}
        # memo keys as small ints (cheap to hash), one per distinct (criterion[, healthy-volunteer flag])
        self._key_of: dict[object, int] = {}
        self._dropped = 0  # keys removed with their last study (ints are never reused)
        # kinds of study for a person with no condition, by a small id: (signature, studies, status, phases,
        # criteria count, criteria left as text), and which kinds state each blank memo key (once per occurrence),
        # with one criterion deciding it: a person's answer is then counted per key, not per study
        self._kinds: dict[int, tuple] = {}
        self._kind_of: dict[tuple, int] = {}
        self._postings: dict[int, list[int]] = {}
        self._decider: dict[int, tuple[Criterion, bool | None]] = {}
        self._next_kind = 0

    def __len__(self) -> int:
        return len(self.studies)

    def _share(self, sc: StudyCriteria) -> None:
        hv = sc.healthy_volunteers
        shared = self._shared
        out, memo_keys, blank_keys = [], [], []
        for c in sc.criteria:
            entry = shared.get(c)
            if entry is None:
                entry = shared[c] = [c, 0, {}]
            entry[1] += 1
            keys = entry[2].get(hv)  # the criterion's two memo keys, worked out once per distinct (criterion, hv)
            if keys is None:
                keys = entry[2][hv] = self._keys_of(entry[0], hv)
            out.append(entry[0])
            memo_keys.append(keys[0])
            blank_keys.append(keys[1])
        sc.criteria = out
        sc.memo_keys = tuple(memo_keys)
        sc.blank_keys = tuple(blank_keys)

    def _keys_of(self, c: Criterion, hv: bool | None) -> tuple[int, int]:
        """(memo key, blank memo key) of a criterion in a study with healthy-volunteer flag ``hv``."""
        kid = self._kid
        if c.kind in ("condition", "diagnosis"):
            # for a person with no condition (nor history): condition criteria decide on exclude / hv / confidence /
            # qualifiers / window alone
            return kid((c, hv)), kid(("condition", c.exclude, c.confidence, c.qualifiers, c.lookback_days, hv))
        if c.kind == "other-malignancy":  # on exclude / confidence / window alone (nothing is a kind of it)
            return kid(c), kid(("other-malignancy", c.exclude, c.confidence, c.lookback_days))
        k = kid(c)
        return k, k

    def _kid(self, key: object) -> int:
        k = self._key_of.get(key)
        if k is None:
            k = self._key_of[key] = len(self._key_of) + 1 + self._dropped
        return k

    def _unshare(self, sc: StudyCriteria) -> None:
        for c in sc.criteria:
            entry = self._shared.get(c)
            if entry is not None:
                entry[1] -= 1
                if entry[1] <= 0:
                    del self._shared[c]
                    for key in (c, (c, None), (c, True), (c, False)):
                        if self._key_of.pop(key, None) is not None:
                            self._dropped += 1

    def _materialise(self, sid: str, pending: _Pending) -> StudyCriteria:
        with self._decode_lock:
            v = dict.get(self.studies, sid)
            if v is not pending:  # decoded meanwhile (another thread), or replaced
                return v if v.__class__ is not _Pending else self._materialise(sid, v)
            sc = self.decoder.study(sid, pending.version, pending.doc)
            self._share(sc)
            dict.__setitem__(self.studies, sid, sc)
            return sc

    def add_stored(self, sid: str, version: int, doc: str, keys: tuple[tuple[Code, ...], tuple[str, ...]] | None,
                   blank: str | None, healthy: bool, related: bool = True) -> None:
        """File a study from its stored row (study_rows) without decoding its criteria until it is asked for.

        ``keys``: its ``index_keys()`` as stored; ``blank``: its ``blank_signature`` (open and healthy-volunteer
        studies): only the first study of a kind of study is decoded now, to decide for that kind.
        ``related=False``: leave ``by_related`` to one ``build_related()`` after a bulk load.
        """
        if (keys is None or healthy) and blank is None:
            self.add(self.decoder.study(sid, version, doc))
            return
        self.remove(sid)
        pending = _Pending(version, doc)
        dict.__setitem__(self.studies, sid, pending)
        if healthy:
            self.healthy.add(sid)
        if blank is not None:
            self._blank_of[sid] = blank
            group = self.blank_groups.get(blank)
            if group is None:
                group = self.blank_groups[blank] = set()
                self._add_kind(blank, group, self._materialise(sid, pending))
            group.add(sid)
        if keys is None:
            self.open.add(sid)
            self._keys[sid] = ((), (), ())
            return
        codes, texts = keys
        anc = self._ancestors
        rel: frozenset[Code] = frozenset()
        for code in codes:
            self.by_code.setdefault(code, set()).add(sid)
            rel = anc(code) if not rel else rel | anc(code)
        for t in texts:
            self.by_text.setdefault(t, set()).add(sid)
        if related:
            for code in rel:
                self.by_related.setdefault(code, set()).add(sid)
        self._keys[sid] = (codes, texts, rel)

    def _ancestors(self, code: Code) -> frozenset[Code]:
        """term.ancestors, remembered per code (``forget_ancestors`` when the terminology learns a hierarchy)."""
        got = self._anc.get(code)
        if got is None:
            got = self._anc[code] = self.term.ancestors(*code)
        return got

    def forget_ancestors(self) -> None:
        self._anc = {}

    def build_related(self) -> None:
        """``by_related`` from ``by_code`` in one pass (after ``add_stored(..., related=False)``): the studies
        filed under a code are related to each of its ancestors, as ``add`` files them one by one."""
        related: dict[Code, set[str]] = {}
        anc = self._ancestors
        for code, ids in self.by_code.items():
            for a in anc(code):
                got = related.get(a)
                if got is None:
                    related[a] = set(ids)
                else:
                    got |= ids
        self.by_related = related

    def add(self, sc: StudyCriteria) -> None:
        self.remove(sc.study_id)
        self._share(sc)
        dict.__setitem__(self.studies, sc.study_id, sc)
        if sc.healthy_volunteers:
            self.healthy.add(sc.study_id)
        keys = sc.index_keys()
        if keys is None or sc.healthy_volunteers:
            sig = self._blank_of[sc.study_id] = blank_signature(sc)
            group = self.blank_groups.get(sig)
            if group is None:
                group = self.blank_groups[sig] = set()
                self._add_kind(sig, group, sc)
            group.add(sc.study_id)
        if keys is None:
            self.open.add(sc.study_id)
            self._keys[sc.study_id] = ((), (), ())
            return
        codes, texts = keys
        related: set[Code] = set()
        for code in codes:
            self.by_code.setdefault(code, set()).add(sc.study_id)
            related |= self._ancestors(code)
        for t in texts:
            self.by_text.setdefault(t, set()).add(sc.study_id)
        for code in related:
            self.by_related.setdefault(code, set()).add(sc.study_id)
        self._keys[sc.study_id] = (tuple(codes), tuple(texts), tuple(related))

    def remove(self, study_id: str) -> None:
        old = self.studies.pop(study_id, None)
        if old is None:
            return
        if old.__class__ is not _Pending:  # a study never decoded shares no criteria yet
            self._unshare(old)
        self.open.discard(study_id)
        self.healthy.discard(study_id)
        sig = self._blank_of.pop(study_id, None)
        if sig is not None:
            group = self.blank_groups[sig]
            group.discard(study_id)
            if not group:
                del self.blank_groups[sig]
                self._drop_kind(sig)
        codes, texts, related = self._keys.pop(study_id, ((), (), ()))
        for table, keys in ((self.by_code, codes), (self.by_text, texts), (self.by_related, related)):
            for k in keys:
                ids = table.get(k)
                if ids is not None:
                    ids.discard(study_id)
                    if not ids:
                        del table[k]

    def _add_kind(self, sig: str, group: set[str], sc: StudyCriteria) -> None:
        self._next_kind += 1
        kid = self._kind_of[sig] = self._next_kind
        self._kinds[kid] = (sig, group, sc.status, sc.phases, len(sc.criteria), len(sc.unstructured))
        for key, crit in zip(sc.blank_keys, sc.criteria, strict=True):
            self._postings.setdefault(key, []).append(kid)
            self._decider.setdefault(key, (crit, sc.healthy_volunteers))

    def _drop_kind(self, sig: str) -> None:
        kid = self._kind_of.pop(sig)
        self._kinds.pop(kid)
        for key in list(self._postings):
            kinds = self._postings[key]
            if kid in kinds:
                kinds[:] = [k for k in kinds if k != kid]
                if not kinds:
                    del self._postings[key]
                    del self._decider[key]

    def _blank_counts(self, p: PatientProfile, today: date, q: MatchQuery) -> list[tuple[Screened, set[str]]]:
        """For a person with no condition, no near misses and no distance limit: the kinds of study that match,
        each with its counts, from one decision per distinct criterion counted over the kinds stating it.

        Equal to one ``tally`` per kind (the tests check it against full evaluation), without the per-kind loop
        over criteria: a Counter over the postings of the keys decided met / unknown / in conflict.
        """
        if p.deceased:
            return []
        met_c: Counter = Counter()
        unknown_c: Counter = Counter()
        conflict_c: Counter = Counter()
        failed: set[int] = set()
        term = self.term
        for key, kinds in self._postings.items():
            crit, hv = self._decider[key]
            r = decide(crit, p, term, today, hv)
            if r == MET:
                met_c.update(kinds)
            elif r == NOT_MET:
                failed.update(kinds)
            elif r == CONFLICT:
                conflict_c.update(kinds)
            else:
                unknown_c.update(kinds)
        # kinds with the same counts have the same score and coverage: one row group each
        buckets: dict[tuple[int, int, int, int], list[set[str]]] = {}
        statuses, phases, key = q.statuses, q.phases, p.key
        for kid, (_sig, group, status, kphases, n, n_text) in self._kinds.items():
            if kid in failed or status not in statuses or (phases and not phases & kphases):
                continue
            conflicts = conflict_c[kid]
            counts = (met_c[kid], unknown_c[kid] + conflicts + n_text, conflicts, n + n_text)
            bucket = buckets.get(counts)
            if bucket is None:
                buckets[counts] = [group]
            else:
                bucket.append(group)
        return [(Screened("", key, _score(met, unknown, conflicts), 0, None, met, unknown, met, total, conflicts),
                 groups[0] if len(groups) == 1 else set().union(*groups))
                for (met, unknown, conflicts, total), groups in buckets.items()]

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

    def screen(self, p: PatientProfile, q: MatchQuery) -> tuple[list[Screened], list[Screened]]:
        """``match`` without sentences: (matches, near misses) as Screened, in the order of ``match``."""
        matches, _, near, _ = self._screen(p, q, None)
        return matches, near

    def _screen(self, p: PatientProfile, q: MatchQuery, limit: int | None
                ) -> tuple[list[Screened], int, list[Screened], int]:
        """(matches, how many, near misses, how many); each list holds at least its first ``limit`` rows
        (all when None) in the order of ``match``, with their distance."""
        today = q.today or date.today()
        dist = q.max_distance_km
        stop_early = not q.near_misses
        lazy = None if dist is not None else (lambda r: nearest_site(self.studies[r.study_id], p)[1])
        if not p.conditions and not p.texts and not p.ancestors and not p.history:
            return self._screen_blank(p, q, today, limit, lazy)
        studies, term = self.studies, self.term
        matches, near = [], []
        seen = set()
        memo: dict = {}
        for sid in self.candidates(p):
            sc = studies[sid]
            if not q.admits(sc):
                continue
            seen.add(sid)
            r = screen(sc, p, term, today, dist, stop_early, distance=False, memo=memo)
            if r.not_met == 0:
                matches.append(r)
            elif not stop_early:
                near.append(r)
        if q.near_misses:
            for sid in self.related(p) - seen:
                sc = studies[sid]
                if q.admits(sc):
                    r = screen(sc, p, term, today, dist, distance=False, memo=memo)
                    (matches if r.not_met == 0 else near).append(r)
        _arrange(matches, limit, _coarse, _order, lazy)
        _arrange(near, limit, _near_coarse, _near_order, lazy)
        return matches, len(matches), near, len(near)

    def _screen_blank(self, p: PatientProfile, q: MatchQuery, today: date, limit: int | None, lazy
                      ) -> tuple[list[Screened], int, list[Screened], int]:
        """``_screen`` for a person with no condition: one tally per group of studies deciding alike.

        Their candidates are exactly the open and healthy-volunteer studies (``candidates``), and no
        study is related to them (``related``), so the groups cover the whole answer. Without a distance
        limit every study of a group has the group's outcome, so only the groups that reach the page
        become rows.
        """
        stop_early = not q.near_misses
        dist = q.max_distance_km
        key = p.key
        match_groups: list[tuple[Screened, set[str]]] = []
        near_groups: list[tuple[Screened, set[str]]] = []
        memo: dict = {}
        studies, term = self.studies, self.term
        fast = stop_early and dist is None
        if fast:
            match_groups = self._blank_counts(p, today, q)
        for sids in () if fast else self.blank_groups.values():
            first = studies[next(iter(sids))]
            if not q.admits(first):  # status and phases are part of the signature
                continue
            base = tally(first, p, term, today, stop_early, memo, blank=True)
            if base.not_met == 0 or dist is not None:
                match_groups.append((base, sids))
            elif not stop_early:
                near_groups.append((base, sids))
        if dist is not None:  # the distance decides per study: every study becomes a row
            matches, near = [], []
            for base, sids in match_groups:
                if base.not_met and stop_early:
                    continue
                for sid in sids:
                    r = place(_copy(base, sid, key), self.studies[sid], p, dist)
                    if r.not_met == 0:
                        matches.append(r)
                    elif not stop_early:
                        near.append(r)
            _arrange(matches, limit, _coarse, _order, None)
            _arrange(near, limit, _near_coarse, _near_order, None)
            return matches, len(matches), near, len(near)

        def rows(groups: list[tuple[Screened, set[str]]], coarse, full) -> tuple[list[Screened], int]:
            groups.sort(key=lambda g: coarse(g[0]))
            total = sum(len(sids) for _, sids in groups)
            taken, n = [], 0
            for base, sids in groups:
                # up to the limit, then whatever ties with the last group taken
                if limit is not None and n >= limit and (not taken or coarse(base) != coarse(taken[-1][0])):
                    break
                taken.append((base, sids))
                n += len(sids)
            out = [_copy(base, sid, key) for base, sids in taken for sid in sids]
            _arrange(out, limit, coarse, full, lazy)
            return out, total

        matches, n_matches = rows(match_groups, _coarse, _order)
        near, n_near = rows(near_groups, _near_coarse, _near_order)
        return matches, n_matches, near, n_near

    def page(self, p: PatientProfile, q: MatchQuery, limit: int | None = None) -> MatchPage:
        """The first ``limit`` matches (and near misses) explained, plus the totals; what ``$match`` returns.

        Equal to ``match(p, q)`` cut to ``limit``, but only the results returned get their sentences.
        """
        today = q.today or date.today()
        matches, n_matches, near, n_near = self._screen(
            p, MatchQuery(q.statuses, q.phases, q.max_distance_km, q.near_misses, today), limit)

        def explain(rows: list[Screened]) -> list[MatchResult]:
            return [evaluate(self.studies[r.study_id], p, self.term, today, q.max_distance_km)
                    for r in rows[:limit]]

        return MatchPage(explain(matches), n_matches, explain(near) if q.near_misses else [], n_near)

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

    def screen(self, sc: StudyCriteria, q: MatchQuery, allowed=None, limit: int | None = None) -> list[Screened]:
        """``match`` without sentences: the matching people as Screened, in the order of ``match``.

        With ``limit``, only the first ``limit`` are guaranteed in order (and have their distance).
        """
        today = q.today or date.today()
        dist = q.max_distance_km
        profiles, term = self.profiles, self.term
        out = []
        for key in self.candidates(sc):
            p = profiles[key]
            r = screen(sc, p, term, today, dist, stop_early=True, distance=False)
            # consent is checked for those who fit only (it costs more than screening)
            if r.not_met == 0 and (allowed is None or allowed(p)):
                out.append(r)
        lazy = None if dist is not None else (lambda r: nearest_site(sc, profiles[r.patient_key])[1])
        _arrange(out, limit, _coarse, _patient_order, lazy)
        return out

    def page(self, sc: StudyCriteria, q: MatchQuery, allowed=None, limit: int | None = None) -> MatchPage:
        """The first ``limit`` matching people explained, plus how many match; what ``$candidates`` returns."""
        today = q.today or date.today()
        rows = self.screen(sc, MatchQuery(q.statuses, q.phases, q.max_distance_km, q.near_misses, today),
                           allowed, limit)
        return MatchPage([evaluate(sc, self.profiles[r.patient_key], self.term, today, q.max_distance_km)
                          for r in rows[:limit]], len(rows))

    def _run(self, keys: Iterable[str], sc: StudyCriteria, q: MatchQuery, allowed) -> list[MatchResult]:
        out = []
        for key in keys:
            p = self.profiles[key]
            r = evaluate(sc, p, self.term, q.today, q.max_distance_km, stop_early=True)
            # consent is checked for those who fit only (it costs more than screening)
            if r.is_match and (allowed is None or allowed(p)):
                out.append(r)
        out.sort(key=_patient_order)
        return out
