"""Automatic flows, following the store's change feed (``gateway worker`` and ``gateway rematch``).

- A ResearchStudy created recruiting, or that starts recruiting (or whose eligibility or sites change while
  recruiting): find the people who may fit. For each person not told or proposed before for that study:
  an alert event to their ``new-matching-study`` subscriptions when ``trial-alerts`` consent allows, and a
  ``ResearchSubject`` (status ``potential-candidate``) written through the outbox when ``HRESCH`` consent or a
  legal basis allows (never for a person on the national data opt-out under a legal basis).
- A person's data changes (a new Condition, a Consent granted, ...): re-match that person against every
  recruiting study, with the same rules.
- A study stops recruiting: its alert events not yet delivered are cancelled. Contact requests already made
  are still delivered.
- A ``new-matching-study`` subscription whose filters name a ``condition`` (and ``postcode`` + ``distance``) is
  told only of studies about that condition or a kind of it (through the terminology) with a recruiting site
  within the distance. For a person with records that narrows the $match rules; a person known only by an
  alerts-only Patient (the NHS number, tagged ``ALERTS_ONLY_TAG``, made by the opt-in of /patient/alerts) is never
  matched by their (empty) records or proposed: the filters alone decide, and without a condition nothing is sent.
Every blocked automatic action is counted (``counters`` rows ``blocked:<reason>``) and audited once per
(study, person); a person is never told or proposed twice for the same study (``match_notices``).
"""

from __future__ import annotations

import gc
import logging
import threading
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime

from sqlalchemy import delete, insert, select, update

from gateway.fhir import conventions as cv
from gateway.fhir.conventions import CONTACT_REQUEST_ID, TOPIC_NEW_MATCHING_STUDY, TOPIC_RESEARCH_SUBJECT_STATUS
from gateway.fhir.errors import FhirError
from gateway.fhir.search import parse_search
from gateway.matching import geo
from gateway.matching.index import MatchQuery
from gateway.matching.profile import PatientProfile, subject_ref
from gateway.matching.state import PERSON_TYPES, STUDY_TYPES, MatchingState
from gateway.notify import delivery, events
from gateway.notify.policy import Policy
from gateway.notify.subscriptions import filters_of
from gateway.outbound.contact import plan_route, ref_id, with_contact_identifier
from gateway.outbound.destinations import Destinations
from gateway.store import bulk, feed
from gateway.store import schema as s
from gateway.store.audit import record_automatic, record_automatic_for
from gateway.store.clock import now_iso
from gateway.store.interactions import FhirService
from gateway.store.profiles import Filter
from gateway.store.repo import Store
from gateway.terminology.systems import normalise_coding

log = logging.getLogger("gateway.notify.flows")

CURSOR = "automatic-flows"
FLOW_TYPES = (*STUDY_TYPES, *PERSON_TYPES, "Subscription", "ResearchSubject")
RECRUITING = "active"  # R4 ResearchStudy.status for "recruiting"
# meta.tag of the minimal Patient the gateway makes for a person it holds no record of, who opts in to alerts
ALERTS_ONLY_TAG = cv.ALERTS_ONLY_TAG
DEFAULT_DISTANCE_KM = 50.0
LIVE_STATUSES = ("requested", "active", "error")  # a Subscription the flows notify ("off" is not)


@dataclass(frozen=True)
class Interest:
    """A subscription's narrowing filters: condition codes (any; empty: any condition) and an area."""

    codes: frozenset[tuple[str, str]]
    centre: geo.LatLon | None  # the postcode district's centroid; None: anywhere
    km: float
    broken: bool = False  # a filter value the gateway cannot apply: never notified (rather than everyone)


def interest_of(filters: dict[str, set[str]]) -> Interest | None:
    """The ``condition`` / ``postcode`` / ``distance`` filters of a subscription; None when it has none."""
    if not (filters.get("condition") or filters.get("postcode")):
        return None
    codes: set[tuple[str, str]] = set()
    broken = False
    for value in filters.get("condition", ()):
        system, bar, code = value.rpartition("|")
        if bar and system and code:
            codes.add(normalise_coding(system, code))
        else:
            broken = True
    centre = None
    km = DEFAULT_DISTANCE_KM
    if filters.get("postcode"):
        centre = geo.postcode_position(sorted(filters["postcode"])[0])
        try:
            km = float(sorted(filters.get("distance") or {str(DEFAULT_DISTANCE_KM)})[0])
        except ValueError:
            broken = True
        broken = broken or centre is None or not 0 < km <= 1000
    return Interest(frozenset(codes), centre, km, broken)


