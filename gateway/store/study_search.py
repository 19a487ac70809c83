"""The search parameters served by the full-text and place index (gateway.store.fulltext), and how they combine.

ResearchStudy: ``_text`` / ``_content`` (words, through the terminology), ``condition:text`` / ``keyword:text``,
``condition:below`` (subsumption), ``condition`` / ``keyword`` given as words rather than codes (matched as codes
OR as text), ``postcode`` + ``distance`` (km, default 50) and ``near=lat|lon|distance|units``: studies with a
recruiting site in range, nearest first. Location: ``near``. Every other parameter still applies (ANDed).

``split_params(rtype, items)`` takes these out of the query string before ``parse_search`` sees the rest;
``run(store, query, spec)`` answers like ``Store.search`` and also returns, per row, its score and nearest site.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field, replace

import orjson
from sqlalchemy import column, exists, func, literal, select, table, text, union
from sqlalchemy.sql import operators
from sqlalchemy.sql.elements import BinaryExpression
from sqlalchemy.sql.selectable import ScalarSelect

from gateway.fhir import conventions as cv
from gateway.fhir.errors import InvalidResource, NotSupported
from gateway.fhir.search import Criterion, SearchQuery, parse_token
from gateway.fhir.search_params import params_for
from gateway.store import fulltext, geo
from gateway.store import schema as s
from gateway.store.repo import _stored  # the row -> Stored conversion the store uses everywhere

DEFAULT_DISTANCE_KM = 50.0
MAX_DISTANCE_KM = 1500.0
TEXT_PARAMS = ("_text", "_content")
MAX_SORTED = 20_000  # matches that _sort may reorder (they go to the store as an _id list)
TOTALS = ("none", "estimate", "accurate")  # FHIR _total
# Nearest-first place search without an exact total: the first ring holds about this many placed sites (counted
# in a small box around the centre, from the (lat, lon) index alone): enough for a page of studies with no other
# filter; with words or other filters, enough for a page if about 1 study in 40 matches them.
RING_SITES = 100
RING_SITES_FILTERED = 2000
# A ring too small is widened by what it found (the area that should hold the page, with a margin), at least by this
# factor of its radius. Each ring only looks up its own sites (the words are ranked once per request), so a small
# step costs less than overshooting: at 70,000 studies, 2.0 rather than 3.0 took the CPU p95 of words + postcode
# from ~52 to ~46 ms, the pages unchanged.
RING_GROWTH = 2.0
DENSITY_KM = 5.0  # the box in which sites are counted
_CODE_LIKE = re.compile(r"^[A-Za-z]{0,3}[0-9][0-9A-Za-z.\-]*$")  # 393563007, C71.9, D005909 (not 'glioma')
_UNITS = {"km": 1.0, "mi": geo.KM_PER_MILE, "[mi_i]": geo.KM_PER_MILE}


# What the CapabilityStatement advertises for this module: type -> (name, type, definition, documentation).
_OURS = f"{cv.BASE}/SearchParameter"
CAPABILITY: dict[str, list[tuple[str, str, str, str]]] = {
    "ResearchStudy": [
        ("_text", "string", "http://hl7.org/fhir/SearchParameter/DomainResource-text",
         "plain-English words over title, description, conditions, keywords and eligibility text, through the "
         "terminology (synonyms, UK/US spellings, misspellings, hierarchy); ranked, search.score; docs/search.md"),
        ("_content", "string", "http://hl7.org/fhir/SearchParameter/Resource-content", "the same as _text"),
        ("postcode", "string", f"{_OURS}/ResearchStudy-postcode",
         "UK postcode or outward code: studies with a recruiting site within distance (km, default 50), nearest "
         "first; the site and its distance in the match-nearest-site extension on Bundle.entry.search"),
        ("distance", "number", f"{_OURS}/ResearchStudy-distance", "km from postcode (default 50, at most 1500)"),
        ("near", "special", f"{_OURS}/ResearchStudy-near",
         "lat|long|distance|units (km or mi): as postcode, from a position"),
    ],
    "Location": [("near", "special", "http://hl7.org/fhir/SearchParameter/Location-near",
                  "lat|long|distance|units (km or mi): placed Locations within the distance, nearest first")],
}


def capability_params(rtype: str) -> list[dict]:
    """rest.resource.searchParam entries for this module's parameters of ``rtype``."""
    return [{"name": n, "definition": d, "type": t, "documentation": doc} for n, t, d, doc in CAPABILITY.get(rtype, [])]


