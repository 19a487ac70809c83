"""Helpers shared by the page tests: load the demo studies, read a page's CSRF token."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "fixtures" / "demo"
STUDY_FILES = ("01-sponsor-glioblastoma-study.json", "02-sponsor-brain-metastases-study.json")
GBM_TITLE = "ReGlio: re-irradiation with temozolomide for adults with glioblastoma"
BMETS_TITLE = "SRS-Plus: stereotactic radiosurgery for adults with brain metastases"
_TOKEN = re.compile(r'name="csrf_token" value="([^"]+)"')


def csrf_token(html: str) -> str:
    m = _TOKEN.search(html)
    assert m, "the page has no CSRF token"
    return m.group(1)


def study_ids(client_or_get) -> dict[str, str]:
    """title -> id of the stored ResearchStudies (through the FHIR API)."""
    r = client_or_get("/fhir/ResearchStudy?_elements=id,title")
    body = r.json if hasattr(r, "json") and not callable(r.json) else r.json()
    return {e["resource"]["title"]: e["resource"]["id"] for e in body.get("entry", [])
            if e["resource"]["resourceType"] == "ResearchStudy"}
