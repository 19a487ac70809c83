"""The shipped terminology (mappings/terminology) on its real data: hierarchies, bridges, text, secondaries."""

from __future__ import annotations

import csv
import json
import time
from pathlib import Path

import pytest

from gateway.fhir.conventions import ICD10, ICD10CM, MESH, ONCOTREE, SNOMED
from gateway.terminology import Terminology, default_terminology, load_terminology
from gateway.terminology.terminology import DEFAULT_PATH, read_concept_table

DATA = Path(__file__).resolve().parents[1] / "data" / "terminology"

GBM, GLIOMA_OF_BRAIN, GBM_OF_BRAIN = "393563007", "276826005", "276828006"
NEOPLASM_OF_BRAIN, MALIGNANT_BRAIN = "126952004", "428061005"
BRAIN_METS, SECONDARY = "94225005", "128462008"


@pytest.fixture(scope="module")
def t() -> Terminology:
    return default_terminology()


@pytest.fixture
def fresh() -> Terminology:
    """A private copy for tests that add hierarchy (the default one is shared by the process)."""
    return load_terminology(DEFAULT_PATH)


# -- hierarchies inside one system ---------------------------------------------------------------
def test_oncotree_glioblastoma_is_a_diffuse_glioma_of_cns(t):
    assert t.is_a(ONCOTREE, "GB", ONCOTREE, "DIFG")
    assert t.is_a(ONCOTREE, "GB", ONCOTREE, "BRAIN")
    assert t.subsumes(ONCOTREE, "DIFG", "GB") == "subsumes"
    assert t.subsumes(ONCOTREE, "GB", "DIFG") == "subsumed-by"
    assert not t.is_a(ONCOTREE, "DIFG", ONCOTREE, "GB")
    assert t.display(ONCOTREE, "DIFG") == "Diffuse Glioma"
    assert len(t.concepts(ONCOTREE)) >= 898


def test_oncotree_retired_codes_still_match(t):
    # GBM was revoked in favour of GB (IDH-wildtype): a GB patient fits a study coded with the old GBM.
    assert t.is_a(ONCOTREE, "GB", ONCOTREE, "GBM")
    # DIPG was merged into DMG (diffuse midline glioma).
    assert t.is_a(ONCOTREE, "DIPG", ONCOTREE, "DMG")


def test_icd10_who_chain_c71_9_c71_block_chapter(t):
    anc = t.ancestors(ICD10, "C71.9")
    assert {(ICD10, "C71.9"), (ICD10, "C71"), (ICD10, "C69-C72"), (ICD10, "C00-C75"), (ICD10, "II")} <= anc
    assert t.display(ICD10, "C69-C72") == "Malignant neoplasms of eye, brain and other parts of central nervous system"
    assert t.display(ICD10, "II") == "Neoplasms"


def test_icd10cm_chain_and_undotted_input(t):
    assert t.is_a(ICD10CM, "C719", ICD10CM, "C71")
    assert t.is_a(ICD10CM, "C71.9", ICD10CM, "C69-C72")
    assert t.is_a(ICD10CM, "C79.31", ICD10CM, "C79.3")
    assert t.is_a(ICD10CM, "C50.211", ICD10CM, "C50-C50")
    assert t.display(ICD10CM, "C71.9") == "Malignant neoplasm of brain, unspecified"
    assert not t.is_a(ICD10CM, "C71.9", ICD10CM, "C76-C80")


def test_icd10_and_icd10cm_agree_at_category_level(t):
    assert t.is_a(ICD10CM, "C71.9", ICD10, "C71")
    assert t.is_a(ICD10, "C71.9", ICD10CM, "C71")
    assert t.subsumes(ICD10, "C71", "C71.9") == "subsumes"


def test_unknown_who_subcategory_sits_under_its_category(t):
    # WHO 4-character codes are not listed: their shape places them.
    assert t.is_a(ICD10, "C71.8", ICD10, "C69-C72")
    assert t.knows(ICD10, "C71.8")
    assert not t.knows(ICD10, "Z99.9")


