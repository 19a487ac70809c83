"""Mapping files: the project's load; broken ones fail with a message naming file, field and expectation."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.mapping import MappingFileError, MappingRegistry, load_mapping
from gateway.mapping.registry import PROJECT_MAPPINGS

GOOD = """\
# Test mapping.
# verbs: from, const, table, transform, key, required
name: {name}
description: test
reader: rows
source_id: id
tables:
  status: {{a: active}}
resources:
  - name: patient
    type: Patient
    key: {{system: "${{NHS_NUMBER}}", from: nhs, transform: nhs-number, required: true}}
    fields:
      gender: {{from: sex, table: status}}
"""


def _write(tmp_path: Path, text: str, name: str = "broken") -> Path:
    p = tmp_path / f"{name}.yaml"
    p.write_text(text)
    return p


def _error(tmp_path: Path, text: str) -> str:
    with pytest.raises(MappingFileError) as exc:
        load_mapping(_write(tmp_path, text))
    return str(exc.value)


def test_project_mappings_load():
    reg = MappingRegistry(PROJECT_MAPPINGS)
    assert {"ctgov-v2", "problem-list"} <= set(reg.names())
    assert reg.conceptmaps.translate("ONC-GBM", "https://fhir.example-trust.nhs.uk/CodeSystem/problem-list-codes",
                                     target_system="http://snomed.info/sct")[0].code == "393563007"


def test_ctgov_mapping_fits_on_two_screens():
    assert len((PROJECT_MAPPINGS / "ctgov-v2.yaml").read_text().splitlines()) <= 110


def test_good_test_mapping_loads(tmp_path):
    m = load_mapping(_write(tmp_path, GOOD.format(name="broken")))
    assert m.resources[0].key.system == "https://fhir.nhs.uk/Id/nhs-number"


def test_unknown_table(tmp_path):
    text = GOOD.format(name="broken").replace("table: status}", "table: sttus}")
    assert _error(tmp_path, text) == (
        f"{tmp_path}/broken.yaml: resources[0].fields.gender.table: unknown table 'sttus' (expected one of: status)")


def test_unknown_transform_lists_the_known_ones(tmp_path):
    text = GOOD.format(name="broken").replace("transform: nhs-number", "transform: nhs-numbr")
    msg = _error(tmp_path, text)
    assert msg.startswith(f"{tmp_path}/broken.yaml: resources[0].key.transform: unknown transform 'nhs-numbr' "
                          "(expected one of: boolean, code-case,")


def test_unknown_verb(tmp_path):
    text = GOOD.format(name="broken").replace("{from: sex, table: status}", "{from: sex, lookup: status}")
    assert _error(tmp_path, text) == f"{tmp_path}/broken.yaml: resources[0].fields.gender.lookup: Unknown field."


def test_rule_without_source(tmp_path):
    text = GOOD.format(name="broken").replace("{from: sex, table: status}", "{table: status}")
    assert _error(tmp_path, text) == (f"{tmp_path}/broken.yaml: resources[0].fields.gender: a rule needs a source: "
                                      "from, const, ref or a transform")


def test_missing_header_and_undeclared_verbs(tmp_path):
    no_header = GOOD.format(name="broken").split("\n", 2)[2]
    assert "(header): the file must start with a comment listing its verbs" in _error(tmp_path, no_header)
    text = GOOD.format(name="broken").replace("# verbs: from, const, table, transform, key, required",
                                              "# verbs: from, key")
    assert _error(tmp_path, text).endswith("(header): verbs used but not listed in the header comment: required, "
                                           "table, transform (the header lists: from, key)")


def test_name_must_match_file(tmp_path):
    assert _error(tmp_path, GOOD.format(name="other")) == (
        f"{tmp_path}/broken.yaml: name: 'other' must match the file name ('broken')")


def test_unknown_variable(tmp_path):
    text = GOOD.format(name="broken").replace("${NHS_NUMBER}", "${NHS_NUMBR}")
    assert "resources[0].key.system: unknown variable ${NHS_NUMBR} (expected a key of settings or a string " \
           "constant of gateway/fhir/conventions.py" in _error(tmp_path, text)


def test_ref_to_a_resource_defined_later(tmp_path):
    text = GOOD.format(name="broken").replace("verbs: from,", "verbs: ref, from,").replace(
        "gender: {from: sex, table: status}", "managingOrganization: {ref: org}")
    assert _error(tmp_path, text).endswith(
        "resources[0].fields.managingOrganization.ref: 'org' is not a resource defined above this one "
        "(expected one of: none yet)")


def test_wrong_types_and_missing_fields(tmp_path):
    text = GOOD.format(name="broken").replace("type: Patient", "type: Patiant").replace("reader: rows\n", "")
    msg = _error(tmp_path, text)
    assert f"{tmp_path}/broken.yaml: reader: Missing data for required field." in msg


def test_bad_resource_type(tmp_path):
    text = GOOD.format(name="broken").replace("type: Patient", "type: Patiant")
    assert _error(tmp_path, text) == f"{tmp_path}/broken.yaml: resources[0].type: expected a FHIR R4 resource type"


def test_yaml_syntax_error(tmp_path):
    msg = _error(tmp_path, "# verbs: from\nname: [unclosed\n")
    assert msg.startswith(f"{tmp_path}/broken.yaml: not valid YAML:")
    assert "line 3" in msg or "line 2" in msg


def test_registry_fails_loudly_with_every_broken_file(tmp_path):
    _write(tmp_path, GOOD.format(name="good"), "good")
    _write(tmp_path, GOOD.format(name="broken").replace("table: status}", "table: nope}"))
    with pytest.raises(MappingFileError, match=r"broken.yaml: resources\[0\].fields.gender.table: unknown table"):
        MappingRegistry(tmp_path)


def test_app_start_up_fails_on_a_broken_mapping(tmp_path, db_url):
    from gateway.api.app import create_app
    from gateway.config import Settings, StoreSettings

    _write(tmp_path, GOOD.format(name="broken").replace("table: status}", "table: nope}"))
    with pytest.raises(MappingFileError, match="unknown table 'nope'"):
        create_app(Settings(store=StoreSettings(db_url), instance_path=tmp_path, mappings_path=tmp_path))


def test_yes_no_table_keys_stay_strings(tmp_path):
    text = GOOD.format(name="broken").replace("status: {a: active}",
                                              "status: {YES: male, NO: female, on: 2015-08-01, x: true}")
    m = load_mapping(_write(tmp_path, text))
    assert m.tables["status"] == {"YES": "male", "NO": "female", "on": "2015-08-01", "x": True}