@dataclass
class FlowStats:
    changes: int = 0
    studies: int = 0
    people: int = 0
    alerts: int = 0
    proposals: int = 0
    cancelled: int = 0
    status_events: int = 0
    screened: int = 0  # people the database returned for a new study (screened unless the columns decide it)
    alerts_enqueued_at: float | None = None  # time.perf_counter() when the last alert jobs were committed
    blocked: Counter = field(default_factory=Counter)

    def summary(self) -> str:
        blocked = ", ".join(f"{k} {v}" for k, v in sorted(self.blocked.items())) or "none"
        return (f"changes {self.changes}, studies checked {self.studies}, people checked {self.people}, "
                f"alerts {self.alerts}, proposals {self.proposals}, cancelled events {self.cancelled}, "
                f"status events {self.status_events}, people screened for new studies {self.screened}, "
                f"blocked: {blocked}")


def take_lease(store: Store, name: str, owner: str, seconds: float) -> bool:
    """Hold the named lease for ``seconds`` if it is free, expired or already ours (one writer at a time)."""
    c = s.counters
    key, who = f"lease:{name}", f"lease-owner:{name}:{owner}"
    now = int(time.time())
    with store.write() as tx:
        tx.lock(key)
        rows = dict(tx.conn.execute(select(c.c.name, c.c.value).where(c.c.name.like(f"lease%:{name}%"))).all())
        expiry = rows.get(key, 0)
        holder = next((n for n in rows if n.startswith(f"lease-owner:{name}:")), None)
        if expiry > now and holder not in (None, who):
            return False
        tx.conn.execute(delete(c).where(c.c.name.in_([key, *([holder] if holder else [])])))
        tx.conn.execute(insert(c), [{"name": key, "value": now + int(seconds)}, {"name": who, "value": now}])
    return True


class _BatchReads:
    """The reader of one batch of proposals: their Patients (and the Organizations those name) fetched together,
    a few statements per 500 people, and every other resource read once for the batch (a broad study proposes
    thousands of people, each route reading the same study, sites and trusts). A read of the batch's own moment:
    what is written meanwhile is seen by the next batch."""

    def __init__(self, read, store: Store, refs: list[tuple[str, str]]):
        self._read, self._seen = read, {}
        refs = sorted(set(refs))
        for i in range(0, len(refs), 500):
            part = refs[i:i + 500]
            found = {(st.type, st.id): st.resource() for st in store.read_many(part)}
            self._seen.update({ref: found.get(ref) for ref in part})
            orgs = {("Organization", oid) for res in found.values()
                    if (oid := ref_id(res.get("managingOrganization"), "Organization"))} - self._seen.keys()
            if orgs:
                got = {(st.type, st.id): st.resource() for st in store.read_many(sorted(orgs))}
                self._seen.update({ref: got.get(ref) for ref in orgs})

    def __call__(self, rtype: str, rid: str) -> dict | None:
        key = (rtype, rid)
        if key not in self._seen:
            self._seen[key] = self._read(rtype, rid)
        return self._seen[key]


def count(conn, name: str, n: int = 1) -> None:
    """Add ``n`` to the counter ``name`` (created at 0)."""
    c = s.counters
    done = conn.execute(update(c).where(c.c.name == name).values(value=c.c.value + n)).rowcount
    if not done:
        conn.execute(insert(c).values(name=name, value=n))


ACT_BATCH = 2000  # people a new study's flows act on at a time


def _batches(found: Iterable[PatientProfile]) -> Iterator[dict[str, PatientProfile]]:
    """Profiles -> dicts of ACT_BATCH people by key: a broad study's tens of thousands of fitting people are
    acted on (and dropped) a batch at a time, so the memory they hold, and the garbage collector's work over it,
    stays that of one batch."""
    part: dict[str, PatientProfile] = {}
    for p in found:
        part[p.key] = p
        if len(part) >= ACT_BATCH:
            yield part
            part = {}
    if part:
        yield part


