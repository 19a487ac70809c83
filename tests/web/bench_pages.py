"""Benchmark: the patient pages' render time over HTTP on SQLite (issue #14: page render p95 <= 200 ms).

Loads N studies exactly as ``bench/bench_search.py`` does (its loader: real ClinicalTrials.gov records varied,
1-4 sites each at postcode district centroids), serves the gateway on loopback, then, as a browser would with a
session cookie: GET /trials with a search kept in the session (words + postcode + 50 km: the search service and
the plain-English cards for a page of 20), and GET /trials/<id> (a study page with sites and distances).
Prints median and p95 per page. Not collected by pytest (run it by hand):

    .venv/bin/python tests/web/bench_pages.py --n 20000 --requests 100
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from bench_search import TEXT_QUERIES, _serve, load  # noqa: E402

from gateway.api.app import create_app  # noqa: E402
from gateway.api.study_search import search_studies  # noqa: E402
from gateway.config import OidcSettings, Settings, StoreSettings  # noqa: E402
from gateway.security.policy import Access  # noqa: E402
from gateway.security.principal import Caller  # noqa: E402
from gateway.store import geo  # noqa: E402
from gateway.web.search import describe_many, origin_of  # noqa: E402

POSTCODES = ["LS6 3HE", "M20 4BX", "B15 2TH", "NE1 4LP", "BS2 8HW", "L7 8XP", "CB2 0QQ", "SW3 6JJ", "OX3 9DU"]


def p95(samples: list[float]) -> float:
    return statistics.quantiles(samples, n=20)[18]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=20_000)
    ap.add_argument("--requests", type=int, default=100)
    ap.add_argument("--seed", type=int, default=14)
    ap.add_argument("--db", type=Path, help="keep the SQLite file here; an existing file (e.g. bench_search.py's "
                                             "--db) is reused, not reloaded")
    args = ap.parse_args()
    rng = random.Random(args.seed)
    known = set(geo.load_centroids())
    postcodes = [p for p in POSTCODES if geo.outward_code(p) in known]
    print(f"machine: {platform.machine()} {os.cpu_count()} CPUs, Python {platform.python_version()}; "
          f"load average {os.getloadavg()[0]:.1f}")
    with tempfile.TemporaryDirectory() as tmp:
        db = args.db.resolve() if args.db else Path(tmp) / "bench.sqlite3"
        reuse = db.exists()
        app = create_app(Settings(store=StoreSettings(f"sqlite:///{db}"), instance_path=Path(tmp),
                                  mappings_path=ROOT / "mappings",
                                  oidc=OidcSettings(session_cookie_secure=False)))  # plain http
        store = app.extensions["gateway.store"]
        if reuse:
            print(f"reusing {db}: {store.count('ResearchStudy'):,} studies (--n ignored)")
        else:
            secs = load(store, args.n, rng)
            print(f"loaded {args.n:,} studies in {secs:.0f} s")
        server, base = _serve(app)
        root = base.removesuffix("/fhir")
        try:
            s = requests.Session()
            results_ms, study_ms, study_ids, found = [], [], [], []
            for i in range(args.requests + 5):
                token = re.search(r'name="csrf_token" value="([^"]+)"', s.get(f"{root}/trials").text).group(1)
                form = {"words": TEXT_QUERIES[i % len(TEXT_QUERIES)], "postcode": postcodes[i % len(postcodes)],
                        "distance": "50", "recruiting": "yes", "csrf_token": token}
                r = s.post(f"{root}/trials", data=form, allow_redirects=False)
                assert r.status_code == 303, r.text[:300]
                t0 = time.perf_counter()
                page = s.get(f"{root}/trials")
                ms = (time.perf_counter() - t0) * 1000
                assert page.status_code == 200, re.search(r"<main.*?</main>", page.text, re.S).group(0)[:800]
                ids = re.findall(r'href="/trials/([0-9a-f]{32})"', page.text)
                if i >= 5:  # the first five warm the terminology and caches
                    results_ms.append(ms)
                    found.append(len(ids))
                study_ids.extend(ids[:1])
            for i in range(args.requests):
                t0 = time.perf_counter()
                page = s.get(f"{root}/trials/{study_ids[i % len(study_ids)]}")
                study_ms.append((time.perf_counter() - t0) * 1000)
                assert page.status_code == 200
            print(f"GET /trials (search + 20 cards)  n={len(results_ms)}  median {statistics.median(results_ms):.1f} ms"
                  f"  p95 {p95(results_ms):.1f} ms  (cards per page: median {statistics.median(found):.0f})")
            print(f"GET /trials/<id> (study page)    n={len(study_ms)}  median {statistics.median(study_ms):.1f} ms"
                  f"  p95 {p95(study_ms):.1f} ms")
            # Where the results page's time goes, in process: the search service, then the pages' own work.
            access = Access(Caller(client_id="bench", role="anonymous", authenticated=False), store)
            svc_ms, own_ms = [], []
            for i in range(len(results_ms)):
                pc = postcodes[i % len(postcodes)]
                t0 = time.perf_counter()
                res = search_studies(store, text=TEXT_QUERIES[i % len(TEXT_QUERIES)], postcode=pc, distance_km=50.0,
                                     recruiting_only=True, count=20, total="none")  # as the page asks
                t1 = time.perf_counter()
                describe_many(store, access, [h.resource for h in res.hits], origin_of(pc))
                own_ms.append((time.perf_counter() - t1) * 1000)
                svc_ms.append((t1 - t0) * 1000)
            for name, xs in (("search_studies()", svc_ms), ("the cards' data (Groups, Locations, words)", own_ms)):
                print(f"  in process, {name:44} median {statistics.median(xs):.1f} ms  p95 {p95(xs):.1f} ms")
        finally:
            server.shutdown()
            store.engine.dispose()


if __name__ == "__main__":
    main()
