"""Precision and recall of the eligibility extractor against the hand-labelled gold set.

    .venv/bin/python scripts/eval_extraction.py [--gold tests/data/eligibility/gold.jsonl] [--errors]

Each gold criterion carries the characteristics a careful reader would write ("kind|concept|value|polarity[|window]")
or none. A finding counts as correct when kind, concept, value, polarity and window all agree. Prints per kind:
precision and recall over every finding, precision of the high-confidence findings, and the count of polarity
inversions (a finding whose kind, concept and value match a label of the opposite polarity).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from gateway.mapping.eligibility.extract import recognise_criterion  # noqa: E402
from gateway.mapping.eligibility.recognise import Finding  # noqa: E402
from gateway.mapping.eligibility.split import Criterion  # noqa: E402
from gateway.terminology.lexicons import default_lexicons  # noqa: E402

GOLD = ROOT / "tests" / "data" / "eligibility" / "gold.jsonl"
POLARITIES = ("include", "exclude")


def parse_label(label: str) -> tuple[str, str, str, str, str | None]:
    """'stage|stage|III|IV|include' -> ('stage', 'stage', 'III|IV', 'include', None)."""
    parts = label.split("|")
    pol_at = max(i for i, p in enumerate(parts) if p in POLARITIES)
    window = parts[pol_at + 1] if len(parts) > pol_at + 1 else None
    return parts[0], parts[1], "|".join(parts[2:pol_at]), parts[pol_at], window


def finding_key(f: Finding) -> tuple[str, str, str, str, str | None]:
    kind, concept, value, polarity, window = f.key()
    return kind, concept, value, polarity, window


def evaluate(gold_path: Path = GOLD, show_errors: bool = False) -> dict:
    lx = default_lexicons()
    tp, fp, fn = Counter(), Counter(), Counter()
    hi_tp, hi_fp = Counter(), Counter()
    inversions: list[str] = []
    errors: list[str] = []
    n = 0
    for line in gold_path.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        item = json.loads(line)
        n += 1
        crit = Criterion(item["text"], item["start"], item["end"], item["section"])
        result = recognise_criterion(crit, lx)
        gold = Counter(parse_label(x) for x in item["labels"])
        remaining = Counter(gold)
        for f in result.findings:
            key = finding_key(f)
            if remaining[key] > 0:
                remaining[key] -= 1
                tp[key[0]] += 1
                if f.confidence == "high":
                    hi_tp[key[0]] += 1
                continue
            fp[key[0]] += 1
            if f.confidence == "high":
                hi_fp[key[0]] += 1
            flipped = (key[0], key[1], key[2], "include" if key[3] == "exclude" else "exclude")
            if any(g[:4] == flipped for g in gold):
                inversions.append(f"{item['id']} {f.confidence} {key} in {item['text'][:100]!r}")
            errors.append(f"FP {item['id']} [{f.confidence}] {'|'.join(str(k) for k in key)}  <- "
                          f"{item['text'][:140]!r} {f.reasons}")
        for key, count in remaining.items():
            if count > 0:
                fn[key[0]] += count
                errors.append(f"FN {item['id']} {'|'.join(str(k) for k in key if k is not None)}  <- "
                              f"{item['text'][:140]!r}")
    kinds = sorted(set(tp) | set(fp) | set(fn))
    rows = {}
    for k in kinds:
        p = tp[k] / (tp[k] + fp[k]) if tp[k] + fp[k] else None
        r = tp[k] / (tp[k] + fn[k]) if tp[k] + fn[k] else None
        hp = hi_tp[k] / (hi_tp[k] + hi_fp[k]) if hi_tp[k] + hi_fp[k] else None
        rows[k] = {"tp": tp[k], "fp": fp[k], "fn": fn[k], "precision": p, "recall": r, "high_tp": hi_tp[k],
                   "high_fp": hi_fp[k], "high_precision": hp}
    total_tp, total_fp, total_fn = sum(tp.values()), sum(fp.values()), sum(fn.values())
    out = {"criteria": n, "labels": total_tp + total_fn, "kinds": rows, "inversions": inversions,
           "precision": total_tp / (total_tp + total_fp) if total_tp + total_fp else None,
           "recall": total_tp / (total_tp + total_fn) if total_tp + total_fn else None,
           "high_precision": sum(hi_tp.values()) / max(1, sum(hi_tp.values()) + sum(hi_fp.values())),
           "errors": errors}
    return out


def _fmt(v: float | None) -> str:
    return "   -" if v is None else f"{v:.2f}"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--gold", type=Path, default=GOLD)
    ap.add_argument("--errors", action="store_true", help="print every false positive and false negative")
    args = ap.parse_args()
    res = evaluate(args.gold)
    print(f"gold criteria: {res['criteria']}, labelled characteristics: {res['labels']}")
    print(f"{'kind':<18}{'TP':>4}{'FP':>4}{'FN':>4}  prec  recall  high: TP  FP  prec")
    for k, r in res["kinds"].items():
        print(f"{k:<18}{r['tp']:>4}{r['fp']:>4}{r['fn']:>4}  {_fmt(r['precision'])}  {_fmt(r['recall'])}    "
              f"{r['high_tp']:>6}{r['high_fp']:>4}  {_fmt(r['high_precision'])}")
    print(f"all: precision {_fmt(res['precision'])}, recall {_fmt(res['recall'])}, "
          f"high-confidence precision {_fmt(res['high_precision'])}")
    print(f"polarity inversions: {len(res['inversions'])}")
    for inv in res["inversions"]:
        print(f"  {inv}")
    if args.errors:
        for e in res["errors"]:
            print(e)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
