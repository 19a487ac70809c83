"""Benchmark: ResearchStudy search over HTTP on SQLite at registry scale (issue #14: p95 <= 100 ms).

Builds N studies (default 70,000) from the 1,273 real ClinicalTrials.gov records of tests/data/search-quality
(mapped once through ctgov-v2: title, summary, conditions, keywords, eligibility Group with its criteria text;
ids varied), each with 1-4 sites placed at UK postcode district centroids, site statuses mostly recruiting. They are
written through the store's bulk path (Tx.create, 500 studies a transaction, every index row in the same
transaction, as any write). Then, over HTTP to a werkzeug server on loopback (client in the same process), in one
run: ``_text`` with patient queries, ``postcode`` + ``distance`` (50 km), both together, and a plain
``title:contains`` search beside them. Prints median and p95 per kind.

    .venv/bin/python bench/bench_search.py              # 70,000 studies
    .venv/bin/python bench/bench_search.py --n 20000 --requests 100
"""

from __future__ import annotations

import argparse
import copy
import gzip
import os
import platform
import random
import statistics
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from gateway.api.app import create_app  # noqa: E402
from gateway.config import Settings, StoreSettings  # noqa: E402
from gateway.fhir.conventions import EXT_SITE_RECRUITMENT_STATUS  # noqa: E402
from gateway.mapping import map_payload  # noqa: E402
from gateway.mapping.registry import default_registry  # noqa: E402
from gateway.store import geo  # noqa: E402

CORPUS = ROOT / "tests" / "data" / "search-quality" / "corpus.json.gz"
TEXT_QUERIES = ["brain tumour", "blood cancer", "bowel cancer", "leukaemia", "oesophageal cancer", "womb cancer",
                "prostrate cancer", "lung cancer", "breast cancer", "melonoma", "kidney cancer", "myeloma"]
SITE_STATUSES = ["recruiting"] * 7 + ["not-yet-recruiting", "active-not-recruiting", "completed"]
CONTAINS = ["cancer", "lymphoma", "phase", "immunotherapy", "radiation", "breast"]


def templates() -> list[tuple[dict, dict | None]]:
    """(ResearchStudy, eligibility Group) made from each real record by the ctgov-v2 mapping."""
    with gzip.open(CORPUS, "rt", encoding="utf-8") as fh:
        raw = fh.read().encode()
    reg = default_registry()
    out = []
    for rec in map_payload(reg.get("ctgov-v2"), raw, conceptmaps=reg.conceptmaps):
        if not rec.ok:
            continue
        res = [e["resource"] for e in rec.bundle["entry"]]
        study = next(r for r in res if r["resourceType"] == "ResearchStudy")
        group = next((r for r in res if r["resourceType"] == "Group"), None)
        out.append((study, group))
    return out


def load(store, n: int, rng: random.Random) -> float:
    """Write n studies with their Groups and sites; returns seconds."""
    base = templates()
    districts = list(geo.load_centroids().items())
    t0 = time.perf_counter()
    per_tx = 500
    for start in range(0, n, per_tx):
        with store.write() as tx:
            for i in range(start, min(n, start + per_tx)):
                study_t, group_t = base[i % len(base)]
                study = {k: copy.deepcopy(v) for k, v in study_t.items() if k not in ("enrollment", "site")}
                study["identifier"] = [{"system": "https://bench.example.org/study", "value": f"S{i}"}]
                if group_t is not None:
                    gid = uuid.uuid4().hex
                    tx.create(copy.deepcopy(group_t), gid)
                    study["enrollment"] = [{"reference": f"Group/{gid}"}]
                sites = []
                for _ in range(rng.choice([1, 1, 2, 2, 3, 4])):
                    oc, (lat, lon) = rng.choice(districts)
                    lid = uuid.uuid4().hex
                    tx.create({"resourceType": "Location", "status": "active", "name": f"Site {oc} {lid[:6]}",
                               "address": {"postalCode": oc, "country": "GB"},
                               "position": {"latitude": lat, "longitude": lon},
                               "extension": [{"url": EXT_SITE_RECRUITMENT_STATUS,
                                              "valueCode": rng.choice(SITE_STATUSES)}]}, lid)
                    sites.append({"reference": f"Location/{lid}"})
                study["site"] = sites
                tx.create(study, uuid.uuid4().hex)
        if (start // per_tx) % 20 == 0:
            print(f"  {min(n, start + per_tx):,} studies ({time.perf_counter() - t0:.0f} s)", flush=True)
    return time.perf_counter() - t0


def _serve(app):
    from werkzeug.serving import WSGIRequestHandler, make_server

    class Quiet(WSGIRequestHandler):
        def log_request(self, *args, **kwargs) -> None:  # one line per request would dominate the output
            pass

    server = make_server("127.0.0.1", 0, app, threaded=True, request_handler=Quiet)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_port}/fhir"


