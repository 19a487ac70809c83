"""Benchmark: import ClinicalTrials.gov-shaped studies through the ctgov-v2 mapping into SQLite.

Studies are generated from the real records in tests/data/ctgov (ids, conditions and sites varied; site counts
with a long tail like the registry's: most studies have a few sites, a few have hundreds). Prints the machine,
the size, the mapping alone and the validation rate of the same mapped resources (per-study median / p95), then
studies/s and resources/s end to end through ingest() (what /ingest and `gateway import` run) three times in
fresh SQLite files: all studies, the same again (all unchanged), and only the studies with <= 10 sites;
with per-transaction median / p95.

    .venv/bin/python bench/bench_ingest_ctgov.py            # 10,000 studies
    .venv/bin/python bench/bench_ingest_ctgov.py --n 2000 --profile
"""

from __future__ import annotations

import argparse
import copy
import cProfile
import json
import os
import platform
import pstats
import random
import shutil
import statistics
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from gateway.fhir.validate import validate_resource  # noqa: E402
from gateway.mapping import map_payload  # noqa: E402
from gateway.mapping.ingest import RECORDS_PER_TRANSACTION, ingest  # noqa: E402
from gateway.mapping.registry import default_registry  # noqa: E402
from gateway.store.engine import make_engine  # noqa: E402
from gateway.store.interactions import FhirService  # noqa: E402
from gateway.store.repo import Store  # noqa: E402
from gateway.store.schema import migrate  # noqa: E402

DATA = ROOT / "tests" / "data" / "ctgov"
STATUSES = ["RECRUITING"] * 5 + ["NOT_YET_RECRUITING", "ACTIVE_NOT_RECRUITING", "COMPLETED", "COMPLETED",
                                 "ENROLLING_BY_INVITATION", "TERMINATED", "WITHDRAWN", "SUSPENDED", "UNKNOWN"]


def real_studies() -> list[dict]:
    out = []
    for path in sorted(DATA.glob("*.json")):
        data = json.loads(path.read_text())
        out.extend(data.get("studies", [data]))
    return out


def site_count(rng: random.Random) -> int:
    """Long-tailed like ClinicalTrials.gov: ~45% one site, ~80% at most 10, ~2% over 50."""
    r = rng.random()
    if r < 0.45:
        return 1
    if r < 0.80:
        return rng.randint(2, 10)
    if r < 0.98:
        return rng.randint(11, 50)
    return rng.randint(51, 437)


def generate(n: int, seed: int = 7) -> list[dict]:
    rng = random.Random(seed)
    templates = real_studies()
    sites = [loc for s in templates for loc in s["protocolSection"].get("contactsLocationsModule", {})
             .get("locations", [])]
    conditions = sorted({c for s in templates for c in s["protocolSection"].get("conditionsModule", {})
                        .get("conditions", [])})
    out = []
    for i in range(n):
        study = copy.deepcopy({k: v for k, v in rng.choice(templates).items() if k != "resultsSection"})
        ps = study["protocolSection"]
        nct = f"NCT9{i:07d}"
        ps["identificationModule"]["nctId"] = nct
        ps["identificationModule"].pop("secondaryIdInfos", None)
        ps["identificationModule"]["briefTitle"] = f"{ps['identificationModule'].get('briefTitle', 'Study')} #{i}"
        ps.setdefault("statusModule", {})["overallStatus"] = rng.choice(STATUSES)
        ps.setdefault("conditionsModule", {})["conditions"] = rng.sample(conditions, rng.randint(1, 4))
        k = site_count(rng)
        chosen = rng.sample(sites, k) if k <= len(sites) else sites
        locs = []
        for j, loc in enumerate(chosen):
            loc = dict(loc, facility=f"{loc.get('facility', 'Site')} {j}")
            loc["status"] = rng.choice(["RECRUITING", "NOT_YET_RECRUITING", "COMPLETED"])
            locs.append(loc)
        ps.setdefault("contactsLocationsModule", {})["locations"] = locs
        out.append(study)
    return out


