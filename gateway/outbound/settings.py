"""Outbound settings: the ``outbound`` branch of the settings tree (built by ``gateway.config.Settings``).

Secrets named by hospital files (bearer tokens, private keys) are looked up in ``env``, the environment
snapshot the settings were read from, only when a request needs them, so they never reach the database or logs.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from gateway.outbound.allowlist import AllowList


@dataclass(frozen=True)
class OutboundSettings:
    allowed_hosts: AllowList = field(default_factory=AllowList)  # GATEWAY_ALLOWED_HOSTS
    hospitals_path: Path | None = None  # GATEWAY_HOSPITALS_PATH; None: no hospital files (Settings resolves it)
    contact_id_key: str | None = None  # GATEWAY_CONTACT_ID_KEY: HMAC key of contact-request identifiers
    max_attempts: int = 8  # outbox attempts before a job is dead
    backoff_base: float = 2.0  # seconds; attempt n waits base * 2**(n-1), with jitter, capped
    backoff_max: float = 600.0
    lease_seconds: float = 60.0  # a claimed job not finished by then is claimed again (crashed worker)
    poll_seconds: float = 0.25  # idle wait between claims; bounds commit -> delivery latency when idle
    client_retries: int = 2  # retries inside one client call (interactive pulls); the worker uses 0
    env: Mapping[str, str] = field(default_factory=dict)  # where secrets named by hospital files are looked up
