"""The sampling rule of the extended adversarial cases (see PROVENANCE.md, "Extension").

    .venv/bin/python tests/data/matching-adversarial/sample_lines.py 16

Prints, per kind, the first N single-line criteria (<= 250 characters) that match the kind's expression, taking the
ctgov corpus studies in a seeded random order (random.Random(12)), one line per study, skipping every study and line
already used by the gold sets (tests/data/eligibility) or by the first 19 adversarial cases. Which printed lines
became cases is a reading decision recorded in PROVENANCE.md.
"""

import glob
import json
import random
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT))

from gateway.mapping.eligibility.split import split_criteria  # noqa: E402

HERE = ROOT / "tests" / "data" / "matching-adversarial"
KINDS = {
    "stage": r"\bstages?\s*(?:0|i{1,3}v?|iv|[1-4])[abc]?\b|\bfigo\b|ann arbor",
    "infection": r"\bhiv\b|hepatitis|\bhbv\b|\bhcv\b",
    "performance": r"\becog\b|karnofsky|lansky|performance status",
    "biomarker": r"\begfr\b|\balk\b|\bros1\b|\bbraf\b|\bkras\b|\bher2\b|estrogen|progesterone|\bmsi\b|"
                 r"mismatch repair|pd-l1|\bbrca|\bidh|\bntrk",
    "lab": r"neutrophil|platelet|ha?emoglobin|creatinine|bilirubin|\balt\b|\bast\b",
    "prior-therapy": r"\b(prior|previous(ly)?|received)\b.*\b(therapy|inhibitors?|chemotherapy|agents?|antibod\w+|"
                     r"lines?|regimens?|mab|nib)\b",
    "cns": r"brain metasta|cns metasta|central nervous system metasta|leptomening",
    "pregnancy": r"pregnan|breast-?feeding|lactat",
    "other-malignancy": r"malignan",
}


def main(per_kind: int) -> None:
    used_text, used_nct = set(), {"NCT02279004"}  # NCT02279004: the reference-only record of the first 19
    for name in ("gold.jsonl", "heldout.jsonl"):
        for line in (ROOT / "tests" / "data" / "eligibility" / name).read_text(encoding="utf-8").splitlines():
            if line.strip():
                item = json.loads(line)
                used_text.add(item["text"].strip())
                used_nct.add(item["nct"])
    for case in json.loads((HERE / "cases.json").read_text(encoding="utf-8"))["cases"]:
        if "kind" not in case:  # the first 19 cases (the extension's cases carry their sampled kind)
            used_text.add(case["criterion"].strip())
            used_nct.add(case["nct"])
    studies = []
    for page in sorted(glob.glob(str(ROOT.parent / "shared" / "data" / "ctgov-corpus" / "page-*.json"))):
        studies += json.loads(Path(page).read_text(encoding="utf-8"))["studies"]
    order = list(range(len(studies)))
    random.Random(12).shuffle(order)
    taken: dict[str, list] = {k: [] for k in KINDS}
    picked: set[str] = set()
    for i in order:
        s = studies[i]["protocolSection"]
        nct = s["identificationModule"]["nctId"]
        if nct in used_nct or nct in picked:
            continue
        for c in split_criteria(s.get("eligibilityModule", {}).get("eligibilityCriteria") or ""):
            t = c.text.strip()
            if t in used_text or len(t) > 250 or "\n" in t:
                continue
            kind = next((k for k, rx in KINDS.items() if len(taken[k]) < per_kind and re.search(rx, t, re.I)), None)
            if kind:
                taken[kind].append((nct, c.section, t))
                picked.add(nct)
                break  # one line per study
    for kind, rows in taken.items():
        for nct, section, t in rows:
            print(json.dumps({"kind": kind, "nct": nct, "section": section, "criterion": t}, ensure_ascii=False))


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 4)
