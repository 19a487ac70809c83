"""Transforms: ages, dates, identifiers, MeSH ids, NHS numbers, code translation."""

from __future__ import annotations

import pytest

from gateway.fhir.conventions import normalise_mesh_id
from gateway.mapping.registry import default_registry
from gateway.mapping.transforms import TRANSFORMS, Context, MappingValueError, parse_age


def ctx(**kw) -> Context:
    return Context(record=kw.pop("record", {}), **kw)


@pytest.mark.parametrize(("text", "value", "code"), [
    ("18 Years", 18, "a"), ("1 Year", 1, "a"), ("6 Months", 6, "mo"), ("1 Month", 1, "mo"), ("3 Weeks", 3, "wk"),
    ("99 Years", 99, "a"), ("2 days", 2, "d"), ("12 Hours", 12, "h"), ("30 Minutes", 30, "min"),
    ("1.5 Years", 1.5, "a")])
def test_parse_age(text, value, code):
    q = parse_age(text)
    assert (q["value"], q["code"], q["system"]) == (value, code, "http://unitsofmeasure.org")


@pytest.mark.parametrize("text", ["N/A", "n/a", "NA", ""])
def test_no_age(text):
    assert parse_age(text) is None


@pytest.mark.parametrize("text", ["18", "Years", "eighteen years", "18 Decades", "-1 Years"])
def test_bad_age(text):
    with pytest.raises(ValueError, match="is not an age"):
        parse_age(text)


@pytest.mark.parametrize(("raw", "iso"), [("2015-08", "2015-08"), ("2016-04-29", "2016-04-29"),
                                           ("05/03/2021", "2021-03-05"), ("2019", "2019")])
def test_date(raw, iso):
    assert TRANSFORMS["date"](raw, ctx()) == iso


def test_bad_date():
    with pytest.raises(MappingValueError, match="'31/02/2021' is not a date"):
        TRANSFORMS["date"]("31/02/2021", ctx())


def test_mesh_ids():
    assert normalise_mesh_id("D000005910") == "D005910"
    assert normalise_mesh_id("D005910") == "D005910"
    assert normalise_mesh_id("D000086382") == "D000086382"  # a native 9-digit descriptor (COVID-19) is kept


def test_secondary_identifiers_are_classified():
    ids = TRANSFORMS["ctgov-identifiers"]({"nctId": "NCT01234567", "secondaryIdInfos": [
        {"id": "ISRCTN12345678", "type": "REGISTRY", "domain": "ISRCTN"},
        {"id": "2014-005181-30", "type": "EUDRACT_NUMBER"},
        {"id": "2022-500123-45-00", "type": "OTHER", "domain": "CTIS"},
        {"id": "IRAS 123456", "type": "OTHER"},
        {"id": "U1111-1234-5678", "type": "OTHER", "domain": "WHO UTN"}]}, ctx(path="identificationModule"))
    assert [(i.get("system"), i["value"]) for i in ids] == [
        ("https://clinicaltrials.gov", "NCT01234567"), ("https://www.isrctn.com", "ISRCTN12345678"),
        ("https://www.clinicaltrialsregister.eu", "2014-005181-30"),
        ("https://euclinicaltrials.eu", "2022-500123-45-00"),
        ("https://www.hra.nhs.uk/iras", "123456"), (None, "U1111-1234-5678")]
    assert ids[-1]["type"] == {"text": "WHO UTN"}


def test_nhs_number_transform():
    assert TRANSFORMS["nhs-number"]("944 930 6060", ctx()) == "9449306060"
    with pytest.raises(MappingValueError, match="not a valid NHS number"):
        TRANSFORMS["nhs-number"]("944 930 6061", ctx())


def test_translate_code_keeps_local_coding_and_adds_translations():
    cms = default_registry().conceptmaps
    system = "https://fhir.example-trust.nhs.uk/CodeSystem/problem-list-codes"
    cc = TRANSFORMS["translate-code"]("ONC-BRAINMET", ctx(record={"description": "Brain metastases"},
                                                          conceptmaps=cms),
                                      system=system, targets=["http://snomed.info/sct", "http://hl7.org/fhir/sid/icd-10"],
                                      display_from="description")
    assert [(c["system"], c["code"]) for c in cc["coding"]] == [
        (system, "ONC-BRAINMET"), ("http://snomed.info/sct", "94225005"), ("http://hl7.org/fhir/sid/icd-10", "C79.3")]
    assert cc["text"] == "Brain metastases"
    unmapped = TRANSFORMS["translate-code"]("MISC-FALLS", ctx(conceptmaps=cms), system=system,
                                            targets=["http://snomed.info/sct"])
    assert unmapped == {"coding": [{"system": system, "code": "MISC-FALLS"}]}
    with pytest.raises(MappingValueError, match="has no translation"):
        TRANSFORMS["translate-code"]("MISC-FALLS", ctx(conceptmaps=cms), system=system,
                                     targets=["http://snomed.info/sct"], unmapped="error")


def test_row_key_is_stable_across_formats():
    args = {"fields": ["nhs_number", "local_code", "onset_date"],
            "normalise": {"nhs_number": "nhs-number", "onset_date": "date"}}
    a = TRANSFORMS["row-key"](None, ctx(record={"nhs_number": "944 930 6060", "local_code": "X",
                                                "onset_date": "02/09/2026"}), **args)
    b = TRANSFORMS["row-key"](None, ctx(record={"nhs_number": "9449306060", "local_code": "X",
                                                "onset_date": "2026-09-02"}), **args)
    assert a == b and len(a) == 20
