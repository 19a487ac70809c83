"""Full-text and place search index: what is written with each ResearchStudy, Group and Location, and its queries.

Written in the resource's own write transaction (``Tx.put`` adds the rows, ``Tx.flush`` writes them with the other
index rows), so the index is always the data's and no process keeps state of its own. Ranking is the database's:

- SQLite: an FTS5 table over ``search_text`` (external content, kept by triggers), ``bm25()`` with column weights;
- PostgreSQL: a generated ``tsvector`` column (weights A title, B conditions/keywords/concepts, C description,
  D eligibility) with a GIN index, ``ts_rank_cd``; misspelt words are corrected with ``pg_trgm`` over
  ``search_words`` (SQLite: the same table, candidates by first letter and length, difflib).

A query is understood through the terminology (mappings/terminology, loaded from its files, so every process
answers alike): ``'brain tumour'`` resolves to SNOMED CT 126952004; each stored study carries a token per concept
its conditions are a kind of (``zcsct126952004``), so the query finds glioblastoma, medulloblastoma and DIPG
studies. Secondary (metastatic) concepts get ``zs`` tokens, so a primary-tumour query does not find metastases.
"""

from __future__ import annotations

import difflib
import hashlib
import itertools
import math
import re
from dataclasses import dataclass
from functools import lru_cache

import orjson
from sqlalchemy import Engine, bindparam, select, text

from gateway.fhir import conventions as cv
from gateway.store import geo
from gateway.terminology.terminology import DEFAULT_PATH, Terminology, load_terminology
from gateway.terminology.text import normalise_text, spelling_variants

# FTS5 columns, in order, and their bm25() weights (higher: a match there counts more).
COLUMNS = ("title", "conditions", "keywords", "concepts", "description", "eligibility")
BM25_WEIGHTS = (10.0, 8.0, 4.0, 6.0, 2.0, 0.5)
CONDITION_COLUMNS = ("conditions", "keywords", "concepts")  # condition:text / keyword text
_PG_WEIGHT = {"title": "A", "conditions": "B", "keywords": "B", "concepts": "B", "description": "C",
              "eligibility": "D"}
_PG_CONFIG = "english"
_SHORT = {cv.SNOMED: "sct", cv.ICD10: "icd", cv.ICD10CM: "icdcm", cv.MESH: "mesh", cv.ONCOTREE: "onco"}
_WORD = re.compile(r"^[a-z][a-z0-9]{3,63}$")
# Words that say nothing about which study is meant.
_STOP = frozenset({"the", "of", "and", "or", "a", "an", "in", "for", "with", "to", "on", "my", "me", "i", "is",
                   "trial", "trials", "study", "studies", "clinical", "research", "near", "about", "at", "by",
                   "from", "who", "what", "have", "has"})
_CORRECT_MIN_RATIO = 0.8


@lru_cache(maxsize=1)
def search_terminology() -> Terminology:
    """The shipped terminology, loaded from its files once per process (not the matching state's copy, which
    learns registry hierarchies at run time: the index must not depend on which process wrote a row)."""
    return load_terminology(DEFAULT_PATH)


# -- index rows ------------------------------------------------------------------------------------
def concept_token(key: tuple[str, str], secondary: bool) -> str:
    """(SNOMED, '126952004') -> 'zcsct126952004' (secondary: 'zs...'): one word to both engines' tokenisers."""
    system, code = key
    short = _SHORT.get(system) or "x" + hashlib.sha1(system.encode()).hexdigest()[:6]
    return f"{'zs' if secondary else 'zc'}{short}{re.sub(r'[^a-z0-9]', '', code.lower())}"


def _concept_keys(concept: dict, term: Terminology) -> list[tuple[str, str]]:
    keys = [term.key(c["system"], c["code"]) for c in concept.get("coding") or []
            if isinstance(c, dict) and isinstance(c.get("system"), str) and isinstance(c.get("code"), str)]
    if not keys and isinstance(concept.get("text"), str):
        keys = term.resolve_text(concept["text"], fuzzy=False)
    return keys


def concept_tokens(concepts: list[dict]) -> str:
    """The concept tokens of CodeableConcepts: every ancestor of every concept they name (by code, else text)."""
    term = search_terminology()
    tokens: set[str] = set()
    for concept in concepts:
        if not isinstance(concept, dict):
            continue
        for k in _concept_keys(concept, term):
            secondary = term.is_secondary(*k)
            tokens.update(concept_token(a, secondary) for a in term.ancestors(*k))
    return " ".join(sorted(tokens))


