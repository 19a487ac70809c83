"""Automatic flows: a new recruiting study -> alerts and proposals only where consent (or a legal basis) allows."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from gateway.api.app import create_app
from gateway.fhir import conventions as cv
from gateway.notify import events
from gateway.notify.flows import counter
from gateway.notify.subscriptions import EXT_FILTER_CRITERIA
from gateway.outbound import outbox
from gateway.outbound.allowlist import AllowList
from gateway.outbound.settings import OutboundSettings

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "fixtures" / "demo"


@pytest.fixture
def app(settings, tmp_path):
    hospitals = tmp_path / "hospitals"
    hospitals.mkdir()
    (hospitals / "leeds.yaml").write_text("name: leeds\nods_code: RR8\nfhir_base_url: https://fhir.leeds.test/R4\n")
    application = create_app(replace(settings, outbound=OutboundSettings(
        hospitals_path=hospitals, allowed_hosts=AllowList.parse("fhir.leeds.test,app.example.org"),
        contact_id_key="flows-test-key")))
    yield application
    application.extensions["gateway.store"].engine.dispose()


def _bundle(name: str) -> dict:
    return json.loads((DEMO / name).read_text())


def _person(service, nhs: str, family: str) -> str:
    """A copy of the demo Leeds patient with another NHS number; -> its Patient id."""
    b = _bundle("03-leeds-patient-glioblastoma.json")
    text = json.dumps(b).replace("9449306060", nhs).replace("Whitaker", family).replace("PL-88213", f"PL-{nhs}") \
        .replace("ECOG-55120", f"ECOG-{nhs}").replace("LTH0042195", f"LTH{nhs}")
    _, results = service.run_bundle(json.loads(text))
    return results[1].write.stored.id


def _consent(service, pid: str, *purposes, status="active") -> str:
    c = {"resourceType": "Consent", "status": status,
         "scope": {"coding": [{"system": cv.CONSENT_SCOPE, "code": "research"}]},
         "category": [{"coding": [{"system": "http://loinc.org", "code": "57016-8"}]}],
         "patient": {"reference": f"Patient/{pid}"}, "policyRule": {"text": "NHS research consent"},
         "provision": {"type": "permit", "purpose": [{"system": s, "code": c} for s, c in purposes]}}
    return service.create(c).stored.id


def _subscribe(service, pid: str) -> str:
    filt = {"url": EXT_FILTER_CRITERIA, "valueString": f"ResearchStudy?patient=Patient/{pid}"}
    channel = {"type": "rest-hook", "endpoint": "https://app.example.org/hook", "payload": "application/fhir+json"}
    sub = {"resourceType": "Subscription", "status": "requested", "reason": "alerts",
           "criteria": cv.TOPIC_NEW_MATCHING_STUDY, "_criteria": {"extension": [filt]}, "channel": channel}
    return service.create(sub).stored.id


def _subjects(store, pid: str) -> list[dict]:
    from gateway.fhir.search import parse_search

    _, rows = store.search(parse_search("ResearchSubject", [("individual", f"Patient/{pid}")]))
    return [r.resource() for r in rows]


def test_new_study_alerts_and_proposes_only_with_consent(app):
    store, service = app.extensions["gateway.store"], app.extensions["gateway.service"]
    flows = app.extensions["gateway.root"].flows()
    yes = _person(service, "9449306060", "Whitaker")
    no = _person(service, "9434765919", "Nolan")
    _consent(service, yes, cv.PURPOSE_TRIAL_ALERTS, cv.PURPOSE_RESEARCH)
    sub_yes, sub_no = _subscribe(service, yes), _subscribe(service, no)
    assert flows.tick().alerts == 0, "no study yet"

    service.run_bundle(_bundle("01-sponsor-glioblastoma-study.json"))
    service.run_bundle(_bundle("02-sponsor-brain-metastases-study.json"))
    stats = flows.tick()
    assert (stats.alerts, stats.proposals) == (1, 1), stats.summary()
    with store.engine.connect() as conn:
        got = events.events(conn, sub_yes)
        assert len(got) == 1 and got[0].number == 1
        assert events.events(conn, sub_no) == [], "no consent: no alert"
    study_id = got[0].focus.split("/")[1]
    assert store.read("ResearchStudy", study_id).resource()["title"].startswith("ReGlio"), "not the metastases study"
    subjects = _subjects(store, yes)
    assert [s["status"] for s in subjects] == ["potential-candidate"]
    assert any(i["system"] == cv.CONTACT_REQUEST_ID for i in subjects[0]["identifier"])
    _, jobs = outbox.list_jobs(store, kind="research-subject")
    assert len(jobs) == 1 and jobs[0].destination == "leeds"
    assert _subjects(store, no) == [], "no consent: not proposed"
    assert counter(store, "blocked:alert:no-alert-consent") == 1
    assert stats.blocked["proposal:no-basis"] == 1, "no consent, no legal basis: not proposed"

    again = flows.tick()
    assert (again.alerts, again.proposals) == (0, 0), "nobody is told twice"
    flows.full()
    assert len(_subjects(store, yes)) == 1
    with store.engine.connect() as conn:
        assert len(events.events(conn, sub_yes)) == 1
    assert counter(store, "blocked:alert:no-alert-consent") == 1, "a blocked action is counted once"


def test_consent_granted_later_rematches_the_person(app):
    store, service = app.extensions["gateway.store"], app.extensions["gateway.service"]
    flows = app.extensions["gateway.root"].flows()
    pid = _person(service, "9449306060", "Whitaker")
    sub = _subscribe(service, pid)
    service.run_bundle(_bundle("01-sponsor-glioblastoma-study.json"))
    assert flows.tick().alerts == 0
    _consent(service, pid, cv.PURPOSE_TRIAL_ALERTS)
    assert flows.tick().alerts == 1
    with store.engine.connect() as conn:
        assert len(events.events(conn, sub)) == 1


def test_withdrawn_consent_means_nothing_for_the_next_study(app):
    store, service = app.extensions["gateway.store"], app.extensions["gateway.service"]
    flows = app.extensions["gateway.root"].flows()
    pid = _person(service, "9449306060", "Whitaker")
    cid = _consent(service, pid, cv.PURPOSE_TRIAL_ALERTS)
    sub = _subscribe(service, pid)
    flows.tick()
    consent = store.read("Consent", cid).resource()
    service.update("Consent", cid, {**consent, "status": "inactive"})
    service.run_bundle(_bundle("01-sponsor-glioblastoma-study.json"))
    assert flows.tick().alerts == 0
    with store.engine.connect() as conn:
        assert events.events(conn, sub) == []


def test_study_that_stops_recruiting_cancels_undelivered_alerts(app):
    store, service = app.extensions["gateway.store"], app.extensions["gateway.service"]
    flows = app.extensions["gateway.root"].flows()
    pid = _person(service, "9449306060", "Whitaker")
    _consent(service, pid, cv.PURPOSE_TRIAL_ALERTS)
    sub = _subscribe(service, pid)
    _, results = service.run_bundle(_bundle("01-sponsor-glioblastoma-study.json"))
    assert flows.tick().alerts == 1
    study = next(r.write.stored for r in results if r.write.stored.type == "ResearchStudy")
    body = {**store.read("ResearchStudy", study.id).resource(), "status": "closed-to-accrual"}
    service.update("ResearchStudy", study.id, body)
    assert flows.tick().cancelled == 1
    with store.engine.connect() as conn:
        assert events.events(conn, sub) == []


def test_only_one_worker_holds_the_flows_lease(app):
    from gateway.notify.flows import take_lease

    store = app.extensions["gateway.store"]
    assert take_lease(store, "flows-test", "w1", 30)
    assert take_lease(store, "flows-test", "w1", 30), "the holder renews"
    assert not take_lease(store, "flows-test", "w2", 30), "another worker waits"
    assert take_lease(store, "flows-test", "w2", -1) is False
    assert take_lease(store, "flows-test", "w1", -1), "the holder may shorten its own lease"
    assert take_lease(store, "flows-test", "w2", 30), "an expired lease is taken over"


def test_research_subject_status_topic(app):
    store, service = app.extensions["gateway.store"], app.extensions["gateway.service"]
    flows = app.extensions["gateway.root"].flows()
    pid = _person(service, "9449306060", "Whitaker")
    filt = {"url": EXT_FILTER_CRITERIA, "valueString": f"ResearchSubject?patient=Patient/{pid}"}
    channel = {"type": "rest-hook", "endpoint": "https://app.example.org/hook", "payload": "application/fhir+json"}
    sub = service.create({"resourceType": "Subscription", "status": "requested", "reason": "my requests",
                          "criteria": cv.TOPIC_RESEARCH_SUBJECT_STATUS, "_criteria": {"extension": [filt]},
                          "channel": channel}).stored.id
    study = service.create({"resourceType": "ResearchStudy", "status": "active"}).stored.id
    rs = service.create({"resourceType": "ResearchSubject", "status": "candidate",
                         "study": {"reference": f"ResearchStudy/{study}"},
                         "individual": {"reference": f"Patient/{pid}"}}).stored
    other = _person(service, "9434765919", "Nolan")
    service.create({"resourceType": "ResearchSubject", "status": "candidate",
                    "study": {"reference": f"ResearchStudy/{study}"}, "individual": {"reference": f"Patient/{other}"}})
    assert flows.tick().status_events == 1, "only this person's request"
    body = {k: v for k, v in store.read("ResearchSubject", rs.id).resource().items() if k != "meta"}
    service.update("ResearchSubject", rs.id, {**body, "period": {"start": "2026-11-23"}})
    assert flows.tick().status_events == 0, "no status change, no event"
    service.update("ResearchSubject", rs.id, {**body, "status": "screening"})
    assert flows.tick().status_events == 1
    with store.engine.connect() as conn:
        assert [e.focus for e in events.events(conn, sub)] == [f"ResearchSubject/{rs.id}"] * 2


def test_legal_basis_proposes_without_consent_but_never_against_the_optout(app, tmp_path):
    from gateway.fhir.search import parse_search
    from gateway.notify.policy import OptOutList, Policy, load_legal_bases

    store, service = app.extensions["gateway.store"], app.extensions["gateway.service"]
    flows = app.extensions["gateway.root"].flows()
    bases = tmp_path / "legal-bases"
    bases.mkdir()
    (bases / "programme.yaml").write_text(
        "name: Brain tumour programme\nreference: CAG-TEST-1\n"
        "studies: ['https://neuro-onc-trials.example.org/id|NOTC-GBM-01']\n")
    flows.policy = Policy(load_legal_bases(bases), OptOutList(["9434765919"]))
    allowed = _person(service, "9449306060", "Whitaker")
    opted_out = _person(service, "9434765919", "Nolan")
    service.run_bundle(_bundle("01-sponsor-glioblastoma-study.json"))
    stats = flows.tick()
    assert stats.proposals == 1
    assert [s["status"] for s in _subjects(store, allowed)] == ["potential-candidate"]
    assert _subjects(store, opted_out) == [], "national data opt-out: never proposed under a legal basis"
    assert counter(store, "blocked:proposal:national-data-opt-out") == 1
    _, audits = store.search(parse_search("AuditEvent", [("_count", "100")]))
    blocked = [a.resource() for a in audits if "national-data-opt-out" in a.resource().get("outcomeDesc", "")]
    assert len(blocked) == 1 and f"Patient/{opted_out}" in str(blocked[0]["entity"])


def test_subscribing_after_consent_rematches_the_person(app):
    store, service = app.extensions["gateway.store"], app.extensions["gateway.service"]
    flows = app.extensions["gateway.root"].flows()
    pid = _person(service, "9449306060", "Whitaker")
    service.run_bundle(_bundle("01-sponsor-glioblastoma-study.json"))
    _consent(service, pid, cv.PURPOSE_TRIAL_ALERTS)
    assert flows.tick().alerts == 0, "consent but no subscription yet: nobody to tell"
    sub = _subscribe(service, pid)
    assert flows.tick().alerts == 1, "the subscription completes the opt-in"
    with store.engine.connect() as conn:
        assert len(events.events(conn, sub)) == 1


def _subscribe_narrowed(service, pid: str, query: str) -> str:
    filt = {"url": EXT_FILTER_CRITERIA, "valueString": f"ResearchStudy?patient=Patient/{pid}&{query}"}
    channel = {"type": "rest-hook", "endpoint": "https://app.example.org/hook", "payload": "application/fhir+json"}
    return service.create({"resourceType": "Subscription", "status": "requested", "reason": "narrowed alerts",
                           "criteria": cv.TOPIC_NEW_MATCHING_STUDY, "_criteria": {"extension": [filt]},
                           "channel": channel}).stored.id


def test_condition_and_area_filters_narrow_a_person_with_records(app):
    """Issue #14: for a person with records, $match still decides and the subscription's filters narrow it."""
    store, service = app.extensions["gateway.store"], app.extensions["gateway.service"]
    flows = app.extensions["gateway.root"].flows()
    pid = _person(service, "9449306060", "Whitaker")
    _consent(service, pid, cv.PURPOSE_TRIAL_ALERTS)
    near = _subscribe_narrowed(service, pid, "condition=http://snomed.info/sct|126952004&postcode=LS6&distance=80")
    far = _subscribe_narrowed(service, pid, "condition=http://snomed.info/sct|126952004&postcode=TR1&distance=20")
    lung = _subscribe_narrowed(service, pid, "condition=http://snomed.info/sct|363358000")
    broken = _subscribe_narrowed(service, pid, "postcode=ZZ9&distance=50")
    flows.tick()
    service.run_bundle(_bundle("01-sponsor-glioblastoma-study.json"))  # sites: Leeds and Manchester
    stats = flows.tick()
    assert stats.alerts == 1, stats.summary()
    with store.engine.connect() as conn:
        assert len(events.events(conn, near)) == 1
        assert events.events(conn, far) == [], "no site within 20 km of TR1"
        assert events.events(conn, lung) == [], "a glioblastoma study is not a kind of lung cancer"
        assert events.events(conn, broken) == [], "an area the gateway cannot place tells no one"


