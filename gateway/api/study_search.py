"""Study search as a service for the patient pages (in process): the same path as ``GET /fhir/ResearchStudy?_text=
&postcode=&distance=&status=active``, answered as plain data.

>>> result = search_studies(store, text="brain tumour", postcode="LS6 3HE", distance_km=50)
>>> result.hits[0].nearest_site.name, round(result.hits[0].nearest_site.distance_km)
("St James's University Hospital Oncology", 5)
"""

from __future__ import annotations

from dataclasses import dataclass

import orjson

from gateway.fhir.search import parse_search
from gateway.store import study_search
from gateway.store.repo import Store
from gateway.store.study_search import UnknownPostcode

__all__ = ["NearestSite", "StudyHit", "StudySearchResult", "UnknownPostcode", "search_studies"]


@dataclass(frozen=True)
class NearestSite:
    location_id: str
    name: str | None
    distance_km: float


@dataclass(frozen=True)
class StudyHit:
    study_id: str
    resource: dict
    score: float | None  # relevance 0..1 with text, else None
    nearest_site: NearestSite | None  # the nearest recruiting site, with a postcode


@dataclass(frozen=True)
class StudySearchResult:
    total: int | None  # None: not counted (total="none"), and more than the hits exist when ``more``
    hits: list[StudyHit]
    more: bool = False  # a page after this one exists


def search_studies(store: Store, *, text: str | None = None, postcode: str | None = None,
                   distance_km: float = study_search.DEFAULT_DISTANCE_KM, recruiting_only: bool = True,
                   count: int = 20, offset: int = 0, total: str = "accurate") -> StudySearchResult:
    """Studies by words (through the terminology), near a postcode (recruiting sites within ``distance_km``),
    recruiting only (status active) by default. Best first: nearest with a postcode, else most relevant.

    ``total``: FHIR's ``_total``; "none" (or "estimate") skips counting every match when the search has words or a
    place (a place search then stops at the nearest studies that fill the page): ``total`` is None unless known
    anyway (the last page), ``more`` says whether more studies match.

    Raises UnknownPostcode (InvalidResource: 400) for a postcode that is not known, and InvalidResource for no
    words or a bad distance; messages never repeat the postcode.
    """
    items: list[tuple[str, str]] = []
    if text is not None and text.strip():
        items.append(("_text", text))
    if postcode is not None and postcode.strip():
        items += [("postcode", postcode), ("distance", repr(float(distance_km)))]
    if recruiting_only:
        items.append(("status", "active"))
    if total != "accurate":
        items.append(("_total", total))
    rest, spec, below = study_search.split_params("ResearchStudy", items)
    q = parse_search("ResearchStudy", rest, default_count=count, max_count=max(count, 1))
    q.criteria.extend(below)
    q.count, q.offset = count, offset
    if spec.active:
        counted, rows, hits = study_search.run(store, q, spec)
        more = spec.more
    else:
        counted, rows = store.search(q)
        hits, more = {}, offset + count < counted
    out = []
    for st in rows:
        hit = hits.get(st.pk)
        site = None
        if hit is not None and hit.site_ref and hit.distance_km is not None:
            site = NearestSite(hit.site_ref.split("/", 1)[1], hit.site_name, hit.distance_km)
        out.append(StudyHit(st.id, orjson.loads(st.content or "{}"), hit.score if hit else None, site))
    return StudySearchResult(counted, out, more)
