"""ConceptMapIndex: translation with system aliases and code normal forms (gateway.terminology.conceptmap)."""

from __future__ import annotations

from gateway.fhir.conventions import MESH, SNOMED
from gateway.terminology.conceptmap import ConceptMapIndex

CM = {"resourceType": "ConceptMap", "url": "https://example.org/cm", "group": [
    {"source": MESH, "target": SNOMED, "element": [
        {"code": "D005909", "target": [{"code": "393563007", "display": "Glioblastoma multiforme",
                                        "equivalence": "equivalent"}]}]},
    {"source": "https://trust.example/codes", "target": SNOMED, "element": [
        {"code": "loc-gbm", "target": [{"code": "393563007", "equivalence": "equivalent"}]}]},
]}


def test_exact_lookup_unchanged():
    idx = ConceptMapIndex([CM])
    [t] = idx.translate("D005909", MESH, target_system=SNOMED)
    assert (t.code, t.equivalence, t.source) == ("393563007", "equivalent", "https://example.org/cm")
    assert idx.translate("loc-gbm", "https://trust.example/codes")[0].code == "393563007"
    assert idx.translate("LOC-GBM", "https://trust.example/codes") == []  # local codes stay case-sensitive


def test_alias_system_and_padded_mesh_id_find_the_same_translation():
    idx = ConceptMapIndex([CM])
    [t] = idx.translate("D000005909", "http://id.nlm.nih.gov/mesh", target_system="urn:oid:2.16.840.1.113883.6.96")
    assert t.code == "393563007"
