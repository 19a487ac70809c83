"""Store benchmark: transaction Bundle ingest (100 entries) and read by id, on SQLite (or --database-url).

Prints the machine, the sizes, and median / p95 figures. Three measurements in one run:

1. typical ResearchStudy resources (about 1.5 KB) ingested as 100-entry transactions (target >= 1,000/s);
2. a mix of sizes (whole Synthea records, typical and large studies) ingested the same way, against the
   raw fhir.resources validation rate of the very same resources measured in this run (target >= 50%);
3. read by id, in-process, through the store and through the Flask app (target p95 <= 10 ms).

    .venv/bin/python bench/bench_store.py [--studies 3000] [--mix-rounds 6] [--reads 3000]
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

import orjson

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from gateway.api.app import create_app  # noqa: E402
from gateway.config import Settings, StoreSettings  # noqa: E402
from gateway.fhir import models  # noqa: E402
from gateway.fhir.conventions import CTGOV, SNOMED  # noqa: E402
from gateway.store.interactions import FhirService  # noqa: E402

SYNTHEA = ROOT / "tests" / "data" / "synthea"
SPONSOR = "https://sponsor.example.org/studies"
WORDS = ("randomised open-label phase study of adjuvant therapy in adults with newly diagnosed or recurrent "
         "disease evaluating overall survival progression-free survival quality of life safety tolerability "
         "biomarker stratified cohort dose escalation expansion").split()
CONDITIONS = [("393563007", "Glioblastoma multiforme"), ("254637007", "Non-small cell lung cancer"),
              ("254837009", "Malignant neoplasm of breast"), ("363406005", "Malignant neoplasm of colon"),
              ("399068003", "Malignant tumor of prostate"), ("94225005", "Secondary malignant neoplasm of brain")]


# -- data -----------------------------------------------------------------------------------------
def _text(rng: random.Random, n: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(n)).capitalize() + "."


def study(rng: random.Random, n: int, large: bool = False) -> dict:
    """A ResearchStudy like a sponsor sends: ~1.5 KB, or ~20-40 KB when ``large`` (long text, many sites)."""
    code, display = rng.choice(CONDITIONS)
    sites = rng.randint(100, 250) if large else rng.randint(2, 4)
    return {
        "resourceType": "ResearchStudy",
        "identifier": [{"system": SPONSOR, "value": f"BENCH-{n:07d}"},
                       {"system": CTGOV, "value": f"NCT{n:08d}"}],
        "title": _text(rng, 12),
        "status": rng.choice(["active", "active", "approved", "closed-to-accrual"]),
        "phase": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/research-study-phase",
                              "code": "phase-2", "display": "Phase 2"}]},
        "category": [{"text": "Interventional"}],
        "condition": [{"coding": [{"system": SNOMED, "code": code, "display": display}], "text": display}],
        "keyword": [{"text": rng.choice(WORDS)} for _ in range(3)],
        "period": {"start": f"20{rng.randint(10, 25)}-0{rng.randint(1, 9)}-1{rng.randint(0, 9)}"},
        "description": _text(rng, 2000 if large else 45),
        "sponsor": {"reference": "Organization/bench-sponsor", "display": "Bench Sponsor Ltd"},
        "enrollment": [{"reference": f"Group/elig-{n}"}],
        "site": [{"reference": f"Location/site-{n}-{i}", "display": f"Hospital site {i}"} for i in range(sites)],
        "contact": [{"name": "Trial coordinator", "telecom": [{"system": "email",
                                                                "value": f"trial{n}@sponsor.example.org"}]}],
    }


def transaction(resources: list[dict], conditional: bool = False) -> dict:
    entries = []
    for r in resources:
        if conditional and r["resourceType"] == "ResearchStudy":
            ident = r["identifier"][0]
            req = {"method": "PUT", "url": f"ResearchStudy?identifier={ident['system']}|{ident['value']}"}
        else:
            req = {"method": "POST", "url": r["resourceType"]}
        entries.append({"fullUrl": r.pop("_fullUrl", f"urn:uuid:{uuid.uuid4()}"), "request": req, "resource": r})
    return {"resourceType": "Bundle", "type": "transaction", "entry": entries}


def synthea_copy(path: Path) -> list[dict]:
    """One Synthea record with fresh urn:uuid fullUrls (so every copy is a new patient)."""
    raw = path.read_text()
    bundle = orjson.loads(raw)
    for e in bundle["entry"]:
        old = e["fullUrl"]
        raw = raw.replace(old, f"urn:uuid:{uuid.uuid4()}")
    bundle = orjson.loads(raw)
    out = []
    for e in bundle["entry"]:
        r = e["resource"]
        r["_fullUrl"] = e["fullUrl"]
        out.append(r)
    return out


# -- measurement ------------------------------------------------------------------------------------
def pct(values: list[float], p: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(round(p / 100 * (len(s) - 1))))]


def size_summary(resources: list[dict]) -> str:
    sizes = [len(orjson.dumps({k: v for k, v in r.items() if k != "_fullUrl"})) for r in resources]
    by_type: dict[str, list[int]] = {}
    for r, n in zip(resources, sizes, strict=True):
        by_type.setdefault(r["resourceType"], []).append(n)
    top = sorted(by_type.items(), key=lambda kv: -len(kv[1]))[:8]
    return (f"{len(sizes)} resources, bytes min {min(sizes)} / median {int(statistics.median(sizes))} / "
            f"p90 {pct(sizes, 90)} / max {max(sizes)}; total {sum(sizes) / 1e6:.1f} MB\n      by type: "
            + ", ".join(f"{t} {len(v)} (median {int(statistics.median(v))} B)" for t, v in top))


class Rate:
    """Resources per second by the wall clock and by this process's CPU time (robust on a shared machine)."""

    def __init__(self, n: int, wall: float, cpu: float):
        self.n, self.wall, self.cpu = n, n / wall, n / cpu

    def __str__(self) -> str:
        return f"{self.wall:,.0f} resources/s wall-clock ({self.cpu:,.0f}/s of process CPU time)"


