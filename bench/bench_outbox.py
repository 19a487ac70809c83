"""Benchmark: outbox throughput and commit -> delivery latency against a minimal local FHIR receiver.

For 1, 2 and 4 ``Worker`` processes on PostgreSQL (FOR UPDATE SKIP LOCKED): (a) deliveries/s for a
backlog of N jobs, measured at the receiver from the first delivery to the last; (b) with the
workers idle and polling, jobs committed one per transaction at a steady rate, and the median / p95
time from each commit to its arrival at the receiver. Each delivery is a real conditional create
(POST with If-None-Exist) through the outbound FhirClient.

    GATEWAY_BENCH_DATABASE_URL=postgresql+psycopg://postgres@127.0.0.1:5432/test_h6 \\
        .venv/bin/python bench/bench_outbox.py [--n 3000] [--workers 1,2,4] [--rate 50 --latency-jobs 250]

The database is emptied of outbox rows first: use a database of your own.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sqlalchemy import delete  # noqa: E402

from gateway.outbound import outbox  # noqa: E402
from gateway.outbound.allowlist import AllowList  # noqa: E402
from gateway.outbound.client import FhirClient  # noqa: E402
from gateway.outbound.destinations import Destinations  # noqa: E402
from gateway.outbound.hospitals import Hospitals  # noqa: E402
from gateway.outbound.kinds import DeliveryContext  # noqa: E402
from gateway.outbound.settings import OutboundSettings  # noqa: E402
from gateway.outbound.worker import Worker  # noqa: E402
from gateway.store import schema  # noqa: E402
from gateway.store.engine import make_engine  # noqa: E402
from gateway.store.repo import Store  # noqa: E402

KIND = "bench-post"
SYSTEM = "https://trialgateway.org/fhir/Id/bench"


def deliver(job, ctx: DeliveryContext) -> str:
    client = ctx.extras.get("client")
    if client is None:
        client = ctx.extras["client"] = FhirClient(job.payload["url"], allowed_hosts=ctx.settings.allowed_hosts,
                                                   max_retries=0, session=ctx.destinations.session)
    value = job.dedupe_key
    comm = {"resourceType": "Communication", "status": "completed", "identifier": [{"system": SYSTEM, "value": value}]}
    return str(client.create(comm, if_none_exist=f"identifier={SYSTEM}|{value}").status)



# -- the receiver -------------------------------------------------------------------------------
class Receiver:
    """Answers every POST with 201 and records (If-None-Exist value, arrival time)."""

    def __init__(self):
        self.arrivals: dict[str, float] = {}
        self.count = 0
        self.lock = threading.Lock()
        recv = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self):
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                key = (self.headers.get("If-None-Exist") or "").rsplit("|", 1)[-1]
                with recv.lock:
                    recv.arrivals.setdefault(key, time.time())
                    recv.count += 1
                self.send_response(201)
                self.send_header("Location", f"/fhir/Communication/{key}/_history/1")
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *a):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_port}/fhir"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


# -- worker processes ---------------------------------------------------------------------------
def run_worker(db: str, poll: float) -> None:
    store = Store(make_engine(db))
    settings = OutboundSettings(allowed_hosts=AllowList.parse("127.0.0.1"), poll_seconds=poll, lease_seconds=60)
    ctx = DeliveryContext(store, Destinations(settings, hospitals=Hospitals()), settings)
    stop = threading.Event()
    import signal

    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    print("ready", flush=True)
    Worker(ctx, handlers={KIND: deliver}, batch=20, kinds=(KIND,)).run(stop)


def start_workers(n: int, db: str, poll: float) -> list[subprocess.Popen]:
    procs = [subprocess.Popen([sys.executable, __file__, "--worker", "--db", db, "--poll", str(poll)],
                              stdout=subprocess.PIPE, text=True, cwd=ROOT) for _ in range(n)]
    for p in procs:
        assert p.stdout.readline().strip() == "ready"
    return procs


def stop_workers(procs: list[subprocess.Popen]) -> None:
    for p in procs:
        p.terminate()
    for p in procs:
        p.wait(timeout=30)


# -- phases -------------------------------------------------------------------------------------
def empty(store: Store) -> None:
    with store.write() as tx:
        tx.conn.execute(delete(schema.outbox_attempts))
        tx.conn.execute(delete(schema.outbox))


def enqueue_backlog(store: Store, n: int, url: str, tag: str) -> None:
    with store.write() as tx:
        for i in range(n):
            outbox.enqueue(tx.conn, kind=KIND, destination="bench", payload={"url": url},
                           dedupe_key=f"{tag}-{i}", max_attempts=5)


def wait_for(recv: Receiver, keys: set[str], timeout: float) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        with recv.lock:
            if keys <= recv.arrivals.keys():
                return
        time.sleep(0.01)
    raise SystemExit(f"timed out: {len(keys - recv.arrivals.keys())} of {len(keys)} not delivered")


def pct(values: list[float], p: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(round(p / 100 * (len(s) - 1))))]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--db", default=os.environ.get("GATEWAY_BENCH_DATABASE_URL"))
    ap.add_argument("--n", type=int, default=3000, help="backlog size per worker count")
    ap.add_argument("--workers", default="1,2,4")
    ap.add_argument("--poll", type=float, default=0.25, help="worker poll interval when idle (s)")
    ap.add_argument("--rate", type=float, default=50.0, help="commits/s in the latency phase")
    ap.add_argument("--latency-jobs", type=int, default=250)
    args = ap.parse_args()
    if not args.db:
        raise SystemExit("set GATEWAY_BENCH_DATABASE_URL (PostgreSQL; its outbox is emptied) or pass --db")
    if args.worker:
        run_worker(args.db, args.poll)
        return
    engine = make_engine(args.db)
    schema.migrate(engine)
    store = Store(engine)
    recv = Receiver()
    load = os.getloadavg()
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"Python {platform.python_version()}, {engine.dialect.name}; load before: "
          f"{load[0]:.2f} {load[1]:.2f} {load[2]:.2f} (shared machine)")
    print(f"size: backlog {args.n} jobs per run; latency: {args.latency_jobs} jobs at {args.rate:.0f}/s, "
          f"one commit each; poll {args.poll}s")
    print(f"{'workers':>7} {'deliveries/s':>13} {'latency median':>15} {'p95':>8} {'max':>8}")
    for k in [int(x) for x in args.workers.split(",")]:
        empty(store)
        tag = f"w{k}-{time.time_ns()}"
        enqueue_backlog(store, args.n, recv.url, tag)
        procs = start_workers(k, args.db, args.poll)
        try:
            keys = {f"{tag}-{i}" for i in range(args.n)}
            wait_for(recv, keys, timeout=600)
            times = sorted(recv.arrivals[key] for key in keys)
            rate = (len(times) - 1) / (times[-1] - times[0])
            # latency: steady commits, one per transaction, workers polling
            committed: dict[str, float] = {}
            ltag = f"l{k}-{time.time_ns()}"
            start = time.time()
            for i in range(args.latency_jobs):
                target = start + i / args.rate
                time.sleep(max(0.0, target - time.time()))
                with store.write() as tx:
                    outbox.enqueue(tx.conn, kind=KIND, destination="bench", payload={"url": recv.url},
                                   dedupe_key=f"{ltag}-{i}", max_attempts=5)
                committed[f"{ltag}-{i}"] = time.time()
            wait_for(recv, set(committed), timeout=120)
            lat = [recv.arrivals[key] - t for key, t in committed.items()]
        finally:
            stop_workers(procs)
        assert outbox.counts(store)["dead"] == 0
        print(f"{k:>7} {rate:>13.0f} {statistics.median(lat) * 1000:>12.0f} ms {pct(lat, 95) * 1000:>5.0f} ms "
              f"{max(lat) * 1000:>5.0f} ms")
    load = os.getloadavg()
    print(f"load after: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}; receiver saw {recv.count} POSTs "
          f"for {len(recv.arrivals)} distinct jobs")


if __name__ == "__main__":
    main()
