"""Hospital files: the shipped ones load; errors name the file, the field and what was expected."""

from __future__ import annotations

from pathlib import Path

import pytest
import responses

from gateway.outbound.allowlist import AllowList
from gateway.outbound.destinations import Destinations
from gateway.outbound.errors import ConfigurationError, DestinationNotAllowed
from gateway.outbound.hospitals import HospitalFileError, load_hospitals, parse_hospital
from gateway.outbound.settings import OutboundSettings

ROOT = Path(__file__).resolve().parents[2]


def test_shipped_hospital_files_load():
    reg = load_hospitals(ROOT / "mappings" / "hospitals")
    leeds = reg.by_ods("RR8")
    assert leeds is not None and leeds.name == "leeds"
    assert leeds.auth["type"] == "smart-backend" and leeds.auth["algorithm"] == "RS384"
    assert leeds.write_back["task"] is True
    christie = reg.by_ods("rbv")
    assert christie.auth["type"] == "bearer" and christie.auth["token_env"] == "CHRISTIE_FHIR_TOKEN"
    assert reg.by_ods("ZZZ") is None


@pytest.mark.parametrize(("data", "message"), [
    ({"name": "x", "fhir_base_url": "https://h.test/R4"}, "ods_code: Missing data"),
    ({"name": "x", "ods_code": "rr8", "fhir_base_url": "https://h.test/R4"}, "ods_code: an ODS code"),
    ({"name": "x", "ods_code": "RR8", "fhir_base_url": "ftp://h.test"}, "fhir_base_url"),
    ({"name": "x", "ods_code": "RR8", "fhir_base_url": "https://h.test", "fhir_version": "R5"}, "fhir_version"),
    ({"name": "x", "ods_code": "RR8", "fhir_base_url": "https://h.test", "auth": {"type": "bearer"}},
     "auth.token_env: required when type is bearer"),
    ({"name": "x", "ods_code": "RR8", "fhir_base_url": "https://h.test",
      "auth": {"type": "smart-backend", "client_id": "c", "key_env": "K", "token_url": "https://h.test/t",
               "algorithm": "HS256"}}, "auth.algorithm"),
    ({"name": "x", "ods_code": "RR8", "fhir_base_url": "https://h.test", "auth": {"type": "bearer",
                                                                                   "token": "secret-inline"}},
     "auth.token: Unknown field"),
    ({"name": "x", "ods_code": "RR8", "fhir_base_url": "https://h.test", "timeout": 5}, "timeout: Unknown field"),
])
def test_invalid_files_say_which_field_and_why(data, message):
    with pytest.raises(HospitalFileError) as info:
        parse_hospital(data, "mappings/hospitals/x.yaml")
    assert "mappings/hospitals/x.yaml" in str(info.value)
    assert message in str(info.value)


def test_two_files_cannot_claim_one_ods_code(tmp_path):
    (tmp_path / "a.yaml").write_text("name: a\nods_code: RR8\nfhir_base_url: https://a.test/R4\n")
    (tmp_path / "b.yaml").write_text("name: b\nods_code: RXX\nfhir_base_url: https://b.test/R4\n"
                                     "patients: {ods_codes: [RR8]}\n")
    with pytest.raises(HospitalFileError, match="RR8 is already claimed"):
        load_hospitals(tmp_path)


@responses.activate
def test_unknown_hospital_and_disallowed_host_fail_before_any_traffic(tmp_path):
    (tmp_path / "a.yaml").write_text("name: a\nods_code: RR8\nfhir_base_url: https://a.test/R4\n")
    settings = OutboundSettings(allowed_hosts=AllowList.parse("b.test"), hospitals_path=tmp_path)
    dest = Destinations(settings)
    with pytest.raises(ConfigurationError, match="Unknown hospital 'nope' \\(known: a\\)"):
        dest.client("nope")
    with pytest.raises(DestinationNotAllowed):
        dest.client("a")
    assert len(responses.calls) == 0


def test_allow_list_forms():
    allow = AllowList.parse("a.test, 127.0.0.1:8081, *.nhs.uk")
    assert allow.allows("https://a.test/R4") and allow.allows("http://a.test:9999/x")
    assert allow.allows("http://127.0.0.1:8081/fhir") and not allow.allows("http://127.0.0.1:8082/fhir")
    assert allow.allows("https://fhir.leeds.nhs.uk/R4") and not allow.allows("https://nhs.uk.evil.test/")
    assert not allow.allows("file:///etc/passwd") and not allow.allows("gopher://a.test/")
    assert not AllowList.parse("").allows("https://a.test/")