def test_a_new_study_screens_only_people_who_may_be_told_or_proposed(app):
    """The flows start from the consenting side: people who fit a new study but have neither a subscription nor
    research consent (nor a legal basis) are never read or screened; a subscriber and a consenting person are."""
    service = app.extensions["gateway.service"]
    flows = app.extensions["gateway.root"].flows()
    told = _person(service, "9449306060", "Whitaker")
    _consent(service, told, cv.PURPOSE_TRIAL_ALERTS)
    _subscribe(service, told)
    proposed = _person(service, "9434765919", "Nolan")
    _consent(service, proposed, cv.PURPOSE_RESEARCH)
    for i, nhs in enumerate(("9434765013", "9434765021", "9434765048")):  # fit the study, agreed to nothing
        _person(service, nhs, f"Bystander{i}")
    flows.tick()
    service.run_bundle(_bundle("01-sponsor-glioblastoma-study.json"))
    stats = flows.tick()
    assert (stats.alerts, stats.proposals) == (1, 1), stats.summary()
    assert stats.screened == 2, "only the subscriber and the person who consents to research are screened"
    # the subscriber may not be proposed (counted, as before); the three others are not even counted
    assert stats.blocked == {"proposal:no-basis": 1}, stats.summary()


def test_two_workers_acting_on_the_same_study_tell_and_propose_once(app):
    """Two workers (or a worker and ``gateway rematch``) that both read the study's notices before either wrote
    them: the second finds every notice already written and does nothing (no UNIQUE error, no second alert,
    proposal or blocked count), on SQLite and PostgreSQL."""
    store, service = app.extensions["gateway.store"], app.extensions["gateway.service"]
    root = app.extensions["gateway.root"]
    first, second = root.flows(), root.flows()
    yes = _person(service, "9449306060", "Whitaker")
    no = _person(service, "9434765919", "Nolan")
    _consent(service, yes, cv.PURPOSE_TRIAL_ALERTS, cv.PURPOSE_RESEARCH)
    sub_yes, sub_no = _subscribe(service, yes), _subscribe(service, no)
    _, results = service.run_bundle(_bundle("01-sponsor-glioblastoma-study.json"))
    sid = next(r.write.stored.id for r in results if r.write.stored.type == "ResearchStudy")
    second.state.refresh()
    stale = second._notices(sid)  # what the second worker read before the first wrote anything
    assert stale == {}
    stats = first.tick()
    assert (stats.alerts, stats.proposals) == (1, 1), stats.summary()
    second._notices = lambda _sid: stale  # type: ignore[method-assign]
    from gateway.notify.flows import FlowStats

    again = FlowStats()
    second.study_matches(sid, again)  # raised "UNIQUE constraint failed: match_notices" before
    assert (again.alerts, again.proposals) == (0, 0), again.summary()
    assert sum(again.blocked.values()) == 1 and again.blocked["proposal:no-basis"] == 1, again.summary()
    with store.engine.connect() as conn:
        assert len(events.events(conn, sub_yes)) == 1, "told once"
        assert events.events(conn, sub_no) == []
    assert len(_subjects(store, yes)) == 1, "proposed once"
    assert counter(store, "blocked:alert:no-alert-consent") == 1, "a blocked alert is counted once"
    _, jobs = outbox.list_jobs(store, kind="subscription-notification")
    assert len([j for j in jobs if j.destination == f"Subscription/{sub_yes}"]) == 1


