"""Explainable matching of patients and research studies: criteria, profiles, scoring, indexes, consent.

>>> from gateway.matching import study_criteria, build_profile, evaluate
"""

from gateway.matching.consent import ConsentDecision, decide
from gateway.matching.criteria import Criterion, StudyCriteria, study_criteria
from gateway.matching.engine import MET, NOT_MET, UNKNOWN, Finding, MatchResult, evaluate
from gateway.matching.index import MatchQuery, PatientIndex, StudyIndex
from gateway.matching.profile import PatientProfile, build_profile, group_by_person, person_key
from gateway.matching.state import MatchingState

__all__ = [
    "MET", "NOT_MET", "UNKNOWN", "ConsentDecision", "Criterion", "Finding", "MatchQuery", "MatchResult",
    "MatchingState", "PatientIndex", "PatientProfile", "StudyCriteria", "StudyIndex", "build_profile", "decide",
    "evaluate", "group_by_person", "person_key", "study_criteria",
]
