"""What the benchmarks that build the gateway share: its settings, read the gateway's way (gateway/config.py)."""

from __future__ import annotations

import sys
from pathlib import Path

from sqlalchemy.engine import make_url

from gateway.config import Settings


def settings_from_env(who: str) -> Settings:
    """The gateway's settings from the environment (GATEWAY_DATABASE_URL and the rest), refusing the default
    database: a benchmark fills its database with generated people, so it must be named on purpose."""
    settings = Settings.from_env()
    url = make_url(settings.store.database_url)
    default = (settings.instance_path / "gateway.sqlite3").resolve()
    if url.get_backend_name() == "sqlite" and url.database and Path(url.database).resolve() == default:
        sys.exit(f"{who}: set GATEWAY_DATABASE_URL to a database of its own (PostgreSQL for the figures, e.g. "
                 "postgresql+psycopg://postgres@127.0.0.1:5432/bench; or sqlite:////tmp/bench.sqlite3): it fills "
                 "the database with generated studies and people")
    return settings


def backend(settings: Settings) -> str:
    """'postgresql (database bench on 127.0.0.1)' or 'sqlite (/tmp/x.sqlite3)': never a user name or password."""
    url = make_url(settings.store.database_url)
    if url.get_backend_name() == "sqlite":
        return f"sqlite ({url.database})"
    return f"{url.get_backend_name()} (database {url.database} on {url.host or 'localhost'})"
