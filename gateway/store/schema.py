"""Database schema (SQLAlchemy Core) and its migrations.

Tables: ``resources`` (current version of each resource), ``resource_versions`` (every version,
tombstones included), ``idx_*`` (search index rows written with each version), ``changes`` (the
change feed, in commit order) and ``counters``.

Migrations are an ordered list of steps recorded in ``schema_version``; ``migrate()`` applies the
missing ones at start-up and in ``gateway db upgrade``. One small list keeps the schema and its
history in one file; Alembic would add a second tool for what is, so far, additive DDL.
"""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Engine,
    Float,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    insert,
    inspect,
    select,
    text,
)

from gateway.store.clock import now_iso

metadata = MetaData()

# BigInteger that is still SQLite's rowid alias (SQLite only autoincrements INTEGER PRIMARY KEY).
PK = BigInteger().with_variant(Integer(), "sqlite")

resources = Table(
    "resources", metadata,
    Column("pk", PK, primary_key=True, autoincrement=True),
    Column("type", String(64), nullable=False),
    Column("id", String(64), nullable=False),
    Column("version", Integer, nullable=False),
    Column("last_updated", String(40), nullable=False),
    Column("deleted", Boolean, nullable=False, default=False),
    Column("content_hash", String(64)),
    Column("content", Text),
    UniqueConstraint("type", "id", name="uq_resources_type_id"),
)
Index("ix_resources_type_updated", resources.c.type, resources.c.last_updated)

resource_versions = Table(
    "resource_versions", metadata,
    Column("res_pk", PK, primary_key=True),
    Column("version", Integer, primary_key=True),
    Column("type", String(64), nullable=False),
    Column("id", String(64), nullable=False),
    Column("last_updated", String(40), nullable=False),
    Column("method", String(8), nullable=False),
    Column("deleted", Boolean, nullable=False, default=False),
    Column("content", Text),
)
Index("ix_versions_type_updated", resource_versions.c.type, resource_versions.c.last_updated)

idx_token = Table(
    "idx_token", metadata,
    Column("res_pk", PK, nullable=False),
    Column("param", String(96), nullable=False),
    Column("system", String(255)),
    Column("code", String(255), nullable=False),
)
Index("ix_idx_token_lookup", idx_token.c.param, idx_token.c.code, idx_token.c.system)
Index("ix_idx_token_res", idx_token.c.res_pk)

idx_string = Table(
    "idx_string", metadata,
    Column("res_pk", PK, nullable=False),
    Column("param", String(96), nullable=False),
    Column("value", String(512), nullable=False),
)
Index("ix_idx_string_lookup", idx_string.c.param, idx_string.c.value)
Index("ix_idx_string_res", idx_string.c.res_pk)

idx_reference = Table(
    "idx_reference", metadata,
    Column("res_pk", PK, nullable=False),
    Column("param", String(96), nullable=False),
    Column("ref", String(255), nullable=False),
)
Index("ix_idx_reference_lookup", idx_reference.c.param, idx_reference.c.ref)
Index("ix_idx_reference_res", idx_reference.c.res_pk)

idx_date = Table(
    "idx_date", metadata,
    Column("res_pk", PK, nullable=False),
    Column("param", String(96), nullable=False),
    Column("low", String(40), nullable=False),
    Column("high", String(40), nullable=False),
)
Index("ix_idx_date_lookup", idx_date.c.param, idx_date.c.low)
Index("ix_idx_date_res", idx_date.c.res_pk)

idx_uri = Table(
    "idx_uri", metadata,
    Column("res_pk", PK, nullable=False),
    Column("param", String(96), nullable=False),
    Column("value", String(512), nullable=False),
)
Index("ix_idx_uri_lookup", idx_uri.c.param, idx_uri.c.value)
Index("ix_idx_uri_res", idx_uri.c.res_pk)

INDEX_TABLES = {"token": idx_token, "string": idx_string, "reference": idx_reference, "date": idx_date,
                "uri": idx_uri}

