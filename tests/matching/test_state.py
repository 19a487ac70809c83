"""MatchingState: indexes built from the store and kept fresh from its change feed (both backends)."""

from __future__ import annotations

import json
from datetime import date

from gateway.fhir import conventions as cv
from gateway.ingest import ingest
from gateway.mapping import map_payload
from gateway.mapping.registry import default_registry
from gateway.matching import MatchQuery
from gateway.matching.state import MatchingState
from gateway.terminology.terminology import DEFAULT_PATH, load_terminology
from tests.conftest import ROOT
from tests.matching import builders as b
from tests.matching.tiny_terminology import BREAST_CA, GBM, GLIOMA_MESH, TinyTerminology

Q = MatchQuery(today=date(2026, 11, 23))


def _put(service, res: dict) -> None:
    service.update(res["resourceType"], res["id"], res)


def _matches(state: MatchingState, pid: str) -> list[str]:
    state.refresh()
    key = state.person_for_patient(pid)
    return [r.study_id for r in state.studies.match(state.patients.profiles[key], Q)[0]]


def test_studies_and_people_follow_the_change_feed(service, store):
    state = MatchingState(store, TinyTerminology())
    _put(service, b.patient("p", nhs="9434765919"))
    _put(service, b.group("g", [b.age_char(18, 70)]))
    _put(service, b.study("s", [GLIOMA_MESH], group_id="g"))
    assert _matches(state, "p") == []
    _put(service, b.condition("c", "p", GBM))
    assert _matches(state, "p") == ["s"]
    # the Group changes: the study is re-derived although the ResearchStudy itself did not change
    _put(service, b.group("g", [b.age_char(60, 70)]))
    assert _matches(state, "p") == []
    _put(service, b.group("g", [b.age_char(18, 70)]))
    assert _matches(state, "p") == ["s"]
    # the condition is deleted; then the study is
    service.delete("Condition", "c")
    assert _matches(state, "p") == []
    _put(service, b.condition("c2", "p", GBM))
    assert _matches(state, "p") == ["s"]
    service.delete("ResearchStudy", "s")
    assert _matches(state, "p") == [] and "s" not in state.studies.studies


def test_second_hospital_record_joins_the_person_and_can_leave_again(service, store):
    state = MatchingState(store, TinyTerminology())
    _put(service, b.study("s", [BREAST_CA]))
    _put(service, b.patient("leeds", nhs="9434765919"))
    _put(service, b.patient("christie", nhs="9434765919"))
    _put(service, b.condition("c", "christie", BREAST_CA))
    assert _matches(state, "leeds") == ["s"]  # Leeds' Patient finds the condition recorded at the Christie
    assert state.person_for_patient("leeds") == state.person_for_patient("christie") == "nhs:9434765919"
    # the Christie corrects the NHS number: the two records are no longer one person
    _put(service, {**b.patient("christie", nhs="9434765013")})
    assert _matches(state, "leeds") == []
    assert _matches(state, "christie") == ["s"]
    assert len(state.patients) == 2


def test_consents_from_any_hospital_reach_the_profile(service, store):
    state = MatchingState(store, TinyTerminology())
    _put(service, b.patient("leeds", nhs="9434765919"))
    _put(service, b.patient("christie", nhs="9434765919"))
    _put(service, b.consent("k", "christie", purposes=[cv.PURPOSE_RESEARCH]))
    state.refresh()
    (profile,) = state.patients.profiles.values()
    assert [c["id"] for c in profile.consents] == ["k"]


def test_the_mesh_hierarchy_an_import_kept_reaches_a_terminology_in_another_process(service, store):
    """`gateway import` (or another process) stored a ClinicalTrials.gov record: a matching state with a terminology
    that never saw the record learns its MeSH ancestors from the store before it indexes the study."""
    record = json.loads((ROOT / "tests" / "data" / "ctgov" / "NCT02513394.json").read_text())
    reg = default_registry()
    [result] = ingest(service, map_payload(reg.get("ctgov-v2"), record, conceptmaps=reg.conceptmaps))  # no sink
    assert result.outcome == "created"
    term = load_terminology(DEFAULT_PATH)  # this process's own, fresh
    breast, skin = "D000001943", "D000012871"  # Breast Neoplasms; Skin Diseases, only on the record
    assert not term.knows(cv.MESH, skin)
    state = MatchingState(store, term)
    state.refresh()
    assert term.is_a(cv.MESH, breast, cv.MESH, skin) and term.display(cv.MESH, skin) == "Skin Diseases"
    [study_id] = list(state.studies.studies)
    [(kept_for, entries)] = store.hierarchies("ResearchStudy", [study_id])
    assert kept_for == study_id and {e["display"] for e in entries} >= {"Breast Neoplasms", "Skin Diseases"}
