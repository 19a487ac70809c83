"""gateway.matching.drugs: an NHS dm+d-coded therapy counts as its drug and the drug's classes for prior-therapy
criteria, exactly as an RxNorm product code does, through the lexicon's data (drugs.yaml ``dmd``/``dmd_products``).

The shipped drugs.yaml has no verified dm+d id yet (mappings/lexicons/PROVENANCE.md), so these tests load a copy of
the lexicons in which palbociclib carries *synthetic* ids (tests/terminology/test_lexicons.py: Verhoeff-valid numbers
in a made-up namespace, no real dm+d concept).
"""

from __future__ import annotations

import pytest

from gateway.fhir import conventions as cv
from gateway.matching import drugs
from gateway.matching.engine import NOT_MET, UNKNOWN
from gateway.terminology.lexicons import load_lexicons
from tests.matching import builders as b
from tests.matching.test_truthful import finding, run, source
from tests.terminology.test_lexicons import SYNTHETIC_VMP, SYNTHETIC_VTM, lexicons_with, synthetic_sctid

DMD, OLD_DMD = "https://dmd.nhs.uk", "https://fhir.nhs.uk/Id/dmd"
PALBOCICLIB = (cv.RXNORM, "1601374")


@pytest.fixture
def dmd_lexicons(tmp_path, monkeypatch):
    """The project's lexicons with palbociclib's dm+d VTM and one VMP set (synthetic ids), used by the matcher."""
    lx = load_lexicons(lexicons_with(tmp_path / "lx", palbociclib={"dmd": SYNTHETIC_VTM,
                                                                    "dmd_products": [SYNTHETIC_VMP]}))
    drugs._widen.cache_clear()
    monkeypatch.setattr(drugs, "_lexicons", lambda: lx)
    yield lx
    drugs._widen.cache_clear()


def no_prior(class_or_drug: tuple[str, str], text: str) -> dict:
    return {"code": b.concept(cv.PRIOR_THERAPY), "exclude": True, "valueCodeableConcept": b.concept(class_or_drug),
            "extension": [source(text, "high", "exclusion")]}


def statement(code: tuple[str, str], status: str = "completed", rtype: str = "MedicationStatement") -> dict:
    return {"resourceType": rtype, "id": "m", "status": status, "intent": "order",
            "medicationCodeableConcept": b.concept(code), "subject": {"reference": "Patient/p"},
            "effectiveDateTime": "2026-05-01"}


NO_CDK = no_prior((cv.DRUG_CLASS_CS, "cdk4-6-inhibitor"), "No prior CDK4/6 inhibitor")


def test_a_dmd_vtm_widens_to_the_rxnorm_ingredient_and_its_classes(dmd_lexicons):
    assert drugs.expand(((DMD, SYNTHETIC_VTM),)) == (
        (DMD, SYNTHETIC_VTM), PALBOCICLIB, (cv.DRUG_CLASS_CS, "cdk4-6-inhibitor"))
    # the older NHS system URI, a trailing slash, a VMP and the same id sent as SNOMED CT (UK Core) widen alike
    for code in ((OLD_DMD, SYNTHETIC_VTM), (DMD + "/", SYNTHETIC_VTM), (DMD, SYNTHETIC_VMP),
                 (cv.SNOMED, SYNTHETIC_VMP)):
        assert drugs.expand((code,))[1:] == (PALBOCICLIB, (cv.DRUG_CLASS_CS, "cdk4-6-inhibitor")), code
    # an id the lexicon does not list, and an RxNorm code sent under the dm+d system, widen to nothing
    assert drugs.expand(((DMD, synthetic_sctid("4244")),)) == ((DMD, synthetic_sctid("4244")),)
    assert drugs.expand(((DMD, "1601374"),)) == ((DMD, "1601374"),)


@pytest.mark.parametrize("code", [(DMD, SYNTHETIC_VTM), (OLD_DMD, SYNTHETIC_VTM), (DMD, SYNTHETIC_VMP)])
def test_a_dmd_coded_palbociclib_statement_is_excluded_by_no_prior_cdk4_6_inhibitor(dmd_lexicons, code):
    r = run([NO_CDK], [statement(code)])
    assert finding(r, "Prior").result == NOT_MET and not r.is_match
    # and by a criterion naming the ingredient itself
    assert finding(run([no_prior(PALBOCICLIB, "No prior palbociclib")], [statement(code)]), "Prior").result == NOT_MET
    # an order (MedicationRequest) counts like a statement
    assert finding(run([NO_CDK], [statement(code, "active", "MedicationRequest")]), "Prior").result == NOT_MET


def test_a_not_taken_or_cancelled_dmd_therapy_does_not_count(dmd_lexicons):
    assert finding(run([NO_CDK], [statement((DMD, SYNTHETIC_VTM), "not-taken")]), "Prior").result == UNKNOWN
    assert finding(run([NO_CDK], [statement((DMD, SYNTHETIC_VTM), "cancelled", "MedicationRequest")]),
                   "Prior").result == UNKNOWN


def test_a_dmd_id_counts_only_as_its_own_drug_s_classes(dmd_lexicons):
    no_taxane = no_prior((cv.DRUG_CLASS_CS, "taxane"), "No prior taxane")
    assert finding(run([no_taxane], [statement((DMD, SYNTHETIC_VTM))]), "Prior").result == UNKNOWN
    unknown_id = statement((DMD, synthetic_sctid("4244")))
    assert finding(run([NO_CDK], [unknown_id]), "Prior").result == UNKNOWN