changes = Table(
    "changes", metadata,
    Column("seq", PK, primary_key=True, autoincrement=False),
    Column("res_pk", PK, nullable=False),
    Column("type", String(64), nullable=False),
    Column("id", String(64), nullable=False),
    Column("version", Integer, nullable=False),
    Column("op", String(8), nullable=False),  # create | update | delete
    Column("at", String(40), nullable=False),
)
Index("ix_changes_type_seq", changes.c.type, changes.c.seq)

counters = Table(
    "counters", metadata,
    Column("name", String(64), primary_key=True),
    Column("value", PK, nullable=False),
)

schema_version = Table(
    "schema_version", metadata,
    Column("version", Integer, primary_key=True),
    Column("applied_at", String(40), nullable=False),
)


# Change-feed followers (workers) remember how far they have read: name -> last seq processed.
feed_cursors = Table(
    "feed_cursors", metadata,
    Column("name", String(64), primary_key=True),
    Column("seq", PK, nullable=False),
    Column("updated_at", String(40), nullable=False),
)

# Topic-based subscriptions (gateway.notify): per-subscription state and its numbered events.
subscription_state = Table(
    "subscription_state", metadata,
    Column("subscription_id", String(64), primary_key=True),
    Column("topic", String(255), nullable=False),
    Column("status", String(16), nullable=False),  # requested | active | error | off
    Column("events_since_start", PK, nullable=False, default=0),
    Column("consecutive_failures", Integer, nullable=False, default=0),
    Column("last_error", Text),
    Column("updated_at", String(40), nullable=False),
)

subscription_events = Table(
    "subscription_events", metadata,
    Column("subscription_id", String(64), primary_key=True),
    Column("event_number", PK, primary_key=True, autoincrement=False),
    Column("topic", String(255), nullable=False),
    Column("focus", String(160), nullable=False),  # "ResearchStudy/123"
    Column("occurred_at", String(40), nullable=False),
    Column("cancelled", Boolean, nullable=False, default=False),
)
Index("ix_subscription_events_focus", subscription_events.c.focus)

# Which person has already been told about / proposed for which study (a new match is one not seen before).
match_notices = Table(
    "match_notices", metadata,
    Column("study_id", String(64), primary_key=True),
    Column("person", String(96), primary_key=True),  # NHS number, or Patient/id when there is none
    Column("kind", String(32), primary_key=True),  # alert | proposal
    Column("at", String(40), nullable=False),
)

# Client-assertion ids (jti) already used at /auth/token (gateway.security): a replay is refused across
# processes; rows may be purged once ``expires_at`` (ISO) has passed.
used_jtis = Table(
    "used_jtis", metadata,
    Column("client_id", String(128), primary_key=True),
    Column("jti", String(255), primary_key=True),
    Column("expires_at", String(40), nullable=False),
)
Index("ix_used_jtis_expires", used_jtis.c.expires_at)


# The transactional outbox (gateway.outbound): one row per delivery to make, written in the same
# transaction as the change that caused it; workers claim, deliver, record attempts, back off.
outbox = Table(
    "outbox", metadata,
    Column("id", PK, primary_key=True, autoincrement=True),
    Column("kind", String(64), nullable=False),  # a registered job kind, e.g. research-subject
    Column("destination", String(128), nullable=False),  # hospital name or endpoint key
    Column("resource_type", String(64)),
    Column("resource_id", String(64)),
    Column("resource_version", Integer),
    Column("dedupe_key", String(255), nullable=False),
    Column("payload", Text, nullable=False),  # JSON; never secrets
    Column("state", String(16), nullable=False),  # pending | in-progress | delivered | dead
    Column("attempts", Integer, nullable=False, default=0),
    Column("max_attempts", Integer, nullable=False),
    Column("next_attempt_at", String(40), nullable=False),
    Column("lease_until", String(40)),
    Column("claimed_by", String(128)),
    Column("created_at", String(40), nullable=False),
    Column("updated_at", String(40), nullable=False),
    Column("delivered_at", String(40)),
    Column("last_status", Integer),
    Column("last_error", Text),
    Column("result", Text),  # e.g. the Location the destination returned
    UniqueConstraint("dedupe_key", name="uq_outbox_dedupe"),
)
Index("ix_outbox_state_next", outbox.c.state, outbox.c.next_attempt_at)
Index("ix_outbox_resource", outbox.c.resource_type, outbox.c.resource_id)

