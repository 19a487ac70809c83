"""Load test: the gateway under gunicorn on 127.0.0.1, a generated data set loaded through the bulk path, then
locust (bench/locustfile.py) headless for a bounded time.

Prints the machine and its load, the data set, requests/s, median and p95 of ``$match``, search, create and
transaction, and the error count (which must be 0: the script exits 1 otherwise).

    GATEWAY_DATABASE_URL=postgresql+psycopg://postgres@127.0.0.1:5432/load \\
        .venv/bin/python bench/run_load.py --reset [--studies 5000] [--patients 5000] [--users 16] [--seconds 60]
        [--workers 2] [--threads 4] [--json FILE]

The database must be empty, or named with ``--reset`` (every gateway table is emptied first). Without
GATEWAY_DATABASE_URL a temporary SQLite file is used. Studies and people come from bench/bench_match.py's
generator (real codes from the terminology, sites at real postcode districts, eligibility Groups), stored as
500-entry transaction Bundles over HTTP, as a registry or an EHR would send them.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench_match import Generator, machine  # noqa: E402

from gateway.store import schema  # noqa: E402
from gateway.store.engine import make_engine  # noqa: E402
from gateway.terminology import default_terminology  # noqa: E402

FHIR = {"Content-Type": "application/fhir+json", "Accept": "application/fhir+json"}
NAMES = ("$match", "search", "create", "transaction")


def _pruned(resource: dict) -> dict:
    """The generator gives a few studies ``"condition": []``; FHIR JSON has no empty arrays (the gateway refuses)."""
    return {k: v for k, v in resource.items() if v != []}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def reset(url: str) -> None:
    """Empty every gateway table (PostgreSQL: TRUNCATE; SQLite: the file is new anyway)."""
    engine = make_engine(url)
    schema.migrate(engine)
    if engine.dialect.name == "postgresql":
        from sqlalchemy import insert, text

        names = [t.name for t in schema.metadata.sorted_tables if t.name != "schema_version"]
        with engine.begin() as conn:
            conn.execute(text(f"TRUNCATE {', '.join(names)} RESTART IDENTITY CASCADE"))
            conn.execute(insert(schema.counters).values(name="changes", value=0))
    engine.dispose()


def start_gunicorn(url: str, folder: Path, workers: int, threads: int) -> tuple[subprocess.Popen, str, Path]:
    port = free_port()
    metrics = folder / "prometheus"
    metrics.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
    env.update({"GATEWAY_DATABASE_URL": url, "GATEWAY_INSTANCE_PATH": str(folder), "GATEWAY_BIND":
                f"127.0.0.1:{port}", "GATEWAY_WORKERS": str(workers), "GATEWAY_THREADS": str(threads),
                "PROMETHEUS_MULTIPROC_DIR": str(metrics), "PYTHONUNBUFFERED": "1"})
    log = folder / "gunicorn.log"
    with log.open("wb") as fh:
        proc = subprocess.Popen([sys.executable, "-m", "gunicorn", "-c", "python:gateway.gunicorn_conf",
                                 "gateway.api.app:create_app()"], cwd=ROOT, env=env, stdout=fh,
                                stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"gunicorn exited with {proc.returncode}: see {log}")
        try:
            if requests.get(f"{base}/healthz", timeout=5).status_code == 200:
                return proc, base, log
        except requests.RequestException:
            pass
        time.sleep(0.2)
    proc.terminate()
    raise SystemExit(f"gunicorn did not answer /healthz in 120 s: see {log}")


def load(base: str, resources: list[dict], batch: int = 500) -> float:
    """PUT every resource (fixed ids) in transaction Bundles of ``batch`` entries; -> seconds."""
    t = time.perf_counter()
    with requests.Session() as s:
        for i in range(0, len(resources), batch):
            entries = [{"resource": r, "request": {"method": "PUT", "url": f"{r['resourceType']}/{r['id']}"}}
                       for r in resources[i:i + batch]]
            r = s.post(f"{base}/fhir", json={"resourceType": "Bundle", "type": "transaction", "entry": entries},
                       headers=FHIR, timeout=600)
            if r.status_code != 200:
                raise SystemExit(f"loading failed: {r.status_code} {r.text[:500]}")
    return time.perf_counter() - t


def percentile(times: dict[str, int], p: float) -> float:
    """The ``p`` percentile (0-100) of locust's response-time histogram {milliseconds: count}."""
    pairs = sorted((float(ms), n) for ms, n in times.items())
    total = sum(n for _, n in pairs)
    seen = 0
    for ms, n in pairs:
        seen += n
        if seen >= total * p / 100:
            return ms
    return pairs[-1][0] if pairs else 0.0


