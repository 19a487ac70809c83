"""The national-scale benchmark (issue #16), with a stable interface: store --studies studies and --patients people
in the gateway's database, then measure a freshly started gateway process.

    GATEWAY_DATABASE_URL=postgresql+psycopg://postgres@127.0.0.1:5432/bench \\
        .venv/bin/python bench/bench_scale.py --patients 1000000 --json scale.json

The database is the gateway's (GATEWAY_DATABASE_URL, read through gateway/config.py; PostgreSQL for the figures);
it must be named, as it is filled with generated data. Studies and people come from bench_match.Generator (real
codes from the terminology) and are stored through the store's bulk write path (bench_match.db_load: Store.write +
create, --batch people a transaction, the write hooks building the matching rows in the same transactions), with a
progress bar. One person in ten consents to research (HRESCH) and another one in ten to trial alerts with a
new-matching-study subscription (bench_alerts). A database an earlier run loaded is reused: only what is missing
is stored, so the same database serves runs at growing sizes.

Then a new process (a gateway process that just started: interpreter, imports, the app from the settings) answers,
through the FHIR API in-process (Flask test client, no network):

- its first ``$match`` for a stored person (``first_match_after_start_s``: from the process's launch), then its
  resident memory (``process_rss_mb``, after the measures below; the peak is given too);
- ``$match`` for --probes stored people (``match_p95_ms``, median too);
- ``$candidates`` (consent required) of a rare-cancer study (DIPG) and of a broad one ("any malignant neoplasm"),
  first and next page, --candidate-runs times (``candidates_rare_first_page_ms``,
  ``candidates_broad_first_page_ms``: medians; p95 and the next page too);
- a new broad study stored, then its candidates found and alert jobs enqueued by the automatic flows, from after its
  commit (``alerts_broad_enqueue_s``: median of --alert-runs; the flows write a study's alerts before its
  proposals, and ``flows_broad_done_s`` is the time to the end of both), and a new specific study the same way.
  The broad study ("any malignant neoplasm", adults) is one the database's columns decide alone; the same study
  with an ECOG exclusion (``alerts_broad_screened_enqueue_s``) has every consenting candidate's profile screened.

The JSON (--json FILE) holds at least those six keys, whose names never change; other keys may be added. The
measuring process leaves its new studies and their queued alert jobs in the database.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import bench_alerts as ba  # noqa: E402
import bench_match as bm  # noqa: E402
from _common import backend, settings_from_env  # noqa: E402

from gateway.config import child_environment  # noqa: E402

CONTRACT = ("first_match_after_start_s", "process_rss_mb", "match_p95_ms", "candidates_rare_first_page_ms",
            "candidates_broad_first_page_ms", "alerts_broad_enqueue_s")
PROBE_STUDIES = {"rare": bm.RARE, "broad": bm.BROAD}  # stored as ResearchStudy/scale-<name>, adults only
EVERY = 10  # one person in ten consents to research, another one in ten to alerts (and subscribes)


# -- the loading process ---------------------------------------------------------------------------------------
def load(args) -> dict:
    """Store what the database lacks (studies, people, probe studies, subscriptions); returns the load figures."""
    from sqlalchemy import func, select

    from gateway.compose import build
    from gateway.store import schema

    settings = settings_from_env("bench_scale")
    print(f"machine: {bm.machine()}")
    print(f"database: {backend(settings)}", flush=True)
    gw = build(settings, write_hooks=False, bulk=True)
    try:
        state = gw.matching()  # installs the people's write hook
        store = gw.store
        ns = argparse.Namespace(seed=args.seed, extracted=False, db_studies=args.studies, db_patients=args.patients,
                                research_every=EVERY, alerts_every=EVERY, batch=args.batch)
        profiler = None
        if args.profile:
            import cProfile

            profiler = cProfile.Profile()
            profiler.enable()
        t = time.perf_counter()
        done = bm.db_load(store, state.term, ns)
        with store.write() as tx:
            for name, code in PROBE_STUDIES.items():
                for res in ba.adult_study(f"scale-{name}", code, f"Scale probe: {name}"):
                    tx.put(res)  # unchanged when an earlier run stored it
        ba.subscribe(store, ba.subscribers(args.patients, EVERY))
        seconds = time.perf_counter() - t
        if profiler is not None:
            profiler.disable()
            _profile_report(profiler, args.profile)
        with store.engine.connect() as conn:
            people = conn.execute(select(func.count()).select_from(schema.match_people)).scalar_one()
        if not done["studies"] and not done["people"]:
            print(f"reused the database: {args.studies:,} studies and {args.patients:,} people were already stored",
                  flush=True)
        if people > args.patients:
            print(f"note: the database holds {people:,} people, more than --patients; all of them are measured")
        return {"people_in_database": people, "loaded_studies": done["studies"], "loaded_people": done["people"],
                "load_studies_per_s": done["studies_per_s"], "load_people_per_s": done["people_per_s"],
                "load_s": round(seconds, 1)}
    finally:
        gw.close()


def _profile_report(profiler, path: str) -> None:
    import pstats

    profiler.dump_stats(path)
    print(f"\ncProfile of the load written to {path}; the gateway's functions by cumulative time:")
    pstats.Stats(path).sort_stats("cumulative").print_stats(r"gateway/", 25)


# -- the measuring process (a freshly started gateway process) -------------------------------------------------------
def _get(client, url: str) -> tuple[float, dict]:
    t = time.perf_counter()
    resp = client.get(url)
    ms = (time.perf_counter() - t) * 1000
    if resp.status_code != 200:
        raise SystemExit(f"bench_scale: GET {url.split('?')[0]} answered {resp.status_code}: {resp.get_data(True)}")
    return ms, resp.get_json()


def _next(bundle: dict) -> str | None:
    return next((lk["url"] for lk in bundle.get("link", []) if lk.get("relation") == "next"), None)


def measure(args, started: float) -> dict:
    from gateway.api.app import create_app

    app = create_app(settings_from_env("bench_scale"))
    client = app.test_client()
    rng = random.Random(args.seed)
    probes = [f"Patient/bp{rng.randrange(args.patients)}" for _ in range(args.probes)]
    _get(client, f"/fhir/ResearchStudy/$match?patient={probes[0]}&_count={args.page}")
    out: dict = {"first_match_after_start_s": round(time.time() - started, 3)}
    rss_first = bm.rss_mb()[0]
    print(f"fresh process: first $match answered {out['first_match_after_start_s']:.2f} s after the process "
          f"started; RSS {rss_first:.0f} MB", flush=True)
    match_ms = [_get(client, f"/fhir/ResearchStudy/$match?patient={p}&_count={args.page}")[0] for p in probes]
    print(f"$match for {len(probes)} stored people (the first {args.page} explained): {bm.fmt(match_ms)}", flush=True)
    out["match_p50_ms"], out["match_p95_ms"] = round(statistics.median(match_ms), 2), round(bm.pct(match_ms, 95), 2)
    for name in PROBE_STUDIES:
        firsts, nexts = [], []
        for _ in range(args.candidate_runs):
            ms, bundle = _get(client, f"/fhir/ResearchStudy/scale-{name}/$candidates?_count={args.page}")
            firsts.append(ms)
            if (url := _next(bundle)) is not None:
                nexts.append(_get(client, url)[0])
        # untimed: how many fit (a page leaves Bundle.total out when counting would screen more than the page)
        total = _get(client, f"/fhir/ResearchStudy/scale-{name}/$candidates?_count=1&_total=accurate")[1]["total"]
        print(f"$candidates {name} study, consent required: {total:,} fit; first page {bm.fmt(firsts)}; next page "
              f"{bm.fmt(nexts) if nexts else '(one page)'}", flush=True)
        out[f"candidates_{name}_first_page_ms"] = round(statistics.median(firsts), 1)
        out[f"candidates_{name}_first_page_p95_ms"] = round(bm.pct(firsts, 95), 1)
        out[f"candidates_{name}_next_page_ms"] = round(statistics.median(nexts), 1) if nexts else None
        out[f"candidates_{name}_fit"] = total
    rss, peak = bm.rss_mb()
    out["process_rss_mb"], out["process_rss_first_match_mb"], out["process_peak_rss_mb"] = \
        round(rss), round(rss_first), round(peak)
    print(f"process memory: RSS {rss:.0f} MB, peak {peak:.0f} MB", flush=True)
    out.update(_alerts(app, args))
    store = app.extensions["gateway.store"]
    if store.engine.dialect.name == "postgresql":
        out["table_sizes_mb"] = bm.table_sizes(store)
    return out


def _alerts(app, args) -> dict:
    """New studies stored one after another; each timed from after its commit to its alert jobs enqueued."""
    flows = app.extensions["gateway.root"].flows()
    ba.use_subscriptions(flows, ba.subscribers(args.patients, EVERY))
    flows.state.refresh()  # a worker's flows are running already: their study index is built
    out = {}
    # broad: "any malignant neoplasm, adults", which the database's columns decide (people.decided_by_columns);
    # broad_screened: the same with an ECOG exclusion, so that every consenting candidate's profile is screened
    kinds = (("broad", bm.BROAD, ()), ("broad_screened", bm.BROAD, (ba.ECOG_EXCLUSION,)),
             ("specific", ba.SPECIFIC[0], ()))
    for name, code, extra in kinds:
        secs, totals, jobs = [], [], []
        for k in range(args.alert_runs):
            sid = f"scale-new-{name}-{time.time_ns()}-{k}"
            ms, total_ms, stats = ba.new_study(flows, sid, code, extra)
            secs.append(ms / 1000)
            totals.append(total_ms / 1000)
            jobs.append(stats.alerts)
        print(f"new {name} study -> alert jobs enqueued: median {statistics.median(secs):.2f} s, max "
              f"{max(secs):.2f} s (n={len(secs)}); {statistics.median(jobs):,.0f} alert jobs a study; the "
              f"study's flows done (proposals too): median {statistics.median(totals):.2f} s", flush=True)
        out[f"alerts_{name}_enqueue_s"] = round(statistics.median(secs), 3)
        out[f"flows_{name}_done_s"] = round(statistics.median(totals), 3)
        out[f"alerts_{name}_jobs"] = int(statistics.median(jobs))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--patients", type=int, required=True, help="people stored (and measured)")
    ap.add_argument("--studies", type=int, default=70_000, help="generated recruiting studies (default 70,000)")
    ap.add_argument("--json", help="write the figures to this file")
    ap.add_argument("--probes", type=int, default=200, help="stored people $match is timed for")
    ap.add_argument("--candidate-runs", type=int, default=5, help="$candidates pages timed per study")
    ap.add_argument("--alert-runs", type=int, default=3, help="new studies timed per kind (broad, specific)")
    ap.add_argument("--page", type=int, default=20, help="_count of $match and $candidates")
    ap.add_argument("--batch", type=int, default=500, help="people stored a transaction")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--profile", metavar="FILE", help="cProfile the load into FILE and print its top functions")
    ap.add_argument("--measure", action="store_true", help=argparse.SUPPRESS)  # the fresh measuring process
    ap.add_argument("--started", type=float, default=0.0, help=argparse.SUPPRESS)  # when it was launched
    ap.add_argument("--out", help=argparse.SUPPRESS)  # where the measuring process writes its figures
    args = ap.parse_args()
    if args.patients < 1 or args.studies < 0:
        ap.error("--patients must be at least 1 and --studies at least 0")
    if args.measure:
        Path(args.out).write_text(json.dumps(measure(args, args.started)))
        return
    figures = {"patients": args.patients, "studies": args.studies, **load(args)}
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "figures.json"
        cmd = [sys.executable, __file__, "--measure", "--out", str(out), *_passed(args), "--started", str(time.time())]
        subprocess.run(cmd, check=True, env=child_environment(GATEWAY_LOG_LEVEL="WARNING"))
        figures.update(json.loads(out.read_text()))
    figures["machine"] = bm.machine()
    figures["load_average"] = [round(x, 2) for x in os.getloadavg()]
    missing = [k for k in CONTRACT if k not in figures]
    if missing:
        raise SystemExit(f"bench_scale: figures missing: {', '.join(missing)}")
    text = json.dumps(figures, indent=1)
    print(text)
    if args.json:
        Path(args.json).write_text(text + "\n")


def _passed(args) -> list[str]:
    return [f"--{k}={getattr(args, k.replace('-', '_'))}"
            for k in ("patients", "studies", "probes", "candidate-runs", "alert-runs", "page", "seed")]


if __name__ == "__main__":
    main()
