"""The study side of matching, pre-computed (matching/studies.py, store/study_rows.py), on both backends.

A study's stored row decodes to the StudyCriteria extraction gives, and an index built from rows answers exactly as
one built by extraction; rows follow the writes of a study, its Group and its Locations in the writing transaction
(tombstones for deletions, nothing for a rolled-back write); a store written without the hook is caught up; a
second matching state (another process) sees every change on its next refresh; rows of another format are
re-derived; ``raw`` serves the version of a study the index holds.
"""

from __future__ import annotations

from dataclasses import fields
from datetime import date

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import select, update

from gateway.matching import MatchQuery, StudyIndex, build_profile
from gateway.matching.criteria import DOC_FORMAT, Decoder, StudyCriteria, criteria_doc, index_keys_doc, index_keys_of
from gateway.matching.geo import SITE_RECRUITMENT_STATUS_EXT
from gateway.matching.state import MatchingState
from gateway.matching.studies import HOOK, StudyRows
from gateway.store import schema as s
from gateway.store import study_rows as db
from gateway.store.repo import Store
from tests.matching import builders as b
from tests.matching.test_extracted_properties import a_rich_world
from tests.matching.test_screen import _full, a_person_records, a_study
from tests.matching.tiny_terminology import BREAST_CA, GBM, GLIOMA_MESH, TinyTerminology

Q = MatchQuery(today=date(2026, 11, 23))
FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
_COMPARED = [f.name for f in fields(StudyCriteria) if f.name not in ("version", "memo_keys", "blank_keys")]


def _same(a: StudyCriteria, c: StudyCriteria) -> None:
    for name in _COMPARED:
        assert getattr(a, name) == getattr(c, name), name


@FAST
@given(st.lists(a_study("s"), min_size=1, max_size=3), a_rich_world())
def test_a_stored_row_decodes_to_the_extracted_criteria(plain, rich):
    dec = Decoder()
    for sc in [*plain, *rich[0]]:
        back = dec.study(sc.study_id, 3, criteria_doc(sc))
        _same(back, sc)
        assert back.version == 3
        assert criteria_doc(back) == criteria_doc(sc)


@FAST
@given(st.lists(a_study("s"), min_size=1, max_size=8).map(lambda ss: [
    StudyCriteria(**{**{f.name: getattr(sc, f.name) for f in fields(StudyCriteria)}, "study_id": f"s{i}"})
    for i, sc in enumerate(ss)]), st.lists(a_person_records("p"), min_size=1, max_size=3))
def test_an_index_built_from_rows_answers_as_one_built_by_extraction(studies, people):
    t = TinyTerminology()
    docs = [(sc.study_id, criteria_doc(sc), index_keys_doc(sc), bool(sc.healthy_volunteers)) for sc in studies]
    extracted, stored, lazy = StudyIndex(t), StudyIndex(t), StudyIndex(t)
    dec = Decoder()
    for sc in studies:
        extracted.add(sc)
    for sid, doc, keys, healthy in docs:
        stored.add(dec.study(sid, 1, doc))  # decoded now
        lazy.add_stored(sid, 1, doc, *index_keys_of(keys), healthy, related=False)  # decoded when screened
    lazy.build_related()
    assert lazy.by_related == extracted.by_related and lazy.blank_groups == extracted.blank_groups
    for recs in people:
        p = build_profile(recs, t)
        for near, dist in ((False, None), (True, None), (False, 300.0)):
            q = MatchQuery(Q.statuses, Q.phases, dist, near, Q.today)
            want = extracted.page(p, q, 5)
            for index in (stored, lazy):
                got = index.page(p, q, 5)
                assert [_full(r) for r in got.matches] == [_full(r) for r in want.matches]
                assert (got.total, got.near_total) == (want.total, want.near_total)
                assert [_full(r) for r in got.near] == [_full(r) for r in want.near]


def _row(store: Store, sid: str):
    with store.engine.connect() as conn:
        return conn.execute(select(s.match_studies).where(s.match_studies.c.study_id == sid)).mappings().first()


def _refs(store: Store, sid: str) -> set[tuple[str, str]]:
    r = s.match_study_refs
    with store.engine.connect() as conn:
        return {tuple(x) for x in conn.execute(select(r.c.type, r.c.id).where(r.c.study_id == sid))}


def _put(store: Store, *resources: dict) -> None:
    with store.write() as tx:
        for res in resources:
            tx.put(res)