class UnknownPostcode(InvalidResource):
    """A postcode that is not shaped like a UK postcode, or whose district is not known (never echoed)."""


@dataclass
class StudySpec:
    """The parameters of this module found in one search."""

    texts: list[str] = field(default_factory=list)  # _text / _content (ANDed)
    condition_texts: list[list[str]] = field(default_factory=list)  # condition:text, keyword:text (OR within)
    code_or_text: list[tuple[Criterion, list[str]]] = field(default_factory=list)  # condition=glioblastoma
    centre: geo.LatLon | None = None
    distance_km: float = DEFAULT_DISTANCE_KM
    raw: list[tuple[str, str]] = field(default_factory=list)  # for self / next links
    total: str = "accurate"  # _total: none | estimate | accurate (accurate: Bundle.total always counted)
    more: bool = False  # set by run(): a page after this one exists (for the next link when total is None)

    @property
    def active(self) -> bool:
        return bool(self.texts or self.condition_texts or self.code_or_text or self.centre)


@dataclass(frozen=True)
class Hit:
    """What a row of a special search adds to its Bundle entry."""

    score: float | None = None
    site_pk: int | None = None
    site_ref: str | None = None
    distance_km: float | None = None
    site_name: str | None = None


def split_params(rtype: str, items: list[tuple[str, str]]) -> tuple[list[tuple[str, str]], StudySpec, list[Criterion]]:
    """Take this module's parameters out of ``items``: (the rest, the spec, extra token criteria for
    ``condition:below``, which the store's token search applies once expanded to the concept's descendants)."""
    spec = StudySpec()
    extra: list[Criterion] = []
    rest: list[tuple[str, str]] = []
    postcode: str | None = None
    distance: str | None = None
    for key, raw in items:
        name, _, modifier = key.partition(":")
        if rtype == "ResearchStudy" and name in TEXT_PARAMS and not modifier:
            if not raw.strip():
                raise InvalidResource(f"{name} needs words to search for", name)
            spec.texts.append(raw)
        elif rtype == "ResearchStudy" and name in ("condition", "keyword") and modifier == "text":
            spec.condition_texts.append([v for v in raw.split(",") if v.strip()] or _no_value(key))
        elif rtype == "ResearchStudy" and name == "condition" and modifier == "below":
            extra.append(_below(raw))
        elif rtype == "ResearchStudy" and name in ("condition", "keyword") and not modifier and \
                _has_words(raw):
            sp = params_for(rtype)[name]
            values = [v for v in raw.split(",") if v.strip()]
            spec.code_or_text.append((Criterion(name, "token", values, None, sp), values))
        elif rtype == "ResearchStudy" and name == "postcode" and not modifier:
            postcode = raw
            continue  # not echoed: a full postcode identifies a household
        elif rtype == "ResearchStudy" and name == "distance" and not modifier:
            distance = raw
        elif rtype in ("ResearchStudy", "Location") and name == "near" and not modifier:
            spec.centre, spec.distance_km = _near(raw)
        elif rtype in ("ResearchStudy", "Location") and name == "_total" and not modifier:
            if raw not in TOTALS:
                raise InvalidResource(f"_total must be one of {', '.join(TOTALS)}", "_total")
            spec.total = raw
            rest.append((key, raw))  # a control parameter the store's parser accepts (and ignores) too
            continue
        else:
            rest.append((key, raw))
            continue
        spec.raw.append((key, raw))
    if distance is not None and postcode is None:
        raise InvalidResource("distance needs a postcode (or use near=lat|long|distance|units)", "distance")
    if postcode is not None:
        if spec.centre is not None:
            raise InvalidResource("Give either postcode or near, not both", "postcode")
        spec.centre = postcode_centre(postcode)
        spec.distance_km = _distance(distance) if distance is not None else DEFAULT_DISTANCE_KM
        spec.raw.append(("postcode", geo.outward_code(postcode) or ""))  # the district only, in links
    if spec.active and spec.total != "accurate":
        spec.raw.append(("_total", spec.total))  # applied: kept in self / next links
    return rest, spec, extra


