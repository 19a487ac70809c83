"""A small, explicit terminology for unit tests of matching (the real one is tested in tests/terminology).

Is-a facts here follow MeSH and SNOMED CT for the handful of codes the tests use, written out so a test
reader sees exactly what hierarchy a result depends on.
"""

from __future__ import annotations

import re

from gateway.fhir import conventions as cv

S, M, ONC = cv.SNOMED, cv.MESH, cv.ONCOTREE
GBM = (S, "393563007")  # Glioblastoma multiforme
BRAIN_METS = (S, "94225005")  # Secondary malignant neoplasm of brain
BRAIN_NEOPLASM = (S, "126952004")  # Neoplasm of brain
BREAST_CA = (S, "254837009")  # Malignant neoplasm of breast
GLIOMA_MESH = (M, "D005910")
NEOPLASMS_MESH = (M, "D009369")

PARENTS: dict[tuple[str, str], list[tuple[str, str]]] = {
    GBM: [(M, "D005909"), BRAIN_NEOPLASM, (ONC, "GB")],
    (M, "D005909"): [(M, "D001254")],  # Glioblastoma -> Astrocytoma
    (M, "D001254"): [GLIOMA_MESH],  # Astrocytoma -> Glioma
    GLIOMA_MESH: [NEOPLASMS_MESH],
    (ONC, "GB"): [(ONC, "DIFG")],
    BRAIN_METS: [BRAIN_NEOPLASM],
    BRAIN_NEOPLASM: [NEOPLASMS_MESH],
    BREAST_CA: [(M, "D001943")],  # Breast Neoplasms
    (M, "D001943"): [NEOPLASMS_MESH],
}
DISPLAY = {GBM: "Glioblastoma multiforme", BRAIN_METS: "Secondary malignant neoplasm of brain",
           GLIOMA_MESH: "Glioma", BRAIN_NEOPLASM: "Neoplasm of brain", BREAST_CA: "Malignant neoplasm of breast",
           NEOPLASMS_MESH: "Neoplasms", (M, "D001943"): "Breast Neoplasms"}
TEXT = {"glioblastoma multiforme": [GBM], "glioblastoma": [GBM], "brain metastases": [BRAIN_METS],
        "breast cancer": [BREAST_CA], "glioma": [GLIOMA_MESH]}
NAMES = {S: "SNOMED CT", M: "MeSH", ONC: "OncoTree"}


class TinyTerminology:
    def ancestors(self, system: str, code: str) -> frozenset[tuple[str, str]]:
        seen, todo = set(), [(system, code)]
        while todo:
            k = todo.pop()
            if k not in seen:
                seen.add(k)
                todo.extend(PARENTS.get(k, []))
        return frozenset(seen)

    def is_a(self, system: str, code: str, ancestor_system: str, ancestor_code: str) -> bool:
        return (ancestor_system, ancestor_code) in self.ancestors(system, code)

    def display(self, system: str, code: str) -> str | None:
        return DISPLAY.get((system, code))

    def system_name(self, system: str) -> str:
        return NAMES.get(system, system)

    def normalise_text(self, text: str) -> str:
        return re.sub(r"\s+", " ", re.sub(r"[^a-z0-9]+", " ", text.lower())).strip()

    def resolve_text(self, text: str) -> list[tuple[str, str]]:
        return list(TEXT.get(self.normalise_text(text), []))

    def is_secondary(self, system: str, code: str) -> bool:
        return (system, code) == BRAIN_METS