def test_rows_follow_the_study_its_group_and_its_sites_in_the_writing_transaction(store):
    StudyRows(store, TinyTerminology()).attach()
    _put(store, b.study("s", [GLIOMA_MESH], group_id="g", sites=["l1"]), b.group("g", [b.age_char(18, 70)]),
         b.location("l1", 53.8, -1.55, name="Leeds"))
    row = _row(store, "s")
    assert row is not None and row["format"] == DOC_FORMAT and row["version"] == 1 and row["status"] == "active"
    assert _refs(store, "s") == {("Group", "g"), ("Location", "l1")}
    sc = Decoder().study("s", row["version"], row["doc"])
    assert [c.kind for c in sc.criteria] == ["condition", "age"] and sc.sites[0].position == (53.8, -1.55)
    seq = row["seq"]
    # the Group alone changes: the study's row is rebuilt, in that transaction
    _put(store, b.group("g", [b.age_char(60, 70)]))
    row = _row(store, "s")
    assert row["seq"] > seq and Decoder().study("s", 1, row["doc"]).criteria[1].low == 60
    # a site stops recruiting: it leaves the study's sites
    seq = row["seq"]
    _put(store, {**b.location("l1", 53.8, -1.55), "extension": [
        {"url": SITE_RECRUITMENT_STATUS_EXT, "valueCode": "closed"}]})
    row = _row(store, "s")
    assert row["seq"] > seq and Decoder().study("s", 1, row["doc"]).sites == []
    # a rolled-back write leaves the row as it was
    try:
        with store.write() as tx:
            tx.put(b.study("s", [BREAST_CA], group_id="g", sites=["l1"]))
            raise RuntimeError("abandoned")
    except RuntimeError:
        pass
    assert _row(store, "s")["version"] == 1
    # deleted: a tombstone, so that every process sees the removal
    with store.write() as tx:
        tx.delete("ResearchStudy", "s")
    row = _row(store, "s")
    assert row["doc"] is None and _refs(store, "s") == set()
    with store.engine.connect() as conn:
        assert db.cursor(conn) == row["seq"], "every writer has the hook: the cursor follows the writes"


def test_a_store_written_without_the_hook_is_caught_up(store):
    store.write_hooks.pop(HOOK, None)  # as a process started before the study rows would write
    _put(store, b.study("s", [GBM], group_id="g"), b.group("g", [b.age_char(18, 70)]))
    _put(store, b.study("t", [BREAST_CA]))
    assert _row(store, "s") is None
    state = MatchingState(store, TinyTerminology())
    state.refresh()
    assert _row(store, "s") is not None and _row(store, "t") is not None
    assert sorted(state.studies.studies) == ["s", "t"]
    assert [c.kind for c in state.studies.studies["s"].criteria] == ["condition", "age"]
    assert state.refresh() == 0, "nothing left to catch up"
    # a writer without the hook changes a Group: the next refresh catches up the study's row and sees it
    store.write_hooks.pop(HOOK, None)
    _put(store, b.group("g", [b.age_char(60, 70)]))
    state.refresh()
    assert state.studies.studies["s"].criteria[1].low == 60


def test_a_second_process_sees_every_change_on_its_next_refresh(store):
    one, two = MatchingState(store, TinyTerminology()), MatchingState(store, TinyTerminology())
    p = build_profile([b.patient("p", birth="1960-01-01"), b.condition("c", "p", GBM)], one.term)

    def ids(state: MatchingState) -> list[str]:
        state.refresh()
        return [r.study_id for r in state.studies.match(p, Q)[0]]

    assert ids(one) == ids(two) == []
    _put(store, b.study("s", [GLIOMA_MESH], group_id="g"), b.group("g", [b.age_char(18, 70)]))
    assert ids(two) == ids(one) == ["s"]
    _put(store, b.group("g", [b.age_char(18, 40)]))  # the Group alone
    assert ids(one) == ids(two) == []
    _put(store, b.group("g", [b.age_char(18, 90)]), b.study("u", [GBM]))
    assert ids(two) == ids(one) == ["s", "u"]
    with store.write() as tx:
        tx.delete("ResearchStudy", "s")
    assert ids(one) == ids(two) == ["u"]
    assert "s" not in one.studies.studies and "s" not in two.studies.studies
    # a third process, started now, builds the same index from the rows
    three = MatchingState(store, TinyTerminology())
    assert ids(three) == ["u"]


def test_rows_of_another_format_are_derived_again_and_keep_their_position(store):
    StudyRows(store, TinyTerminology()).attach()
    _put(store, b.study("s", [GBM], group_id="g"), b.group("g", [b.age_char(18, 70)]))
    seq = _row(store, "s")["seq"]
    with store.engine.begin() as conn:
        conn.execute(update(s.match_studies).values(format=DOC_FORMAT - 1, doc='{"old": true}'))
    state = MatchingState(store, TinyTerminology())
    state.refresh()
    assert [c.kind for c in state.studies.studies["s"].criteria] == ["condition", "age"]
    row = _row(store, "s")
    assert row["format"] == DOC_FORMAT and row["seq"] == seq


def test_raw_serves_the_version_the_index_holds(store):
    state = MatchingState(store, TinyTerminology())
    _put(store, b.study("s", [GBM]), b.group("g", []))
    state.refresh()
    assert state.raw["ResearchStudy"]["s"]["title"] == "Study s"
    assert "s" in state.raw["ResearchStudy"] and "x" not in state.raw["ResearchStudy"]
    assert state.raw["ResearchStudy"].get("x") is None and state.raw.get("Patient") is None
    assert state.raw["Group"]["g"]["id"] == "g"
    _put(store, {**b.study("s", [GBM]), "title": "Renamed"})  # not refreshed yet: the index holds version 1
    assert state.raw["ResearchStudy"]["s"]["title"] == "Study s"
    state.refresh()
    assert state.raw["ResearchStudy"]["s"]["title"] == "Renamed"
    state.raw["ResearchStudy"]["s"]["title"] = "changed by a caller"  # each read is a fresh copy
    assert state.raw["ResearchStudy"]["s"]["title"] == "Renamed"
    with store.write() as tx:
        tx.delete("ResearchStudy", "s")
    state.refresh()
    assert state.raw["ResearchStudy"].get("s") is None
    assert state.studies_of_group.get("g", set()) == set()