def _texts(concepts: object) -> list[str]:
    out = []
    for c in concepts if isinstance(concepts, list) else []:
        if isinstance(c, dict):
            if isinstance(c.get("text"), str):
                out.append(c["text"])
            out.extend(x["display"] for x in c.get("coding") or [] if isinstance(x, dict)
                       and isinstance(x.get("display"), str))
    return out


def text_row(resource: dict) -> tuple | None:
    """A ResearchStudy -> its ``search_text`` row without res_pk (eligibility None: ``Tx.flush`` fills it in from
    the study's eligibility Groups, see ``fill_eligibility``), else None. One row per study: a Group has no row of
    its own, its eligibility text is part of the row of each study that enrols it."""
    if resource.get("resourceType") == "ResearchStudy":
        concepts = [c for c in (resource.get("condition") or []) + (resource.get("keyword") or [])
                    if isinstance(c, dict)]
        desc = resource.get("description") if isinstance(resource.get("description"), str) else None
        return ("ResearchStudy", f"ResearchStudy/{resource.get('id')}", resource.get("title") if isinstance(
            resource.get("title"), str) else None, "\n".join(_texts(resource.get("condition"))) or None,
            "\n".join(_texts(resource.get("keyword"))) or None, concept_tokens(concepts) or None, desc, None)
    return None


def eligibility_text(group: dict) -> str | None:
    """An eligibility Group's criteria text (its ``eligibility-criteria-text`` extensions), else None."""
    texts = [e.get("valueMarkdown") for e in group.get("extension") or []
             if isinstance(e, dict) and e.get("url") == cv.EXT_ELIGIBILITY_TEXT
             and isinstance(e.get("valueMarkdown"), str)]
    return "\n\n".join(texts) if texts else None


def geo_row(resource: dict) -> tuple | None:
    """A placed Location -> its ``search_geo`` row without res_pk: (ref, lat, lon, site status or None, x, y, z)."""
    if resource.get("resourceType") != "Location":
        return None
    pos = geo.location_position(resource)
    if pos is None:
        return None
    status = next((e.get("valueCode") for e in resource.get("extension") or []
                   if isinstance(e, dict) and e.get("url") == cv.EXT_SITE_RECRUITMENT_STATUS
                   and isinstance(e.get("valueCode"), str)), None)
    return f"Location/{resource.get('id')}", pos[0], pos[1], status, *unit_vector(*pos)


def words_of(row: tuple) -> set[str]:
    """The vocabulary a text row adds to ``search_words`` (title, conditions, keywords)."""
    out: set[str] = set()
    for value in row[2:5]:
        if value:
            out.update(w for w in normalise_text(value).split() if _WORD.match(w))
    return out


def add_words(conn, words: set[str]) -> None:
    """INSERT the words not yet known (never deleted: a vocabulary for spelling correction)."""
    if not words:
        return
    rows = [(w,) for w in sorted(words)]
    if conn.dialect.name == "postgresql":
        conn.exec_driver_sql("INSERT INTO search_words (word) VALUES (%s) ON CONFLICT DO NOTHING", rows)
    else:
        conn.exec_driver_sql("INSERT OR IGNORE INTO search_words (word) VALUES (?)", rows)


# -- a study's eligibility text (one row per study, migration 10) -------------------------------------
ENROLLMENT = "ResearchStudy:enrollment"
_ELIGIBILITY = 1 + 2 + COLUMNS.index("eligibility")  # in a search_text row: res_pk, rtype, ref, then COLUMNS


def _chunks(items: list, n: int = 500) -> list[list]:
    return [items[i:i + n] for i in range(0, len(items), n)]


