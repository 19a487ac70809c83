"""MatchingState: indexes built from the store and kept fresh from its change feed (both backends)."""

from __future__ import annotations

from datetime import date

from gateway.fhir import conventions as cv
from gateway.matching import MatchQuery
from gateway.matching.state import MatchingState
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
