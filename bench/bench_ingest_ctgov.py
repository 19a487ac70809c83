"""Benchmark: import ClinicalTrials.gov-shaped studies through the ctgov-v2 mapping into SQLite.

Studies are generated from the real records in tests/data/ctgov (ids, conditions and sites varied; site counts
with a long tail like the registry's: most studies have a few sites, a few have hundreds). Prints the machine,
the size, the mapping alone and the validation rate of the same mapped resources (per-study median / p95), then
studies/s and resources/s end to end: `gateway import` of the studies written as files, as its own process, in
fresh SQLite files: all studies, the same again (all unchanged), and only the studies with <= 10 sites; with the
CLI's default --workers and with --workers 0 (everything in one process).

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
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from gateway.fhir.validate import validate_resource  # noqa: E402
from gateway.ingest import BULK_RECORDS_PER_TRANSACTION, ingest  # noqa: E402
from gateway.mapping import map_payload  # noqa: E402
from gateway.mapping.pipeline import default_workers  # noqa: E402
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
    ap.add_argument("--workers", type=int, default=None,
                    help="gateway import --workers (default: both the CLI's default and 0, one after the other)")
    ap.add_argument("--layout", choices=["per-study", "pages", "one"], default="per-study",
                    help="how the studies are written for `gateway import`: a file per study, API pages of 1,000 "
                         "studies ({\"studies\": [...]}), or one JSON array")
    ap.add_argument("--profile", action="store_true", help="also profile an in-process ingest of the studies "
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
    print(f"size: {args.n} studies, {resources} resources ({resources / args.n:.1f} per study); files: {args.layout}")
    print(f"mapping alone:   {args.n / map_total:8.0f} studies/s {resources / map_total:9.0f} resources/s   "
          f"per study median {statistics.median(map_times) * 1e3:.2f} ms p95 {pct(map_times, 95) * 1e3:.2f} ms")
    print(f"validation only: {resources / val_total:26.0f} resources/s ({resources / val_cpu:.0f} per CPU second)",
          flush=True)

    # 3. end to end: `gateway import` (read, map, validate, store with conditional PUTs, index and change
    #    feed) of the studies written as files, in a fresh SQLite file, as a separate process (wall-clock and
    #    the CPU time of it and its worker processes).
    e2e_studies = studies[: args.e2e] if args.e2e else studies
    e2e_resources = sum(len(r.bundle["entry"]) for r in mapped[: len(e2e_studies)])
    small = [i for i, s in enumerate(e2e_studies)
             if len(s["protocolSection"]["contactsLocationsModule"]["locations"]) <= 10]
    small_resources = sum(len(mapped[i].bundle["entry"]) for i in small)
    tmp = Path(tempfile.mkdtemp(prefix="bench-ingest-"))
    try:
        for folder, which in (("all", range(len(e2e_studies))), ("small", small)):
            (tmp / folder).mkdir()
            _write(tmp / folder, [e2e_studies[i] for i in which], args.layout)
        workers = [args.workers] if args.workers is not None else sorted({default_workers(), 0}, reverse=True)
        print(f"end to end, `gateway import` in a fresh SQLite file ({BULK_RECORDS_PER_TRANSACTION} records per "
              "transaction):")
        rate = resources / val_total
        for w in workers:
            label = f"--workers {w}" + (" (all in one process)" if w == 0 else "")
            run = _import(tmp, "all", f"all-{w}", w)
            print(f"  {label}: all {len(e2e_studies)} studies ({e2e_resources} resources): {run.describe()}; "
                  f"{len(e2e_studies) / run.seconds:.0f} studies/s, {e2e_resources / run.seconds:.0f} resources/s = "
                  f"{e2e_resources / run.seconds / rate:.0%} of the validation rate (target >= 50%)", flush=True)
            if w == workers[0]:
                again = _import(tmp, "all", f"all-{w}", w)
                print(f"  {label}: the same {len(e2e_studies)} studies again (unchanged): {again.describe()}; "
                      f"{len(e2e_studies) / again.seconds:.0f} studies/s", flush=True)
            run = _import(tmp, "small", f"small-{w}", w)
            print(f"  {label}: only the {len(small)} studies with <= 10 sites ({small_resources} resources): "
                  f"{run.describe()}; {len(small) / run.seconds:.0f} studies/s (target >= 300)", flush=True)
        if args.profile:
            prof = cProfile.Profile()
            _in_process(tmp / "profile.sqlite3", mapping, registry, e2e_studies, prof)
            pstats.Stats(prof).sort_stats(os.environ.get("BENCH_SORT", "cumulative")).print_stats(
                int(os.environ.get("BENCH_TOP", "25")))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    load = os.getloadavg()
    print(f"load average after (1/5/15 min): {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")


def _write(folder: Path, studies: list[dict], layout: str) -> None:
    if layout == "per-study":
        for i, study in enumerate(studies):
            (folder / f"{i:06d}.json").write_bytes(json.dumps(study).encode())
    elif layout == "pages":
        for k in range(0, len(studies), 1000):
            page = {"studies": studies[k:k + 1000], "nextPageToken": f"page-{k // 1000 + 1}"}
            (folder / f"page-{k // 1000:04d}.json").write_bytes(json.dumps(page).encode())
    else:
        (folder / "studies.json").write_bytes(json.dumps(studies).encode())


class Run:
    def __init__(self, seconds: float, cpu: float, summary: str):
        self.seconds, self.cpu, self.summary = seconds, cpu, summary

    def describe(self) -> str:
        return f"{self.summary}; {self.seconds:.1f} s wall-clock, {self.cpu:.1f} s CPU"


def _import(tmp: Path, folder: str, db: str, workers: int) -> Run:
    """`gateway import --mapping ctgov-v2 FOLDER` as its own process; wall-clock and CPU of it and its workers."""
    env = {**os.environ, "GATEWAY_DATABASE_URL": f"sqlite:///{tmp / db}.sqlite3",
           "GATEWAY_INSTANCE_PATH": str(tmp), "GATEWAY_MAPPINGS_PATH": str(ROOT / "mappings")}
    cmd = [sys.executable, "-c", "from gateway.cli import main; main()", "import", "--mapping", "ctgov-v2",
           "--quiet", "--workers", str(workers), str(tmp / folder)]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    done = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode not in (0, 1):  # 1: some records rejected, reported in the summary
        raise SystemExit(f"gateway import failed ({done.returncode}): {done.stderr[-2000:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return Run(seconds, cpu, done.stdout.strip().splitlines()[-1])


def _in_process(db: Path, mapping, registry, studies: list[dict], prof) -> None:
    """Map and store ``studies`` through ingest() in this process, under the profiler."""
    engine = make_engine(f"sqlite:///{db}")
    migrate(engine)
    service = FhirService(Store(engine), max_bundle_entries=1000)

    def records():
        for s in studies:
            yield from map_payload(mapping, s, conceptmaps=registry.conceptmaps)

    prof.enable()
    ingest(service, records())
    prof.disable()
    engine.dispose()

if __name__ == "__main__":
    main()