def eligibility_of(conn, pks: list[int]) -> dict[int, str | None]:
    """Study pk -> the eligibility text of the current Groups it enrols (``ResearchStudy:enrollment`` index rows,
    Groups in ref order, texts joined), for each of ``pks`` (None when it has none)."""
    from gateway.store import schema as s

    ir, r = s.idx_reference, s.resources
    enrols: dict[int, list[str]] = {pk: [] for pk in pks}
    for chunk in _chunks(sorted(enrols)):
        for pk, ref in conn.execute(select(ir.c.res_pk, ir.c.ref).where(
                ir.c.param == ENROLLMENT, ir.c.res_pk.in_(chunk)).order_by(ir.c.res_pk, ir.c.ref)):
            enrols[pk].append(ref)
    ids = sorted({ref.split("/", 1)[1] for refs in enrols.values() for ref in refs if ref.startswith("Group/")})
    texts: dict[str, str] = {}
    for chunk in _chunks(ids):
        for rid, content in conn.execute(select(r.c.id, r.c.content).where(
                r.c.type == "Group", r.c.id.in_(chunk), r.c.deleted.is_(False))):
            t = eligibility_text(orjson.loads(content)) if content else None
            if t:
                texts[f"Group/{rid}"] = t
    return {pk: "\n\n".join(texts[ref] for ref in dict.fromkeys(refs) if ref in texts) or None
            for pk, refs in enrols.items()}


def with_eligibility(conn, rows: list[tuple]) -> list[tuple]:
    """``search_text`` rows (with res_pk) about to be written -> the same rows with their eligibility text. Called
    after the studies' reference index rows and their Groups' resource rows are written (``Tx.flush``)."""
    texts = eligibility_of(conn, [row[0] for row in rows])
    return [row[:_ELIGIBILITY] + (texts.get(row[0]),) + row[_ELIGIBILITY + 1:] for row in rows]


def refresh_eligibility(conn, group_refs: set[str], skip: set[int] = frozenset()) -> int:
    """Rewrite the eligibility text in the row of every stored study that enrols one of ``group_refs`` ('Group/<id>':
    Groups written or deleted in this transaction), except the studies in ``skip`` (rows written just now, already
    with it). Returns the number of studies rewritten."""
    return _rewrite_eligibility(conn, sorted(_referring(conn, ENROLLMENT, group_refs) - set(skip)))


def _referring(conn, param: str, refs: set[str]) -> set[int]:
    """The pks of the resources whose reference search parameter ``param`` names one of ``refs``."""
    from gateway.store import schema as s

    ir = s.idx_reference
    pks: set[int] = set()
    for chunk in _chunks(sorted(refs)):
        pks.update(conn.execute(select(ir.c.res_pk).where(ir.c.param == param, ir.c.ref.in_(chunk))).scalars())
    return pks


def _rewrite_eligibility(conn, pks: list[int]) -> int:
    if not pks:
        return 0
    texts = eligibility_of(conn, pks)
    conn.execute(text("UPDATE search_text SET eligibility = :e WHERE res_pk = :pk"),
                 [{"e": texts[pk], "pk": pk} for pk in pks])
    return len(pks)


_PKS = bindparam("pks", expanding=True)


def refresh_sites(conn, study_pks: set[int], location_refs: set[str] = frozenset()) -> None:
    """Rewrite the ``search_sites`` rows of the studies ``study_pks`` (written or deleted in this transaction) and
    of the stored studies naming one of ``location_refs`` ('Location/<id>', written or deleted), from the index
    rows just written: a study's placed sites, each with whether it recruits."""
    pks = set(study_pks) | _referring(conn, "ResearchStudy:site", set(location_refs))
    for chunk in _chunks(sorted(pks)):
        params = {"pks": chunk}
        conn.execute(text("DELETE FROM search_sites WHERE study_pk IN :pks").bindparams(_PKS), params)
        conn.execute(text(f"{_SITES_OF} AND ir.res_pk IN :pks").bindparams(_PKS), params)


def backfill_sites(engine: Engine) -> None:
    """Migration 11: the ``search_sites`` rows of every stored study."""
    with engine.begin() as conn:
        conn.execute(text("DELETE FROM search_sites"))
        conn.execute(text(_SITES_OF))