def _no_value(key: str) -> list[str]:
    raise InvalidResource(f"Search parameter '{key}' has no value", key)


def _has_words(raw: str) -> bool:
    """'glioblastoma' or 'brain tumour' (words) rather than a code ('393563007', 'sys|code')."""
    return "|" not in raw and any(not _CODE_LIKE.match(v.strip()) and re.search(r"[a-zA-Z]{3}", v)
                                  for v in raw.split(",") if v.strip())


def postcode_centre(postcode: str) -> geo.LatLon:
    """A UK postcode or outward code -> its district centroid; UnknownPostcode otherwise (postcode not echoed)."""
    oc = geo.outward_code(postcode)
    if oc is None:
        raise UnknownPostcode("postcode is not a UK postcode or outward code (e.g. 'LS6 3HE' or 'LS6')", "postcode")
    pos = geo.load_centroids().get(oc)
    if pos is None:
        raise UnknownPostcode("postcode: the postcode district is not known (Channel Islands, Isle of Man and "
                              "retired districts are not covered)", "postcode")
    return pos


def _distance(raw: str, name: str = "distance") -> float:
    try:
        km = float(raw)
    except ValueError:
        raise InvalidResource(f"{name} must be a number of kilometres, got '{raw[:20]}'", name) from None
    if not 0 < km <= MAX_DISTANCE_KM:
        raise InvalidResource(f"{name} must be above 0 and at most {MAX_DISTANCE_KM:g} km", name)
    return km


def _near(raw: str) -> tuple[geo.LatLon, float]:
    """'53.8|-1.55|20|km' -> ((53.8, -1.55), 20.0); distance defaults to 50 km, units to km (or mi)."""
    parts = raw.split("|")
    if len(parts) < 2 or len(parts) > 4:
        raise InvalidResource("near must be latitude|longitude[|distance[|units]]", "near")
    try:
        lat, lon = float(parts[0]), float(parts[1])
    except ValueError:
        raise InvalidResource("near: latitude and longitude must be decimal degrees", "near") from None
    if not (-90 <= lat <= 90 and -180 <= lon <= 180):
        raise InvalidResource("near: latitude must be within -90..90 and longitude within -180..180", "near")
    unit = parts[3].strip() if len(parts) == 4 and parts[3].strip() else "km"
    if unit not in _UNITS:
        raise InvalidResource(f"near: units must be km or mi, got '{unit[:10]}'", "near")
    km = _distance(parts[2], "near") * _UNITS[unit] if len(parts) >= 3 and parts[2].strip() else DEFAULT_DISTANCE_KM
    if km > MAX_DISTANCE_KM:
        raise InvalidResource(f"near: the distance must be at most {MAX_DISTANCE_KM:g} km", "near")
    return (lat, lon), km


def _below(raw: str) -> Criterion:
    """condition:below=system|code -> a condition token criterion on the concept and every descendant."""
    term = fulltext.search_terminology()
    values: list[str] = []
    for v in raw.split(","):
        system, code, has_bar = parse_token(v.strip())
        if not (has_bar and system and code):
            raise InvalidResource("condition:below needs system|code (e.g. http://snomed.info/sct|126952004)",
                                  "condition:below")
        if not term.knows(system, code):
            raise NotSupported(f"condition:below: the code {code} is not known to the terminology of {system}, so "
                               "its descendants cannot be found", "condition:below")
        values.extend(f"{k[0]}|{k[1]}" for k in term.descendants(system, code))
        values.append(f"{system}|{code}")  # as given, too (MeSH id forms, other aliases)
    return Criterion("condition", "token", sorted(set(values)), None, params_for("ResearchStudy")["condition"])


# -- running ---------------------------------------------------------------------------------------
def _cte(name: str, body: str, params: dict, cols: tuple[str, ...]):
    """A textual CTE (computed once: MATERIALIZED) with its columns, for SQLAlchemy to join."""
    return (text(body).bindparams(**params).columns(*(column(c) for c in cols)).cte(name)
            .prefix_with("MATERIALIZED"))


