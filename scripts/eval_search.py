"""Search quality: precision@5 and recall@10 of ResearchStudy?_text over the real studies in tests/data/search-quality.

Imports the 1,273 ClinicalTrials.gov studies (corpus.json.gz) through the ctgov-v2 mapping into a fresh database,
asks each query of queries.json over the FHIR API (``GET /fhir/ResearchStudy?_text=<query>&_count=10``) and compares
the studies returned with the studies judged relevant (judge.py says how they were judged; the engine is never
used to judge). precision@5 = relevant among the first 5 / min(5, relevant in the set); recall@10 = relevant among
the first 10 / min(10, relevant in the set). Prints one line per query and the means.

    .venv/bin/python scripts/eval_search.py                 # SQLite in a temporary folder
    .venv/bin/python scripts/eval_search.py --database-url postgresql+psycopg://postgres@127.0.0.1:5432/x
"""

from __future__ import annotations

import argparse
import gzip
import json
import statistics
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from gateway.api.app import create_app  # noqa: E402
from gateway.config import Settings, StoreSettings  # noqa: E402
from gateway.fhir.conventions import CTGOV  # noqa: E402

SET = ROOT / "tests" / "data" / "search-quality"
FHIR_JSON = {"Accept": "application/fhir+json"}


@dataclass
class QueryResult:
    query: str
    kind: str
    relevant: int
    precision5: float
    recall10: float
    top: list[str]


def load(client, path: Path = SET / "corpus.json.gz", page: int = 100) -> int:
    """POST the corpus to /ingest/ctgov-v2 in pages; returns the studies stored."""
    with gzip.open(path, "rt", encoding="utf-8") as fh:
        studies = json.load(fh)["studies"]
    for i in range(0, len(studies), page):
        resp = client.post("/ingest/ctgov-v2", data=json.dumps({"studies": studies[i:i + page]}),
                           headers={"Content-Type": "application/json", **FHIR_JSON})
        if resp.status_code != 200:
            raise SystemExit(f"import failed ({resp.status_code}): {resp.get_data(as_text=True)[:500]}")
    return len(studies)


def nct(study: dict) -> str:
    return next((i["value"] for i in study.get("identifier") or [] if i.get("system") == CTGOV), study["id"])


def evaluate(client, queries: list[dict]) -> list[QueryResult]:
    out = []
    for q in queries:
        resp = client.get(f"/fhir/ResearchStudy?_text={quote(q['query'])}&_count=10", headers=FHIR_JSON)
        if resp.status_code != 200:
            raise SystemExit(f"{q['query']!r}: HTTP {resp.status_code} {resp.get_data(as_text=True)[:300]}")
        top = [nct(e["resource"]) for e in resp.get_json().get("entry", []) if e["search"]["mode"] == "match"]
        rel = set(q["relevant"])
        p5 = len(rel & set(top[:5])) / min(5, len(rel)) if rel else 1.0
        r10 = len(rel & set(top[:10])) / min(10, len(rel)) if rel else 1.0
        out.append(QueryResult(q["query"], q["kind"], len(rel), p5, r10, top))
    return out


def run(database_url: str | None = None, verbose: bool = False) -> tuple[float, float, list[QueryResult]]:
    """(mean precision@5, mean recall@10, per query) over a fresh database."""
    with tempfile.TemporaryDirectory() as tmp:
        url = database_url or f"sqlite:///{tmp}/eval.sqlite3"
        app = create_app(Settings(store=StoreSettings(url), instance_path=Path(tmp), mappings_path=ROOT / "mappings"))
        app.config["TESTING"] = True
        try:
            client = app.test_client()
            load(client)
            queries = json.loads((SET / "queries.json").read_text())["queries"]
            results = evaluate(client, queries)
        finally:
            app.extensions["gateway.store"].engine.dispose()
    p5 = statistics.fmean(r.precision5 for r in results)
    r10 = statistics.fmean(r.recall10 for r in results)
    if verbose:
        rel = {q["query"]: set(q["relevant"]) for q in json.loads((SET / "queries.json").read_text())["queries"]}
        for r in results:
            misses = [t for t in r.top[:5] if t not in rel[r.query]]
            print(f"  {r.query!r}: not judged relevant in top 5: {misses}")
    return p5, r10, results


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--database-url", help="a database to fill (it is not emptied first); default: temporary SQLite")
    ap.add_argument("--verbose", action="store_true", help="list the top-5 studies not judged relevant")
    args = ap.parse_args()
    p5, r10, results = run(args.database_url, args.verbose)
    print(f"{'query':28} {'kind':13} {'relevant':>8} {'P@5':>5} {'R@10':>5}")
    for r in results:
        print(f"{r.query:28} {r.kind:13} {r.relevant:8d} {r.precision5:5.2f} {r.recall10:5.2f}")
    print(f"mean over {len(results)} queries: precision@5 = {p5:.3f}, recall@10 = {r10:.3f} "
          "(targets: precision@5 >= 0.8, recall@10 >= 0.9)")


if __name__ == "__main__":
    main()
