"""Shared fixtures: ``db_url`` (SQLite always; PostgreSQL too when GATEWAY_TEST_DATABASE_URL is set),
``app``, ``client``, ``store``, ``service`` and ``runner``."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from sqlalchemy import insert, text

from gateway.api.app import create_app
from gateway.config import Settings, StoreSettings
from gateway.store import schema
from gateway.store.engine import make_engine
from gateway.store.interactions import FhirService
from gateway.store.repo import Store

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "tests" / "data"



def _worker_database(url: str | None) -> str | None:
    """Under pytest-xdist (the suite runs one worker per core) each worker gets its own PostgreSQL database,
    ``<name>_<worker>``, created when missing, so that one worker never empties the tables another is using."""
    worker = os.environ.get("PYTEST_XDIST_WORKER")
    if not url or not worker:
        return url
    from sqlalchemy import create_engine
    from sqlalchemy.engine import make_url

    base = make_url(url)
    name = f"{base.database}_{worker}"
    admin = create_engine(base, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            if conn.execute(text("SELECT 1 FROM pg_database WHERE datname = :n"), {"n": name}).first() is None:
                conn.execute(text(f'CREATE DATABASE "{name}"'))
    finally:
        admin.dispose()
    return base.set(database=name).render_as_string(hide_password=False)


PG_URL = _worker_database(os.environ.get("GATEWAY_TEST_DATABASE_URL"))
BACKENDS = ["sqlite"] + (["postgresql"] if PG_URL else [])


def reset_postgres(url: str) -> None:
    """Empty every table the gateway owns (faster than dropping and recreating them)."""
    engine = make_engine(url)
    schema.migrate(engine)
    names = [t.name for t in schema.metadata.sorted_tables if t.name != "schema_version"]
    with engine.begin() as conn:
        existing = set(conn.execute(text(
            "SELECT tablename FROM pg_tables WHERE schemaname = current_schema()")).scalars())
        names = [n for n in names if n in existing]
        if names:
            conn.execute(text(f"TRUNCATE {', '.join(names)} RESTART IDENTITY CASCADE"))
        conn.execute(insert(schema.counters).values(name="changes", value=0))
    engine.dispose()


def database_url(backend: str, folder: Path) -> str:
    """``"sqlite"``: a new SQLite file in ``folder``; ``"postgresql"``: the test PostgreSQL database, emptied."""
    if backend == "sqlite":
        return f"sqlite:///{Path(folder) / 'gateway.sqlite3'}"
    reset_postgres(PG_URL)
    return PG_URL


def settings_for(url: str, folder: Path) -> Settings:
    return Settings(store=StoreSettings(url), instance_path=folder, mappings_path=ROOT / "mappings")


def app_for(settings: Settings):
    """The Flask app of ``settings`` in testing mode (dispose its engine when done: ``dispose_app``)."""
    application = create_app(settings)
    application.config["TESTING"] = True
    return application


def dispose_app(application) -> None:
    application.extensions["gateway.store"].engine.dispose()


@pytest.fixture(params=BACKENDS)
def db_url(request, tmp_path) -> str:
    return database_url(request.param, tmp_path)


@pytest.fixture
def settings(db_url, tmp_path) -> Settings:
    return settings_for(db_url, tmp_path)


@pytest.fixture
def app(settings):
    application = app_for(settings)
    yield application
    dispose_app(application)


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def runner(app):
    return app.test_cli_runner()


@pytest.fixture
def store(app) -> Store:
    return app.extensions["gateway.store"]


@pytest.fixture
def service(app) -> FhirService:
    return app.extensions["gateway.service"]


FHIR_JSON = {"Content-Type": "application/fhir+json", "Accept": "application/fhir+json"}
