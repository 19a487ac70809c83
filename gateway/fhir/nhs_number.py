"""NHS number checks (Modulus 11 check digit), shared by mapping, matching and security."""

from __future__ import annotations

import re

_SEPARATORS = re.compile(r"[\s-]")


def normalise_nhs_number(raw: str) -> str:
    """'943 476 5919' -> '9434765919' (spaces and hyphens removed; nothing else changed)."""
    return _SEPARATORS.sub("", raw or "")


def nhs_number_check_digit(first_nine: str) -> int | None:
    """The Modulus 11 check digit for nine digits, or None when no valid number can end them.

    >>> nhs_number_check_digit("943476591")
    9
    """
    total = sum(int(d) * w for d, w in zip(first_nine, range(10, 1, -1), strict=True))
    check = 11 - total % 11
    if check == 11:
        return 0
    return None if check == 10 else check


def is_valid_nhs_number(raw: str) -> bool:
    """Ten digits whose last is the Modulus 11 check digit of the first nine.

    >>> is_valid_nhs_number("943 476 5919"), is_valid_nhs_number("9434765918")
    (True, False)
    """
    s = normalise_nhs_number(raw)
    if len(s) != 10 or not s.isdigit():
        return False
    return nhs_number_check_digit(s[:9]) == int(s[9])