def merge_study_rows(engine: Engine, batch: int = 2000) -> int:
    """Migration 10: one row per study. The Groups' own rows go; each study's row gets its Groups' eligibility
    text. SQLite: the FTS5 index is rebuilt once at the end (cheaper than the triggers row by row). Returns the
    studies rewritten."""
    sqlite = engine.dialect.name == "sqlite"
    done = 0
    with engine.begin() as conn:
        if sqlite:
            for name in ("search_text_ai", "search_text_ad", "search_text_au"):
                conn.exec_driver_sql(f"DROP TRIGGER IF EXISTS {name}")
        conn.execute(text("DELETE FROM search_text WHERE rtype <> 'ResearchStudy'"))
        last = 0
        while True:
            pks = list(conn.execute(text("SELECT res_pk FROM search_text WHERE res_pk > :last ORDER BY res_pk "
                                         "LIMIT :n"), {"last": last, "n": batch}).scalars())
            if not pks:
                break
            done += _rewrite_eligibility(conn, pks)
            last = pks[-1]
        if sqlite:
            conn.exec_driver_sql("INSERT INTO search_fts(search_fts) VALUES ('rebuild')")
            _sqlite_triggers(conn)
    return done


# -- DDL and back-fill (migration 6) ------------------------------------------------------------------
def create_engine_indexes(engine: Engine) -> None:
    """The engine's own full-text index over ``search_text`` and the trigram index over ``search_words``."""
    cols = ", ".join(COLUMNS)
    with engine.begin() as conn:
        if engine.dialect.name == "postgresql":
            conn.execute(text("CREATE EXTENSION IF NOT EXISTS pg_trgm"))
            parts = " || ".join(f"setweight(to_tsvector('{_PG_CONFIG}', coalesce({c}, '')), '{_PG_WEIGHT[c]}')"
                                for c in COLUMNS)
            conn.execute(text(f"ALTER TABLE search_text ADD COLUMN IF NOT EXISTS tsv tsvector "
                              f"GENERATED ALWAYS AS ({parts}) STORED"))
            conn.execute(text("CREATE INDEX IF NOT EXISTS ix_search_text_tsv ON search_text USING GIN (tsv)"))
            conn.execute(text("CREATE INDEX IF NOT EXISTS ix_search_words_trgm ON search_words "
                              "USING GIN (word gin_trgm_ops)"))
            return
        conn.exec_driver_sql(
            f"CREATE VIRTUAL TABLE IF NOT EXISTS search_fts USING fts5({cols}, content='search_text', "
            "content_rowid='res_pk', tokenize='porter unicode61 remove_diacritics 2')")
        _sqlite_triggers(conn)


def _sqlite_triggers(conn) -> None:
    """The triggers that keep ``search_fts`` (external content) in step with ``search_text``."""
    cols = ", ".join(COLUMNS)
    new = ", ".join(f"new.{c}" for c in COLUMNS)
    old = ", ".join(f"old.{c}" for c in COLUMNS)
    conn.exec_driver_sql(f"CREATE TRIGGER IF NOT EXISTS search_text_ai AFTER INSERT ON search_text BEGIN "
                         f"INSERT INTO search_fts(rowid, {cols}) VALUES (new.res_pk, {new}); END")
    conn.exec_driver_sql(f"CREATE TRIGGER IF NOT EXISTS search_text_ad AFTER DELETE ON search_text BEGIN "
                         f"INSERT INTO search_fts(search_fts, rowid, {cols}) VALUES ('delete', old.res_pk, {old});"
                         " END")
    conn.exec_driver_sql(f"CREATE TRIGGER IF NOT EXISTS search_text_au AFTER UPDATE ON search_text BEGIN "
                         f"INSERT INTO search_fts(search_fts, rowid, {cols}) VALUES ('delete', old.res_pk, {old});"
                         f" INSERT INTO search_fts(rowid, {cols}) VALUES (new.res_pk, {new}); END")


def backfill(engine: Engine, batch: int = 500) -> int:
    """Index the current ResearchStudy and Location resources already stored (each study's row with its
    eligibility Groups' text); returns rows written."""
    from gateway.store import schema as s  # schema imports this module inside its migration step

    written = 0
    last = 0
    with engine.begin() as conn:
        while True:
            rows = conn.execute(text(
                "SELECT pk, content FROM resources WHERE pk > :last AND deleted = :no AND type IN "
                "('ResearchStudy', 'Location') ORDER BY pk LIMIT :n"),
                {"last": last, "no": False, "n": batch}).all()
            if not rows:
                break
            texts, geos, words = [], [], set()
            for pk, content in rows:
                res = orjson.loads(content)
                t = text_row(res)
                if t is not None:
                    texts.append((pk, *t))
                    words |= words_of(t)
                g = geo_row(res)
                if g is not None:
                    geos.append((pk, *g))
            texts = with_eligibility(conn, texts) if texts else texts
            for table, values in ((s.search_text, texts), (s.search_geo, geos)):
                if values:
                    conn.execute(table.insert(), [dict(zip(table.columns.keys(), v, strict=True)) for v in values])
            add_words(conn, words)
            written += len(texts) + len(geos)
            last = rows[-1][0]
    return written


