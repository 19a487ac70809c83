"""The worker starts a committed job at once: PostgreSQL LISTEN/NOTIFY (the poll only as the fallback), a short
poll on SQLite. Measured with real processes: a new Subscription's handshake job starts within 1 s of the
gateway's answer and the handshake reaches the subscriber's endpoint within 3 s."""

from __future__ import annotations

import time
from datetime import UTC, datetime

import pytest
import requests
from sqlalchemy import select

from gateway.outbound import outbox
from gateway.store import schema
from gateway.store.engine import make_engine
from tests.conftest import PG_URL, reset_postgres
from tests.e2e.test_alerts_e2e import (
    DEMO,
    Receiver,
    notifications,
    patient_id,
    post,
    start_worker,
    subscription,
    wait_until,
)
from tests.e2e.test_contact_delivery import _child_env
from tests.procs import GatewayProcess, free_port

pg_only = pytest.mark.skipif(not PG_URL, reason="LISTEN/NOTIFY needs PostgreSQL (GATEWAY_TEST_DATABASE_URL)")


def _handshake_timing(url: str, folder, poll: str | None, metrics_port: int = 0) -> tuple[float, float]:
    """-> (seconds from the 201 to the job's first attempt, seconds from the 201 to the handshake received).

    With ``metrics_port`` the worker serves its own /metrics there; its delivery counter is checked."""
    env = {"GATEWAY_ALLOWED_HOSTS": "127.0.0.1"}
    receiver = Receiver(folder)
    with GatewayProcess(url, folder / "gw", env=env) as gw:
        polling = {"GATEWAY_WORKER_POLL_SECONDS": poll} if poll else {}
        if metrics_port:
            polling["GATEWAY_WORKER_METRICS_PORT"] = str(metrics_port)
        worker_env = _child_env({**env, "GATEWAY_DATABASE_URL": url, "GATEWAY_INSTANCE_PATH": str(folder / "gw"),
                                 "GATEWAY_BASE_URL": gw.base, **polling})
        assert post(gw, "", (DEMO / "03-leeds-patient-glioblastoma.json").read_bytes()).status_code == 200
        pid = patient_id(gw, "9449306060")
        worker = start_worker(worker_env, folder)
        try:
            time.sleep(1.0)  # the worker is idle, waiting (for 30 s when poll=30: only NOTIFY can wake it sooner)
            r = post(gw, "/Subscription", subscription(pid, receiver.url))
            answered, answered_at = time.monotonic(), datetime.now(UTC)
            assert r.status_code == 201, r.text
            sub = r.json()["id"]
            wait_until(lambda: notifications(receiver, sub, "handshake"), timeout=10, what="the handshake")
            received = time.monotonic() - answered
            if metrics_port:  # counted once the endpoint's answer is back (just after the receiver stored it)
                line = ('gateway_outbox_deliveries_total{destination="subscriber",kind="subscription-handshake",'
                        'outcome="delivered"} 1.0')

                def counted() -> str | None:
                    text = requests.get(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10).text
                    return text if line in text else None

                text = wait_until(counted, timeout=5, what="the delivery counted in the worker's /metrics")
                assert sub not in text and pid not in text
        finally:
            worker.stop()
            receiver.child.stop()
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            a, o = schema.outbox_attempts, schema.outbox
            started = conn.execute(select(a.c.started_at).join(o, o.c.id == a.c.job_id)
                                   .where(o.c.kind == "subscription-handshake",
                                          o.c.destination == f"Subscription/{sub}")
                                   .order_by(a.c.id).limit(1)).scalar_one()
    finally:
        engine.dispose()
    return (datetime.fromisoformat(started) - answered_at).total_seconds(), received


@pg_only
def test_postgresql_notify_wakes_the_worker_long_before_its_poll(tmp_path):
    reset_postgres(PG_URL)
    started, received = _handshake_timing(PG_URL, tmp_path, poll="30")
    print(f"postgresql: job started after {started:.3f} s, handshake received after {received:.3f} s")
    assert started < 1.0, f"the job started {started:.2f} s after the gateway answered"
    assert received < 3.0, f"the handshake arrived {received:.2f} s after the gateway answered"


def test_sqlite_short_poll_starts_the_job_within_a_second(tmp_path):
    started, received = _handshake_timing(f"sqlite:///{tmp_path / 'gw.sqlite3'}", tmp_path, poll=None,
                                          metrics_port=free_port())
    print(f"sqlite: job started after {started:.3f} s, handshake received after {received:.3f} s")
    assert started < 1.0, f"the job started {started:.2f} s after the gateway answered"
    assert received < 3.0, f"the handshake arrived {received:.2f} s after the gateway answered"


@pg_only
def test_listener_wakes_on_a_committed_job_and_not_on_a_rolled_back_one():
    reset_postgres(PG_URL)
    engine = make_engine(PG_URL)
    listener = outbox.Listener(engine)
    try:
        assert listener.wait(0.05) is False  # opens the LISTEN connection; nothing queued
        with engine.begin() as conn:
            outbox.enqueue(conn, kind="k", destination="d", payload={}, dedupe_key="committed", max_attempts=1)
        t0 = time.monotonic()
        assert listener.wait(10) is True and time.monotonic() - t0 < 1
        conn = engine.connect()
        tx = conn.begin()
        outbox.enqueue(conn, kind="k", destination="d", payload={}, dedupe_key="rolled-back", max_attempts=1)
        tx.rollback()
        conn.close()
        assert listener.wait(0.5) is False
    finally:
        listener.close()
        engine.dispose()


def test_on_sqlite_the_listener_is_a_plain_wait(tmp_path):
    engine = make_engine(f"sqlite:///{tmp_path / 'x.sqlite3'}")
    listener = outbox.Listener(engine)
    t0 = time.monotonic()
    assert listener.enabled is False and listener.wait(0.2) is False
    assert 0.15 < time.monotonic() - t0 < 2
    engine.dispose()
