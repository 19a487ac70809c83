"""Match results as FHIR JSON: the explanation extension on Bundle.entry.search (and on near-miss issues).

Shape (documented in docs/matching.md), one extension per criterion:
    {"url": EXT_MATCH_EXPLANATION, "extension": [
        {"url": "criterion", "valueString": "Condition"},
        {"url": "result", "valueCode": "met"},           # met | not-met | unknown
        {"url": "text", "valueString": "Condition 'Glioblastoma' (SNOMED CT 393563007) is a kind of ..."}]}
(``result`` is met | not-met | unknown | not-checked), the coverage and a plain-English summary:
    {"url": EXT_MATCH_COVERAGE, "extension": [{"url": "evaluated", "valueInteger": 9},
                                              {"url": "total", "valueInteger": 31}]}
    {"url": EXT_MATCH_SUMMARY, "valueString": "You may be able to take part. 9 of 31 criteria could be ..."}
and, when the patient's location is known, one nearest-site extension:
    {"url": EXT_MATCH_NEAREST_SITE, "extension": [
        {"url": "site", "valueReference": {"reference": "Location/1", "display": "..."}},
        {"url": "distance", "valueQuantity": {"value": 4.1, "unit": "km", "system": UCUM, "code": "km"}}]}
"""

from __future__ import annotations

from gateway.fhir import conventions as cv
from gateway.matching.engine import Finding, MatchResult

EXT_MATCH_NEAREST_SITE = cv.EXT_MATCH_NEAREST_SITE  # on Bundle.entry.search


def finding_extension(f: Finding) -> dict:
    return {"url": cv.EXT_MATCH_EXPLANATION, "extension": [
        {"url": "criterion", "valueString": f.criterion},
        {"url": "result", "valueCode": f.result},
        {"url": "text", "valueString": f.text}]}


def summary(r: MatchResult, audience: str = "patient") -> str:
    """One plain-English line: may the person take part, and how much of the study their records could check:
    "You may be able to take part. 9 of 31 criteria could be checked from your records; the research team will
    check the rest." ``audience`` 'team' speaks of "the patient's records" ($candidates)."""
    yours = "your records" if audience == "patient" else "the patient's records"
    n = f"{r.evaluated} of {r.total} {'criterion' if r.total == 1 else 'criteria'}"
    failed = sum(f.result == "not-met" for f in r.findings)
    if failed:
        lead = "You are probably not able to take part" if audience == "patient" else "Probably not eligible"
        return f"{lead}: {failed} {'criterion is' if failed == 1 else 'criteria are'} not met according to {yours}."
    lead = "You may be able to take part." if audience == "patient" else "May be eligible."
    if r.total and r.evaluated == r.total:
        return f"{lead} All {r.total} criteria could be checked from {yours}; the research team will confirm them."
    conflict = " Some of them may conflict with the study's criteria." if any(f.conflict for f in r.findings) else ""
    return f"{lead} {n} could be checked from {yours}; the research team will check the rest.{conflict}"


def coverage_extension(r: MatchResult) -> dict:
    return {"url": cv.EXT_MATCH_COVERAGE, "extension": [{"url": "evaluated", "valueInteger": r.evaluated},
                                                         {"url": "total", "valueInteger": r.total}]}


def result_extensions(r: MatchResult, extra: list[Finding] | None = None, audience: str = "patient") -> list[dict]:
    """MatchResult -> the extensions for Bundle.entry.search: one explanation per criterion (an identical
    sentence for two criteria is said once, its ``criterion`` naming both), the coverage, the summary and the
    nearest site."""
    seen: dict[tuple[str, str], dict] = {}
    exts = []
    for f in [*r.findings, *(extra or [])]:
        same = seen.get((f.result, f.text))
        if same is not None:  # two criteria, one sentence: said once, naming both criteria
            name = same["extension"][0]
            if f.criterion not in name["valueString"].split("; "):
                name["valueString"] += f"; {f.criterion}"
            continue
        ext = seen[(f.result, f.text)] = finding_extension(f)
        exts.append(ext)
    exts.append(coverage_extension(r))
    exts.append({"url": cv.EXT_MATCH_SUMMARY, "valueString": summary(r, audience)})
    if r.nearest is not None and r.distance_km is not None:
        site: dict = {"display": r.nearest.name}
        if r.nearest.location_id:
            site["reference"] = f"Location/{r.nearest.location_id}"
        exts.append({"url": EXT_MATCH_NEAREST_SITE, "extension": [
            {"url": "site", "valueReference": site},
            {"url": "distance", "valueQuantity": {"value": round(r.distance_km, 1), "unit": "km",
                                                  "system": cv.UCUM, "code": "km"}}]})
    return exts


def search_element(r: MatchResult, extra: list[Finding] | None = None, audience: str = "patient") -> dict:
    """MatchResult -> Bundle.entry.search {mode: match, score, extension}."""
    return {"extension": result_extensions(r, extra, audience), "mode": "match", "score": r.score}


def near_miss_outcome(near: list[MatchResult], rtype: str = "ResearchStudy") -> dict:
    """Near misses -> one OperationOutcome (Bundle entry with search.mode=outcome): an issue per study,
    diagnostics saying why it is not a match, the full explanation in the extension on the issue."""
    issues = []
    for r in near:
        rid = r.study_id if rtype == "ResearchStudy" else r.patient_key
        issues.append({
            "extension": result_extensions(r),
            "severity": "information",
            "code": "informational",
            "details": {"text": f"{rtype}/{rid} is a near miss (score {r.score})"},
            "diagnostics": f"{rtype}/{rid} is not a match: " + "; ".join(r.reasons_not()),
        })
    if not issues:
        issues.append({"severity": "information", "code": "informational",
                       "diagnostics": "No near misses: no related study failed a criterion"})
    return {"resourceType": "OperationOutcome", "issue": issues}
