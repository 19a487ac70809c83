"""Benchmark: eligibility extraction, alone and inside `gateway import`, on real ClinicalTrials.gov criteria.

1. Extraction alone, in this process, over the real studies of the ctgov corpus (default: all 1,273 in
   /work/shared/data/ctgov-corpus): criteria/s and studies/s, per-study median and p95.
2. `gateway import` of N realistic studies (real records of the corpus, NCT ids varied so that each is a new study;
   one file per study) as its own process with its default workers, into fresh SQLite files, in the same run:
   extraction on (the project's mappings), extraction off (a copy of mappings/ without the two eligibility rules),
   and the unchanged re-import with extraction on (results reused from <instance>/eligibility-cache.sqlite3).

    .venv/bin/python bench/bench_extract.py                  # 1,273 studies extracted, 600 imported
    .venv/bin/python bench/bench_extract.py --n 2000 --corpus /path/to/ctgov-corpus
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import re
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

from gateway.mapping.eligibility import extract  # noqa: E402
from gateway.terminology.lexicons import default_lexicons  # noqa: E402

CORPUS = Path("/work/shared/data/ctgov-corpus")


def corpus_studies(folder: Path) -> list[dict]:
    out = []
    for path in sorted(folder.glob("*.json")):
        data = json.loads(path.read_text())
        out.extend(data.get("studies", [data]) if isinstance(data, dict) else data)
    return out


def pct(values: list[float], p: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(round(p / 100 * (len(s) - 1))))]


def extraction_rate(studies: list[dict]) -> None:
    texts = [(s["protocolSection"].get("eligibilityModule") or {}).get("eligibilityCriteria") or "" for s in studies]
    lx = default_lexicons()
    extract(texts[0], lx)  # warm: lexicon indexes built
    per_study, criteria = [], 0
    t0 = time.perf_counter()
    for text in texts:
        s0 = time.perf_counter()
        criteria += extract(text, lx).total
        per_study.append((time.perf_counter() - s0) * 1000)
    wall = time.perf_counter() - t0
    print(f"extraction alone: {len(texts)} studies, {criteria} criteria in {wall:.1f} s: "
          f"{criteria / wall:.0f} criteria/s, {len(texts) / wall:.1f} studies/s (one process); per study median "
          f"{statistics.median(per_study):.1f} ms, p95 {pct(per_study, 95):.1f} ms")


def _mappings_without_extraction(tmp: Path) -> Path:
    folder = tmp / "mappings-off"
    shutil.copytree(ROOT / "mappings", folder)
    path = folder / "ctgov-v2.yaml"
    text = path.read_text()
    text = re.sub(r"\n\s*#[^\n]*\n\s*- \{from: protocolSection\.eligibilityModule\.eligibilityCriteria, "
                  r"transform: eligibility-(?:extensions|characteristics)\}", "", text)
    assert "eligibility-characteristics" not in text and "eligibility-extensions" not in text
    path.write_text(text)
    return folder


def _import(tmp: Path, folder: Path, db: str, mappings: Path, instance: Path) -> tuple[float, float, str]:
    env = {**os.environ, "GATEWAY_DATABASE_URL": f"sqlite:///{tmp / db}.sqlite3",
           "GATEWAY_INSTANCE_PATH": str(instance), "GATEWAY_MAPPINGS_PATH": str(mappings)}
    cmd = [sys.executable, "-c", "from gateway.cli import main; main()", "import", "--mapping", "ctgov-v2",
           "--quiet", str(folder)]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    done = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode not in (0, 1):
        raise SystemExit(f"gateway import failed ({done.returncode}): {done.stderr[-2000:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return seconds, cpu, done.stdout.strip().splitlines()[-1]


def import_rates(studies: list[dict], n: int) -> None:
    with tempfile.TemporaryDirectory(prefix="bench-extract-") as name:
        tmp = Path(name)
        src = tmp / "studies"
        src.mkdir()
        for i in range(n):
            s = copy.deepcopy({k: v for k, v in studies[i % len(studies)].items() if k != "resultsSection"})
            s["protocolSection"]["identificationModule"]["nctId"] = f"NCT9{i:07d}"
            s["protocolSection"]["identificationModule"].pop("secondaryIdInfos", None)
            (src / f"{i:06d}.json").write_bytes(json.dumps(s).encode())
        off = _mappings_without_extraction(tmp)
        runs = [("extraction off, first import", "off", off, tmp / "inst-off"),
                ("extraction on, first import", "on", ROOT / "mappings", tmp / "inst-on"),
                ("extraction on, unchanged re-import", "on", ROOT / "mappings", tmp / "inst-on")]
        for label, db, mappings, instance in runs:
            seconds, cpu, summary = _import(tmp, src, db, mappings, instance)
            print(f"gateway import, {label}: {n / seconds:.0f} studies/s ({summary}; {seconds:.1f} s wall-clock, "
                  f"{cpu:.1f} s CPU over the import's processes)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--corpus", type=Path, default=CORPUS, help="folder of ClinicalTrials.gov API v2 pages")
    ap.add_argument("--extract", type=int, default=None, help="studies to extract (default: the whole corpus)")
    ap.add_argument("--n", type=int, default=600, help="studies to import (default 600: about a minute a run here)")
    args = ap.parse_args()
    studies = corpus_studies(args.corpus)
    if not studies:
        raise SystemExit(f"no studies under {args.corpus}")
    load = os.getloadavg()
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, Python "
          f"{platform.python_version()}, load average {load[0]:.1f} at start")
    extraction_rate(studies[: args.extract] if args.extract else studies)
    import_rates(studies, args.n)


if __name__ == "__main__":
    main()
