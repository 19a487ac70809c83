"""Development mode (no clients configured): loopback only, unless GATEWAY_INSECURE_DEV=true says otherwise."""

from __future__ import annotations

import ipaddress

DEV_WARNING = ("WARNING: no clients are configured (GATEWAY_CLIENTS_PATH): development mode, every request "
               "without a token acts as the local administrator. Configure clients before exposing the gateway.")


def is_loopback(host: str) -> bool:
    """'127.0.0.1', '::1', 'localhost' -> True; '0.0.0.0', '10.1.2.3' -> False."""
    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_bind(host: str, clients_configured: bool, insecure_dev: bool) -> list[str]:
    """Warnings to print before serving; SystemExit when a non-loopback bind has no clients and no opt-in."""
    if clients_configured:
        return []
    if is_loopback(host):
        return [DEV_WARNING]
    if not insecure_dev:
        raise SystemExit(f"refusing to bind {host}: no clients are configured, so every caller would be an "
                         "administrator. Configure clients (GATEWAY_CLIENTS_PATH), bind 127.0.0.1, or set "
                         "GATEWAY_INSECURE_DEV=true to accept the risk.")
    return [DEV_WARNING, f"WARNING: GATEWAY_INSECURE_DEV=true: serving {host} without authentication; every "
            "response carries a Warning header."]