outbox_attempts = Table(
    "outbox_attempts", metadata,
    Column("id", PK, primary_key=True, autoincrement=True),
    Column("job_id", PK, nullable=False),
    Column("attempt", Integer, nullable=False),
    Column("worker", String(128), nullable=False),
    Column("started_at", String(40), nullable=False),
    Column("finished_at", String(40), nullable=False),
    Column("outcome", String(16), nullable=False),  # delivered | retry | dead
    Column("status", Integer),
    Column("error", Text),
)
Index("ix_outbox_attempts_job", outbox_attempts.c.job_id)


# The concept hierarchy a registry record carries (ClinicalTrials.gov MeSH terms and their ancestors), kept by the
# resource the record was stored as, in the record's transaction. Each process's matching state reads it for the
# studies it indexes, so every terminology learns it, whichever process imported the record.
registry_hierarchy = Table(
    "registry_hierarchy", metadata,
    Column("res_type", String(64), primary_key=True),
    Column("res_id", String(64), primary_key=True),
    Column("entries", Text, nullable=False),  # JSON: [{system, code, display, ancestors: [codes]}]
    Column("updated_at", String(40), nullable=False),
)


# Full-text and place search (gateway.store.fulltext, migration 6). One row per ResearchStudy (``search_text``,
# holding the eligibility text of the Groups it enrols since migration 10: one engine match and one relevance per
# study) and per placed Location (``search_geo``), written with the resource's other index rows in its
# write transaction. The engines' own indexes sit on top: SQLite an FTS5 table kept by triggers, PostgreSQL a
# generated tsvector column with a GIN index (DDL in fulltext.py). ``search_words``: the words of titles,
# conditions and keywords, for correcting misspelt query words (PostgreSQL: pg_trgm).
search_text = Table(
    "search_text", metadata,
    Column("res_pk", PK, primary_key=True, autoincrement=False),
    Column("rtype", String(64), nullable=False),
    Column("ref", String(160), nullable=False),  # "ResearchStudy/<id>"
    Column("title", Text),
    Column("conditions", Text),
    Column("keywords", Text),
    Column("concepts", Text),  # terminology concept tokens (zc.../zs...), see fulltext.concept_tokens
    Column("description", Text),
    Column("eligibility", Text),
)

search_geo = Table(
    "search_geo", metadata,
    Column("res_pk", PK, primary_key=True, autoincrement=False),
    Column("ref", String(160), nullable=False),  # "Location/<id>": joined to ResearchStudy:site
    Column("lat", Float, nullable=False),
    Column("lon", Float, nullable=False),
    Column("site_status", String(32)),  # site-recruitment-status extension, when present
    # the point on the unit sphere (migration 8): the database measures great-circle distance with arithmetic
    Column("x", Float),
    Column("y", Float),
    Column("z", Float),
)
Index("ix_search_geo_lat", search_geo.c.lat, search_geo.c.lon)
Index("ix_search_geo_ref", search_geo.c.ref)

# One row per (study, placed site), rebuilt with the study and with its Locations (gateway.store.fulltext
# ``refresh_sites``, migration 11): a place search reads the sites in its circle with their study and whether they
# recruit, without a look-up per site of the study that names it (an exact count over a 50 km circle in a city
# reads every one of its tens of thousands of sites).
search_sites = Table(
    "search_sites", metadata,
    Column("study_pk", PK, primary_key=True, autoincrement=False),
    Column("site_pk", PK, primary_key=True, autoincrement=False),
    Column("site_ref", String(160), nullable=False),  # "Location/<id>"
    Column("lat", Float, nullable=False),
    Column("lon", Float, nullable=False),
    Column("x", Float),
    Column("y", Float),
    Column("z", Float),
    # the site-recruitment-status says recruiting, or (without one) the study is active
    Column("recruiting", Boolean, nullable=False),
)
Index("ix_search_sites_lat", search_sites.c.lat, search_sites.c.lon)
Index("ix_search_sites_site", search_sites.c.site_pk)

