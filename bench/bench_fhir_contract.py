"""Search-contract benchmark: _sort, _elements/_summary, _include/_revinclude and chained parameters, in process
through the Flask app (what a request costs without the network), on SQLite (or --database-url).

Seeds N studies (each with a site Location) and N/2 ResearchSubjects, then times each query ``--reps`` times and
prints median / p95 in ms, beside a plain search of the same page size.

    .venv/bin/python bench/bench_fhir_contract.py [--studies 5000] [--reps 100] [--database-url URL]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sqlalchemy import text  # noqa: E402

from gateway.api.app import create_app  # noqa: E402
from gateway.config import Settings, StoreSettings  # noqa: E402

SPONSOR = "https://sponsor.example.org/studies"
HOSPITAL = "https://hospital.example.org/subjects"
QUERIES = {
    "plain page (baseline)": "/fhir/ResearchStudy?_count=20",
    "_sort=title": "/fhir/ResearchStudy?_sort=title&_count=20",
    "_sort=-_lastUpdated, page 10": "/fhir/ResearchStudy?_sort=-_lastUpdated&_count=20&_offset=200",
    "_sort=status,-title": "/fhir/ResearchStudy?_sort=status,-title&_count=20",
    "_elements=title": "/fhir/ResearchStudy?_elements=title&_count=20",
    "_summary=true": "/fhir/ResearchStudy?_summary=true&_count=20",
    "_include=ResearchStudy:site": "/fhir/ResearchStudy?_include=ResearchStudy:site&_count=20",
    "_revinclude=ResearchSubject:study": "/fhir/ResearchStudy?_revinclude=ResearchSubject:study&_count=20",
    "chain study.identifier": f"/fhir/ResearchSubject?study.identifier={SPONSOR}|B-77",
    "chain study.title (string)": "/fhir/ResearchSubject?study.title=study%2012&_count=20",
}


def seed(app, n: int) -> None:
    service = app.extensions["gateway.service"]
    entries = []
    for i in range(n):
        entries.append({"fullUrl": f"urn:uuid:00000000-0000-4000-8000-{i:012d}",
                        "resource": {"resourceType": "Location", "name": f"Site {i}"},
                        "request": {"method": "POST", "url": "Location"}})
        entries.append({"resource": {"resourceType": "ResearchStudy", "id": f"rs{i}",
                                     "status": ("active", "completed", "approved")[i % 3], "title": f"Study {i}",
                                     "identifier": [{"system": SPONSOR, "value": f"B-{i}"}],
                                     "site": [{"reference": f"urn:uuid:00000000-0000-4000-8000-{i:012d}"}]},
                        "request": {"method": "PUT", "url": f"ResearchStudy/rs{i}"}})
        if i % 2 == 0:
            entries.append({"resource": {"resourceType": "ResearchSubject", "status": "candidate",
                                         "identifier": [{"system": HOSPITAL, "value": f"S-{i}"}],
                                         "study": {"reference": f"ResearchStudy/rs{i}"},
                                         "individual": {"reference": f"Patient/p{i}"}},
                            "request": {"method": "POST", "url": "ResearchSubject"}})
        if len(entries) >= 300:
            service.process_bundle({"resourceType": "Bundle", "type": "transaction", "entry": entries})
            entries = []
    if entries:
        service.process_bundle({"resourceType": "Bundle", "type": "transaction", "entry": entries})
    engine = app.extensions["gateway.store"].engine
    if engine.dialect.name == "postgresql":  # what autovacuum does after a bulk load: the planner needs row counts
        with engine.connect() as conn:
            conn.execute(text("ANALYZE"))
            conn.commit()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--studies", type=int, default=5000)
    ap.add_argument("--reps", type=int, default=100)
    ap.add_argument("--database-url")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        url = args.database_url or f"sqlite:///{Path(tmp) / 'bench.sqlite3'}"
        app = create_app(Settings(store=StoreSettings(url), instance_path=Path(tmp), mappings_path=ROOT / "mappings"))
        t0 = time.perf_counter()
        seed(app, args.studies)
        print(f"machine: {platform.machine()} {platform.processor() or ''} {os.cpu_count()} cpus, "
              f"python {platform.python_version()}, {url.split(':')[0]}")
        print(f"seeded {args.studies} studies + {args.studies} locations + {args.studies // 2} subjects "
              f"in {time.perf_counter() - t0:.1f} s; {args.reps} requests per query, in process")
        client = app.test_client()
        headers = {"Accept": "application/fhir+json"}
        for name, q in QUERIES.items():
            times = []
            for _ in range(args.reps):
                t = time.perf_counter()
                r = client.get(q, headers=headers)
                times.append((time.perf_counter() - t) * 1000)
                assert r.status_code == 200, (q, r.get_json())
            times.sort()
            p95 = times[max(0, int(len(times) * 0.95) - 1)]
            print(f"  {name:38s} median {statistics.median(times):7.2f} ms   p95 {p95:7.2f} ms")
        app.extensions["gateway.store"].engine.dispose()


if __name__ == "__main__":
    main()
