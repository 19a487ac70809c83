"""Site-less CNS histologies reach their usual site (ICD-10 'unspecified site' codes) through the bridges, the way
glioblastoma does, and nothing filed at another site (spinal cord) is pulled onto the brain by it. Shipped data."""

from __future__ import annotations

import pytest

from gateway.fhir.conventions import ICD10, MESH, ONCOTREE, SNOMED
from gateway.terminology import Terminology, default_terminology

NEOPLASM_OF_BRAIN, MALIGNANT_BRAIN, MALIGNANT_CNS = "126952004", "428061005", "372062007"


@pytest.fixture(scope="module")
def t() -> Terminology:
    return default_terminology()


def _brain(t: Terminology, system: str, code: str) -> bool:
    return t.is_a(system, code, SNOMED, NEOPLASM_OF_BRAIN)


@pytest.mark.parametrize(("system", "code"), [
    (MESH, "D005910"),    # Glioma: the audit's case
    (MESH, "D000005910"),  # the same, as ClinicalTrials.gov writes it
    (MESH, "D001254"),    # Astrocytoma (below Glioma)
    (MESH, "D004806"),    # Ependymoma (below Glioma)
    (MESH, "D018316"),    # Gliosarcoma (below Glioma)
    (MESH, "D009837"),    # Oligodendroglioma (already, via SNOMED CT 443936004)
    (MESH, "D005909"),    # Glioblastoma (already)
    (MESH, "D008527"),    # Medulloblastoma (already, C71.6)
    (SNOMED, "189924002"),  # Pleomorphic xanthoastrocytoma (new: C71.9)
    (SNOMED, "393563007"),  # Glioblastoma multiforme (the precedent)
    (SNOMED, "443936004"),  # Oligodendroglioma
    (SNOMED, "443333004"),  # Medulloblastoma
    (ONCOTREE, "EPM"),      # OncoTree Ependymoma, equivalent of MeSH D004806
])
def test_site_less_cns_histology_is_a_neoplasm_of_brain(t, system, code):
    assert _brain(t, system, code)
    assert t.is_a(system, code, MESH, "D005910") or code in ("D008527", "443333004", "189924002")


def test_glioma_reaches_the_brain_through_icd10_c71_9(t):
    path = t.is_a_path(MESH, "D005910", SNOMED, MALIGNANT_BRAIN)
    assert path[:3] == [(MESH, "D005910"), (ICD10, "C71.9"), (ICD10, "C71")], path
    assert t.is_a(MESH, "D005910", ICD10, "C71.9")
    found = t.conceptmaps.translate("D005910", MESH, target_system=ICD10)
    assert [(x.code, x.equivalence) for x in found] == [("C71.9", "wider")]


def test_the_bridge_points_upward_only(t):
    """'wider': Glioma is a kind of C71.9, not the reverse; a brain tumour is not a glioma."""
    assert not t.is_a(ICD10, "C71.9", MESH, "D005910")
    assert not t.is_a(SNOMED, NEOPLASM_OF_BRAIN, MESH, "D005910")
    assert not t.is_a(SNOMED, MALIGNANT_BRAIN, MESH, "D005910")
    # Through the bridges Glioma is now a kind of MeSH Brain Neoplasms (as Glioblastoma already was), never the reverse.
    assert t.subsumes(MESH, "D001932", "D005910") == "subsumes"


@pytest.mark.parametrize("code", [
    "276827001",  # Malignant glioma of spinal cord
    "370987005",  # Anaplastic astrocytoma of spinal cord
    "254948003",  # Astrocytoma of spinal cord
    "87151000119105",  # Malignant glioma of central nervous system (its parent: CNS, not brain)
    "404664002",  # Malignant optic glioma (optic nerve: C72.3)
])
def test_gliomas_filed_at_another_site_are_not_brain_tumours(t, code):
    assert not _brain(t, SNOMED, code)
    assert not t.is_a(SNOMED, code, ICD10, "C71")
    assert not t.is_a(SNOMED, code, MESH, "D005910"), "a site-specific glioma must never be filed under MeSH Glioma"
    assert t.is_a(SNOMED, code, SNOMED, MALIGNANT_CNS)  # still a CNS cancer


@pytest.mark.parametrize("text", ["glioma of spinal cord", "spinal cord glioma", "spinal cord astrocytoma"])
def test_spinal_cord_glioma_text_is_not_a_brain_tumour(t, text):
    codes = t.resolve_text(text)
    assert codes and not any(_brain(t, *k) for k in codes)


@pytest.mark.parametrize("text", ["Glioma", "gliomas", "Ependymoma", "astrocytoma", "Pleomorphic xanthoastrocytoma"])
def test_site_less_text_resolves_to_a_brain_concept(t, text):
    codes = t.resolve_text(text)
    assert codes and all(_brain(t, *k) for k in codes), codes


def test_meningioma_and_germinoma_are_not_given_the_brain(t):
    """ICD-10: meningioma NOS is D32.9 (meninges), germinoma has no usual site; neither is made a brain tumour."""
    for system, code in ((MESH, "D008579"), (ONCOTREE, "MNG"), (SNOMED, "722718001"), (SNOMED, "1156833003"),
                         (ONCOTREE, "GMN")):
        assert not _brain(t, system, code), (system, code)
    assert t.is_a(MESH, "D008579", MESH, "D016543")  # meningioma stays a CNS neoplasm (via Meningeal Neoplasms)


def test_no_secondary_concept_gained_a_primary_site(t):
    for code in ("94225005", "94243009", "128462008"):
        assert not _brain(t, SNOMED, code)
    assert not t.is_secondary(MESH, "D005910")