def test_bulk_alerts_number_events_per_subscription(app):
    """delivery.enqueue_events (the flows' bulk path) numbers events as enqueue_event does, one job each."""
    from gateway.notify import delivery

    store, service = app.extensions["gateway.store"], app.extensions["gateway.service"]
    pids = [_person(service, nhs, f"P{i}") for i, nhs in enumerate(("9449306060", "9434765919"))]
    a, b = (_subscribe(service, p) for p in pids)
    with store.write() as tx:
        one = delivery.enqueue_event(tx.conn, a, cv.TOPIC_NEW_MATCHING_STUDY, "ResearchStudy/x", 3)
        many = delivery.enqueue_events(tx.conn, [(a, cv.TOPIC_NEW_MATCHING_STUDY, "ResearchStudy/y"),
                                                 (b, cv.TOPIC_NEW_MATCHING_STUDY, "ResearchStudy/y"),
                                                 (a, cv.TOPIC_NEW_MATCHING_STUDY, "ResearchStudy/z")], 3)
    assert one.number == 1 and [e.number for e in many] == [2, 1, 3]
    with store.engine.connect() as conn:
        assert [(e.number, e.focus) for e in events.events(conn, a)] == [
            (1, "ResearchStudy/x"), (2, "ResearchStudy/y"), (3, "ResearchStudy/z")]
        assert [(e.number, e.focus) for e in events.events(conn, b)] == [(1, "ResearchStudy/y")]
        assert events.get(conn, a).events_since_start == 3
    _, jobs = outbox.list_jobs(store, kind="subscription-notification")
    assert sorted((j.destination, j.payload["event"]) for j in jobs if j.payload.get("event")) == sorted([
        (f"Subscription/{a}", 1), (f"Subscription/{a}", 2), (f"Subscription/{a}", 3), (f"Subscription/{b}", 1)])