# -- text queries -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class TextQuery:
    """What a text becomes: concept tokens (OR), and its words, each with its spelling variants."""

    tokens: tuple[str, ...]
    words: tuple[tuple[str, ...], ...]
    scope: str = "all"  # all | condition

    def fts5(self) -> str:
        """The SQLite FTS5 MATCH expression."""
        words = " AND ".join("(" + " OR ".join(f'"{v}"' for v in alts) + ")" for alts in self.words)
        if self.tokens:
            # A named condition: the concept, or its words as a phrase anywhere (the eligibility text weighs little)
            tokens = " OR ".join(f'"{t}"' for t in self.tokens)
            phrases = " OR ".join('"' + " ".join(p) + '"' for p in self._phrases())
            expr = f"(concepts : ({tokens})) OR {phrases}" if phrases else f"concepts : ({tokens})"
        else:
            expr = words
        return f"{{{' '.join(CONDITION_COLUMNS)}}} : ({expr})" if self.scope == "condition" else expr

    def tsquery(self) -> str:
        """The PostgreSQL to_tsquery text."""
        label = ":B" if self.scope == "condition" else ""
        if self.tokens:
            alts = [f"{t}{label}" for t in self.tokens]
            alts += ["(" + " <-> ".join(f"{w}{label}" for w in p) + ")" for p in self._phrases()]
            return " | ".join(alts)
        return " & ".join("(" + " | ".join(f"{v}{label}" for v in alts) + ")" for alts in self.words)

    def _phrases(self) -> list[tuple[str, ...]]:
        return list(itertools.islice(itertools.product(*self.words), 4)) if self.words else []


class EmptyText(ValueError):
    """The text has no word to search for."""


def compile_text(conn, raw: str, scope: str = "all") -> TextQuery:
    """Words a patient typed -> a TextQuery: terminology concepts, spelling variants, misspellings corrected.

    'brain tumour' -> tokens (zcsct126952004, ...), words (('brain',), ('tumour', 'tumor'))
    'leukaemai' -> corrected to 'leukaemia' from the stored vocabulary, then resolved.
    """
    term = search_terminology()
    words = [w for w in normalise_text(raw).split() if w not in _STOP]
    if not words:
        raise EmptyText(raw)
    phrase = " ".join(words)
    concepts = term.resolve_text(phrase)
    if not concepts:
        fixed = [_correct(conn, w) for w in words]
        if fixed != words:
            words = fixed
            concepts = term.resolve_text(" ".join(words))
    tokens = tuple(sorted({concept_token(k, term.is_secondary(*k)) for k in concepts}))
    return TextQuery(tokens, tuple(spelling_variants(w) for w in words), scope)


def _correct(conn, word: str) -> str:
    """A word not in the vocabulary -> the closest stored word (or itself)."""
    if len(word) < 4 or not word.isalpha():
        return word
    variants = spelling_variants(word)
    known = conn.execute(text("SELECT word FROM search_words WHERE word IN :w").bindparams(
        _expanding("w")), {"w": list(variants)}).first()
    if known:
        return word
    if conn.dialect.name == "postgresql":
        cands = list(conn.execute(text("SELECT word FROM search_words WHERE word % :w "
                                       "ORDER BY similarity(word, :w) DESC, word LIMIT 10"), {"w": word}).scalars())
    else:
        cands = list(conn.execute(text(
            "SELECT word FROM search_words WHERE word >= :lo AND word < :hi AND length(word) BETWEEN :a AND :b"),
            {"lo": word[0], "hi": chr(ord(word[0]) + 1), "a": len(word) - 2, "b": len(word) + 2}).scalars())
    best = difflib.get_close_matches(word, cands, n=1, cutoff=_CORRECT_MIN_RATIO)
    return best[0] if best else word


def _expanding(name: str):
    from sqlalchemy import bindparam

    return bindparam(name, expanding=True)