search_words = Table(
    "search_words", metadata,
    Column("word", String(64), primary_key=True),
)

# The patient side of matching (gateway.store.profiles, migration 7): one compact row per person, rebuilt in the
# write transaction of any record about them, so no process holds a per-person index. ``match_people``: what the
# candidate queries filter on (sex, birth date, deceased, consent state, NHS number for the opt-out) and the
# profile the engine evaluates (``doc``, JSON); ``match_codes``: every concept a person's active conditions are a
# kind of (and their normalised condition texts), probed with a study's required codes; ``match_patients`` and
# ``match_records``: which Patient records make a person and which records are about each Patient.
match_people = Table(
    "match_people", metadata,
    Column("person", String(96), primary_key=True),  # 'nhs:<number>' or 'Patient/<id>'
    Column("nhs_number", String(32)),
    Column("birth_date", String(10)),  # ISO date, None unknown
    Column("sex", String(16)),
    Column("deceased", Boolean, nullable=False),
    Column("no_condition", Boolean, nullable=False),  # no active condition: a possible healthy volunteer
    Column("alerts_only", Boolean, nullable=False),  # only alerts-only Patients: no clinical data shared
    # consent state: the latest research Consent speaking to the purpose is an active permit (its period and
    # nested denies are checked on the rows found, as time passes; consent.decide is the rule)
    Column("alerts_consent", Boolean, nullable=False),
    Column("research_consent", Boolean, nullable=False),
    Column("lat", Float),
    Column("lon", Float),
    Column("seq", PK, nullable=False),  # the change-feed position the row was built at
    Column("doc", Text, nullable=False),  # the PatientProfile, JSON (gateway.matching.profile.profile_doc)
)
Index("ix_match_people_research", match_people.c.research_consent, match_people.c.person)
Index("ix_match_people_alerts", match_people.c.alerts_consent, match_people.c.person)
Index("ix_match_people_nhs", match_people.c.nhs_number)
Index("ix_match_people_blank", match_people.c.no_condition, match_people.c.person)

match_codes = Table(
    "match_codes", metadata,
    Column("code", String(255), primary_key=True),  # 'system|code', or 'text:<normalised text>'
    Column("person", String(96), primary_key=True),
)
Index("ix_match_codes_person", match_codes.c.person)

match_patients = Table(
    "match_patients", metadata,
    Column("patient_id", String(64), primary_key=True),
    Column("person", String(96), nullable=False),
)
Index("ix_match_patients_person", match_patients.c.person)

match_records = Table(
    "match_records", metadata,
    Column("type", String(64), primary_key=True),
    Column("id", String(64), primary_key=True),
    Column("patient_id", String(64), nullable=False),
)
Index("ix_match_records_patient", match_records.c.patient_id)

PROFILE_TABLES = (match_people, match_codes, match_patients, match_records)

# The study side of matching, pre-computed (gateway.store.study_rows, migration 9): one row per ResearchStudy with
# what the StudyIndex needs (the extracted criteria, the recruiting sites' positions, the status), rebuilt in the
# write transaction of the study, its eligibility Group or a site Location, so that a process builds its index
# from these rows instead of re-extracting every study. ``seq``: the change-feed position the row was built at (a
# refresh reads the rows built since its last one); ``doc`` NULL: the study was deleted (a tombstone).
match_studies = Table(
    "match_studies", metadata,
    Column("study_id", String(64), primary_key=True),
    Column("version", Integer, nullable=False),  # the ResearchStudy version the row was built from
    Column("status", String(32), nullable=False),
    Column("seq", PK, nullable=False),
    Column("format", Integer, nullable=False),  # criteria.DOC_FORMAT: rows of another format are re-derived
    Column("doc", Text),  # criteria.criteria_doc (JSON); NULL: deleted
    # what the index files the study under without decoding ``doc`` (criteria.index_keys_doc: JSON [codes, texts,
    # kind of study for people with no condition]); NULL: deleted
    Column("index_keys", Text),
    Column("healthy", Boolean, nullable=False),  # accepts healthy volunteers
)
Index("ix_match_studies_seq", match_studies.c.seq)