_gc_lock = threading.Lock()
_gc_paused = 0
_gc_saved: tuple[int, int, int] | None = None
NO_FULL_COLLECTION = 1 << 30  # gc threshold 2: never reached


@contextmanager
def young_collections_only() -> Iterator[None]:
    """Run the block with the garbage collector's full passes paused (the young generations still run, so cycles
    made meanwhile are collected as usual).

    A broad study's flows make and drop hundreds of thousands of objects; each time the survivors of the young
    generations grew by a quarter, CPython scanned every tracked object of the process. Measured at 1,000,000
    people (docs/scale.md): 14 full passes took 4.5 s of a 14 s study. Threads share the setting: the first to
    enter pauses, the last to leave restores what was set before."""
    global _gc_paused, _gc_saved
    with _gc_lock:
        if _gc_paused == 0:
            _gc_saved = gc.get_threshold()
            gc.set_threshold(_gc_saved[0], _gc_saved[1], NO_FULL_COLLECTION)
        _gc_paused += 1
    try:
        yield
    finally:
        with _gc_lock:
            _gc_paused -= 1
            if _gc_paused == 0 and _gc_saved is not None:
                gc.set_threshold(*_gc_saved)


def claim_notices(conn, study_id: str, kind: str, persons: list[str], at: str) -> set[str]:
    """Record that ``persons`` were told / proposed / blocked (``kind``) for a study, idempotently (INSERT ... ON
    CONFLICT DO NOTHING on SQLite and PostgreSQL); returns the persons whose notice this call wrote: the others
    had one already (another worker, a rematch), so nothing is to be done for them again.

    On PostgreSQL a concurrent transaction inserting the same notice waits for this one and then does nothing;
    on SQLite writers are serialised. A few statements whatever the number (store.bulk)."""
    persons = sorted(set(persons))
    if not persons:
        return set()
    rows = [{"study_id": study_id, "person": p, "kind": kind, "at": at} for p in persons]
    return set(bulk.insert_rows(conn, s.match_notices, rows, conflict=["study_id", "person", "kind"],
                                returning="person"))


def counter(store: Store, name: str) -> int:
    with store.engine.connect() as conn:
        return int(conn.execute(select(s.counters.c.value).where(s.counters.c.name == name)).scalar() or 0)


