"""How the relevance judgements in queries.json were made (re-run to reproduce them): for each query, the studies
whose registry conditions or title name the disease a patient typing that query means, by a hand-written pattern
per query (UK and US spellings, subtypes a careful reader counts: 'blood cancer' = leukaemias, lymphomas, myeloma,
myelodysplastic syndromes), reviewed by reading the matched conditions and titles (``--show``). The search engine
is never run here. Exclusions are written in the pattern (e.g. brain metastases are not a 'brain tumour' query's
answer: a patient with a primary brain tumour is not eligible for them).

    python tests/data/search-quality/judge.py --show "brain tumour"   # list what a rule matches, to review
    python tests/data/search-quality/judge.py --write                 # regenerate queries.json
"""

from __future__ import annotations

import gzip
import json
import re
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent

BLOOD = r"leuka?emi|lymphoma|myeloma|myelodysplas|\bmds\b|\bcll\b|\baml\b|waldenstr"
# query -> (kind, include pattern, exclude pattern or None), on "conditions | title" in lower case
RULES: dict[str, tuple[str, str, str | None]] = {
    "oesophageal cancer": ("uk-spelling", r"o?esophag", None),
    "leukaemia": ("uk-spelling", r"leuka?emi", None),
    "blood cancer": ("lay", BLOOD, None),
    "bowel cancer": ("lay", r"colorectal|\bcolon\b|rectal cancer|rectal adeno|rectum|bowel cancer", None),
    "womb cancer": ("lay", r"endometrial (cancer|carcinoma|neoplasm|adeno)|uter(ine|us) (cancer|carcinoma|corpus)|"
                           r"corpus uteri", None),
    "kidney cancer": ("lay", r"renal cell|kidney (cancer|neoplasm|carcinoma)|renal (cancer|carcinoma|neoplasm)", None),
    "prostrate cancer": ("misspelling", r"prostat", None),
    "pancreatic cancr": ("misspelling", r"pancrea", None),
    "brain tumour": ("uk-spelling", r"glioblastoma|glioma|astrocytoma|medulloblastoma|ependymoma|\bdipg\b|"
                                    r"\bhgg\b|\blgg\b|brain (tumou?r|neoplasm|cancer)", r"metasta|brainmet"),
    "skin cancer": ("lay", r"melanoma|skin (cancer|neoplasm)|merkel|basal cell|cutaneous squamous", r"uveal|mucosal"),
    "myeloma": ("lay", r"myeloma", None),
    "mesothelioma": ("lay", r"mesotheliom", None),
    "stomach cancer": ("lay", r"gastric|stomach", r"gastrointestinal stromal"),
    "liver cancer": ("lay", r"hepatocellular|liver (cancer|carcinoma|neoplasm)|hepatic (cancer|carcinoma)", None),
    "ovarian cancer": ("lay", r"ovar", None),
    "lyphoma": ("misspelling", r"lymphoma", None),
    "cervical cancer": ("lay", r"cervi(x|cal) (cancer|carcinoma|neoplasm|squamous|adeno)|uterine cervical", None),
    "bone cancer": ("lay", r"osteosarcoma|ewing|chondrosarcoma|bone (cancer|sarcoma|tumou?r|neoplasm)", r"metasta"),
    "bladder cancer": ("lay", r"bladder|urothelial", None),
    "thyroid cancer": ("lay", r"thyroid", None),
    "gliobastoma": ("misspelling", r"glioblastoma|\bgbm\b", None),
    "neuroendocrine tumour": ("uk-spelling", r"neuroendocrine", None),
    "melonoma": ("misspelling", r"melanoma", None),
    "haematological cancer": ("uk-spelling", BLOOD, None),
    "head and neck cancer": ("lay", r"head and neck|oropharyn|laryn|oral cavity|nasopharyn|hypopharyn|oral cancer",
                             None),
}


def corpus() -> list[dict]:
    with gzip.open(HERE / "corpus.json.gz", "rt", encoding="utf-8") as fh:
        return json.load(fh)["studies"]


def described(study: dict) -> tuple[str, str]:
    p = study["protocolSection"]
    conditions = p.get("conditionsModule", {}).get("conditions", [])
    return p["identificationModule"]["nctId"], (" | ".join(conditions) + " || " +
                                               p["identificationModule"].get("briefTitle", "")).lower()


def judge(query: str, studies: list[dict]) -> list[str]:
    _, include, exclude = RULES[query]
    out = []
    for study in studies:
        nct, text = described(study)
        if re.search(include, text) and not (exclude and re.search(exclude, text)):
            out.append(nct)
    return sorted(out)


def main(argv: list[str]) -> None:
    studies = corpus()
    if argv[:1] == ["--show"]:
        for nct in judge(argv[1], studies):
            print(nct, next(described(s)[1] for s in studies if described(s)[0] == nct)[:160])
        return
    if argv[:1] == ["--write"]:
        queries = [{"query": q, "kind": kind, "relevant": judge(q, studies)} for q, (kind, _, _) in RULES.items()]
        (HERE / "queries.json").write_text(json.dumps({"queries": queries}, indent=1) + "\n")
        for q in queries:
            print(f"{len(q['relevant']):4d}  {q['query']}")
        return
    print(__doc__)


if __name__ == "__main__":
    main(sys.argv[1:])