def pct(values: list[float], p: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(round(p / 100 * (len(s) - 1))))]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=10_000, help="studies to import")
    ap.add_argument("--e2e", type=int, default=None,
                    help="store only the first N of the studies end to end (default: all; the mapping and "
                         "validation figures always cover all of them)")
    ap.add_argument("--profile", action="store_true", help="print the top functions of the first end-to-end run "
                    "(BENCH_SORT=tottime, BENCH_TOP=40 to change the listing)")
    args = ap.parse_args()

    studies = generate(args.n)
    registry = default_registry()
    mapping = registry.get("ctgov-v2")

    # 1. the mapping alone
    map_times, mapped = [], []
    t0 = time.perf_counter()
    for s in studies:
        t = time.perf_counter()
        [rec] = map_payload(mapping, s, conceptmaps=registry.conceptmaps)
        map_times.append(time.perf_counter() - t)
        mapped.append(rec)
    map_total = time.perf_counter() - t0
    resources = sum(len(r.bundle["entry"]) for r in mapped)

    # 2. validation alone of the same mapped resources (the rate the store cannot beat: it validates each once)
    t0, c0 = time.perf_counter(), time.process_time()
    for r in mapped:
        for e in r.bundle["entry"]:
            validate_resource(e["resource"])
    val_total, val_cpu = time.perf_counter() - t0, time.process_time() - c0

    load = os.getloadavg()
    print(f"machine: {platform.machine()} {platform.processor() or ''} {os.cpu_count()} CPUs, "
          f"Python {platform.python_version()}, {platform.system()} {platform.release()}")
    print(f"load average before the end-to-end run (1/5/15 min): {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} "
          "(machine shared with other work)")
    print(f"size: {args.n} studies, {resources} resources ({resources / args.n:.1f} per study)")
    print(f"mapping alone:   {args.n / map_total:8.0f} studies/s {resources / map_total:9.0f} resources/s   "
          f"per study median {statistics.median(map_times) * 1e3:.2f} ms p95 {pct(map_times, 95) * 1e3:.2f} ms")
    print(f"validation only: {resources / val_total:26.0f} resources/s ({resources / val_cpu:.0f} per CPU second)",
          flush=True)

    # 3. end to end: map + store (validate, conditional PUTs, index, change feed) in a fresh SQLite file,
    #    the way /ingest and `gateway import` store records: RECORDS_PER_TRANSACTION records per transaction.
    e2e_studies = studies[: args.e2e] if args.e2e else studies
    e2e_resources = sum(len(r.bundle["entry"]) for r in mapped[: len(e2e_studies)])
    small = [s for s in e2e_studies if len(s["protocolSection"]["contactsLocationsModule"]["locations"]) <= 10]
    tmp = Path(tempfile.mkdtemp(prefix="bench-ingest-"))
    prof = cProfile.Profile() if args.profile else None
    try:
        all_run = _e2e(tmp / "all.sqlite3", mapping, registry, e2e_studies, prof)
        again = _e2e(tmp / "all.sqlite3", mapping, registry, e2e_studies, None)
        small_run = _e2e(tmp / "small.sqlite3", mapping, registry, small, None)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    load = os.getloadavg()
    print(f"load average after (1/5/15 min): {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    print(f"end to end, {RECORDS_PER_TRANSACTION} studies per transaction, fresh SQLite file each run:")
    e2e_rate = e2e_resources / all_run.seconds
    print(f"  all {len(e2e_studies)} studies ({e2e_resources} resources): "
          f"{len(e2e_studies) / all_run.seconds:.0f} studies/s, {e2e_rate:.0f} resources/s; {all_run.describe()}")
    print(f"  share of the validation rate: {e2e_rate / (resources / val_total):.0%} wall-clock, "
          f"{(e2e_resources / all_run.cpu) / (resources / val_cpu):.0%} in CPU time (target >= 50%)")
    print(f"  the same {len(e2e_studies)} studies imported again (all unchanged): "
          f"{len(e2e_studies) / again.seconds:.0f} studies/s; {again.describe()}")
    print(f"  only the {len(small)} studies with <= 10 sites: {len(small) / small_run.seconds:.0f} studies/s "
          f"(target >= 300); {small_run.describe()}")
    if prof:
        pstats.Stats(prof).sort_stats(os.environ.get("BENCH_SORT", "cumulative")).print_stats(
            int(os.environ.get("BENCH_TOP", "25")))


class Run:
    def __init__(self, seconds: float, cpu: float, outcomes: Counter, chunk_ms: list[float]):
        self.seconds, self.cpu, self.outcomes, self.chunk_ms = seconds, cpu, outcomes, chunk_ms

    def describe(self) -> str:
        o = ", ".join(f"{k} {v}" for k, v in sorted(self.outcomes.items()))
        return (f"{o}; {self.seconds:.1f} s wall-clock, {self.cpu:.1f} s CPU; "
                f"per transaction median {statistics.median(self.chunk_ms):.0f} ms, "
                f"p95 {pct(self.chunk_ms, 95):.0f} ms")


def _e2e(db: Path, mapping, registry, studies: list[dict], prof) -> Run:
    """Map and store ``studies`` through ingest() (the /ingest and CLI path); time the whole run."""
    engine = make_engine(f"sqlite:///{db}")
    migrate(engine)
    service = FhirService(Store(engine), max_bundle_entries=1000)
    marks: list[float] = []
    outcomes: Counter = Counter()

    def records():
        for s in studies:
            yield from map_payload(mapping, s, conceptmaps=registry.conceptmaps)

    def progress(rec, result) -> None:
        outcomes[result.outcome] += 1
        marks.append(time.perf_counter())
        if len(marks) % 1000 == 0:
            print(f"  ... {len(marks)} studies stored", file=sys.stderr, flush=True)

    if prof:
        prof.enable()
    t0, c0 = time.perf_counter(), time.process_time()
    ingest(service, records(), on_result=progress)
    seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
    if prof:
        prof.disable()
    engine.dispose()
    # on_result runs once a transaction has committed, for each of its RECORDS_PER_TRANSACTION records in turn
    n = RECORDS_PER_TRANSACTION
    ends = [t0] + [m for i, m in enumerate(marks) if (i + 1) % n == 0 or i + 1 == len(marks)]
    chunk_ms = [(b - a) * 1000 for a, b in zip(ends, ends[1:], strict=False)] or [seconds * 1000]
    return Run(seconds, cpu, outcomes, chunk_ms)

if __name__ == "__main__":
    main()