match_study_refs = Table(
    "match_study_refs", metadata,
    Column("type", String(16), primary_key=True),  # Group | Location
    Column("id", String(64), primary_key=True),
    Column("study_id", String(64), primary_key=True),
)
Index("ix_match_study_refs_study", match_study_refs.c.study_id)

STUDY_TABLES = (match_studies, match_study_refs)

# Index tables beside INDEX_TABLES (which migration 1 creates): cleared and written the same way.
SEARCH_TABLES = {"text": search_text, "geo": search_geo}


def _v1(engine: Engine) -> None:
    metadata.create_all(engine, tables=[resources, resource_versions, *INDEX_TABLES.values(), changes,
                                        counters])
    with engine.begin() as conn:
        if conn.execute(select(counters.c.name).where(counters.c.name == "changes")).first() is None:
            conn.execute(insert(counters).values(name="changes", value=0))


def _v2(engine: Engine) -> None:
    metadata.create_all(engine, tables=[feed_cursors, subscription_state, subscription_events, match_notices])


def _v3(engine: Engine) -> None:
    metadata.create_all(engine, tables=[used_jtis])


def _v4(engine: Engine) -> None:
    metadata.create_all(engine, tables=[outbox, outbox_attempts])


def _v5(engine: Engine) -> None:
    metadata.create_all(engine, tables=[registry_hierarchy])


def _v6(engine: Engine) -> None:
    from gateway.store import fulltext  # the engines' full-text DDL and the back-fill of stored resources

    metadata.create_all(engine, tables=[search_text, search_geo, search_words])
    fulltext.create_engine_indexes(engine)
    fulltext.backfill(engine)


def _v7(engine: Engine) -> None:
    # Empty: the matching state fills them from the change feed on its first refresh (profiles.catch_up).
    metadata.create_all(engine, tables=list(PROFILE_TABLES))


def _v8(engine: Engine) -> None:
    from gateway.store import fulltext  # fills the new columns from lat / lon

    have = {c["name"] for c in inspect(engine).get_columns("search_geo")}
    with engine.begin() as conn:
        for name in ("x", "y", "z"):
            if name not in have:  # a database made by migration 6 after this column was declared has it
                conn.execute(text(f"ALTER TABLE search_geo ADD COLUMN {name} FLOAT"))
    fulltext.fill_unit_vectors(engine)


def _v9(engine: Engine) -> None:
    # Empty: the matching state fills them from the change feed on its first refresh (studies.StudyRows.catch_up).
    metadata.create_all(engine, tables=list(STUDY_TABLES))


def _v10(engine: Engine) -> None:
    from gateway.store import fulltext  # one full-text row per study: the Groups' text moves into their studies' rows

    with engine.begin() as conn:  # they mapped Group rows to their studies (migration 6); no query needs them now
        for name in ("ix_search_text_ref", "ix_search_text_doc"):
            conn.execute(text(f"DROP INDEX IF EXISTS {name}"))
    fulltext.merge_study_rows(engine)


def _v11(engine: Engine) -> None:
    from gateway.store import fulltext  # the sites of every stored study, from its index rows

    metadata.create_all(engine, tables=[search_sites])
    fulltext.backfill_sites(engine)


# Ordered migrations: (version, step). Append, never edit a released step.
MIGRATIONS: list[tuple[int, Callable[[Engine], None]]] = [(1, _v1), (2, _v2), (3, _v3), (4, _v4), (5, _v5),
                                                          (6, _v6), (7, _v7), (8, _v8),
                                                          (9, _v9), (10, _v10), (11, _v11)]


def current_version(engine: Engine) -> int:
    schema_version.create(engine, checkfirst=True)
    with engine.connect() as conn:
        return conn.execute(text("SELECT COALESCE(MAX(version), 0) FROM schema_version")).scalar_one()


def migrate(engine: Engine) -> list[int]:
    """Apply missing migrations; return the versions applied (empty when up to date)."""
    have = current_version(engine)
    applied = []
    for version, step in MIGRATIONS:
        if version > have:
            step(engine)
            with engine.begin() as conn:
                conn.execute(insert(schema_version).values(version=version, applied_at=now_iso()))
            applied.append(version)
    return applied
