"""Run the labelled patient x study set and print precision and recall.

    python -m gateway.matching.labelled tests/data/matching

The set is a cases.json (format in tests/data/matching/PROVENANCE.md) naming study and patient files
(FHIR Bundles); every case is answered by the indexed path (StudyIndex.match), as $match would.
"""

from __future__ import annotations

import copy
import json
import sys
from dataclasses import dataclass
from datetime import date
from pathlib import Path

from gateway.matching.criteria import group_id_of, location_ids_of, study_criteria
from gateway.matching.index import DEFAULT_STATUSES, MatchQuery, StudyIndex
from gateway.matching.profile import build_profile, group_by_person
from gateway.matching.terms import Terminology, default_terminology


@dataclass
class CaseResult:
    patient: str
    study: str
    expected: str
    got: str
    score: float | None
    why: str
    handwritten: bool

    @property
    def ok(self) -> bool:
        return self.expected == self.got


def bundle_resources(bundle: dict, prefix: str = "") -> list[dict]:
    """A Bundle (transaction, collection, searchset) -> its resources with ids, urn:uuid references
    rewritten to 'Type/id'; ``prefix`` keeps ids from different files apart.

    {'fullUrl': 'urn:uuid:group', 'resource': {'resourceType': 'Group'}} -> {'resourceType': 'Group',
    'id': prefix + 'group'}
    """
    refs: dict[str, str] = {}
    out: list[dict] = []
    for e in bundle.get("entry") or []:
        res = copy.deepcopy(e.get("resource") or {})
        full = e.get("fullUrl") or ""
        rid = res.get("id") or full.rsplit(":", 1)[-1].rsplit("/", 1)[-1]
        res["id"] = prefix + rid
        if full:
            refs[full] = f"{res['resourceType']}/{res['id']}"
        if res.get("resourceType") and res.get("id") and rid != res["id"]:
            refs[f"{res['resourceType']}/{rid}"] = f"{res['resourceType']}/{res['id']}"
        out.append(res)

    def fix(node: object) -> None:
        if isinstance(node, dict):
            ref = node.get("reference")
            if isinstance(ref, str) and ref in refs:
                node["reference"] = refs[ref]
            for v in node.values():
                fix(v)
        elif isinstance(node, list):
            for v in node:
                fix(v)

    fix(out)
    return out


def load_studies(folder: Path, spec: dict, term: Terminology) -> StudyIndex:
    index = StudyIndex(term)
    for rel, info in spec.items():
        resources = bundle_resources(json.loads((folder / rel).read_text()), info.get("prefix", ""))
        by_type: dict[str, dict[str, dict]] = {}
        for r in resources:
            by_type.setdefault(r["resourceType"], {})[r["id"]] = r
        for study in by_type.get("ResearchStudy", {}).values():
            gid = group_id_of(study)
            locs = {lid: by_type["Location"][lid] for lid in location_ids_of(study)
                    if lid in by_type.get("Location", {})}
            index.add(study_criteria(study, by_type.get("Group", {}).get(gid or ""), locs, term))
    return index


def run(folder: Path, term: Terminology | None = None) -> list[CaseResult]:
    """Evaluate every case in ``folder``/cases.json."""
    term = term or default_terminology()
    spec = json.loads((folder / "cases.json").read_text())
    today = date.fromisoformat(spec["today"])
    index = load_studies(folder, spec["studies"], term)
    profiles = {}
    for key, rel in spec["patients"].items():
        resources = bundle_resources(json.loads((folder / rel).read_text()))
        people = group_by_person(resources)
        if len(people) != 1:
            raise ValueError(f"{rel} must describe one person, found {len(people)}")
        (records,) = people.values()
        profiles[key] = build_profile(records, term)
    results = []
    for case in spec["cases"]:
        qspec = case.get("query") or {}
        q = MatchQuery(statuses=frozenset(qspec.get("status") or DEFAULT_STATUSES), today=today,
                       near_misses=True)
        if case["study"] not in index.studies:
            raise ValueError(f"case names unknown study {case['study']!r}")
        matches, near = index.match(profiles[case["patient"]], q)
        hit = next((r for r in matches if r.study_id == case["study"]), None)
        miss = next((r for r in near if r.study_id == case["study"]), None)
        if hit:
            why = "; ".join(f.text for f in hit.findings)
        elif miss:
            why = "; ".join(miss.reasons_not())
        elif index.studies[case["study"]].status not in q.statuses:
            why = f"study status '{index.studies[case['study']].status}' not asked for"
        else:
            why = "not a candidate: no condition of the patient is filed under the study's conditions"
        results.append(CaseResult(case["patient"], case["study"], case["expected"], "match" if hit else "no-match",
                                  hit.score if hit else None, why, bool(case.get("handwritten"))))
    return results


def precision_recall(results: list[CaseResult]) -> tuple[float, float]:
    tp = sum(r.got == "match" and r.expected == "match" for r in results)
    fp = sum(r.got == "match" and r.expected == "no-match" for r in results)
    fn = sum(r.got == "no-match" and r.expected == "match" for r in results)
    return (tp / (tp + fp) if tp + fp else 1.0), (tp / (tp + fn) if tp + fn else 1.0)


def main(argv: list[str] | None = None) -> int:
    folder = Path((argv or sys.argv[1:] or ["tests/data/matching"])[0])
    results = run(folder)
    for r in results:
        mark = "ok  " if r.ok else "FAIL"
        score = f"{r.score:.3f}" if r.score is not None else "  -  "
        hw = "hand" if r.handwritten else "real"
        print(f"{mark} {hw} {r.patient:28} {r.study:15} expected {r.expected:8} got {r.got:8} {score}  {r.why[:150]}")
    p, rc = precision_recall(results)
    print(f"cases {len(results)} (hand-written {sum(r.handwritten for r in results)}), "
          f"precision {p:.1%}, recall {rc:.1%}, failures {sum(not r.ok for r in results)}")
    return 0 if all(r.ok for r in results) else 1


if __name__ == "__main__":
    raise SystemExit(main())