def test_snomed_gbm_is_a_glioma_is_a_neoplasm_of_brain(t):
    assert t.is_a(SNOMED, GBM_OF_BRAIN, SNOMED, GBM)
    assert t.is_a(SNOMED, GBM_OF_BRAIN, SNOMED, GLIOMA_OF_BRAIN)
    assert t.is_a(SNOMED, GLIOMA_OF_BRAIN, SNOMED, NEOPLASM_OF_BRAIN)
    assert t.is_a(SNOMED, GBM_OF_BRAIN, SNOMED, NEOPLASM_OF_BRAIN)
    # The site-less 393563007 reaches 'neoplasm of brain' through ICD-10 C71.9 -> C71 = 428061005.
    assert t.is_a(SNOMED, GBM, SNOMED, MALIGNANT_BRAIN)
    assert t.is_a(SNOMED, GBM, SNOMED, NEOPLASM_OF_BRAIN)
    assert t.subsumes(SNOMED, NEOPLASM_OF_BRAIN, GBM) == "subsumes"
    assert t.display(SNOMED, GBM) == "Glioblastoma multiforme"


def test_unknown_code_is_only_itself(t):
    assert t.ancestors(SNOMED, "999999999") == frozenset({(SNOMED, "999999999")})
    assert t.is_a(SNOMED, "999999999", SNOMED, "999999999")
    assert t.display(SNOMED, "999999999") is None
    assert not t.knows(SNOMED, "999999999")


# -- across systems --------------------------------------------------------------------------------
def test_snomed_glioblastoma_is_mesh_glioma_and_oncotree_diffuse_glioma(t):
    assert t.is_a(SNOMED, GBM, MESH, "D005910")
    assert t.is_a(SNOMED, GBM, "http://id.nlm.nih.gov/mesh", "D000005910")  # alias + padded id
    assert t.is_a(SNOMED, GBM, ONCOTREE, "DIFG")
    assert t.is_a(SNOMED, GBM, ICD10, "C71")
    assert t.is_a(ONCOTREE, "GB", MESH, "D005909")
    assert t.is_a(MESH, "D005909", SNOMED, GBM)  # equivalent both ways


def test_ancestors_include_itself_and_every_system(t):
    anc = t.ancestors(SNOMED, GBM)
    assert (SNOMED, GBM) in anc
    assert {s for s, _ in anc} >= {SNOMED, MESH, ONCOTREE, ICD10, ICD10CM}


def test_synthea_and_mcode_codes_reach_their_site(t):
    assert t.is_a(SNOMED, "93761005", SNOMED, "363406005")  # primary malignant neoplasm of colon
    assert t.is_a(SNOMED, "109838007", ICD10, "C18")
    assert t.is_a(SNOMED, "109838007", MESH, "D015179")  # colorectal neoplasms
    assert t.is_a(SNOMED, "92691004", SNOMED, "126906006")  # CIS prostate -> neoplasm of prostate
    assert not t.is_a(SNOMED, "92691004", SNOMED, "363346000")  # in situ is not malignant
    assert t.is_a(SNOMED, "254637007", ONCOTREE, "NSCLC")
    assert t.is_a(SNOMED, "188152004", SNOMED, "254837009")  # breast UIQ -> breast cancer
    assert t.is_a(ICD10CM, "C50.211", SNOMED, "254837009")  # via C50 = C50


# -- primary versus secondary ----------------------------------------------------------------------
def test_brain_metastases_are_not_a_brain_tumour(t):
    for ancestor in (NEOPLASM_OF_BRAIN, MALIGNANT_BRAIN, GLIOMA_OF_BRAIN, "93727008"):
        assert not t.is_a(SNOMED, BRAIN_METS, SNOMED, ancestor)
    assert not t.is_a(SNOMED, BRAIN_METS, ICD10, "C71")
    assert not t.is_a(SNOMED, BRAIN_METS, ONCOTREE, "BRAIN")
    assert t.is_a(SNOMED, BRAIN_METS, SNOMED, SECONDARY)
    assert t.is_a(SNOMED, BRAIN_METS, ICD10CM, "C79.31")


def test_a_glioma_is_not_brain_metastases(t):
    for code in (GBM, GBM_OF_BRAIN, GLIOMA_OF_BRAIN, "11471000224106"):
        assert not t.is_a(SNOMED, code, SNOMED, BRAIN_METS)
        assert not t.is_a(SNOMED, code, SNOMED, SECONDARY)
        assert not t.is_secondary(SNOMED, code)
    assert not t.is_a(ONCOTREE, "GB", SNOMED, BRAIN_METS)