def test_a_study_proposes_many_people_reading_their_records_together(app, monkeypatch):
    """The proposals of one study read their people's Patients in one statement, not one round trip each."""
    store, service = app.extensions["gateway.store"], app.extensions["gateway.service"]
    flows = app.extensions["gateway.root"].flows()
    people = [_person(service, nhs, f"Family{k}") for k, nhs in enumerate(("9449306060", "9434765919", "9449305552"))]
    for pid in people:
        _consent(service, pid, cv.PURPOSE_RESEARCH)
    service.run_bundle(_bundle("01-sponsor-glioblastoma-study.json"))
    calls: list[list[tuple[str, str]]] = []
    real = store.read_many
    monkeypatch.setattr(store, "read_many", lambda refs: calls.append(list(refs)) or real(refs))
    stats = flows.tick()
    assert stats.proposals == 3, stats.summary()
    assert all([s["status"] for s in _subjects(store, pid)] == ["potential-candidate"] for pid in people)
    patient_reads = [c for c in calls if any(t == "Patient" for t, _ in c)]
    assert len(patient_reads) == 1 and sorted(i for _, i in patient_reads[0]) == sorted(people), patient_reads


def test_a_new_studys_alerts_are_committed_before_its_proposals(app, monkeypatch):
    """A broad study's alerts never wait for its proposals: the alert jobs are in the outbox when the first
    proposal is planned."""
    store, service = app.extensions["gateway.store"], app.extensions["gateway.service"]
    flows = app.extensions["gateway.root"].flows()
    told = _person(service, "9449306060", "Whitaker")
    _consent(service, told, cv.PURPOSE_TRIAL_ALERTS)
    sub = _subscribe(service, told)
    proposed = _person(service, "9434765919", "Nolan")
    _consent(service, proposed, cv.PURPOSE_RESEARCH)
    flows.tick()
    service.run_bundle(_bundle("01-sponsor-glioblastoma-study.json"))
    seen_at_proposal: list[int] = []
    real = flows._propose

    def propose(*args, **kwargs):
        with store.engine.connect() as conn:
            seen_at_proposal.append(len(events.events(conn, sub)))
        return real(*args, **kwargs)

    monkeypatch.setattr(flows, "_propose", propose)
    stats = flows.tick()
    assert (stats.alerts, stats.proposals) == (1, 1), stats.summary()
    assert seen_at_proposal == [1], "the alert was committed before the proposal was planned"
    assert stats.alerts_enqueued_at is not None


