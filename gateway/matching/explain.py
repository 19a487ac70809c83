"""Match results as FHIR JSON: the explanation extension on Bundle.entry.search (and on near-miss issues).

Shape (documented in docs/readme/matching.md), one extension per criterion:
    {"url": EXT_MATCH_EXPLANATION, "extension": [
        {"url": "criterion", "valueString": "Condition"},
        {"url": "result", "valueCode": "met"},           # met | not-met | unknown
        {"url": "text", "valueString": "Condition 'Glioblastoma' (SNOMED CT 393563007) is a kind of ..."}]}
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


def result_extensions(r: MatchResult, extra: list[Finding] | None = None) -> list[dict]:
    """MatchResult -> the extensions for Bundle.entry.search."""
    exts = [finding_extension(f) for f in [*r.findings, *(extra or [])]]
    if r.nearest is not None and r.distance_km is not None:
        site: dict = {"display": r.nearest.name}
        if r.nearest.location_id:
            site["reference"] = f"Location/{r.nearest.location_id}"
        exts.append({"url": EXT_MATCH_NEAREST_SITE, "extension": [
            {"url": "site", "valueReference": site},
            {"url": "distance", "valueQuantity": {"value": round(r.distance_km, 1), "unit": "km",
                                                  "system": cv.UCUM, "code": "km"}}]})
    return exts


def search_element(r: MatchResult, extra: list[Finding] | None = None) -> dict:
    """MatchResult -> Bundle.entry.search {mode: match, score, extension}."""
    return {"extension": result_extensions(r, extra), "mode": "match", "score": r.score}


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
