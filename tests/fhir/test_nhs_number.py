"""NHS number Modulus 11 check digit."""

from __future__ import annotations

import pytest

from gateway.fhir.nhs_number import is_valid_nhs_number, nhs_number_check_digit, normalise_nhs_number


@pytest.mark.parametrize("number", ["9434765919", "943 476 5919", "943-476-5919", "9449306060", "9990001006"])
def test_valid(number):
    assert is_valid_nhs_number(number)


@pytest.mark.parametrize("number", ["9434765918", "999 074 1825", "123456789", "12345678901", "94347659A9", ""])
def test_invalid(number):
    assert not is_valid_nhs_number(number)


def test_check_digit_rules():
    assert nhs_number_check_digit("943476591") == 9
    assert nhs_number_check_digit("999000100") == 6
    assert nhs_number_check_digit("000000000") == 0  # remainder 0: 11 - 0 = 11 -> check digit 0
    assert nhs_number_check_digit("000000006") is None  # 6*2 = 12, remainder 1: 10 -> no valid number ends it


def test_normalise():
    assert normalise_nhs_number(" 943 476-5919 ") == "9434765919"
