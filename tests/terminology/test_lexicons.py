"""gateway.terminology.lexicons, drugs.yaml's NHS dm+d ids: SNOMED CT identifiers checked on load (Verhoeff check
digit, concept partition) with errors naming the file and the field, unique across drugs, and looked up by
``Lexicons.dmd_drug``.

No dm+d id in the shipped drugs.yaml could be verified against a public code list yet (mappings/lexicons/PROVENANCE.md),
so the loading tests write a copy of the lexicons with a *synthetic* id: a Verhoeff-valid number in namespace 9999999,
made up here and standing for no real dm+d concept.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from gateway.cli import cli
from gateway.terminology.lexicons import DEFAULT_PATH, LexiconError, check_lexicons, is_sctid, load_lexicons
from tests.conftest import ROOT


def synthetic_sctid(item: str, namespace: str = "9999999") -> str:
    """A made-up SNOMED CT extension concept id (partition '10') with the one check digit that makes it valid."""
    body = f"{item}{namespace}10"
    (valid,) = [body + d for d in "0123456789" if is_sctid(body + d)]
    return valid


SYNTHETIC_VTM = synthetic_sctid("4242")  # stands for palbociclib in the fixtures below (not a real dm+d id)
SYNTHETIC_VMP = synthetic_sctid("4243")


def lexicons_with(folder: Path, **drugs: dict) -> Path:
    """A copy of the project's lexicons under ``folder`` with drugs.yaml's entries updated ({drug: {field: value}})."""
    shutil.copytree(DEFAULT_PATH, folder)
    path = folder / "drugs.yaml"
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    for key, changes in drugs.items():
        data["drugs"][key].update(changes)
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return folder


def test_shipped_dmd_ids_are_snomed_ids_listed_once_and_say_where_they_were_checked():
    raw = yaml.safe_load((DEFAULT_PATH / "drugs.yaml").read_text(encoding="utf-8"))["drugs"]
    lx = load_lexicons()
    seen: set[str] = set()
    for key, d in raw.items():
        ids = ([d["dmd"]] if d["dmd"] else []) + list(d.get("dmd_products") or [])
        for code in ids:
            assert is_sctid(code) and code not in seen, (key, code)
            seen.add(code)
            assert lx.dmd_drug(code).key == key
            assert "dm+d" in d["checked"], key  # the source of a shipped dm+d id is named in 'checked'
        if not ids:
            assert lx.drugs[key].dmd is None and lx.drugs[key].dmd_products == ()


def test_a_verified_vtm_and_vmp_load_and_name_their_drug(tmp_path):
    folder = lexicons_with(tmp_path / "lx", palbociclib={"dmd": SYNTHETIC_VTM, "dmd_products": [SYNTHETIC_VMP]})
    lx = load_lexicons(folder)
    assert lx.drugs["palbociclib"].dmd == SYNTHETIC_VTM
    assert lx.drugs["palbociclib"].dmd_products == (SYNTHETIC_VMP,)
    assert lx.dmd_drug(SYNTHETIC_VTM).key == lx.dmd_drug(f" {SYNTHETIC_VMP} ").key == "palbociclib"
    assert lx.dmd_drug("1601374") is None  # an RxNorm code is not a dm+d id
    assert lx.dmd_drug(synthetic_sctid("4244")) is None


@pytest.mark.parametrize("bad", [
    SYNTHETIC_VTM[:-1] + str((int(SYNTHETIC_VTM[-1]) + 1) % 10),  # check digit off by one
    SYNTHETIC_VTM[:-3] + "20" + SYNTHETIC_VTM[-1],  # a description id's partition, not a concept's
    "0" + SYNTHETIC_VTM,
    "palbociclib",
])
def test_a_dmd_id_that_is_not_a_snomed_concept_id_is_an_error_naming_file_and_field(tmp_path, bad):
    folder = lexicons_with(tmp_path / "lx", palbociclib={"dmd": bad})
    with pytest.raises(LexiconError) as err:
        load_lexicons(folder)
    assert str(err.value) == (f"{folder / 'drugs.yaml'}: drugs.palbociclib.value.dmd: not a SNOMED CT concept id "
                              "(6-18 digits, concept partition, Verhoeff check digit)")


def test_a_bad_vmp_id_names_its_position(tmp_path):
    wrong = SYNTHETIC_VMP[:-1] + str((int(SYNTHETIC_VMP[-1]) + 1) % 10)
    folder = lexicons_with(tmp_path / "lx", palbociclib={"dmd": SYNTHETIC_VTM, "dmd_products": [SYNTHETIC_VMP, wrong]})
    with pytest.raises(LexiconError) as err:
        load_lexicons(folder)
    assert str(err.value).endswith("drugs.yaml: drugs.palbociclib.value.dmd_products[1]: not a SNOMED CT concept id "
                                   "(6-18 digits, concept partition, Verhoeff check digit)")


def test_one_dmd_id_given_to_two_drugs_is_an_error(tmp_path):
    folder = lexicons_with(tmp_path / "lx", palbociclib={"dmd": SYNTHETIC_VTM},
                           ribociclib={"dmd": None, "dmd_products": [SYNTHETIC_VTM]})
    with pytest.raises(LexiconError) as err:
        load_lexicons(folder)
    assert str(err.value) == (f"{folder / 'drugs.yaml'}: drugs.ribociclib.dmd_products: NHS dm+d id {SYNTHETIC_VTM} "
                              "is also listed for 'palbociclib'")


def test_mappings_check_reports_a_bad_dmd_id_in_one_line(tmp_path):
    folder = tmp_path / "mappings"
    shutil.copytree(ROOT / "mappings", folder)
    shutil.rmtree(folder / "lexicons")
    lexicons_with(folder / "lexicons", tamoxifen={"dmd": "12345"})
    assert check_lexicons(folder / "lexicons") == [
        f"{folder / 'lexicons' / 'drugs.yaml'}: drugs.tamoxifen.value.dmd: not a SNOMED CT concept id (6-18 digits, "
        "concept partition, Verhoeff check digit)"]
    bad = CliRunner().invoke(cli, ["mappings", "check"], env={"GATEWAY_MAPPINGS_PATH": str(folder)})
    assert bad.exit_code == 1
    assert [line for line in bad.output.splitlines() if line.startswith("error")] == [
        f"error  {folder / 'lexicons' / 'drugs.yaml'}: drugs.tamoxifen.value.dmd: not a SNOMED CT concept id "
        "(6-18 digits, concept partition, Verhoeff check digit)"]
