"""Eligibility criteria text -> structured Group characteristics (pure: no Flask, no database).

>>> from gateway.mapping.eligibility import annotate_group, extract
>>> [r.criterion.section for r in extract("Inclusion Criteria:\\n* ECOG 0-1").results]
['inclusion']

Contract (extensions, codes, confidence): docs/eligibility.md and gateway.fhir.conventions "extracted eligibility".
"""

from gateway.mapping.eligibility.extract import (
    EXTRACTOR_VERSION,
    CriterionResult,
    Extraction,
    extract,
    extract_cached,
    recognise_criterion,
)
from gateway.mapping.eligibility.fhir import (
    annotate_group,
    annotate_pushed_group,
    group_parts,
    is_extracted,
    review_lines,
)
from gateway.mapping.eligibility.recognise import Finding
from gateway.mapping.eligibility.split import Criterion, split_criteria

__all__ = ["EXTRACTOR_VERSION", "Criterion", "CriterionResult", "Extraction", "Finding", "annotate_group",
           "annotate_pushed_group", "extract", "extract_cached", "group_parts", "is_extracted", "recognise_criterion",
           "review_lines", "split_criteria"]
