"""Study side at start-up: how long a freshly started process takes to answer its first $match, and its memory.

Loads --studies generated studies (bench_match.Generator: ResearchStudy + eligibility Group + 1-4 Locations each,
real codes) through the store's bulk write path (Store.write + create, 500 studies a transaction), with the study
write hook installed, so each transaction also stores its studies' pre-computed matching rows. Then starts fresh
processes, each of which imports the gateway, loads the terminology, builds the matching state, refreshes it and
answers one $match (a generated person, the first --page results explained, their ResearchStudy JSON read as the
API does), and prints the time since the process was launched and its resident memory:

- ``after``: this tree (the StudyIndex built from the stored rows);
- ``before``: the gateway of another tree (--before-root, e.g. ``git archive <commit> | tar -x -C DIR``), which
  replays the change feed from 0 and re-extracts every study from FHIR JSON. Run in the same invocation, on the
  same database, so both figures share the machine's load, which is printed.

    .venv/bin/python bench/bench_study_start.py --studies 70000 --db /tmp/studies.db [--db-url URL]
        [--before-root DIR] [--runs 1] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


# The first $match: a woman of 58 with breast cancer (SNOMED), near Leeds.
PROBE = [
    {"resourceType": "Patient", "id": "probe", "gender": "female", "birthDate": "1968-03-15",
     "address": [{"postalCode": "LS1 4AP"}]},
    {"resourceType": "Condition", "id": "probe-c", "subject": {"reference": "Patient/probe"},
     "clinicalStatus": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-clinical",
                                    "code": "active"}]},
     "code": {"coding": [{"system": "http://snomed.info/sct", "code": "254837009"}]}},
]


def _rss_mb() -> tuple[float, float]:
    fields = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines() if ":" in line)
    return int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024


def _load_avg() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def measure(args) -> None:
    """In a fresh process (the gateway of sys.path[0]): first $match after the launch, and RSS."""
    from datetime import date

    from gateway.matching.index import MatchQuery
    from gateway.matching.profile import build_profile
    from gateway.matching.state import matching_state
    from gateway.store.engine import make_engine
    from gateway.store.repo import Store
    from gateway.terminology import default_terminology

    term = default_terminology()
    t_term = time.time() - args.started
    store = Store(make_engine(args.db_url))
    state = matching_state(store, term)
    t = time.perf_counter()
    state.refresh()
    t_refresh = time.perf_counter() - t
    q = MatchQuery(today=date(2026, 11, 23))
    profile = build_profile(PROBE, term, key="probe")
    page = state.studies.page(profile, q, args.page)
    docs = [state.raw["ResearchStudy"][r.study_id] for r in page.matches]  # the Bundle's entries, as the API does
    found, total = len(docs), page.total
    first = time.time() - args.started
    rss, peak = _rss_mb()
    out = {"which": args.measure, "studies": len(state.studies.studies), "first_match_after_start_s": round(first, 2),
           "terminology_loaded_s": round(t_term, 2), "refresh_s": round(t_refresh, 2), "matches": total,
           "explained": found, "rss_mb": round(rss), "peak_rss_mb": round(peak), "load_average": _load_avg(),
           # a serving process never needs the NLP extraction: these must stay unimported
           "nlp_imported": sorted(m for m in ("spacy", "medspacy") if m in sys.modules)}
    print(json.dumps(out), flush=True)


def load(args) -> None:
    sys.path.insert(0, str(ROOT))
    sys.path.insert(1, str(ROOT / "bench"))
    from bench_match import Generator
    from sqlalchemy import func, select

    from gateway.matching.studies import StudyRows
    from gateway.store import schema
    from gateway.store.engine import make_engine
    from gateway.store.repo import Store
    from gateway.terminology import default_terminology

    engine = make_engine(args.db_url, bulk=True)
    schema.migrate(engine)
    store = Store(engine)
    term = default_terminology()
    StudyRows(store, term).attach()  # the hook: each transaction stores its studies' rows
    with engine.connect() as conn:
        have = conn.execute(select(func.count()).select_from(schema.resources).where(
            schema.resources.c.type == "ResearchStudy")).scalar_one()
    gen = Generator(term, args.seed + have, False)
    t = time.perf_counter()
    for start in range(have, args.studies, 500):
        with store.write() as tx:
            for i in range(start, min(start + 500, args.studies)):
                for r in gen.study(i):
                    tx.create(r, r["id"])
        done = min(start + 500, args.studies)
        if done % 10_000 == 0 or done == args.studies:
            print(f"  {done:,} studies stored ({(done - have) / (time.perf_counter() - t):,.0f} studies/s, "
                  f"rows built in the same transactions; load {_load_avg()})", flush=True)
    with engine.connect() as conn:
        rows = conn.execute(select(func.count()).select_from(schema.match_studies)).scalar_one()
    print(f"database: {args.studies:,} studies, {rows:,} stored study rows", flush=True)
    engine.dispose()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--studies", type=int, default=70_000)
    ap.add_argument("--db", default="/tmp/bench_study_start.db", help="SQLite file (when --db-url is not given)")
    ap.add_argument("--db-url", default=None)
    ap.add_argument("--before-root", default=None, help="a tree with the gateway to compare with")
    ap.add_argument("--runs", type=int, default=1)
    ap.add_argument("--page", type=int, default=20)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--json", default=None)
    ap.add_argument("--measure", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--started", type=float, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    args.db_url = args.db_url or f"sqlite:///{args.db}"
    if args.measure:
        measure(args)
        return
    print(f"machine: {os.cpu_count()} cores; load average {_load_avg()}", flush=True)
    load(args)
    results = []
    trees = [("after", ROOT)] + ([("before", Path(args.before_root))] if args.before_root else [])
    for run in range(args.runs):
        for which, tree in trees:
            cmd = [sys.executable, "-c", "import sys, runpy; sys.path.insert(0, sys.argv[1]); sys.argv = sys.argv[2:]; "
                   "runpy.run_path(sys.argv[0], run_name='__main__')",
                   str(tree), __file__, "--db-url", args.db_url, "--measure", which, "--page", str(args.page),
                   "--seed", str(args.seed)]
            cmd += ["--started", str(time.time())]
            proc = subprocess.run(cmd, capture_output=True, text=True, cwd=tree)
            if proc.returncode != 0:
                print(proc.stderr[-3000:])
                raise SystemExit(f"the {which} process failed")
            line = proc.stdout.strip().splitlines()[-1]
            print(f"run {run + 1}, {which}: {line}", flush=True)
            results.append(json.loads(line))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
