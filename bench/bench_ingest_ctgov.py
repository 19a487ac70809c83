"""Benchmark: import ClinicalTrials.gov-shaped studies through the ctgov-v2 mapping into SQLite.

Studies are generated from the real records in tests/data/ctgov (ids, conditions and sites varied; site counts
with a long tail like the registry's: most studies have a few sites, a few have hundreds). Prints the machine,
the size, studies/s and resources/s end to end, the mapping alone, the validation rate of the same mapped
resources, and per-study median / p95 latencies.

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
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from gateway.fhir.validate import validate_resource  # noqa: E402
from gateway.mapping import map_payload  # noqa: E402
from gateway.mapping.ingest import ingest_record  # noqa: E402
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
    ap.add_argument("--profile", action="store_true", help="print the top functions of the end-to-end run")
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
    t0 = time.perf_counter()
    for r in mapped:
        for e in r.bundle["entry"]:
            validate_resource(e["resource"])
    val_total = time.perf_counter() - t0

    load = os.getloadavg()
    print(f"machine: {platform.machine()} {platform.processor() or ''} {os.cpu_count()} CPUs, "
          f"Python {platform.python_version()}, {platform.system()} {platform.release()}")
    print(f"load average before the end-to-end run (1/5/15 min): {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} "
          "(machine shared with other work)")
    print(f"size: {args.n} studies, {resources} resources ({resources / args.n:.1f} per study)")
    print(f"mapping alone:   {args.n / map_total:8.0f} studies/s {resources / map_total:9.0f} resources/s   "
          f"per study median {statistics.median(map_times) * 1e3:.2f} ms p95 {pct(map_times, 95) * 1e3:.2f} ms")
    print(f"validation only: {resources / val_total:26.0f} resources/s", flush=True)

    # 3. end to end: map + store (validate, conditional PUTs, index, change feed) in a fresh SQLite file
    e2e_studies = studies[: args.e2e] if args.e2e else studies
    e2e_resources = sum(len(r.bundle["entry"]) for r in mapped[: len(e2e_studies)])
    tmp = Path(tempfile.mkdtemp(prefix="bench-ingest-"))
    engine = make_engine(f"sqlite:///{tmp / 'bench.sqlite3'}")
    migrate(engine)
    service = FhirService(Store(engine), max_bundle_entries=1000)
    e2e_times, small_times, rejected = [], [], 0
    prof = cProfile.Profile() if args.profile else None
    if prof:
        prof.enable()
    t0 = time.perf_counter()
    for i, s in enumerate(e2e_studies, 1):
        t = time.perf_counter()
        [rec] = map_payload(mapping, s, conceptmaps=registry.conceptmaps)
        result = ingest_record(service, rec)
        dt = time.perf_counter() - t
        e2e_times.append(dt)
        if len(s["protocolSection"]["contactsLocationsModule"]["locations"]) <= 10:
            small_times.append(dt)
        rejected += result.outcome == "rejected"
        if i % 500 == 0:
            print(f"  ... {i} studies stored", file=sys.stderr, flush=True)
    e2e_total = time.perf_counter() - t0
    engine.dispose()
    shutil.rmtree(tmp, ignore_errors=True)
    if prof:
        prof.disable()

    load = os.getloadavg()
    print(f"load average after (1/5/15 min): {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    print(f"end to end on {len(e2e_studies)} of these studies ({e2e_resources} resources, {len(small_times)} "
          f"with <= 10 sites; rejected {rejected}):")
    print(f"  all:             {len(e2e_studies) / e2e_total:8.0f} studies/s {e2e_resources / e2e_total:9.0f} "
          f"resources/s   per study median {statistics.median(e2e_times) * 1e3:.2f} ms "
          f"p95 {pct(e2e_times, 95) * 1e3:.2f} ms")
    small_rate = len(small_times) / sum(small_times)
    print(f"  studies with <= 10 sites: {small_rate:.0f} studies/s (target >= 300), "
          f"median {statistics.median(small_times) * 1e3:.2f} ms p95 {pct(small_times, 95) * 1e3:.2f} ms")
    print(f"  end-to-end resources/s as a share of validation resources/s: "
          f"{(e2e_resources / e2e_total) / (resources / val_total):.0%} (target >= 50%)")
    if prof:
        pstats.Stats(prof).sort_stats("cumulative").print_stats(25)


if __name__ == "__main__":
    main()
