"""Terminology benchmark: load time, is_a, ancestor expansion, free-text resolution, add_hierarchy.

Prints the machine, its load (uptime), the size of the loaded terminology and median / p95 per call.
is_a and ancestors are lookups in the precomputed closure (a dict of frozensets); the brute-force
column walks the parent graph for every call, as a ratio.

    .venv/bin/python bench/bench_terminology.py [--calls 200000] [--seed 7]
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from gateway.fhir.conventions import MESH  # noqa: E402
from gateway.terminology import load_terminology  # noqa: E402
from gateway.terminology.terminology import DEFAULT_PATH  # noqa: E402

TEXTS = ["Brain Metastasases", "NSCLC", "Glioblastoma Multiforme", "Lung Cancer, Non-Small Cell",
         "Recurrent Glioblastoma", "Breast Cancer", "DIPG", "Advanced Solid Tumors", "Brian metastases",
         "Prostate Cancer"]


def per_call_us(fn, args: list, batch: int = 1000) -> tuple[float, float]:
    """(median, p95) microseconds per call, timing batches of ``batch`` calls."""
    samples = []
    for i in range(0, len(args) - batch + 1, batch):
        chunk = args[i:i + batch]
        start = time.perf_counter_ns()
        for a in chunk:
            fn(*a)
        samples.append((time.perf_counter_ns() - start) / batch / 1000)
    samples.sort()
    return statistics.median(samples), samples[int(len(samples) * 0.95) - 1]


def single_us(fn, args: list) -> tuple[float, float]:
    """(median, p95) microseconds, one call timed at a time (for slower calls)."""
    samples = []
    for a in args:
        start = time.perf_counter_ns()
        fn(*a)
        samples.append((time.perf_counter_ns() - start) / 1000)
    samples.sort()
    return statistics.median(samples), samples[int(len(samples) * 0.95) - 1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--calls", type=int, default=200_000)
    ap.add_argument("--seed", type=int, default=7)
    args = ap.parse_args()
    rng = random.Random(args.seed)

    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cpus, "
          f"Python {platform.python_version()}, {platform.system()}")
    print(f"load (uptime): {' '.join(f'{x:.2f}' for x in os.getloadavg())}")

    loads = []
    for _ in range(5):
        start = time.perf_counter()
        t = load_terminology(DEFAULT_PATH)
        loads.append(time.perf_counter() - start)
    concepts = t.concepts()
    edges = sum(len(t.parents(*c)) for c in concepts)
    closure = sum(len(t.ancestors(*c)) for c in concepts)
    print(f"size: {len(concepts)} concepts, {edges} parent edges (within + across systems), "
          f"{closure} closure pairs, {len(t.conceptmaps)} ConceptMaps")
    print(f"load_terminology: median {statistics.median(loads) * 1000:.0f} ms, max {max(loads) * 1000:.0f} ms "
          f"(5 loads)")

    pairs = []
    for _ in range(args.calls):
        a = rng.choice(concepts)
        # half the probes ask about a true ancestor, half about a random concept (mostly false)
        b = rng.choice(sorted(t.ancestors(*a))) if rng.random() < 0.5 else rng.choice(concepts)
        pairs.append((a[0], a[1], b[0], b[1]))
    med, p95 = per_call_us(t.is_a, pairs)
    print(f"is_a (closure lookup): {len(pairs)} calls, median {med:.2f} us, p95 {p95:.2f} us per call")

    singles = [(c[0], c[1]) for c in (rng.choice(concepts) for _ in range(args.calls))]
    med_a, p95_a = per_call_us(t.ancestors, singles)
    print(f"ancestors (closure lookup): {len(singles)} calls, median {med_a:.2f} us, p95 {p95_a:.2f} us per call")

    brute = singles[:20_000]
    med_b, p95_b = per_call_us(t._walk, [(t.key(*s),) for s in brute])
    print(f"ancestors by graph walk (brute force, same concepts): median {med_b:.2f} us, p95 {p95_b:.2f} us "
          f"per call; ratio walk/closure {med_b / med_a:.0f}x")

    texts = [(rng.choice(TEXTS),) for _ in range(2000)]
    med_t, p95_t = single_us(t.resolve_text, texts)
    print(f"resolve_text ({len(TEXTS)} registry wordings incl. misspellings and unresolvable): "
          f"median {med_t:.0f} us, p95 {p95_t:.0f} us per call")

    def uncached(text: str) -> None:
        t._resolved.clear()  # first sight of a text: the full normalise / lookup / fuzzy path
        t.resolve_text(text)

    med_u, p95_u = single_us(uncached, texts[:300])
    print(f"resolve_text, first sight (uncached; unresolvable text pays the similarity search): "
          f"median {med_u:.0f} us, p95 {p95_u:.0f} us per call")

    adds = [(MESH, f"D0000{90000 + i}", f"New descriptor {i}", [rng.choice(["D000005910", "D000009369"])])
            for i in range(500)]
    med_h, p95_h = single_us(t.add_hierarchy, adds)
    print(f"add_hierarchy (new MeSH leaf from a registry record, closure kept exact): {len(adds)} calls, "
          f"median {med_h:.0f} us, p95 {p95_h:.0f} us per call")


if __name__ == "__main__":
    main()
