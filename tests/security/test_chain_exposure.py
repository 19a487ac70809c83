"""Issue #13 follow-up: chained parameters (and _include/_revinclude) follow only targets the caller may read.

A chain used to be evaluated over every target in the store and the result filtered afterwards: a hospital
asking ``Observation?subject:Patient.identifier=<another hospital's patient's NHS number>&_count=1`` saw a
``next`` link when that patient had two Observations, and a sponsor asking ``Group?member:Patient.identifier=``
saw ``total: 1`` for another tenant's member list. The answer must now be that of a store where the
unreadable targets do not exist: the same as for an NHS number nobody has.
"""

from __future__ import annotations

import pytest

from gateway.fhir.conventions import NHS_NUMBER
from gateway.security.policy import CHAIN_SCAN_LIMIT
from tests.security.conftest import N_CHRISTIE, _observation, _with_secret, bearer, idp_token, secret

UNKNOWN_NHS = "9999999999"  # nobody's

# (caller, search with {nhs} for the probed NHS number)
PROBES = [
    ("leeds-ehr", "Observation?subject:Patient.identifier={nhs}&_count=1"),
    ("leeds-ehr", "Observation?subject.identifier={nhs}&_count=1"),
    ("leeds-ehr", "Condition?patient.identifier={nhs}&_count=1"),
    ("leeds-ehr", "ResearchSubject?individual:Patient.identifier={nhs}&_count=1"),
    ("leeds-ehr", "Observation?subject:Patient.identifier={nhs}&_summary=count"),
    ("sponsor-b", "Group?member:Patient.identifier={nhs}"),
    ("sponsor-b", "Group?member:Patient.identifier={nhs}&_summary=count"),
    ("patient", "Observation?subject:Patient.identifier={nhs}&_count=1"),
    ("patient", "Consent?patient.identifier={nhs}"),
]


def _headers(shared, caller: str) -> dict:
    return bearer(idp_token(shared.keys) if caller == "patient" else shared.token(caller))


def _shape(http, headers: dict, url: str) -> tuple:
    """What a caller learns from a searchset: status, total (when shown), entry URLs, link relations."""
    r = http.get(f"/fhir/{url}", headers=headers)
    body = r.get_json()
    assert r.status_code == 200, (url, body)
    entries = [(e["search"]["mode"], e.get("fullUrl")) for e in body.get("entry", [])
               if e["search"]["mode"] != "outcome"]
    return r.status_code, body.get("total"), entries, sorted(link["relation"] for link in body["link"])


@pytest.fixture(scope="module")
def second_christie_observation(shared):
    """christie-pat has two Observations, so that a page of one would show a ``next`` link."""
    with shared.store.write() as tx:
        tx.put(_with_secret(_observation("obs-christie-2", "christie-pat", "RBV")))
    yield
    with shared.store.write() as tx:
        tx.delete("Observation", "obs-christie-2")


@pytest.mark.parametrize(("caller", "url"), PROBES, ids=[f"{c}:{u.split('&')[0]}" for c, u in PROBES])
def test_a_chain_to_an_unreadable_target_answers_like_a_missing_one(shared, second_christie_observation,
                                                                   caller, url):
    headers = _headers(shared, caller)
    probed = _shape(shared.http, headers, url.format(nhs=f"{NHS_NUMBER}|{N_CHRISTIE}"))
    missing = _shape(shared.http, headers, url.format(nhs=f"{NHS_NUMBER}|{UNKNOWN_NHS}"))
    assert probed == missing
    assert probed[2] == [] and probed[1] in (None, 0)


def test_the_owner_still_finds_its_records_through_the_chain(shared, second_christie_observation):
    h = bearer(shared.token("christie-ehr"))
    r = shared.http.get(f"/fhir/Observation?subject:Patient.identifier={NHS_NUMBER}|{N_CHRISTIE}&_count=1",
                        headers=h)
    body = r.get_json()
    assert r.status_code == 200
    assert [e["resource"]["id"] for e in body["entry"] if e["search"]["mode"] == "match"] == ["obs-christie"]
    assert "next" in [link["relation"] for link in body["link"]]
    admin = shared.http.get(f"/fhir/Group?member:Patient.identifier={NHS_NUMBER}|{N_CHRISTIE}",
                            headers=bearer(shared.token("admin-console"))).get_json()
    assert admin["total"] == 1 and admin["entry"][0]["resource"]["id"] == "group-members"


def test_a_study_chain_follows_only_readable_studies(shared):
    """ResearchSubject?study.identifier=<another sponsor's unpublished study>: like an unknown identifier."""
    h = bearer(shared.token("team-a"))
    own = _shape(shared.http, h, "ResearchSubject?study.identifier=A-1")
    assert [u for _, u in own[2]] == ["http://localhost/fhir/ResearchSubject/subj-leeds-me"]
    assert _shape(shared.http, h, "ResearchSubject?study.identifier=B-2") == \
        _shape(shared.http, h, "ResearchSubject?study.identifier=no-such-study")


def test_revinclude_of_unreadable_resources_adds_nothing(shared, second_christie_observation):
    """A hospital's _revinclude from a shared study adds only what it may read, and no capping warning."""
    h = bearer(shared.token("leeds-ehr"))
    r = shared.http.get("/fhir/ResearchStudy?_id=study-b&_revinclude=ResearchSubject:study", headers=h)
    body = r.get_json()
    assert r.status_code == 200
    included = sorted(e["resource"]["id"] for e in body["entry"] if e["search"]["mode"] == "include")
    assert included == ["subj-leeds-other"]
    assert secret("subj-christie") not in r.get_data(as_text=True)


def test_the_scan_limit_is_documented_and_sane():
    assert 100 <= CHAIN_SCAN_LIMIT <= 100_000


def test_group_totals_do_not_count_member_lists_the_caller_may_not_read(shared):
    """``Group?member=Patient/<another tenant's patient>`` used to answer total 1 (the actual Group was
    filtered out of the entries but counted): Group totals are shown only where the query is exact."""
    h = bearer(shared.token("sponsor-b"))
    assert _shape(shared.http, h, "Group?member=Patient/christie-pat") == \
        _shape(shared.http, h, "Group?member=Patient/no-such-patient")