# Each text query is one CTE 'pk, s': the engine's matches and their relevance. A study's one row holds its
# eligibility text too, so each match is a study: nothing is mapped or summed, one bm25() / ts_rank_cd per study.
_SQLITE_MATCHES = (f"SELECT rowid AS pk, -bm25(search_fts, {', '.join(str(w) for w in BM25_WEIGHTS)}) AS s "
                   "FROM search_fts WHERE search_fts MATCH :{q}")
_PG_MATCHES = ("SELECT t.res_pk AS pk, ts_rank_cd(t.tsv, q) AS s "
               f"FROM search_text t CROSS JOIN to_tsquery('{_PG_CONFIG}', :{{q}}) q WHERE t.tsv @@ q")


def text_cte(dialect: str, query: TextQuery, name: str) -> tuple[str, dict]:
    """The body of one text query's CTE ('pk, s' per matching ResearchStudy: the engine's relevance, bm25 /
    ts_rank_cd) and its parameters."""
    q = f"{name}_q"
    if dialect == "postgresql":
        return _PG_MATCHES.format(q=q), {q: query.tsquery()}
    return _SQLITE_MATCHES.format(q=q), {q: query.fts5()}


def keep_matches(conn, query: TextQuery, table: str) -> None:
    """The engine's matches of ``query`` ('pk, s', as ``text_cte``) kept in the temporary table ``table`` (pk as its
    primary key) for the rest of the connection's transaction: a search that runs several statements (the rings of
    a nearest-first search) ranks the words once. Gone with the transaction (PostgreSQL: ON COMMIT DROP; SQLite:
    a temporary table created in a transaction is rolled back with it); ``drop_matches`` drops it at once."""
    body, params = text_cte(conn.dialect.name, query, table)
    if conn.dialect.name == "postgresql":
        conn.execute(text(f"CREATE TEMPORARY TABLE {table} (pk BIGINT PRIMARY KEY, s FLOAT8) ON COMMIT DROP"))
        conn.execute(text(f"INSERT INTO {table} (pk, s) {body}"), params)
    else:
        conn.execute(text(f"CREATE TEMPORARY TABLE {table} (pk INTEGER PRIMARY KEY, s REAL)"))
        conn.execute(text(f"INSERT INTO temp.{table} (pk, s) {body}"), params)


def drop_matches(conn, table: str) -> None:
    conn.execute(text(f"DROP TABLE {'' if conn.dialect.name == 'postgresql' else 'temp.'}{table}"))


def normalised_score(raw: float, postgres: bool) -> float:
    """The engine's relevance -> 0..1 for Bundle.entry.search.score (monotonic: ranking order is kept)."""
    s = max(raw, 0.0) * (10.0 if postgres else 1.0)  # ts_rank_cd values are ~10x smaller than bm25's
    return round(s / (1.0 + s), 4)


# -- places ----------------------------------------------------------------------------------------------
# A placed row carries its point on the unit sphere (x, y, z), so the database measures great-circle distance
# exactly with arithmetic alone (no trigonometry in SQL): the squared chord between two points orders them as the
# great-circle distance does, and chord <= 2 sin(km / 2R) is exactly "within km". The (lat, lon) index finds the
# rows in the bounding box first.
def unit_vector(lat: float, lon: float) -> tuple[float, float, float]:
    """(lat, lon) in degrees -> the point on the unit sphere."""
    la, lo = math.radians(lat), math.radians(lon)
    return math.cos(la) * math.cos(lo), math.cos(la) * math.sin(lo), math.sin(la)


def chord2_within(km: float) -> float:
    """The squared chord (unit sphere) of a great-circle distance of ``km``."""
    return (2 * math.sin(min(km / geo.EARTH_KM, math.pi) / 2)) ** 2


def km_of_chord2(c2: float) -> float:
    """A squared chord (unit sphere) -> great-circle km."""
    return 2 * geo.EARTH_KM * math.asin(min(1.0, math.sqrt(max(c2, 0.0)) / 2))


_C2 = "((g.x - :px) * (g.x - :px) + (g.y - :py) * (g.y - :py) + (g.z - :pz) * (g.z - :pz))"
_BOX = f"g.lat BETWEEN :lat_lo AND :lat_hi AND g.lon BETWEEN :lon_lo AND :lon_hi AND {_C2} <= :c2max"
# A site recruits when its site-recruitment-status says so, or (without one) when its study is active: decided when
# the study's search_sites rows are written (``refresh_sites``), from the study's and the Location's index rows.
_RECRUITING = ("(lower(g.site_status) = 'recruiting' OR (g.site_status IS NULL AND EXISTS (SELECT 1 FROM idx_token "
               "st WHERE st.res_pk = ir.res_pk AND st.param = 'ResearchStudy:status' AND st.code = 'active')))")
