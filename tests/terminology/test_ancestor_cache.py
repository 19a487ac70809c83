"""ancestors() remembers its answer for codes the terminology does not know, and forgets it when taught."""

from gateway.fhir.conventions import ICD10, MESH, SNOMED
from gateway.terminology.terminology import Terminology


def _small() -> Terminology:
    t = Terminology()
    t.add_concept(SNOMED, "1", "Neoplasm")
    t.add_concept(SNOMED, "2", "Glioma", ["1"])
    return t.finish()


def test_unknown_code_is_itself_and_asking_again_gives_the_same_answer():
    t = _small()
    first = t.ancestors(SNOMED, "999")
    assert first == frozenset({(SNOMED, "999")})
    assert t.ancestors(SNOMED, "999") is first  # remembered, not walked again
    assert not t.knows(SNOMED, "999")


def test_teaching_a_hierarchy_replaces_the_remembered_answer():
    t = _small()
    assert t.ancestors(MESH, "D005909") == frozenset({(MESH, "D005909")})
    t.add_hierarchy(MESH, "D005909", "Glioblastoma", ["D005910"])
    assert t.ancestors(MESH, "D005909") == frozenset({(MESH, "D005909"), (MESH, "D005910")})
    assert t.knows(MESH, "D005909")


def test_an_edge_to_an_unknown_code_is_seen():
    t = _small()
    assert t.ancestors(SNOMED, "3") == frozenset({(SNOMED, "3")})
    t.add_concept(SNOMED, "3", "Astrocytoma", ["2"])
    t.finish()
    assert t.ancestors(SNOMED, "3") == frozenset({(SNOMED, "3"), (SNOMED, "2"), (SNOMED, "1")})


def test_an_unlisted_icd_code_finds_its_structural_parent_once_that_is_loaded():
    t = _small()
    assert t.ancestors(ICD10, "C71.8") == frozenset({(ICD10, "C71.8")})
    t.add_hierarchy(ICD10, "C71", "Malignant neoplasm of brain", [])
    assert t.ancestors(ICD10, "C71.8") == frozenset({(ICD10, "C71.8"), (ICD10, "C71")})


def test_texts_added_after_a_resolution_are_found():
    t = _small()
    assert t.resolve_text("glioma") == [(SNOMED, "2")]
    assert t.resolve_text("astrocytoma", fuzzy=False) == []
    t.add_concept(SNOMED, "3", "Astrocytoma", ["2"])
    t.finish()
    assert t.resolve_text("astrocytoma") == [(SNOMED, "3")]
