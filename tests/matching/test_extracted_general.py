"""Matching side of extracted criteria: variant alternatives and mass vs amount-of-substance units."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from gateway.matching import adversarial, units

DATA = Path(__file__).resolve().parents[1] / "data" / "matching-adversarial"
SPEC = json.loads((DATA / "cases.json").read_text(encoding="utf-8"))
CASES = {c["id"]: c for c in SPEC["cases"]}


def _run(tmp_path: Path, case: dict, who: dict[str, list[dict]]) -> dict[str, bool]:
    """One case (a real criterion of the suite) with other patients: {who: matched}."""
    case = copy.deepcopy(case)
    case.update(who)
    (tmp_path / "cases.json").write_text(json.dumps({"today": SPEC["today"], "cases": [case]}), encoding="utf-8")
    return {o.who: o.matched for o in adversarial.run(tmp_path)}


def _variant_obs(hgvs: str) -> dict:
    base = copy.deepcopy(CASES["egfr-ex19del-or-l858r"]["meets"][0])
    base["component"][1]["valueCodeableConcept"] = {"text": hgvs}
    return base


@pytest.mark.parametrize("hgvs", ["p.Leu858Arg", "Exon 19 deletion", "p.Glu746_Ala750del (exon 19 deletion)"])
def test_any_variant_of_the_alternatives_meets_the_criterion(tmp_path, hgvs):
    """'EGFR Exon 19 deletion or Exon21 L858R' (NCT07155187): the characteristic names both; a patient with either is
    kept, one with another EGFR variant only is not."""
    got = _run(tmp_path, CASES["egfr-ex19del-or-l858r"],
               {"meets": [_variant_obs(hgvs)], "violates": [_variant_obs("p.Thr790Met")]})
    assert got == {"meets": True, "violates": False}


def test_creatinine_in_umol_per_litre_against_a_mg_per_dl_threshold(tmp_path):
    """'Creatinine > 2.0 mg/dL' (NCT06937996): 230 umol/L is 2.6 mg/dL (excluded), 150 umol/L is 1.7 (kept)."""
    lab = copy.deepcopy(CASES["no-creatinine-over-2"]["violates"][0])
    kept = copy.deepcopy(lab)
    kept["valueQuantity"]["value"] = 150
    got = _run(tmp_path, CASES["no-creatinine-over-2"], {"meets": [kept], "violates": [lab]})
    assert got == {"meets": True, "violates": False}


def test_units_need_the_molar_mass_for_mass_against_substance():
    assert units.convert(2.0, "mg/dL", "umol/L") is None
    assert units.convert(2.0, "mg/dL", "umol/L", molar_mass=113.12) == pytest.approx(176.8, abs=0.1)
    assert units.convert(176.8, "umol/L", "mg/dL", molar_mass=113.12) == pytest.approx(2.0, abs=0.01)
    assert units.convert(1.0, "mg/dL", "umol/L", molar_mass=584.66) == pytest.approx(17.1, abs=0.05)  # bilirubin
    assert units.convert(1.0, "g/dL", "/uL", molar_mass=113.12) is None  # not a concentration pair
