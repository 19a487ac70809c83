"""Benchmark: a new recruiting study against N people stored in the database, of whom a fraction consent to
alerts and subscribe: candidates found + alert jobs enqueued, and study commit -> first delivery attempt against a
local receiver.

    GATEWAY_DATABASE_URL=postgresql+psycopg://... .venv/bin/python bench/bench_alerts.py --patients 100000 \
        --consenting 10000 [--broad]

The database is the gateway's (GATEWAY_DATABASE_URL, read through gateway/config.py); it must be named.

The people come from bench/bench_match.py's generator (real codes from mappings/terminology) and are stored
through the store's bulk write path (bench_match.db_load: Store.write + create, 500 people a transaction; the
matching write hook builds each person's row in the same transaction); a database an earlier run loaded is
reused. Each consenting person has a `trial-alerts` Consent and one `new-matching-study` Subscription;
subscription rows are bulk-inserted (100,000 Subscriptions through REST would measure the REST layer, which
bench_store.py does). The flows start from the consenting side: the database returns the subscribers (and the
people who may be proposed: nobody here consents to HRESCH and no legal basis is configured) whose codes, sex and
age the study admits, and only those are screened.
"""

from __future__ import annotations

import argparse
import dataclasses
import http.server
import os
import statistics
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import bench_match as bm  # noqa: E402
import requests  # noqa: E402
from _common import backend, settings_from_env  # noqa: E402
from sqlalchemy import func, insert, select  # noqa: E402

from gateway.api.app import create_app  # noqa: E402
from gateway.fhir import conventions as cv  # noqa: E402
from gateway.notify import delivery  # noqa: E402
from gateway.notify.flows import FlowStats  # noqa: E402
from gateway.outbound import outbox  # noqa: E402
from gateway.outbound.allowlist import AllowList  # noqa: E402
from gateway.store import schema as s  # noqa: E402
from gateway.store.clock import now_iso  # noqa: E402

# glioblastoma, DIPG (rare), NSCLC, colon cancer
SPECIFIC = [(cv.SNOMED, "393563007"), bm.RARE, (cv.SNOMED, "254637007"), (cv.SNOMED, "93761005")]


class Receiver(http.server.BaseHTTPRequestHandler):
    first: dict[str, float] = {}

    def do_POST(self):  # noqa: N802 (http.server's naming)
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        Receiver.first.setdefault("t", time.perf_counter())
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args):
        pass


def subscribers(patients: int, every: int) -> dict[str, list[str]]:
    """'Patient/<id>' -> [its subscription id] for the people bench_match.db_load gave a trial-alerts Consent
    (``alerts_every=every``: offset 1, as bench_match._consents)."""
    return {f"Patient/bp{i}": [f"sub{i}"] for i in range(1 % every, patients, every)}


def subscribe(store, subs: dict[str, list[str]]) -> None:
    """The subscriptions' state rows, bulk-inserted for those that have none yet (100,000 Subscriptions through
    REST would measure the REST layer, which bench_store.py does)."""
    with store.engine.connect() as conn:
        have = set(conn.execute(select(s.subscription_state.c.subscription_id)).scalars())
    with store.write() as tx:
        rows = [{"subscription_id": v[0], "topic": cv.TOPIC_NEW_MATCHING_STUDY, "status": "active",
                 "events_since_start": 0, "consecutive_failures": 0, "updated_at": now_iso()} for v in subs.values()
                if v[0] not in have]
        for i in range(0, len(rows), 5000):
            tx.conn.execute(insert(s.subscription_state), rows[i:i + 5000])


def use_subscriptions(flows, subs: dict[str, list[str]]) -> None:
    """Give the flows the subscription map they would build from stored Subscriptions (the bench stores rows)."""
    flows._subs, flows._interests, flows._status_subs = subs, {}, {}
    flows._sub_patients = {sid: [patient] for patient, sids in subs.items() for sid in sids}


# An exclusion the database's columns cannot decide (ECOG 2-5 excluded): every candidate's profile is screened
ECOG_EXCLUSION = {"code": {"coding": [{"system": cv.ECOG[0], "code": cv.ECOG[1]}]}, "exclude": True,
                  "valueRange": {"low": {"value": 2}, "high": {"value": 5}}}


def adult_study(sid: str, code: tuple[str, str], title: str, extra: tuple[dict, ...] = ()) -> list[dict]:
    """ResearchStudy ``sid`` recruiting adults with ``code`` (its eligibility Group ``<sid>-g``: age >= 18, and
    the characteristics ``extra``)."""
    return [{"resourceType": "ResearchStudy", "id": sid, "status": "active", "title": title,
             "condition": [{"coding": [{"system": code[0], "code": code[1]}]}],
             "enrollment": [{"reference": f"Group/{sid}-g"}]},
            {"resourceType": "Group", "id": f"{sid}-g", "type": "person", "actual": False, "characteristic": [
                {"code": {"coding": [{"system": cv.AGE[0], "code": cv.AGE[1]}]}, "exclude": False,
                 "valueRange": {"low": {"value": 18, "system": cv.UCUM, "code": "a"}}}, *extra]}]


