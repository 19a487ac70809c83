"""Table sizes and query plans on PostgreSQL, for the partitioning plan in docs/scale.md.

Runs the gateway in-process against GATEWAY_DATABASE_URL (PostgreSQL, already loaded, e.g. by bench/run_load.py
and ``--add-studies/--add-patients`` here), captures the SQL that the main requests send (searches, $match with
its change-feed refresh, $candidates, a conditional create's key lookup), and prints for each distinct statement
EXPLAIN (ANALYZE, BUFFERS) with the parameters it was sent, after one warm-up run. Then the size of every
gateway table and its indexes, largest first.

    GATEWAY_DATABASE_URL=postgresql+psycopg://postgres@127.0.0.1:5432/load \\
        .venv/bin/python bench/explain_plans.py [--add-studies 20000] [--add-patients 50000] [--out FILE]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from sqlalchemy import event, text

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench_match import Generator, machine  # noqa: E402

from gateway.api.app import create_app  # noqa: E402
from gateway.config import Settings, StoreSettings  # noqa: E402
from gateway.terminology import default_terminology  # noqa: E402

FHIR = {"Accept": "application/fhir+json"}
GLIOMA = "http://snomed.info/sct|393563007"
REQUESTS = [
    ("search by condition code", f"/fhir/ResearchStudy?condition={GLIOMA}&_count=20"),
    ("search by words", "/fhir/ResearchStudy?_text=breast%20cancer&_count=20"),
    ("search near a postcode", "/fhir/ResearchStudy?postcode=LS6&distance=50&_count=20"),
    ("search Patient by identifier", "/fhir/Patient?identifier=https://fhir.nhs.uk/Id/nhs-number|9000000042"),
    ("Condition of a person (_include)", "/fhir/Condition?subject=Patient/bp42&_include=Condition:subject"),
    ("$match of a stored person", "/fhir/ResearchStudy/$match?patient-id=bp42"),
    ("$candidates of a study", "/fhir/ResearchStudy/bs3/$candidates?consent=any"),
]


def bulk_add(app, studies: int, patients: int, offset: int, seed: int) -> None:
    """More studies and people through the store's write path (transaction Bundles in-process: no HTTP)."""
    service = app.extensions["gateway.service"]
    gen = Generator(default_terminology(), seed)
    for label, n, make in (("studies", studies, gen.study), ("people", patients, gen.patient_json)):
        t = time.perf_counter()
        batch: list[dict] = []
        for i in range(offset, offset + n):
            batch += [{k: v for k, v in r.items() if v != []} for r in make(i)]  # FHIR JSON: no empty arrays
            if len(batch) >= 500 or i == offset + n - 1:
                bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [
                    {"resource": r, "request": {"method": "PUT", "url": f"{r['resourceType']}/{r['id']}"}}
                    for r in batch]}
                service.process_bundle(bundle)
                batch = []
        print(f"added {n:,} {label} in {time.perf_counter() - t:.0f} s", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--add-studies", type=int, default=0)
    ap.add_argument("--add-patients", type=int, default=0)
    ap.add_argument("--offset", type=int, default=100_000, help="first generated index of the added data")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    url = os.environ.get("GATEWAY_DATABASE_URL", "")
    if not url.startswith("postgresql"):
        raise SystemExit("GATEWAY_DATABASE_URL must name a PostgreSQL database")
    app = create_app(Settings(store=StoreSettings(url), instance_path=Path("/tmp"), mappings_path=ROOT / "mappings"))
    engine = app.extensions["gateway.store"].engine
    if args.add_studies or args.add_patients:
        bulk_add(app, args.add_studies, args.add_patients, args.offset, seed=args.offset)
    with engine.connect() as conn:
        conn.execute(text("ANALYZE"))  # fresh statistics after the load, as autovacuum would give
        conn.commit()

    captured: list[tuple[str, str, object]] = []
    current = [""]

    @event.listens_for(engine, "before_cursor_execute")
    def _capture(_conn, _cursor, statement, parameters, _context, executemany):
        if not executemany and statement.lstrip().upper().startswith("SELECT"):
            captured.append((current[0], statement, parameters))

    client = app.test_client()
    for _name, path in REQUESTS:
        client.get(path, headers=FHIR)  # warm-up: the first $match builds this process's indexes
    captured.clear()
    for name, path in REQUESTS:
        current[0] = name
        t = time.perf_counter()
        r = client.get(path, headers=FHIR)
        print(f"{name}: {r.status_code}, {(time.perf_counter() - t) * 1000:.1f} ms, "
              f"total={r.get_json().get('total')}", flush=True)

    lines = [f"machine: {machine()}", ""]
    seen: set[str] = set()
    raw = engine.raw_connection()
    try:
        cur = raw.cursor()
        for name, statement, params in captured:
            if statement in seen:
                continue
            seen.add(statement)
            cur.execute("EXPLAIN (ANALYZE, BUFFERS) " + statement, params)
            plan = "\n".join(row[0] for row in cur.fetchall())
            lines += [f"## {name}", "", statement.strip(), f"-- parameters: {params!r}"[:600], "", plan, ""]
        cur.execute("""
            SELECT c.relname, pg_size_pretty(pg_table_size(c.oid)), pg_size_pretty(pg_indexes_size(c.oid)),
                   c.reltuples::bigint
            FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
            WHERE n.nspname = current_schema() AND c.relkind = 'r'
            ORDER BY pg_total_relation_size(c.oid) DESC LIMIT 20""")
        lines += ["## table sizes (table, indexes, estimated rows)", ""]
        lines += [f"{r[0]:<24} {r[1]:>10} {r[2]:>10} {r[3]:>12,}" for r in cur.fetchall()]
        raw.rollback()
    finally:
        raw.close()
    report = "\n".join(lines)
    print(report)
    if args.out:
        args.out.write_text(report)


if __name__ == "__main__":
    main()