def test_is_secondary_across_systems(t):
    assert t.is_secondary(SNOMED, BRAIN_METS)
    assert t.is_secondary(SNOMED, "314994000")  # metastasis from prostate (Synthea)
    assert t.is_secondary(ICD10CM, "C79.31")
    assert t.is_secondary(ICD10, "C79.3")
    assert t.is_secondary(MESH, "D009362")
    assert not t.is_secondary(SNOMED, "399068003")
    assert not t.is_secondary(ICD10, "C71.9")


def test_no_primary_concept_is_a_secondary_one(t):
    """Over the whole closure: a concept not flagged secondary never has a secondary ancestor,
    and a flagged one never reaches a site-specific primary SNOMED concept."""
    primary_sites = {NEOPLASM_OF_BRAIN, MALIGNANT_BRAIN, "363406005", "399068003", "254837009", "363358000"}
    for system, code in t.concepts():
        if t.is_secondary(system, code):
            assert not any((SNOMED, p) in t.ancestors(system, code) for p in primary_sites), (system, code)


# -- free text ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(("text", "expected"), [
    ("Brain Metastasases", (SNOMED, BRAIN_METS)),  # misspelling seen on ClinicalTrials.gov
    ("Brian metastases", (SNOMED, BRAIN_METS)),  # close spelling, found by similarity
    ("BRAIN METASTASES", (SNOMED, BRAIN_METS)),
    ("NSCLC", (SNOMED, "254637007")),
    ("Lung Cancer, Non-Small Cell", (SNOMED, "254637007")),  # registry word order
    ("Glioblastoma Multiforme", (SNOMED, GBM)),
    ("Glioblastoma  Multiforme!", (SNOMED, GBM)),
    ("GBM", (SNOMED, GBM)),
    ("Recurrent Glioblastoma", (SNOMED, GBM)),
    ("DIPG", (SNOMED, "11471000224106")),
    ("Diffuse Intrinsic Pontine Glioma", (SNOMED, "11471000224106")),
    ("Brain Tumours", (SNOMED, NEOPLASM_OF_BRAIN)),
    ("Glioma", (MESH, "D005910")),
    ("Meningioma", (MESH, "D008579")),
    ("Medulloblastoma", (SNOMED, "443333004")),
    ("Breast Cancer", (SNOMED, "254837009")),
    ("Malignant neoplasm of brain", (SNOMED, MALIGNANT_BRAIN)),
    ("Diffuse Glioma", (ONCOTREE, "DIFG")),
])
def test_resolve_text(t, text, expected):
    found = t.resolve_text(text)
    assert found and found[0] == expected, found


def test_resolve_text_returns_codes_of_several_systems_snomed_first(t):
    found = t.resolve_text("Glioblastoma")
    assert found[0] == (SNOMED, GBM)
    assert (MESH, "D005909") in found


def test_unresolved_text_is_reported(t):
    assert t.resolve_text("Healthy Volunteers") == []
    assert t.resolve_text("") == []
    resolved, unresolved = t.resolve_texts(["Brain Metastases", "Advanced Solid Tumors", "GBM"])
    assert set(resolved) == {"Brain Metastases", "GBM"}
    assert unresolved == ["Advanced Solid Tumors"]


def test_brain_metastases_text_never_resolves_to_a_primary_brain_concept(t):
    for text in ("Brain Metastases", "Metastatic Brain Tumor", "Brain Metastasases", "Secondary brain tumour"):
        for system, code in t.resolve_text(text):
            assert t.is_secondary(system, code), (text, system, code)


def test_normalise_text_method(t):
    assert t.normalise_text("Glioblastoma  Multiforme!") == "glioblastoma multiforme"


