"""Quantities in one unit system: UCUM units converted with ucumvert (UCUM on top of pint), never a hand table.

>>> factor("10*3/uL", "/mm3")      # platelets: 250 10*3/uL is 250,000 /mm3
1000.0
>>> factor("mg/dL", "umol/L") is None   # mass to amount of substance needs a molar mass: incompatible here
True
>>> round(convert(1.0, "mg/dL", "umol/L", molar_mass=113.12), 1)   # creatinine, with its molar mass
88.4

Only the *spelling* of units common in EHR extracts but not valid UCUM is normalised first ("x10^9/L" ->
"10*9/L", "cells/uL" -> "{cells}/uL"); the conversion itself is the library's. Results are cached per pair
of unit strings, so the hot path (matching) converts with one dict look-up and a multiplication.
"""

from __future__ import annotations

import re
import threading
from functools import lru_cache

import lark
import pint

_LOCK = threading.Lock()
_REGISTRY = None
_POWER = re.compile(r"^(?:x|\*|×)?\s*10\s*(?:\^|\*\*|\*|e)\s*(\d+)")
_WORD_UNITS = {"cells", "cell", "cells/", "count"}
# Units that mean "a plain number on a scale" (scores, ratios): compared as numbers, never converted.
ANNOTATION = re.compile(r"^\{[^}]*\}$")


def _registry():
    """The UCUM registry, built once (it takes about a second) on first use."""
    global _REGISTRY
    if _REGISTRY is None:
        with _LOCK:
            if _REGISTRY is None:
                from ucumvert import PintUcumRegistry

                _REGISTRY = PintUcumRegistry()
    return _REGISTRY


def normalise_spelling(unit: str) -> str:
    """'x10^9/L' -> '10*9/L', '10^3/µL' -> '10*3/uL', 'cells/mm3' -> '{cells}/mm3', 'mm³' -> 'mm3'."""
    u = unit.strip().replace("µ", "u").replace("μ", "u").replace("³", "3").replace("²", "2").replace(" ", "")
    m = _POWER.match(u)
    if m:
        u = f"10*{m.group(1)}{u[m.end():]}"
    head, sep, tail = u.partition("/")
    if sep and head.lower() in _WORD_UNITS:
        u = "{" + head + "}/" + tail
    return u


@lru_cache(maxsize=4096)
def factor(from_unit: str, to_unit: str) -> float | None:
    """How many ``to_unit`` one ``from_unit`` is; None when either is not UCUM or they measure different things."""
    a, b = normalise_spelling(from_unit), normalise_spelling(to_unit)
    if a == b:
        return 1.0
    reg = _registry()
    try:
        qa, qb = reg.from_ucum(a), reg.from_ucum(b)
        if isinstance(qa, str) or isinstance(qb, str):  # annotation only, e.g. '{score}': not a unit
            return None
        return float(f"{(1 * qa).to(qb.units).magnitude / qb.magnitude:.12g}")  # 1000.0000000000001 -> 1000
    except (pint.errors.PintError, lark.exceptions.LarkError, ValueError, KeyError, TypeError, AttributeError):
        return None


def unitless(unit: str | None) -> bool:
    """No unit, or a UCUM annotation / '1' that only names what is counted: a plain number."""
    return not unit or unit == "1" or bool(ANNOTATION.match(unit.strip()))


@lru_cache(maxsize=1024)
def substance_factor(from_unit: str, to_unit: str, molar_mass: float) -> float | None:
    """The factor between a mass concentration and an amount-of-substance concentration (either way) of an analyte
    of ``molar_mass`` g/mol: creatinine 1 mg/dL -> 88.4 umol/L. None when the units are not those two kinds."""
    to_mass = factor(from_unit, "g/L")
    if to_mass is not None:
        back = factor("mol/L", to_unit)
        return None if back is None else to_mass / molar_mass * back
    to_amount = factor(from_unit, "mol/L")
    if to_amount is not None:
        back = factor("g/L", to_unit)
        return None if back is None else to_amount * molar_mass * back
    return None


def convert(value: float, from_unit: str | None, to_unit: str | None,
            molar_mass: float | None = None) -> float | None:
    """``value`` in ``from_unit`` expressed in ``to_unit``; None when the units are incompatible.

    Two plain numbers (no unit or an annotation such as '{score}') compare as they are; a plain number
    against a real unit is incompatible (we do not guess the unit a value was measured in). With the analyte's
    ``molar_mass`` (g/mol, from the analyte lexicon), mg/dL and umol/L are compatible too.
    """
    if unitless(from_unit) and unitless(to_unit):
        return value
    if unitless(from_unit) or unitless(to_unit):
        return None
    f = factor(from_unit or "", to_unit or "")
    if f is None and molar_mass:
        f = substance_factor(from_unit or "", to_unit or "", molar_mass)
    return None if f is None else value * f