@dataclass
class AutomaticFlows:
    store: Store
    service: FhirService
    state: MatchingState
    policy: Policy
    destinations: Destinations
    max_attempts: int = 8
    # The live subscriptions, kept as the change feed shows them change (_sync_subscriptions), not re-read each tick:
    # 'Patient/<id>' -> new-matching-study subscription ids; None: not loaded yet
    _subs: dict[str, list[str]] | None = None
    _interests: dict[str, Interest] | None = None  # subscription id -> its narrowing filters (few)
    _sub_patients: dict[str, list[str]] = field(default_factory=dict)  # subscription id -> its 'Patient/<id>'s
    _subs_seq: int = 0  # the newest Subscription change the maps reflect
    _concepts: dict = field(default_factory=dict)  # (study id, secondary) -> (its StudyCriteria, concepts)
    _status_subs: dict[str, dict[str, set[str]]] | None = None

    # -- entry points ----------------------------------------------------------------------------
    def tick(self, owner: str = "", lease_seconds: float = 30.0) -> FlowStats:
        """Process every change since the last call (the cursor survives restarts).

        With ``owner`` set (worker processes), only the holder of a short lease runs the flows, so several
        workers never act on the same change twice; another takes over when the lease runs out.
        """
        stats = FlowStats()
        if owner and not take_lease(self.store, CURSOR, owner, lease_seconds):
            return stats
        self.state.refresh()
        self._sync_subscriptions()  # what other workers' ticks saw change while this one did not hold the lease
        for batch in feed.follow(self.store, CURSOR, types=FLOW_TYPES):
            self.state.refresh()
            self._handle(batch, stats)
        return stats

    def full(self, progress=None) -> FlowStats:
        """Every recruiting study against everyone (``gateway rematch --full``); notices prevent repeats."""
        stats = FlowStats()
        self.state.refresh()
        self._subs = None  # read them all again
        ids = [sid for sid, sc in self.state.studies.studies.items() if sc.status == RECRUITING]
        for sid in ids:
            self.study_matches(sid, stats)
            if progress:
                progress(1)
        return stats

    # -- change handling ---------------------------------------------------------------------------
    def _handle(self, batch: list[dict], stats: FlowStats) -> None:
        stats.changes += len(batch)
        recheck: set[str] = set()
        stopped: set[str] = set()
        people: set[str] = set()
        for ch in batch:
            rtype, rid = ch["type"], ch["id"]
            if rtype == "ResearchStudy":
                now = (self.state.raw["ResearchStudy"].get(rid) or {}).get("status")
                before = self._previous_status(rid, ch["version"], ch["op"])
                if now == RECRUITING:
                    recheck.add(rid)
                elif before == RECRUITING:
                    stopped.add(rid)
            elif rtype == "Group":
                recheck |= self.state.studies_of_group.get(rid, set())
            elif rtype == "Location":
                recheck |= self.state.studies_of_location.get(rid, set())
            elif rtype == "Subscription":
                # at once: a ResearchSubject later in this batch is matched against the subscriptions as they are
                # (the first call applies every Subscription change committed so far, the next ones find none)
                self._sync_subscriptions()
                # Opting in is a Consent and a Subscription, in either order: re-match the person on both.
                people |= self._subscribed_people(rid)
            elif rtype == "ResearchSubject":
                self._subject_changed(rid, ch["version"], ch["op"], stats)
            else:
                key = self._person_of(rtype, rid, ch["version"])
                if key:
                    people.add(key)
        for sid in stopped:
            with self.store.write() as tx:
                stats.cancelled += events.cancel_for_focus(tx.conn, f"ResearchStudy/{sid}")
        for sid in recheck:
            self.study_matches(sid, stats)
        for key in people:
            self.person_matches(key, stats)

    def _previous_status(self, rid: str, version: int, op: str, rtype: str = "ResearchStudy") -> str | None:
        if op == "create" or version <= 1:
            return None
        try:
            return self.store.vread(rtype, rid, version - 1).resource().get("status")
        except FhirError:  # the previous version was a deletion
            return None

    def _subject_changed(self, rid: str, version: int, op: str, stats: FlowStats) -> None:
        """research-subject-status topic: a contact request created, or its status changed."""
        try:
            current = self.store.vread("ResearchSubject", rid, version).resource()
        except FhirError:  # deleted
            return
        status = current.get("status")
        if op != "create" and self._previous_status(rid, version, op, "ResearchSubject") == status:
            return
        facts = {"patient": (current.get("individual") or {}).get("reference"),
                 "study": (current.get("study") or {}).get("reference"), "status": status}
        targets = [sid for sid, filters in self._status_subscriptions().items()
                   if all(facts.get(name) in values for name, values in filters.items())]
        if not targets:
            return
        with self.store.write() as tx:
            for sid in targets:
                delivery.enqueue_event(tx.conn, sid, TOPIC_RESEARCH_SUBJECT_STATUS, f"ResearchSubject/{rid}",
                                       self.max_attempts)
        stats.status_events += len(targets)

    def _subscribed_people(self, subscription_id: str) -> set[str]:
        """Person keys named by the ``patient`` filter of a new-matching-study Subscription."""
        found = self.store.read_many([("Subscription", subscription_id)])
        if not found:
            return set()
        sub = found[0].resource()
        if sub.get("criteria") != TOPIC_NEW_MATCHING_STUDY:
            return set()
        keys = (self.state.person_for_patient(ref.partition("/")[2]) for ref in filters_of(sub).get("patient", ()))
        return {k for k in keys if k}

    def _person_of(self, rtype: str, rid: str, version: int) -> str | None:
        if rtype == "Patient":
            return self.state.person_for_patient(rid)
        found = self.store.read_many([(rtype, rid)])
        res = found[0].resource() if found else None
        if res is None and version > 1:  # deleted: whom it was about (a deleted exclusion may open studies)
            try:
                res = self.store.vread(rtype, rid, version - 1).resource()
            except FhirError:
                res = None
        ref = subject_ref(res) if res else None
        return self.state.person_for_patient(ref.split("/", 1)[1]) if ref and ref.startswith("Patient/") else None

    # -- matching ----------------------------------------------------------------------------------
    def _query(self) -> MatchQuery:
        return MatchQuery(today=datetime.now(UTC).date())

    def study_matches(self, sid: str, stats: FlowStats) -> None:
        with young_collections_only():
            self._study_matches(sid, stats)

    def _study_matches(self, sid: str, stats: FlowStats) -> None:
        sc = self.state.studies.studies.get(sid)
        study = self.state.raw["ResearchStudy"].get(sid)
        if sc is None or study is None or sc.status != RECRUITING:
            return
        stats.studies += 1
        # From the consenting side: the database returns only people who may be told (trial-alerts consent) or
        # proposed (HRESCH consent, or an NHS number when a legal basis covers the study), and whose codes, sex
        # and age the study admits; only those are screened (no sentences: only who fits is needed here), unless
        # the columns decide the study. Alerts first, so that a broad study's alerts do not wait for its proposals:
        # the people with trial-alerts consent, batch after batch, then the subscribers without it (whose alert is
        # blocked, counted and audited); every proposal decision waits until the study's alerts are queued.
        q = self._query()
        seen = self._notices(sid)
        people = self.state.patients
        alerting: dict[str, str] = {}  # person key -> their notices' person, of those the alert walks returned
        for found in (people.fitting(sc, q, Filter(alerts=True), seen=stats), self._blocked_subscribers(sc, q, stats)):
            for part in _batches(found):
                alerting.update((k, p.nhs_number or k) for k, p in part.items())
                self._act(sid, part, stats, seen=seen, propose=False)
        if interested := self._interested_people(sid):
            self._act(sid, {}, stats, by_interest=interested, seen=seen)
        # Everyone who may be proposed (or whose proposal the national data opt-out blocks) has research consent
        # or, under a legal basis, an NHS number: the proposable walk returns them, alert-consenting or not. Those
        # it returns have no subscription but the ones the alert walks saw, so no alert is decided here.
        proposable = Filter(research=True, nhs=self.policy.basis_for(study) is not None)
        for part in _batches(people.fitting(sc, q, proposable, seen=stats)):
            for key in part:
                alerting.pop(key, None)
            self._act(sid, part, stats, seen=seen, alert=False)
        # the alert walks' people it did not return: no consent to research and no legal basis, nothing to record
        stats.blocked["proposal:no-basis"] += sum(1 for who in alerting.values() if "proposal" not in seen.get(who, ()))

    def _blocked_subscribers(self, sc, q: MatchQuery, stats: FlowStats) -> Iterator[PatientProfile]:
        """Subscribers whose row says no trial-alerts consent and who fit (their alert is blocked, counted and
        audited): few, read by key once the consenting people (found by the consent column's index, however many
        they are) have been acted on."""
        ids = [ref.partition("/")[2] for ref in self._subscriptions()]
        keys = sorted(self.state.patients.without_alerts_consent(ids)) if ids else []
        if keys:
            yield from self.state.patients.fitting(sc, q, Filter(any_consent=True), only=keys, seen=stats)

    def _interested_people(self, sid: str) -> set[str]:
        """Person keys of alerts-only people whose subscription's condition and area fit study ``sid``: the
        subscriber side, screened from the few subscriptions with such filters (not from the population)."""
        self._subscriptions()
        assert self._interests is not None
        fits = {sub for sub in self._interests if self._fits(sub, sid)}
        if not fits:
            return set()
        out: set[str] = set()
        for patient, subs in (self._subs or {}).items():
            if fits.intersection(subs):
                key = self.state.person_for_patient(patient.partition("/")[2])
                if key:
                    out.add(key)
        return out

    def person_matches(self, key: str, stats: FlowStats) -> None:
        found = self.state.patients.get_many([key]).get(key)
        if found is None:
            return
        profile, alerts_only = found
        stats.people += 1
        if alerts_only:  # no records to match: every recruiting study against the opt-in's filters
            for sid, sc in list(self.state.studies.studies.items()):
                if sc.status == RECRUITING:
                    self._act(sid, {}, stats, by_interest={key})
            return
        matches, _ = self.state.studies.screen(profile, self._query())
        for r in matches:
            self._act(r.study_id, {key: profile}, stats)

    def _study_concepts(self, sid: str, secondary: bool) -> set[tuple[str, str]]:
        """Every concept study ``sid``'s conditions are a kind of (metastases only when asked for)."""
        sc = self.state.studies.studies.get(sid)
        hit = self._concepts.get((sid, secondary))
        if hit is not None and hit[0] is sc:  # the same StudyCriteria object: the study has not changed since
            return hit[1]
        out: set[tuple[str, str]] = set()
        for c in sc.criteria if sc else ():
            if c.kind == "condition" and c.label == "Condition" and not c.exclude:
                for a in c.alternatives:
                    for code in a.codes:
                        if secondary or code not in a.secondary:
                            out |= self.state.term.ancestors(*code)
        if len(self._concepts) > 10_000:
            self._concepts.clear()
        self._concepts[(sid, secondary)] = (sc, out)
        return out

    def _fits(self, sub: str, sid: str) -> bool:
        """Does study ``sid`` meet subscription ``sub``'s condition and area filters? (True: it has none.)"""
        interest = (self._interests or {}).get(sub)
        if interest is None:
            return True
        if interest.broken:
            return False
        if interest.codes:
            secondary = any(self.state.term.is_secondary(*k) for k in interest.codes)
            if not interest.codes & self._study_concepts(sid, secondary):
                return False
        if interest.centre is not None:
            sc = self.state.studies.studies.get(sid)
            if sc is None or not any(site.position is not None and
                                     geo.haversine_km(interest.centre, site.position) <= interest.km
                                     for site in sc.sites):
                return False
        return True

    # -- actions -----------------------------------------------------------------------------------
    def _notices(self, sid: str) -> dict[str, set[str]]:
        n = s.match_notices
        out: dict[str, set[str]] = {}
        with self.store.engine.connect() as conn:
            for person, kind in conn.execute(select(n.c.person, n.c.kind).where(n.c.study_id == sid)):
                out.setdefault(person, set()).add(kind)
        return out

    def _act(self, sid: str, fitting: dict[str, PatientProfile], stats: FlowStats,
             by_interest: set[str] | frozenset = frozenset(), seen: dict[str, set[str]] | None = None,
             alert: bool = True, propose: bool = True) -> None:
        """Decide, for everyone who fits study ``sid``, what may happen; write it in bulk.

        ``fitting``: people whose records fit (the $match rules), none of them alerts-only; ``by_interest``:
        alerts-only people whose subscription's filters fit. An alerts-only person is told only through a
        subscription with a condition filter the study meets, and never proposed; anyone else only through
        subscriptions the study meets. ``alert`` / ``propose``: decide that action (False: left for another call).
        """
        study = self.state.raw["ResearchStudy"].get(sid)
        if study is None or not (fitting or by_interest):
            return
        if seen is None:
            seen = self._notices(sid)
        subs_of = self._subscriptions()
        interests = self._interests or {}
        extra = self.state.patients.get_many(sorted(set(by_interest) - fitting.keys())) if by_interest else {}
        people = [(k, fitting[k], False) for k in sorted(fitting)] + [(k, *extra[k]) for k in sorted(extra)]
        alerts: list[tuple[PatientProfile, list[str]]] = []
        proposals: list[PatientProfile] = []
        blocked: list[tuple[PatientProfile, str, str, str]] = []  # (profile, action, reason, why)
        for key, p, alerts_only in people:
            if p.deceased:
                continue
            done = seen.get(p.nhs_number or key, set())
            if not alerts_only and key not in fitting:
                continue  # a person with records is told only of studies their records fit
            if alerts_only:
                done = done | {"proposal"}  # nothing clinical was shared: never proposed to a research team
            if alert and "alert" not in done:
                subs = list(dict.fromkeys(x for pid in p.patient_ids for x in subs_of.get(f"Patient/{pid}", ())
                                          if (not alerts_only or (x in interests and interests[x].codes))
                                          and self._fits(x, sid)))
                if subs:
                    d = self.policy.may_alert(p.consents)
                    if d.allowed:
                        alerts.append((p, subs))
                    elif "alert-blocked" not in done:
                        blocked.append((p, "alert", "no-alert-consent", d.reason))
                    else:
                        stats.blocked["alert:no-alert-consent"] += 1
            if propose and "proposal" not in done:
                d = self.policy.may_propose(study, p.consents, p.nhs_number)
                if d.allowed:
                    proposals.append(p)
                elif not d.blocked_by_optout:
                    # No consent and no legal basis: nothing was going to happen, so nothing is recorded
                    # (most people who fit a study are in this case; a broad study has hundreds of thousands).
                    stats.blocked["proposal:no-basis"] += 1
                elif "proposal-blocked" not in done:
                    blocked.append((p, "proposal", "national-data-opt-out", d.reason))
                else:
                    stats.blocked["proposal:national-data-opt-out"] += 1
        if alerts:
            self._send_alerts(sid, alerts, stats)
        if proposals:
            read = _BatchReads(self._read, self.store, [("Patient", p.patient_ids[0]) for p in proposals])
            for p in proposals:
                self._propose(sid, study, p, stats, blocked, read)
        if blocked:
            self._record_blocked(sid, blocked, stats)

    def _send_alerts(self, sid: str, alerts: list[tuple[PatientProfile, list[str]]], stats: FlowStats) -> None:
        """One transaction, a few statements whatever the number of alerts: the notices are claimed first (a
        person another worker already told is skipped, not an error), then the claimed people's events and
        delivery jobs are written in bulk."""
        at = now_iso()
        with self.store.write() as tx:
            claimed = claim_notices(tx.conn, sid, "alert", [p.nhs_number or p.key for p, _ in alerts], at)
            alerts = [(p, subs) for p, subs in alerts if (p.nhs_number or p.key) in claimed]
            delivery.enqueue_events(tx.conn, [(sub, TOPIC_NEW_MATCHING_STUDY, f"ResearchStudy/{sid}")
                                              for _p, subs in alerts for sub in subs], self.max_attempts)
        stats.alerts += len(alerts)
        stats.alerts_enqueued_at = time.perf_counter()
        record_automatic_for(self.store, "alert", [f"Patient/{i}" for p, _ in alerts for i in p.patient_ids],
                             resources=[f"ResearchStudy/{sid}"],
                             detail=f"trial-alerts consent: alert about ResearchStudy/{sid}")

    def _propose(self, sid: str, study: dict, p: PatientProfile, stats: FlowStats,
                 blocked: list[tuple[PatientProfile, str, str, str]], read: _BatchReads) -> None:
        pid = p.patient_ids[0]
        subject = {"resourceType": "ResearchSubject", "status": "potential-candidate",
                   "study": {"reference": f"ResearchStudy/{sid}"}, "individual": {"reference": f"Patient/{pid}"}}
        try:
            route = plan_route(subject, read, self.destinations, self.destinations.settings.contact_id_key)
            subject = with_contact_identifier(subject, route.contact_id)
            result = self.service.create(subject, if_none_exist=f"identifier={CONTACT_REQUEST_ID}|{route.contact_id}")
        except FhirError as exc:
            blocked.append((p, "proposal", "no-route", exc.diagnostics))
            return
        with self.store.write() as tx:
            first = claim_notices(tx.conn, sid, "proposal", [p.nhs_number or p.key], now_iso())
        if not first:  # another worker proposed this person meanwhile (the conditional create made no second)
            return
        stats.proposals += 1
        record_automatic(self.store, "propose", people=[f"Patient/{pid}"],
                         resources=[f"ResearchStudy/{sid}", f"ResearchSubject/{result.stored.id}"],
                         detail="proposed to the research team (ResearchSubject potential-candidate)")

    def _record_blocked(self, sid: str, blocked: list[tuple[PatientProfile, str, str, str]],
                        stats: FlowStats) -> None:
        """Count and audit each blocked action once per (study, person); a rematch does not repeat it."""
        at = now_iso()
        by_reason: dict[tuple[str, str], list[tuple[PatientProfile, str]]] = {}
        with self.store.write() as tx:
            claimed = {action: claim_notices(tx.conn, sid, f"{action}-blocked",
                                             [p.nhs_number or p.key for p, a, _, _ in blocked if a == action], at)
                       for action in sorted({a for _, a, _, _ in blocked})}
            for p, action, reason, why in blocked:
                if (p.nhs_number or p.key) in claimed[action]:  # not counted by another worker meanwhile
                    by_reason.setdefault((action, reason), []).append((p, why))
                    stats.blocked[f"{action}:{reason}"] += 1
            for (action, reason), people in by_reason.items():
                count(tx.conn, f"blocked:{action}:{reason}", len(people))
        for (action, reason), people in by_reason.items():
            patients = [f"Patient/{i}" for p, _ in people for i in p.patient_ids]
            record_automatic_for(self.store, f"{action}-blocked", patients, resources=[f"ResearchStudy/{sid}"],
                                 status=403, detail=f"{reason}: {people[0][1]}")

    def _read(self, rtype: str, rid: str) -> dict | None:
        raw = self.state.raw.get(rtype, {}).get(rid)
        if raw is not None:
            return raw
        found = self.store.read_many([(rtype, rid)])
        return found[0].resource() if found else None

    def _live_subscriptions(self, topic: str) -> dict[str, dict[str, set[str]]]:
        """Subscription id -> its filters {name: values}, for live (not ``off``) subscriptions to ``topic``.

        The search index narrows the read to that topic's subscriptions (criteria and status are indexed).
        """
        out: dict[str, dict[str, set[str]]] = {}
        offset = 0
        while True:
            q = parse_search("Subscription", [("criteria:exact", topic), ("status", ",".join(LIVE_STATUSES)),
                                              ("_count", "1000"), ("_offset", str(offset))])
            _, rows = self.store.search(q)
            for st in rows:
                out[st.id] = filters_of(st.resource())
            if len(rows) < 1000:
                break
            offset += 1000
        return out

    def _subscriptions(self) -> dict[str, list[str]]:
        """'Patient/<id>' -> ids of live new-matching-study subscriptions filtered on that patient (and, in
        ``_interests``, the narrowing filters of those that have some); read all at the first use, then kept."""
        if self._subs is None:
            self._load_subscriptions()
        assert self._subs is not None
        return self._subs

    def _status_subscriptions(self) -> dict[str, dict[str, set[str]]]:
        """Subscription id -> filters of the live research-subject-status subscriptions (kept like ``_subs``)."""
        if self._subs is None or self._status_subs is None:
            self._load_subscriptions()
        assert self._status_subs is not None
        return self._status_subs

    def _load_subscriptions(self) -> None:
        # the newest Subscription change first: one committed meanwhile is applied again by the next sync (the
        # feed's numbers follow commit order, so none before it can still appear)
        seq = feed.latest(self.store, ("Subscription",))
        self._subs, self._interests, self._sub_patients = {}, {}, {}
        self._status_subs = self._live_subscriptions(TOPIC_RESEARCH_SUBJECT_STATUS)
        for sid, filters in self._live_subscriptions(TOPIC_NEW_MATCHING_STUDY).items():
            self._learn(sid, TOPIC_NEW_MATCHING_STUDY, filters)
        self._subs_seq = seq

    def _sync_subscriptions(self) -> None:
        """Apply the Subscription changes after ``_subs_seq`` to the maps: each changed subscription is read again
        and filed afresh (or dropped when deleted, off or of another topic). A few reads, however many
        subscriptions there are; nothing when the maps are not loaded yet."""
        if self._subs is None:
            return
        while changes := self.store.changes_since(self._subs_seq, limit=1000, types=("Subscription",)):
            ids = list(dict.fromkeys(ch["id"] for ch in changes))
            current = {st.id: st.resource() for st in self.store.read_many([("Subscription", i) for i in ids])
                       if not st.deleted}
            for sid in ids:
                self._forget(sid)
                res = current.get(sid)
                if res is not None and res.get("status") in LIVE_STATUSES:
                    self._learn(sid, res.get("criteria"), filters_of(res))
            self._subs_seq = changes[-1]["seq"]

    def _learn(self, sid: str, topic: str | None, filters: dict[str, set[str]]) -> None:
        assert self._subs is not None and self._interests is not None and self._status_subs is not None
        if topic == TOPIC_RESEARCH_SUBJECT_STATUS:
            self._status_subs[sid] = filters
        elif topic == TOPIC_NEW_MATCHING_STUDY:
            patients = sorted(filters.get("patient", ()))
            for patient in patients:
                self._subs.setdefault(patient, []).append(sid)
            self._sub_patients[sid] = patients
            interest = interest_of(filters)
            if interest is not None:
                self._interests[sid] = interest

    def _forget(self, sid: str) -> None:
        assert self._subs is not None and self._interests is not None and self._status_subs is not None
        for patient in self._sub_patients.pop(sid, ()):
            subs = self._subs.get(patient, [])
            if sid in subs:
                subs.remove(sid)
            if not subs:
                self._subs.pop(patient, None)
        self._interests.pop(sid, None)
        self._status_subs.pop(sid, None)