# -- run-time hierarchy (ClinicalTrials.gov conditionBrowseModule) -----------------------------------
def test_add_hierarchy_from_a_ctgov_record(fresh):
    record = json.loads((DATA / "ctgov-NCT02513394-conditions.json").read_text())
    browse = record["conditionBrowseModule"]
    ancestors = [a["id"] for a in browse["ancestors"]]
    for mesh in browse["meshes"]:
        fresh.add_hierarchy("http://id.nlm.nih.gov/mesh", mesh["id"], mesh["term"], ancestors)
    for a in browse["ancestors"]:
        fresh.add_hierarchy(MESH, a["id"], a["term"], [])
    assert fresh.is_a(MESH, "D000001943", MESH, "D001941")  # Breast Neoplasms < Breast Diseases (new)
    assert fresh.is_a(MESH, "D001943", MESH, "D009369")
    assert fresh.display(MESH, "D001941") == "Breast Diseases"
    # ... and what was below Breast Neoplasms gains the new ancestor too: SNOMED breast cancer.
    assert fresh.is_a(SNOMED, "254837009", MESH, "D001941")
    assert fresh.is_a(SNOMED, "188152004", MESH, "D001941")


def test_add_hierarchy_for_a_new_code(fresh):
    assert not fresh.knows(MESH, "D000090002")
    fresh.add_hierarchy(MESH, "D000090002", "Some New Glioma Subtype", ["D000005910"])
    assert fresh.is_a(MESH, "D000090002", MESH, "D005910")
    assert fresh.is_a(MESH, "D000090002", MESH, "D009369")
    assert fresh.knows(MESH, "D000090002")
    fresh.add_hierarchy(MESH, "D000090002", None, ["D000005910"])  # repeating is harmless
    assert fresh.display(MESH, "D000090002") == "Some New Glioma Subtype"


def test_descendants_and_parents(t):
    assert (ONCOTREE, "GB") in t.descendants(ONCOTREE, "DIFG")
    assert (ONCOTREE, "ADIFG") in t.parents(ONCOTREE, "GB")


# -- the data itself ----------------------------------------------------------------------------------
def test_load_is_fast_enough():
    start = time.perf_counter()
    load_terminology(DEFAULT_PATH)
    assert time.perf_counter() - start < 3.0  # ~0.3 s on the dev machine; generous for shared CI


def test_curated_snomed_subset_agrees_with_mcode():
    """Ids and terms of the curated subset match the mCODE value sets, and 'secondary' flags match
    membership of the secondary-cancer value set."""
    table = read_concept_table(DEFAULT_PATH / "codesystems" / "snomed-oncology.tsv")
    ours = {c["code"]: c for c in table["concept"]}
    lines = (DATA / "mcode-snomed-subset.tsv").read_text(encoding="utf-8").splitlines()
    rows = list(csv.reader((ln for ln in lines if not ln.startswith("#")), delimiter="\t"))
    assert len(rows) >= 230
    # Only these groupers (which include benign tumours, so mCODE leaves them out) are checked elsewhere:
    # Synthea records (126906006, 92691004) and the SNOMED CT browser (the other four). A typo in any
    # other id would show up here.
    assert set(ours) - {r[0] for r in rows} == {"55342001", "126952004", "126906006", "92691004", "126926005",
                                                  "126713003"}
    for code, display, valueset in rows:
        concept = ours[code]
        names = {concept["display"].lower()} | {d["value"].lower() for d in concept.get("designation", [])}
        flagged = any(p["code"] == "secondary" for p in concept["property"])
        assert flagged == (valueset == "secondary"), code
        bare = display.lower().removesuffix(" (disorder)").removesuffix(" (clinical)")
        assert bare in names or bare.replace("ukp - ", "") in names or code in {
            "363346000", "128462008"}, (code, display)


def test_every_bridge_end_is_a_known_concept(t):
    for url, cm in t.conceptmaps.maps.items():
        for group in cm["group"]:
            for element in group["element"]:
                if "oncotree-history" not in url:
                    assert t.knows(group["source"], element["code"]), (url, element["code"])
                for target in element["target"]:
                    assert t.knows(group["target"], target["code"]), (url, target["code"])


def test_bridges_have_descriptions_and_translate(t):
    for cm in t.conceptmaps.maps.values():
        assert cm.get("description"), cm["url"]
    found = t.conceptmaps.translate("393563007", SNOMED, target_system=MESH)
    assert [(x.code, x.equivalence) for x in found] == [("D005909", "equivalent")]