def timed(session: requests.Session, url: str) -> tuple[float, float, int]:
    """(wall ms, CPU ms of this process: server and client together, unaffected by other processes, total)."""
    t0, c0 = time.perf_counter(), time.process_time()
    resp = session.get(url, headers={"Accept": "application/fhir+json"})
    ms, cpu = (time.perf_counter() - t0) * 1000, (time.process_time() - c0) * 1000
    if resp.status_code != 200:
        raise SystemExit(f"{url}: HTTP {resp.status_code} {resp.text[:300]}")
    return ms, cpu, resp.json().get("total", -1)


def report(name: str, samples: list[float], cpus: list[float], totals: list[int]) -> None:
    p95 = statistics.quantiles(samples, n=20)[18]
    cpu95 = statistics.quantiles(cpus, n=20)[18]
    counted = [t for t in totals if t >= 0]  # -1: Bundle.total left out (_total=none)
    matches = f"matches median {int(statistics.median(counted)):,}" if counted else "not counted"
    print(f"{name:45} n={len(samples):4d}  wall median {statistics.median(samples):6.1f} p95 {p95:6.1f} ms | "
          f"CPU median {statistics.median(cpus):6.1f} p95 {cpu95:6.1f} ms | {matches}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=70_000, help="studies (default 70,000)")
    ap.add_argument("--requests", type=int, default=200, help="requests per kind")
    ap.add_argument("--seed", type=int, default=14)
    ap.add_argument("--db", type=Path, help="keep the SQLite file here; an existing file is reused, not reloaded")
    ap.add_argument("--total", choices=("accurate", "none", "both"), default="both",
                    help="_total of the _text / postcode requests: accurate (Bundle.total counted), none (not counted: "
                         "place searches nearest first), or both, one after the other (default)")
    args = ap.parse_args()
    rng = random.Random(args.seed)
    print(f"machine: {platform.machine()} {platform.processor() or ''} {os.cpu_count()} CPUs, "
          f"Python {platform.python_version()}, {platform.system()}; load average {os.getloadavg()[0]:.1f}")
    with tempfile.TemporaryDirectory() as tmp:
        db = args.db.resolve() if args.db else Path(tmp) / "bench.sqlite3"
        reuse = db.exists()
        settings = Settings(store=StoreSettings(f"sqlite:///{db}"), instance_path=Path(tmp),
                            mappings_path=ROOT / "mappings")
        app = create_app(settings)
        store = app.extensions["gateway.store"]
        if reuse:  # for profiling one change after another on the same data
            print(f"reusing {db}: {store.count('ResearchStudy'):,} studies (--n ignored)")
        else:
            secs = load(store, args.n, rng)
            print(f"loaded {args.n:,} studies (with Groups and sites) in {secs:.0f} s ({args.n / secs:,.0f} "
                  "studies/s)")
        print(f"database {os.path.getsize(db) / 2**20:,.0f} MiB")
        server, base = _serve(app)
        try:
            session = requests.Session()
            districts = sorted(geo.load_centroids())
            kinds = {}
            for total in (("accurate", "none") if args.total == "both" else (args.total,)):
                tag, arg = ("", "") if total == "accurate" else (", _total=none", "&_total=none")
                pick = random.Random(args.seed).choice  # the same postcodes for each _total (and as a reloaded db)
                kinds |= {
                    f"_text (patient words){tag}": lambda i, a=arg: f"{base}/ResearchStudy?_text="
                                                                     f"{TEXT_QUERIES[i % len(TEXT_QUERIES)]}{a}",
                    f"postcode + distance=50{tag}": lambda i, a=arg, c=pick: f"{base}/ResearchStudy?postcode="
                                                                              f"{c(districts)}&distance=50{a}",
                    f"_text + postcode{tag}": lambda i, a=arg, c=pick: f"{base}/ResearchStudy?_text="
                                                                        f"{TEXT_QUERIES[i % len(TEXT_QUERIES)]}"
                                                                        f"&postcode={c(districts)}{a}",
                }
            kinds["title:contains (plain, beside)"] = lambda i: f"{base}/ResearchStudy?title:contains=" \
                                                                f"{CONTAINS[i % len(CONTAINS)]}"
            for name, url in kinds.items():
                for i in range(5):  # warm-up: the terminology, caches
                    timed(session, url(i))
                samples, cpus, totals = [], [], []
                for i in range(args.requests):
                    ms, cpu, total = timed(session, url(i))
                    samples.append(ms)
                    cpus.append(cpu)
                    totals.append(total)
                report(name, samples, cpus, totals)
            print(f"load average after the run: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
        finally:
            server.shutdown()
            store.engine.dispose()


if __name__ == "__main__":
    main()
