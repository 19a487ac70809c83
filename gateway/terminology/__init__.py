"""Terminology: code systems with hierarchy, cross-system bridges, free-text resolution, is-a.

>>> from gateway.terminology import default_terminology
>>> t = default_terminology()
>>> t.is_a("http://snomed.info/sct", "393563007", "https://www.nlm.nih.gov/mesh", "D005910")
True
"""

from gateway.terminology.conceptmap import ConceptMapIndex, Translation, load_conceptmaps
from gateway.terminology.systems import (
    canonical_system,
    normalise_code,
    normalise_coding,
    normalise_mesh_id,
    system_name,
)
from gateway.terminology.terminology import Terminology, default_terminology, load_terminology, terminology_for
from gateway.terminology.text import loose_key, normalise_text

__all__ = [
    "ConceptMapIndex",
    "Terminology",
    "Translation",
    "canonical_system",
    "default_terminology",
    "load_conceptmaps",
    "load_terminology",
    "loose_key",
    "normalise_code",
    "normalise_coding",
    "normalise_mesh_id",
    "normalise_text",
    "system_name",
    "terminology_for",
]