def test_registry_hierarchy_single_term_record_is_trusted(fresh):
    record = json.loads((DATA / "ctgov-NCT02513394-conditions.json").read_text())
    browse = record["conditionBrowseModule"]
    ancestors = [a["id"] for a in browse["ancestors"]]
    entries = [{"system": MESH, "code": m["id"], "display": m["term"], "ancestors": ancestors}
               for m in browse["meshes"]]
    entries += [{"system": MESH, "code": a["id"], "display": a["term"], "ancestors": []} for a in browse["ancestors"]]
    assert fresh.add_registry_hierarchy(entries) == 1
    assert fresh.is_a(MESH, "D001943", MESH, "D001941")  # Breast Neoplasms < Breast Diseases
    assert fresh.display(MESH, "D012871") == "Skin Diseases"


def test_registry_hierarchy_several_terms_do_not_cross_contaminate(fresh):
    """A brain-metastases record: terms Neoplasm Metastasis + Brain Neoplasms, ancestors listed together."""
    union = ["D000009385", "D000009369", "D000010335", "D000016543", "D000009423", "D000009371",
             "D000001927", "D000002493", "D000009422"]
    entries = [{"system": MESH, "code": "D000009362", "display": "Neoplasm Metastasis", "ancestors": union},
               {"system": MESH, "code": "D000001932", "display": "Brain Neoplasms", "ancestors": union},
               {"system": MESH, "code": "D000090003", "display": "A term new to us", "ancestors": union}]
    fresh.add_registry_hierarchy(entries)
    assert not fresh.is_a(MESH, "D009362", MESH, "D016543")  # metastasis is not a CNS neoplasm
    assert not fresh.is_a(SNOMED, "94391008", MESH, "D016543")  # lung metastases neither
    assert fresh.is_a(MESH, "D000090003", MESH, "D009369")  # an unknown term takes the ancestors


@pytest.mark.parametrize(("text", "expected"), [
    ("Stage IV Non-small Cell Lung Cancer AJCC v8", {(SNOMED, "254637007")}),
    ("Glioblastoma Multiforme of the Brian", {(SNOMED, GBM)}),
    ("Brain Metastases From Breast Cancer", {(SNOMED, BRAIN_METS), (SNOMED, "254837009")}),
    ("Brain Metastasases from NSCLC", {(SNOMED, BRAIN_METS)}),
    ("Metastatic Breast Cancer", {(SNOMED, "254837009")}),  # 'metastatic' qualifies a primary cancer
])
def test_known_terms_inside_longer_registry_text(t, text, expected):
    assert expected <= set(t.resolve_text(text))


@pytest.mark.parametrize("text", [
    "All Solid Tumors",  # 'ALL' is an abbreviation of a leukaemia: too ambiguous inside text
    "IDH1 Mutated Solid Tumors",
    "Breast cancer metastases",  # names metastases but only a primary term is known inside
])
def test_ambiguous_or_unsafe_text_is_left_unresolved(t, text):
    assert t.resolve_text(text) == []


def test_text_naming_metastases_resolves_to_the_secondary_concept(t):
    assert t.resolve_text("Liver metastases of a rare primary") == [(SNOMED, "94381002")]


def test_an_empty_or_missing_folder_loads_an_empty_terminology(tmp_path):
    t = load_terminology(tmp_path / "nothing-here")
    assert len(t) == 0
    assert t.ancestors(SNOMED, GBM) == frozenset({(SNOMED, GBM)})
    assert t.resolve_text("glioblastoma") == []


def test_a_bad_synonym_row_names_the_file_and_row(tmp_path):
    (tmp_path / "synonyms.tsv").write_text("text\tsystem\tcode\nGBM\tsnomed\t393563007\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"synonyms.tsv: row 2: system 'snomed'"):
        load_terminology(tmp_path)


def test_is_a_path_explains_the_chain(t):
    path = t.is_a_path(SNOMED, GBM, MESH, "D000005910")
    assert path[0] == (SNOMED, GBM) and path[-1] == (MESH, "D005910")
    assert (MESH, "D005909") in path  # via MeSH Glioblastoma
    for child, parent in zip(path, path[1:], strict=False):
        assert parent in t.parents(*child) or child[0] in (ICD10, ICD10CM)
    assert t.is_a_path(SNOMED, GBM, SNOMED, GBM) == [(SNOMED, GBM)]
    assert t.is_a_path(SNOMED, GBM, SNOMED, BRAIN_METS) == []
    assert t.is_a_path(ICD10, "C71.8", ICD10, "C69-C72") == [(ICD10, "C71.8"), (ICD10, "C71"), (ICD10, "C69-C72")]
