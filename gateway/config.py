"""Configuration, read only from the environment (GATEWAY_*). No secret has a default."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

DEFAULT_INSTANCE = Path(os.environ.get("GATEWAY_INSTANCE_PATH", "instance"))


def _int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise SystemExit(f"{name} must be an integer, got {raw!r}") from None


def _bool(name: str, default: bool = False) -> bool:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    return raw.strip().lower() in {"1", "true", "yes", "on"}


@dataclass
class Settings:
    """Everything that varies by deployment. ``Settings.from_env()`` is the only reader of os.environ."""

    database_url: str = ""
    instance_path: Path = field(default_factory=lambda: DEFAULT_INSTANCE)
    base_url: str | None = None  # public base of the FHIR endpoint, e.g. https://gw.example.org/fhir
    max_body_bytes: int = 10 * 1024 * 1024
    max_bundle_entries: int = 1000
    max_json_depth: int = 64
    default_count: int = 20
    max_count: int = 1000
    mappings_path: Path = Path("mappings")
    insecure_dev: bool = False
    sql_echo: bool = False

    @classmethod
    def from_env(cls) -> Settings:
        instance = Path(os.environ.get("GATEWAY_INSTANCE_PATH", "instance"))
        url = os.environ.get("GATEWAY_DATABASE_URL") or f"sqlite:///{(instance / 'gateway.sqlite3').resolve()}"
        return cls(
            database_url=url,
            instance_path=instance,
            base_url=os.environ.get("GATEWAY_BASE_URL") or None,
            max_body_bytes=_int("GATEWAY_MAX_BODY_BYTES", 10 * 1024 * 1024),
            max_bundle_entries=_int("GATEWAY_MAX_BUNDLE_ENTRIES", 1000),
            max_json_depth=_int("GATEWAY_MAX_JSON_DEPTH", 64),
            default_count=_int("GATEWAY_DEFAULT_COUNT", 20),
            max_count=_int("GATEWAY_MAX_COUNT", 1000),
            mappings_path=Path(os.environ.get("GATEWAY_MAPPINGS_PATH", "mappings")),
            insecure_dev=_bool("GATEWAY_INSECURE_DEV"),
            sql_echo=_bool("GATEWAY_SQL_ECHO"),
        )