def test_people_acted_on_in_batches_are_each_told_and_proposed_once(app, monkeypatch):
    """A broad study's fitting people are acted on a batch at a time: with batches of one, every subscriber is
    still told once and every consenting person proposed once, and a second pass does nothing."""
    from gateway.notify import flows as flows_module

    monkeypatch.setattr(flows_module, "ACT_BATCH", 1)
    store, service = app.extensions["gateway.store"], app.extensions["gateway.service"]
    flows = app.extensions["gateway.root"].flows()
    subs = []
    for k, nhs in enumerate(("9449306060", "9434765919", "9449305552")):
        pid = _person(service, nhs, f"Family{k}")
        _consent(service, pid, cv.PURPOSE_TRIAL_ALERTS, *([cv.PURPOSE_RESEARCH] if k else []))
        subs.append(_subscribe(service, pid))
    service.run_bundle(_bundle("01-sponsor-glioblastoma-study.json"))
    stats = flows.tick()
    assert (stats.alerts, stats.proposals) == (3, 2), stats.summary()
    with store.engine.connect() as conn:
        assert [len(events.events(conn, sub)) for sub in subs] == [1, 1, 1]
    flows.full()
    with store.engine.connect() as conn:
        assert [len(events.events(conn, sub)) for sub in subs] == [1, 1, 1], "nobody is told twice"