def validation_rate(resources: list[dict]) -> Rate:
    """Resources/s of fhir.resources (R4B) model validation alone: the ceiling for ingest.

    One resource of each type is validated first, so that building the models' validators (a one-off
    cost paid at first use) is not counted.
    """
    clean = [{k: v for k, v in r.items() if k != "_fullUrl"} for r in resources]
    for r in {r["resourceType"]: r for r in clean}.values():
        models.construct(r["resourceType"], r)
    wall, cpu = time.perf_counter(), time.process_time()
    for r in clean:
        models.construct(r["resourceType"], r)
    return Rate(len(clean), time.perf_counter() - wall, time.process_time() - cpu)


def ingest(svc: FhirService, bundles: list[bytes]) -> tuple[Rate, list[float]]:
    """Rate over all bundles (JSON parse included) and per-bundle wall seconds."""
    per_bundle, n = [], 0
    wall, cpu = time.perf_counter(), time.process_time()
    for raw in bundles:
        t = time.perf_counter()
        bundle = orjson.loads(raw)
        svc.process_bundle(bundle)
        per_bundle.append(time.perf_counter() - t)
        n += len(bundle["entry"])
    return Rate(n, time.perf_counter() - wall, time.process_time() - cpu), per_bundle


def chunk(items: list, size: int) -> list[list]:
    return [items[i:i + size] for i in range(0, len(items), size)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--studies", type=int, default=3000, help="typical studies to ingest (default 3000)")
    ap.add_argument("--mix-rounds", type=int, default=6, help="Synthea record copies per file in the mix")
    ap.add_argument("--reads", type=int, default=3000, help="reads by id")
    ap.add_argument("--database-url", default=None, help="default: a fresh SQLite file in a temp folder")
    args = ap.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="bench-store-"))
    url = args.database_url or f"sqlite:///{tmp / 'bench.sqlite3'}"
    app = create_app(Settings(store=StoreSettings(url), instance_path=tmp, mappings_path=ROOT / "mappings"))
    svc: FhirService = app.extensions["gateway.service"]
    store = svc.store
    rng = random.Random(20261123)

    print(f"machine: {platform.node()} {platform.machine()} {os.cpu_count()} CPUs, Python {platform.python_version()}"
          f", {platform.platform()}")
    print(f"load:    {' '.join(f'{x:.2f}' for x in os.getloadavg())} (1/5/15 min; the machine is shared)")
    print(f"backend: {store.engine.dialect.name} ({'temp file' if not args.database_url else 'given URL'})")

    # 1. typical studies --------------------------------------------------------------------------
    typical = [study(rng, i) for i in range(args.studies)]
    print(f"\n[1] typical ResearchStudy ingest, transactions of 100 entries (POST)\n    size: {size_summary(typical)}")
    ceiling = validation_rate(typical)
    bundles = [orjson.dumps(transaction(c)) for c in chunk(typical, 100)]
    rate, per = ingest(svc, bundles)
    print(f"    validation alone: {ceiling}")
    print(f"    ingest: {rate}; {rate.cpu / ceiling.cpu:.0%} of validation (CPU time)\n"
          f"    per 100-entry bundle: median {statistics.median(per) * 1000:.0f} ms, p95 {pct(per, 95) * 1000:.0f} ms"
          f"  [target >= 1,000/s: wall-clock {'met' if rate.wall >= 1000 else 'MISSED'}, "
          f"CPU time {'met' if rate.cpu >= 1000 else 'MISSED'}]")

    # Re-push of the same studies as conditional updates: the sponsor's daily re-send, nothing changed.
    rng2 = random.Random(20261123)
    again = [study(rng2, i) for i in range(args.studies)]
    bundles = [orjson.dumps(transaction(c, conditional=True)) for c in chunk(again, 100)]
    rate2, per2 = ingest(svc, bundles)
    print(f"    re-push as conditional updates (PUT ResearchStudy?identifier=..., all unchanged): {rate2}\n"
          f"    per bundle: median {statistics.median(per2) * 1000:.0f} ms, p95 {pct(per2, 95) * 1000:.0f} ms")

    # 2. mixed sizes ------------------------------------------------------------------------------
    records = sorted(SYNTHEA.glob("*.json"))
    txs: list[list[dict]] = []
    for _ in range(args.mix_rounds):
        for path in records:
            patient = synthea_copy(path)  # ~70 entries, kept whole: its urn:uuid references stay inside
            fill = [study(rng, 10_000_000 + rng.randrange(10**6), large=rng.random() < 0.3)
                    for _ in range(100 - len(patient))]
            txs.append(patient + fill)
    mixed = [r for tx in txs for r in tx]
    print(f"\n[2] mixed sizes: {len(txs)} transactions of 100 (one whole Synthea record + typical and large "
          f"studies)\n    size: {size_summary(mixed)}")
    ceiling = validation_rate(mixed)
    bundles = [orjson.dumps(transaction(tx)) for tx in txs]
    rate, per = ingest(svc, bundles)
    print(f"    validation alone: {ceiling}")
    print(f"    ingest: {rate}\n    = {rate.wall / ceiling.wall:.0%} of validation (wall-clock), "
          f"{rate.cpu / ceiling.cpu:.0%} (CPU time)  [target >= 50%: "
          f"{'met' if rate.cpu >= 0.5 * ceiling.cpu else 'MISSED'}]\n"
          f"    per bundle: median {statistics.median(per) * 1000:.0f} ms, p95 {pct(per, 95) * 1000:.0f} ms")

    # 3. read by id -------------------------------------------------------------------------------
    ids = [(c["type"], c["id"]) for c in store.changes_since(0, limit=10**7)]
    picks = [rng.choice(ids) for _ in range(args.reads)]
    times = []
    for t, i in picks:
        s = time.perf_counter()
        store.read(t, i)
        times.append(time.perf_counter() - s)
    print(f"\n[3] read by id over {store.count():,} stored resources, {args.reads} random reads")
    print(f"    Store.read: median {statistics.median(times) * 1000:.2f} ms, p95 {pct(times, 95) * 1000:.2f} ms"
          f"  [target p95 <= 10 ms: {'met' if pct(times, 95) <= 0.010 else 'MISSED'}]")
    client = app.test_client()
    times = []
    for t, i in picks:
        s = time.perf_counter()
        r = client.get(f"/fhir/{t}/{i}")
        times.append(time.perf_counter() - s)
        assert r.status_code == 200
    print(f"    GET /fhir/Type/id (Flask app in-process): median {statistics.median(times) * 1000:.2f} ms, "
          f"p95 {pct(times, 95) * 1000:.2f} ms  [target p95 <= 10 ms: "
          f"{'met' if pct(times, 95) <= 0.010 else 'MISSED'}]")
    store.engine.dispose()


if __name__ == "__main__":
    main()
