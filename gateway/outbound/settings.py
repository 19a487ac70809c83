"""Outbound settings, read from GATEWAY_* environment variables in one place (``OutboundSettings.from_env``).

Secrets named by hospital files (bearer tokens, private keys) are not read here: they are read
from the environment only when a request needs them, so they never reach the database or logs.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from gateway.outbound.allowlist import AllowList


def _num(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        return float(raw)
    except ValueError:
        raise SystemExit(f"{name} must be a number, got {raw!r}") from None


@dataclass
class OutboundSettings:
    allowed_hosts: AllowList = field(default_factory=AllowList)
    hospitals_path: Path = Path("mappings/hospitals")
    contact_id_key: str | None = None  # GATEWAY_CONTACT_ID_KEY: HMAC key of contact-request identifiers
    max_attempts: int = 8  # outbox attempts before a job is dead
    backoff_base: float = 2.0  # seconds; attempt n waits base * 2**(n-1), with jitter, capped
    backoff_max: float = 600.0
    lease_seconds: float = 60.0  # a claimed job not finished by then is claimed again (crashed worker)
    poll_seconds: float = 0.25  # idle wait between claims; bounds commit -> delivery latency when idle
    client_retries: int = 2  # retries inside one client call (interactive pulls); the worker uses 0
    env: Mapping[str, str] = field(default_factory=dict)  # where named secrets are looked up

    @classmethod
    def from_env(cls, mappings_path: Path | None = None, env: Mapping[str, str] | None = None) -> OutboundSettings:
        env = os.environ if env is None else env
        mappings = Path(env.get("GATEWAY_MAPPINGS_PATH", "mappings")) if mappings_path is None else mappings_path
        return cls(
            allowed_hosts=AllowList.parse(env.get("GATEWAY_ALLOWED_HOSTS")),
            hospitals_path=Path(env.get("GATEWAY_HOSPITALS_PATH") or mappings / "hospitals"),
            contact_id_key=env.get("GATEWAY_CONTACT_ID_KEY") or None,
            max_attempts=int(_num(env, "GATEWAY_OUTBOX_MAX_ATTEMPTS", 8)),
            backoff_base=_num(env, "GATEWAY_OUTBOX_BACKOFF_BASE", 2.0),
            backoff_max=_num(env, "GATEWAY_OUTBOX_BACKOFF_MAX", 600.0),
            lease_seconds=_num(env, "GATEWAY_OUTBOX_LEASE_SECONDS", 60.0),
            poll_seconds=_num(env, "GATEWAY_WORKER_POLL_SECONDS", 0.25),
            client_retries=int(_num(env, "GATEWAY_OUTBOUND_RETRIES", 2)),
            env=env,
        )