def _matches(store, conn, query: SearchQuery, spec: StudySpec, km: float | None = None,
             compiled: dict | None = None, kept: list[str] | None = None):
    """The one statement that finds, ranks and counts the matches: (select of pk, score, c2, site_pk, site_ref,
    place: 'site' | 'placed' | None). Every filter is a CTE joined on the study's pk; the store's criteria filter
    the pks; nothing is read into Python but the rows asked for. ``km``: a smaller circle than the spec's (a ring
    of the nearest-first search); ``compiled``: text queries already compiled, by (text, scope); ``kept``: the
    temporary tables holding the matches of ``spec.texts`` (``fulltext.keep_matches``), one per text, in order."""
    dialect = conn.dialect.name
    compiled = {} if compiled is None else compiled

    def _compiled(raw: str, scope: str, name: str) -> fulltext.TextQuery:
        if (raw, scope) not in compiled:
            compiled[raw, scope] = _compile(conn, raw, scope, name)
        return compiled[raw, scope]

    r = s.resources
    joined: list = []  # CTEs with 'pk', joined (inner) on pk
    scores: list = []
    place = None
    if spec.centre is not None:
        if query.resource_type == "Location":
            body, params = fulltext.placed_cte(spec.centre, km or spec.distance_km)
            near = _cte("near", body, params, ("pk", "c2"))
            place = "placed"
        else:
            body, params = fulltext.nearest_site_cte(dialect, spec.centre, km or spec.distance_km)
            near = _cte("near", body, params, ("pk", "site_pk", "site_ref", "c2"))
            place = "site"
    # A ring of the nearest-first search holds few studies: they come first, and each is looked up in the words'
    # matches kept for the request (ranked once, whatever the number of rings).
    if kept is not None and place:
        joined.append(near)
    for i, raw in enumerate(spec.texts):
        if kept is not None:
            c = table(kept[i], column("pk"), column("s"))
        else:
            body, params = fulltext.text_cte(dialect, _compiled(raw, "all", "_text"), f"t{i}")
            c = _cte(f"t{i}", body, params, ("pk", "s"))
        joined.append(c)
        scores.append(c.c.s)
    if place and kept is None:
        joined.append(near)
    n = 0

    def words(v: str, name: str):
        nonlocal n
        n += 1
        body, params = fulltext.text_cte(dialect, _compiled(v, "condition", name), f"c{n}")
        return select(_cte(f"c{n}", body, params, ("pk", "s")).c.pk)

    for values in spec.condition_texts:  # condition:text / keyword:text: any of the values
        joined.append(union(*[words(v, "condition:text") for v in values]).cte(f"f{n}"))
    for crit, values in spec.code_or_text:  # condition=glioblastoma: as a code or as words
        by_code = select(r.c.pk).where(store._criterion(query.resource_type, crit), r.c.deleted.is_(False))
        joined.append(union(by_code, *[words(v, crit.name) for v in values]).cte(f"f{n}"))
    first = joined[0]
    stmt = select(first.c.pk.label("pk"),
                  (sum(scores[1:], scores[0]) if scores else literal(0.0)).label("score"),
                  (near.c.c2 if place else literal(None)).label("c2"),
                  (near.c.site_pk if place == "site" else literal(None)).label("site_pk"),
                  (near.c.site_ref if place == "site" else literal(None)).label("site_ref"))
    frm = first
    for c in joined[1:]:
        frm = frm.join(c, c.c.pk == first.c.pk)
    stmt = stmt.select_from(frm)
    for crit in query.criteria:  # status=active, phase=..., every other parameter: the store's own conditions
        if crit.name in ("_id", "_lastUpdated"):  # columns of the resource row
            stmt = stmt.where(first.c.pk.in_(select(r.c.pk).where(store._criterion(query.resource_type, crit))))
        else:  # on the matches' pks directly: through the resources table, SQLite would first list every
            # resource the criterion holds for (status=active: nearly every study) and cost 3 times as much
            stmt = stmt.where(_correlated(store._criterion(query.resource_type, crit, r=first), first))
    return stmt, place


def _correlated(cond, first):
    """``first.pk IN (SELECT res_pk FROM idx_token WHERE ...)`` -> ``EXISTS (... AND res_pk = first.pk)``: the same
    condition, checked for each match (an index probe) rather than SQLite listing every resource the criterion holds
    for first (``status=active``: nearly every study, ~30 ms at 70,000 studies, in every ring)."""
    if isinstance(cond, BinaryExpression) and cond.operator is operators.in_op and \
            isinstance(cond.right, ScalarSelect) and getattr(cond.left, "name", None) == "pk":
        inner = cond.right.element
        return exists(inner.where(inner.selected_columns[0] == first.c.pk))
    return cond