def test_the_subscriptions_are_kept_from_the_change_feed_not_read_again_each_tick(app):
    """At national scale there are millions of subscriptions: a worker reads them once, then applies the
    Subscription changes the feed shows (created, turned off, deleted), including those another worker's tick
    handled while this one did not hold the lease."""
    store, service = app.extensions["gateway.store"], app.extensions["gateway.service"]
    root = app.extensions["gateway.root"]
    one, other = root.flows(), root.flows()
    reads = []
    live = one._live_subscriptions
    one._live_subscriptions = lambda topic: reads.append(topic) or live(topic)  # type: ignore[method-assign]
    a = _person(service, "9449306060", "Whitaker")
    b = _person(service, "9434765919", "Nolan")
    sub_a = _subscribe(service, a)
    one.tick()
    assert one._subscriptions() == {f"Patient/{a}": [sub_a]}
    loads = len(reads)
    sub_b = _subscribe(service, b)
    other.tick()  # the other worker handles the new subscription and moves the shared cursor past it
    one.tick()
    assert one._subscriptions() == {f"Patient/{a}": [sub_a], f"Patient/{b}": [sub_b]}
    off = {k: v for k, v in store.read("Subscription", sub_a).resource().items() if k != "meta"}
    service.update("Subscription", sub_a, {**off, "status": "off"})
    service.delete("Subscription", sub_b)
    one.tick()
    assert one._subscriptions() == {} and one._interests == {}
    assert len(reads) == loads, "applied from the feed, not read again"
    assert one._subscriptions() == other._subscriptions()
    fresh = root.flows()
    assert fresh._subscriptions() == {}, "a new worker's first read agrees"