_SITES_OF = ("INSERT INTO search_sites (study_pk, site_pk, site_ref, lat, lon, x, y, z, recruiting) "
             f"SELECT DISTINCT ir.res_pk, g.res_pk, g.ref, g.lat, g.lon, g.x, g.y, g.z, COALESCE({_RECRUITING}, FALSE) "
             "FROM idx_reference ir JOIN search_geo g ON g.ref = ir.ref WHERE ir.param = 'ResearchStudy:site'")
# One row per study: its nearest recruiting site within the distance, read from the sites in the box alone (one row
# per study and site: no look-up of each site's study). SQLite returns the other columns of the MIN() row with it (of
# two sites at the same distance, the first in (lat, lon) index order, in a ring as in the whole circle); PostgreSQL
# takes them with DISTINCT ON (ties: the lower site pk).
_NEAREST_SITE = {
    "sqlite": f"SELECT g.study_pk AS pk, g.site_pk AS site_pk, g.site_ref AS site_ref, MIN({_C2}) AS c2 "
              f"FROM search_sites g WHERE {_BOX} AND g.recruiting = 1 GROUP BY g.study_pk",
    "postgresql": f"SELECT DISTINCT ON (g.study_pk) g.study_pk AS pk, g.site_pk AS site_pk, g.site_ref AS site_ref, "
                  f"{_C2} AS c2 FROM search_sites g WHERE {_BOX} AND g.recruiting "
                  "ORDER BY g.study_pk, c2, g.site_pk",
}
_PLACED = f"SELECT g.res_pk AS pk, {_C2} AS c2 FROM search_geo g WHERE {_BOX}"


def _place_params(centre: geo.LatLon, km: float) -> dict:
    lat_lo, lat_hi, lon_lo, lon_hi = geo.bounding_box(centre, km)
    px, py, pz = unit_vector(*centre)
    return {"lat_lo": lat_lo, "lat_hi": lat_hi, "lon_lo": lon_lo, "lon_hi": lon_hi, "px": px, "py": py, "pz": pz,
            "c2max": chord2_within(km)}


def nearest_site_cte(dialect: str, centre: geo.LatLon, km: float) -> tuple[str, dict]:
    """A CTE body 'pk, site_pk, site_ref, c2': each ResearchStudy with a recruiting site within ``km`` of
    ``centre``, its nearest such site and the squared chord to it (``km_of_chord2`` gives km)."""
    return _NEAREST_SITE[dialect], _place_params(centre, km)


def placed_cte(centre: geo.LatLon, km: float) -> tuple[str, dict]:
    """A CTE body 'pk, c2': the placed Locations within ``km`` of ``centre`` (Location?near=)."""
    return _PLACED, _place_params(centre, km)


def fill_unit_vectors(engine: Engine, batch: int = 2000) -> int:
    """Migration 8: the unit-sphere point of every ``search_geo`` row placed before the columns existed."""
    done = 0
    with engine.begin() as conn:
        while True:
            rows = conn.execute(text("SELECT res_pk, lat, lon FROM search_geo WHERE x IS NULL LIMIT :n"),
                                {"n": batch}).all()
            if not rows:
                return done
            conn.execute(text("UPDATE search_geo SET x = :x, y = :y, z = :z WHERE res_pk = :pk"),
                         [dict(zip(("x", "y", "z"), unit_vector(lat, lon), strict=True), pk=pk)
                          for pk, lat, lon in rows])
            done += len(rows)


INDEXED_TYPES = frozenset({"ResearchStudy", "Group", "Location"})


def search_rows(resource: dict) -> list[tuple[str, tuple]]:
    """(kind, row without res_pk) for ``Tx.put``: 'text' rows (search_text) and 'geo' rows (search_geo)."""
    out = []
    t = text_row(resource)
    if t is not None:
        out.append(("text", t))
    g = geo_row(resource)
    if g is not None:
        out.append(("geo", g))
    return out