def _order(sub, place: str | None) -> list:
    return [sub.c.c2, sub.c.score.desc(), sub.c.pk] if place else [sub.c.score.desc(), sub.c.pk]


def _uncounted_page(store, conn, query: SearchQuery, spec: StudySpec, compiled: dict) -> tuple[int | None, list]:
    """The page's rows without counting every match (``_total=none|estimate``): (total when known, rows).

    One row more than the page is asked for, to know whether a next page exists (``spec.more``). A study search
    with a place is answered nearest first by rings: the studies with a recruiting site within a ring of radius r
    are exactly the first ones in distance order (any study not found has its nearest site farther than r), so
    once a ring holds the page (and one more), the page is the one the whole circle would give, in the same order
    (distance, then relevance, then pk). Else the ring widens (by the density found so far) up to the distance.
    The total is given when it is known anyway (the last page: fewer rows than asked for), else None.
    """
    want = query.count + 1
    km = spec.distance_km
    ring = spec.centre is not None and query.resource_type == "ResearchStudy"
    kept = None
    if ring:
        km = _first_ring_km(conn, spec, query)
        if spec.texts:  # the words ranked once for every ring
            kept = [f"search_matches_t{i}" for i in range(len(spec.texts))]
            for name, raw in zip(kept, spec.texts, strict=True):
                if (raw, "all") not in compiled:
                    compiled[raw, "all"] = _compile(conn, raw, "all", "_text")
                fulltext.keep_matches(conn, compiled[raw, "all"], name)
    while True:
        stmt, place = _matches(store, conn, query, spec, km, compiled, kept)
        sub = stmt.subquery("hits")
        rows = conn.execute(select(sub).order_by(*_order(sub, place)).limit(want).offset(query.offset)).all()
        if len(rows) >= want or km >= spec.distance_km:
            break
        found = query.offset + len(rows) if rows else 0  # studies within km (at least)
        grow = math.sqrt((query.offset + want) / max(found, 1)) * 1.5  # area grows with the square of km
        km = min(spec.distance_km, km * max(RING_GROWTH, grow))
    for name in kept or ():
        fulltext.drop_matches(conn, name)
    spec.more = len(rows) >= want
    rows = rows[:query.count]
    known = not spec.more and (bool(rows) or not query.offset)
    return (query.offset + len(rows) if known else None), rows


def _first_ring_km(conn, spec: StudySpec, query: SearchQuery) -> float:
    """The radius of the first ring: by the density of placed sites around the centre (area grows with the square
    of the radius), between 1 km and the distance asked for."""
    box_km = min(DENSITY_KM, spec.distance_km)
    lat_lo, lat_hi, lon_lo, lon_hi = geo.bounding_box(spec.centre, box_km)
    sites = conn.execute(text("SELECT count(*) FROM search_geo g WHERE g.lat BETWEEN :a AND :b AND g.lon BETWEEN "
                              ":c AND :d"), {"a": lat_lo, "b": lat_hi, "c": lon_lo, "d": lon_hi}).scalar_one()
    filtered = bool(spec.texts or spec.condition_texts or spec.code_or_text or query.criteria)
    target = (RING_SITES_FILTERED if filtered else RING_SITES) * (query.offset + query.count + 1) / 21
    return min(spec.distance_km, max(1.0, box_km * math.sqrt(target / max(sites, 1))))