def new_study(flows, sid: str, code: tuple[str, str], extra: tuple[dict, ...] = ()) -> tuple[float, float, FlowStats]:
    """A new study (``adult_study``) stored, then, as a worker's flows see its commit: their matching state
    refreshed, its candidates found and their alert jobs enqueued (the flows write alerts before proposals).
    Returns (ms from after the commit to its alert jobs committed - the whole call when it made none -, ms
    to the end of the flows' work on it, proposals included, the counts)."""
    with flows.store.write() as tx:
        for res in reversed(adult_study(sid, code, f"New study {sid}", extra)):
            tx.put(res)
    t0 = time.perf_counter()
    flows.state.refresh()
    stats = FlowStats()
    flows.study_matches(sid, stats)
    end = time.perf_counter()
    alerts_at = stats.alerts_enqueued_at if stats.alerts_enqueued_at is not None else end
    return (alerts_at - t0) * 1000, (end - t0) * 1000, stats


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--patients", type=int, default=100_000)
    ap.add_argument("--consenting", type=int, default=10_000)
    ap.add_argument("--studies", type=int, default=12, help="new studies pushed one after another")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--broad", action="store_true",
                    help="use one broad study ('any malignant neoplasm') instead of the mix of specific ones")
    args = ap.parse_args()

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    endpoint = f"http://127.0.0.1:{server.server_port}/hook"
    settings = settings_from_env("bench_alerts")
    settings = dataclasses.replace(settings, outbound=dataclasses.replace(
        settings.outbound, allowed_hosts=AllowList.parse("127.0.0.1"), backoff_base=0.1))
    app = create_app(settings)
    root = app.extensions["gateway.root"]
    flows = root.flows()
    store, term = flows.store, flows.state.term
    print(f"machine: {bm.machine()}")
    print(f"database: {backend(settings)}")

    every = max(1, args.patients // args.consenting)
    t = time.perf_counter()
    bm.db_load(store, term, argparse.Namespace(seed=args.seed, extracted=False, db_studies=0,
                                               db_patients=args.patients, research_every=0, alerts_every=every))
    subs = subscribers(args.patients, every)
    with store.engine.connect() as conn:
        n_people = conn.execute(select(func.count()).select_from(s.match_people)).scalar_one()
        consenting = conn.execute(select(func.count()).select_from(s.match_people).where(
            s.match_people.c.alerts_consent.is_(True))).scalar_one()
    print(f"{n_people:,} people in the database ({consenting:,} with trial-alerts consent, {len(subs):,} "
          f"subscribed), loaded or found in {time.perf_counter() - t:.1f} s", flush=True)
    subscribe(store, subs)
    use_subscriptions(flows, subs)

    worker = root.worker(name="bench")
    # The bench's subscriptions are rows, not stored resources: deliver each job as a small POST to the receiver.
    delivery_session = requests.Session()

    def deliver_to_receiver(job, ctx):
        delivery_session.post(endpoint, data=b"{}", timeout=5)
        return "ok"

    worker.handlers = {**worker.handlers, delivery.NOTIFICATION: deliver_to_receiver}

    codes = [bm.BROAD] if args.broad else SPECIFIC
    find_ms, total, enqueue_counts, first_ms = [], [], [], []
    for n in range(args.studies):
        code = codes[n % len(codes)]
        Receiver.first.clear()
        t0 = time.perf_counter()
        ms, total_ms, stats = new_study(flows, f"new{n}-{time.time_ns()}", code)
        find_ms.append(ms)
        total.append(total_ms)
        enqueue_counts.append(stats.alerts)
        worker.run_once()  # a worker polling every 0.25 s picks the jobs up at once here
        if "t" in Receiver.first:
            first_ms.append((Receiver.first["t"] - t0) * 1000)
        print(f"study {n} ({code[1]}): {stats.alerts:,} alert jobs, {sum(stats.blocked.values()):,} blocked "
              f"actions, found + enqueued in {find_ms[-1]:,.0f} ms (the study's flows done in {total_ms:,.0f} ms)",
              flush=True)
        while worker.run_once():
            pass
    print(f"\ncandidates found and alert jobs enqueued: {bm.fmt(find_ms)}; alert jobs per study median "
          f"{statistics.median(enqueue_counts):,.0f}, max {max(enqueue_counts):,}")
    print(f"the study's flows done (proposals included): {bm.fmt(total)}")
    if first_ms:
        print(f"study commit -> first delivery attempt: {bm.fmt(first_ms)} (studies with at least one alert)")
    print(f"outbox now: {outbox.counts(store)}")
    print(f"load average at the end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    server.shutdown()


if __name__ == "__main__":
    main()