def summarise(entries: list[dict], seconds: float) -> dict[str, dict]:
    """Locust's final per-request statistics (its --json-file) -> count, rate, median, p95, errors by name."""
    out: dict[str, dict] = {}
    for name in (*NAMES, "all"):
        rows = [e for e in entries if name in ("all", e["name"])]
        times: dict[str, int] = {}
        for e in rows:
            for ms, n in e["response_times"].items():
                times[ms] = times.get(ms, 0) + n
        count = sum(e["num_requests"] for e in rows)
        out[name] = {"count": count, "per_s": round(count / seconds, 1), "median_ms": percentile(times, 50),
                     "p95_ms": percentile(times, 95), "errors": sum(e["num_failures"] for e in rows)}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--studies", type=int, default=5000)
    ap.add_argument("--patients", type=int, default=5000)
    ap.add_argument("--users", type=int, default=16)
    ap.add_argument("--seconds", type=int, default=60)
    ap.add_argument("--workers", type=int, default=2, help="gunicorn workers")
    ap.add_argument("--threads", type=int, default=4, help="threads per gunicorn worker")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--reset", action="store_true", help="empty the database's gateway tables first")
    ap.add_argument("--json", type=Path, help="also write the figures as JSON to this file")
    args = ap.parse_args()

    folder = Path(tempfile.mkdtemp(prefix="gateway-load-"))
    url = os.environ.get("GATEWAY_DATABASE_URL") or f"sqlite:///{folder / 'gateway.sqlite3'}"
    backend = url.split(":", 1)[0]
    if args.reset:
        reset(url)
    print(f"machine: {machine()}")
    print(f"database: {backend}; gunicorn {args.workers} workers x {args.threads} threads; "
          f"locust {args.users} users for {args.seconds} s")

    gen = Generator(default_terminology(), args.seed)
    studies = [_pruned(r) for i in range(args.studies) for r in gen.study(i)]
    people = [r for i in range(args.patients) for r in gen.patient_json(i)]
    codes = sorted({f"{c['coding'][0]['system']}|{c['coding'][0]['code']}" for r in studies
                    if r["resourceType"] == "ResearchStudy" for c in r.get("condition", [])
                    if c["coding"][0]["system"] == "http://snomed.info/sct"})[:200]

    proc, base, log = start_gunicorn(url, folder, args.workers, args.threads)
    try:
        s_load = load(base, studies)
        p_load = load(base, people)
        print(f"data: {args.studies:,} studies ({len(studies):,} resources with Groups and sites) in {s_load:.1f} s "
              f"({len(studies) / s_load:,.0f}/s); {args.patients:,} people ({len(people):,} resources) in "
              f"{p_load:.1f} s ({len(people) / p_load:,.0f}/s), 500-entry transaction Bundles")
        # the first $match of each worker builds its matching indexes: timed here, not inside the load test
        warm = []
        for i in range(args.workers * 4):
            t = time.perf_counter()
            r = requests.get(f"{base}/fhir/ResearchStudy/$match?patient-id=bp{i}", headers=FHIR, timeout=600)
            warm.append(time.perf_counter() - t)
            if r.status_code != 200:
                raise SystemExit(f"warm-up $match failed: {r.status_code} {r.text[:300]}")
        print(f"warm-up: first $match {warm[0]:.2f} s; slowest of {len(warm)} warm-up requests {max(warm):.2f} s")

        load_before = os.getloadavg()
        prefix = folder / "locust"
        env = {**os.environ, "LOAD_PATIENTS": str(args.patients), "LOAD_CODES": ",".join(codes),
               "LOAD_SEED": str(args.seed)}
        started = time.monotonic()
        subprocess.run([sys.executable, "-m", "locust", "-f", str(ROOT / "bench" / "locustfile.py"), "--headless",
                        "-u", str(args.users), "-r", str(args.users), "-t", f"{args.seconds}s", "--host", base,
                        "--json-file", str(prefix), "--skip-log", "--loglevel", "WARNING"],
                       env=env, check=False, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=folder)
        ran = min(time.monotonic() - started, float(args.seconds))
        load_after = os.getloadavg()
    finally:
        proc.terminate()
        proc.wait(timeout=30)

    entries = json.loads(Path(f"{prefix}.json").read_text())
    figures = summarise(entries, ran)
    errors = figures["all"]["errors"]
    out = {"backend": backend, "studies": args.studies, "patients": args.patients, "users": args.users,
           "seconds": args.seconds, "workers": args.workers, "threads": args.threads, "requests_per_s":
           figures["all"]["per_s"], "errors": errors, "load_before": [round(x, 2) for x in load_before],
           "load_after": [round(x, 2) for x in load_after], **figures}
    print(f"load average before / after the run: {load_before[0]:.2f} / {load_after[0]:.2f}")
    print(f"{'request':<12} {'count':>7} {'req/s':>7} {'median ms':>10} {'p95 ms':>8} {'errors':>7}")
    for name, f in figures.items():
        print(f"{name:<12} {f['count']:>7} {f['per_s']:>7.1f} {f['median_ms']:>10.0f} {f['p95_ms']:>8.0f} "
              f"{f['errors']:>7}")
    if errors:
        for e in entries:
            for message, n in (e.get("num_failures_per_error") or {}).items():
                print(f"error: {e['name']}: {message} x{n}")
    if args.json:
        args.json.write_text(json.dumps(out, indent=2))
    if errors:
        print(f"kept for inspection: {folder} (gunicorn.log, locust.json)")
    else:
        shutil.rmtree(folder, ignore_errors=True)
    sys.exit(1 if errors else 0)


if __name__ == "__main__":
    main()
