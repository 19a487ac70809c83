"""Code-system identity and free-text normalisation (gateway.terminology.systems, .text)."""

from __future__ import annotations

import pytest

from gateway.fhir.conventions import ICD10, ICD10CM, MESH, MESH_ALIASES, ONCOTREE, SNOMED
from gateway.terminology.systems import (
    canonical_system,
    icd_structural_parent,
    normalise_code,
    normalise_mesh_id,
    system_name,
)
from gateway.terminology.text import loose_key, normalise_text, strip_modifiers


@pytest.mark.parametrize("alias", sorted(MESH_ALIASES))
def test_every_mesh_alias_is_one_system(alias):
    assert canonical_system(alias) == MESH


def test_other_aliases_and_unknown_systems():
    assert canonical_system("urn:oid:2.16.840.1.113883.6.96") == SNOMED
    assert canonical_system("http://oncotree.mskcc.org/") == ONCOTREE
    assert canonical_system("https://example.org/local") == "https://example.org/local"
    assert canonical_system(None) == ""


def test_system_names():
    assert system_name(SNOMED) == "SNOMED CT"
    assert system_name("http://id.nlm.nih.gov/mesh") == "MeSH"
    assert system_name(ICD10CM) == "ICD-10-CM"
    assert system_name("https://example.org/x") == "https://example.org/x"


@pytest.mark.parametrize(("raw", "expected"), [
    ("D000005910", "D005910"),  # ClinicalTrials.gov padding
    ("D005910", "D005910"),
    ("d000001943", "D001943"),
    ("D000071380", "D000071380"),  # a native 9-digit descriptor stays
])
def test_mesh_ids(raw, expected):
    assert normalise_mesh_id(raw) == expected
    assert normalise_code(MESH, raw) == expected


@pytest.mark.parametrize(("raw", "expected"), [
    ("C719", "C71.9"), ("c71.9", "C71.9"), ("C71", "C71"), ("C7931", "C79.31"), ("c69-c72", "C69-C72"),
    ("II", "II"),
])
def test_icd_codes(raw, expected):
    assert normalise_code(ICD10, raw) == expected
    assert normalise_code(ICD10CM, raw) == expected


def test_icd_structural_parent():
    assert icd_structural_parent("C71.9") == "C71"
    assert icd_structural_parent("C79.31") == "C79.3"
    assert icd_structural_parent("C50.211") == "C50.21"
    assert icd_structural_parent("C71") is None


def test_oncotree_and_snomed_codes():
    assert normalise_code(ONCOTREE, " difg ") == "DIFG"
    assert normalise_code(SNOMED, " 393563007 ") == "393563007"


@pytest.mark.parametrize(("text", "expected"), [
    ("Glioblastoma  Multiforme!", "glioblastoma multiforme"),
    ("Non-Small-Cell Lung Cancer (NSCLC)", "non small cell lung cancer nsclc"),
    ("Hodgkin's Lymphoma", "hodgkins lymphoma"),
    ("Méningiome", "meningiome"),
    ("  ", ""),
])
def test_normalise_text(text, expected):
    assert normalise_text(text) == expected


def test_loose_key_spelling_plural_and_filler_words():
    assert loose_key("Tumours of the Brain") == "tumor brain"
    assert loose_key("Brain Metastases") == "brain metastasis"
    assert loose_key("Leukaemias") == "leukemia"
    assert loose_key("Metastasis") == "metastasis"  # not 'metastasi'


def test_strip_modifiers_keeps_words_that_change_the_concept():
    assert strip_modifiers(loose_key("Recurrent Glioblastoma")) == "glioblastoma"
    assert strip_modifiers(loose_key("Metastatic Prostate Cancer")) == "metastatic prostate cancer"