def run(store, query: SearchQuery, spec: StudySpec) -> tuple[int | None, list, dict[int, Hit]]:
    """Like ``Store.search``, with this module's parameters applied: (total, rows of the page, hits by pk).

    Order: nearest recruiting site first with a place, else relevance, then pk (stable across pages). The database
    ranks and counts (``count(*) OVER ()``) and returns the page's rows only; the page's resources are read then.
    With ``_total=none|estimate`` nothing is counted (see ``_uncounted_page``): total is None unless known anyway,
    and ``spec.more`` says whether a next page exists.
    """
    r = s.resources
    postgres = store.engine.dialect.name == "postgresql"
    with store.engine.connect() as conn:
        compiled: dict = {}
        stmt, place = _matches(store, conn, query, spec, compiled=compiled)
        sub = stmt.subquery("hits")
        order = _order(sub, place)
        found: dict[int, tuple] = {}
        if query.summary_count or query.count == 0:
            return conn.execute(select(func.count()).select_from(sub)).scalar_one(), [], {}
        if getattr(query, "sort", None):
            # _sort says otherwise: the store orders the matches as it orders any search (by their ids)
            all_rows = conn.execute(select(sub).limit(MAX_SORTED + 1)).all()
            if len(all_rows) > MAX_SORTED:
                raise NotSupported(f"_sort over more than {MAX_SORTED:,} matches of _text / postcode / near is not "
                                   "supported: narrow the search, or leave _sort out (relevance / distance order)",
                                   "_sort")
            found = {row.pk: row for row in all_rows}
            if not found:
                return 0, [], {}
            ids = [i for chunk in _chunks(sorted(found), 500) for i in conn.execute(
                select(r.c.id).where(r.c.pk.in_(chunk))).scalars()]
            by_id = replace(query, criteria=[Criterion("_id", "token", ids)])
            total, stored = store.search(by_id)
            page = [st.pk for st in stored]
            spec.more = query.offset + query.count < total
        else:
            if spec.total != "accurate":
                total, rows = _uncounted_page(store, conn, query, spec, compiled)
            else:
                rows = conn.execute(select(sub, func.count().over().label("total")).order_by(*order)
                                    .limit(query.count).offset(query.offset)).all()
                if rows:
                    total = rows[0].total
                else:  # past the last page: count on its own
                    total = conn.execute(select(func.count()).select_from(sub)).scalar_one() if query.offset else 0
                spec.more = query.offset + len(rows) < total
            found = {row.pk: row for row in rows}
            page = [row.pk for row in rows]
            content = {row["pk"]: row for row in conn.execute(select(r).where(r.c.pk.in_(page))).mappings()} \
                if page else {}
            stored = [_stored(content[pk]) for pk in page if pk in content]
        site_pks = sorted({found[pk].site_pk for pk in page if pk in found and found[pk].site_pk is not None})
        names = {pk: _name(c) for pk, c in conn.execute(
            select(r.c.pk, r.c.content).where(r.c.pk.in_(site_pks)))} if site_pks else {}
    hits = {}
    for pk in page:
        row = found.get(pk)
        if row is None:
            continue
        hits[pk] = Hit(fulltext.normalised_score(row.score, postgres) if spec.texts else None,
                       row.site_pk, row.site_ref, fulltext.km_of_chord2(row.c2) if row.c2 is not None else None,
                       names.get(row.site_pk))
    return total, stored, hits


def _chunks(items: list[int], n: int) -> list[list[int]]:
    return [items[i:i + n] for i in range(0, len(items), n)]


def _name(content: str | None) -> str | None:
    name = orjson.loads(content).get("name") if content else None
    return name if isinstance(name, str) else None


def _compile(conn, raw: str, scope: str, name: str) -> fulltext.TextQuery:
    try:
        return fulltext.compile_text(conn, raw, scope)
    except fulltext.EmptyText:
        raise InvalidResource(f"{name}: no words to search for (only common words such as 'the', 'trial')",
                              name) from None


def search_element(hit: Hit | None, mode: str = "match") -> dict:
    """A Hit -> Bundle.entry.search: score (0..1, text searches) and the nearest recruiting site with its distance
    (place searches of studies) in the match-nearest-site extension, as $match writes it."""
    out: dict = {"mode": mode}
    if hit is None:
        return out
    if hit.site_ref is not None and hit.distance_km is not None:
        site: dict = {"reference": hit.site_ref}
        if hit.site_name:
            site["display"] = hit.site_name
        out["extension"] = [{"url": cv.EXT_MATCH_NEAREST_SITE, "extension": [
            {"url": "site", "valueReference": site},
            {"url": "distance", "valueQuantity": {"value": round(hit.distance_km, 1), "unit": "km",
                                                  "system": cv.UCUM, "code": "km"}}]}]
    if hit.score is not None:
        out["score"] = hit.score
    return out
