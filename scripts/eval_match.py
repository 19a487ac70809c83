"""Precision and recall of $match over labelled (patient, study) pairs.

    .venv/bin/python scripts/eval_match.py [--adversarial DIR] [--labelled DIR] [--verbose]

Two labelled sets, each answered in process by the path ``$match`` serves (``StudyIndex.page`` / ``match`` over
studies and profiles built from FHIR JSON):

- ``tests/data/matching-adversarial``: real ClinicalTrials.gov criteria, per criterion a patient who meets it
  (label: match) and one who violates it (label: no match); see its PROVENANCE.md;
- ``tests/data/matching``: the labelled set of real mCODE / Synthea patients and real and hand-written studies
  (label per case in cases.json).

A returned study counts as a predicted match (an unknown criterion lowers the score but does not remove a study,
so precision counts every study ``$match`` would show). Prints per set and overall: pairs, TP, FP, FN, TN,
precision, recall; exits 1 if either overall figure is below 0.95.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from gateway.matching import adversarial, labelled  # noqa: E402
from gateway.matching.terms import default_terminology  # noqa: E402

TARGET = 0.95


def _figures(pairs: list[tuple[bool, bool]]) -> dict[str, float]:
    """[(expected match, got match)] -> counts, precision and recall."""
    tp = sum(e and g for e, g in pairs)
    fp = sum(g and not e for e, g in pairs)
    fn = sum(e and not g for e, g in pairs)
    tn = sum(not e and not g for e, g in pairs)
    return {"pairs": len(pairs), "tp": tp, "fp": fp, "fn": fn, "tn": tn,
            "precision": tp / (tp + fp) if tp + fp else 1.0, "recall": tp / (tp + fn) if tp + fn else 1.0}


def _line(name: str, f: dict[str, float]) -> str:
    return (f"{name:28} pairs {f['pairs']:3}  TP {f['tp']:3} FP {f['fp']:2} FN {f['fn']:2} TN {f['tn']:3}  "
            f"precision {f['precision']:.3f}  recall {f['recall']:.3f}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--adversarial", type=Path, default=ROOT / "tests" / "data" / "matching-adversarial")
    ap.add_argument("--labelled", type=Path, default=ROOT / "tests" / "data" / "matching")
    ap.add_argument("--verbose", action="store_true", help="print every wrong pair")
    ap.add_argument("--extract", action="store_true",
                    help="also run the adversarial pairs with characteristics extracted from the criterion text "
                         "(gateway.mapping.eligibility) instead of hand-written ones")
    args = ap.parse_args(argv)
    term = default_terminology()
    sets: dict[str, list[tuple[bool, bool]]] = {}
    outcomes = adversarial.run(args.adversarial, term)
    sets["adversarial (real criteria)"] = [(o.who == "meets", o.matched) for o in outcomes]
    if args.extract:
        from gateway.mapping.eligibility import annotate_group

        extracted = adversarial.run(args.adversarial, term, study_of=adversarial.extracted_with(annotate_group))
        sets["adversarial, extracted"] = [(o.who == "meets", o.matched) for o in extracted]
        high = sum(o.who == "violates" and o.matched and o.confidence == "high" for o in extracted)
        print(f"adversarial, extracted: false matches on high-confidence characteristics {high}")
        if args.verbose:
            for o in extracted:
                if not o.ok:
                    print(f"WRONG extracted {o.case} {o.who} ({o.confidence}): {o.why[:200]}")
    results = labelled.run(args.labelled, term)
    sets["labelled set"] = [(r.expected == "match", r.got == "match") for r in results]
    if args.verbose:
        for o in outcomes:
            if not o.ok:
                print(f"WRONG adversarial {o.case} {o.who}: {o.why[:200]}")
        for r in results:
            if not r.ok:
                print(f"WRONG labelled {r.patient} x {r.study}: expected {r.expected}, got {r.got}: {r.why[:200]}")
    every: list[tuple[bool, bool]] = []
    for name, pairs in sets.items():
        print(_line(name, _figures(pairs)))
        every += pairs
    total = _figures(every)
    print(_line("overall", total))
    return 0 if total["precision"] >= TARGET and total["recall"] >= TARGET else 1


if __name__ == "__main__":
    raise SystemExit(main())
