"""The adversarial matching suite: real criteria, one patient who meets each and one who violates it.

    python -m gateway.matching.adversarial tests/data/matching-adversarial

``cases.json`` (tests/data/matching-adversarial/PROVENANCE.md) holds, per real ClinicalTrials.gov criterion line,
the characteristics it gives (in the shapes of docs/eligibility.md) and two patients' records. Each case becomes
a recruiting ResearchStudy (the case's condition) with an eligibility Group whose characteristics carry the
criterion as ``criterion-source`` (confidence from the case), and two patients (the condition, age, sex and their
records). Every study goes into one StudyIndex and every patient is answered by ``StudyIndex.page``, the path
``$match`` serves. A *false match*: the violator is returned for the case's study; a *lost* patient: the one who
meets it is not.
"""

from __future__ import annotations

import copy
import json
import sys
from dataclasses import dataclass
from datetime import date
from pathlib import Path

from gateway.fhir import conventions as cv
from gateway.matching.criteria import study_criteria
from gateway.matching.index import MatchQuery, StudyIndex
from gateway.matching.profile import build_profile
from gateway.matching.terms import Terminology, default_terminology

CLINICAL = "http://terminology.hl7.org/CodeSystem/condition-clinical"
VERIFIED = "http://terminology.hl7.org/CodeSystem/condition-ver-status"


@dataclass
class Outcome:
    case: str
    who: str  # meets | violates
    matched: bool
    confidence: str
    why: str

    @property
    def ok(self) -> bool:
        return self.matched == (self.who == "meets")


def _coding(triple: list[str]) -> dict:
    return {"coding": [{"system": triple[0], "code": triple[1], "display": triple[2]}]}


def source_extension(text: str, section: str, confidence: str, rule: str = "hand-written") -> dict:
    """The ``criterion-source`` extension of docs/eligibility.md."""
    return {"url": cv.EXT_CRITERION_SOURCE, "extension": [
        {"url": "text", "valueString": text}, {"url": "section", "valueCode": section},
        {"url": "rule", "valueString": rule}, {"url": "confidence", "valueCode": confidence}]}


def study_resources(case: dict) -> tuple[dict, dict]:
    """A case -> (ResearchStudy, eligibility Group) as FHIR JSON."""
    sid = case["id"]
    chars = []
    for ch in case["characteristics"]:
        ch = copy.deepcopy(ch)
        ch.setdefault("exclude", False)
        ch["extension"] = [*ch.get("extension", []),
                           source_extension(case["criterion"], case["section"], case.get("confidence", "high"))]
        chars.append(ch)
    group = {"resourceType": "Group", "id": f"g-{sid}", "type": "person", "actual": False, "characteristic": chars}
    study = {"resourceType": "ResearchStudy", "id": sid, "status": "active", "title": f"{case['nct']} ({sid})",
             "identifier": [{"system": cv.CTGOV, "value": case["nct"]}],
             "condition": [_coding(case["condition"])], "enrollment": [{"reference": f"Group/g-{sid}"}]}
    return study, group


def patient_resources(case: dict, who: str) -> list[dict]:
    """A case's patient (``meets`` or ``violates``): Patient, the case's condition, and their records."""
    pid = f"{case['id']}-{who}"
    out: list[dict] = [{"resourceType": "Patient", "id": pid, "gender": case.get("gender", "female"),
                        "birthDate": case.get("birthDate", "1965-03-14")},
                       {"resourceType": "Condition", "id": f"{pid}-primary", "subject": {"reference": f"Patient/{pid}"},
                        "clinicalStatus": {"coding": [{"system": CLINICAL, "code": "active"}]},
                        "verificationStatus": {"coding": [{"system": VERIFIED, "code": "confirmed"}]},
                        "code": _coding(case["condition"])}]
    for i, rec in enumerate(case[who]):
        r = copy.deepcopy(rec)
        r["id"] = f"{pid}-{i}"
        r["subject"] = {"reference": f"Patient/{pid}"}
        out.append(r)
    return out


def run(folder: Path, term: Terminology | None = None, study_of=study_resources) -> list[Outcome]:
    """Every case x (meets, violates) -> Outcome. ``study_of`` builds the study (tests swap in extraction)."""
    term = term or default_terminology()
    spec = json.loads((folder / "cases.json").read_text(encoding="utf-8"))
    today = date.fromisoformat(spec["today"])
    index = StudyIndex(term)
    for case in spec["cases"]:
        study, group = study_of(case)
        index.add(study_criteria(study, group, {}, term))
    out = []
    q = MatchQuery(today=today, near_misses=True)
    for case in spec["cases"]:
        confidence = built_confidence(study_of(case)[1])
        for who in ("meets", "violates"):
            profile = build_profile(patient_resources(case, who), term)
            page = index.page(profile, q, limit=None)
            hit = next((r for r in page.matches if r.study_id == case["id"]), None)
            miss = next((r for r in page.near if r.study_id == case["id"]), None)
            if hit:
                why = " | ".join(f.text for f in hit.findings if f.criterion != "Condition")
            elif miss:
                why = " | ".join(miss.reasons_not())
            else:
                why = "not a candidate"
            out.append(Outcome(case["id"], who, hit is not None, confidence, why))
    return out


def built_confidence(group: dict) -> str:
    """The highest confidence among the Group's extracted characteristics: high | medium | none (text only)."""
    seen = set()
    for ch in group.get("characteristic") or []:
        for ext in ch.get("extension") or []:
            if ext.get("url") == cv.EXT_CRITERION_SOURCE:
                seen |= {s.get("valueCode") for s in ext.get("extension") or [] if s.get("url") == "confidence"}
    return "high" if "high" in seen else "medium" if seen else "none"


def extracted_with(annotate) -> object:
    """A ``study_of`` for ``run`` that writes the case's criterion line into the Group's eligibility text under
    its section heading and lets ``annotate`` (the mapping layer's ``annotate_group``) extract the characteristics:
    the suite then measures extraction and matching together. Matching does not import the mapping layer itself."""
    def study_of(case: dict) -> tuple[dict, dict]:
        study, group = study_resources(case)
        head = "Inclusion Criteria:" if case["section"] == "inclusion" else "Exclusion Criteria:"
        line = case["criterion"].lstrip("* ")
        bare = {"resourceType": "Group", "id": group["id"], "type": "person", "actual": False,
                "extension": [{"url": cv.EXT_ELIGIBILITY_TEXT, "valueMarkdown": f"{head}\n\n* {line}"}]}
        return study, annotate(bare)

    return study_of


def main(argv: list[str] | None = None) -> int:
    folder = Path((argv or sys.argv[1:] or ["tests/data/matching-adversarial"])[0])
    outcomes = run(folder)  # hand-written characteristics; scripts/eval_match.py --extract runs the extractor
    for o in outcomes:
        print(f"{'ok  ' if o.ok else 'FAIL'} {o.case:24} {o.who:8} {'match' if o.matched else 'no match':8} "
              f"{o.why[:160]}")
    false = sum(o.who == "violates" and o.matched and o.confidence == "high" for o in outcomes)
    lost = sum(o.who == "meets" and not o.matched for o in outcomes)
    print(f"cases {len(outcomes) // 2}, false matches (high confidence) {false}, fitting patients lost {lost}")
    return 0 if false == 0 and lost == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
