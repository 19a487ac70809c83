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

PG_URL = os.environ.get("GATEWAY_TEST_DATABASE_URL")
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


@pytest.fixture(params=BACKENDS)
def db_url(request, tmp_path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'gateway.sqlite3'}"
    reset_postgres(PG_URL)
    return PG_URL


@pytest.fixture
def settings(db_url, tmp_path) -> Settings:
    return Settings(store=StoreSettings(db_url), instance_path=tmp_path, mappings_path=ROOT / "mappings")


@pytest.fixture
def app(settings):
    application = create_app(settings)
    application.config["TESTING"] = True
    yield application
    application.extensions["gateway.store"].engine.dispose()


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
