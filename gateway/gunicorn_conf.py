"""gunicorn settings for the container image (``gunicorn -c python:gateway.gunicorn_conf ...``).

The same bind rule as ``gateway serve``: with no clients configured, the gateway is in development mode
(every caller is the administrator), so a non-loopback bind refuses to start unless GATEWAY_INSECURE_DEV=true.
"""

from __future__ import annotations

import os

from gateway.config import Settings
from gateway.security.clients import load_clients
from gateway.security.devmode import check_bind

bind = os.environ.get("GATEWAY_BIND", "0.0.0.0:8080")
workers = int(os.environ.get("GATEWAY_WORKERS", "2"))
threads = int(os.environ.get("GATEWAY_THREADS", "4"))
accesslog = "-"


def on_starting(server) -> None:
    settings = Settings.from_env()
    configured = bool(load_clients(settings.clients_path))
    for address in server.cfg.bind:
        host = address.rsplit(":", 1)[0] if ":" in address else address
        for line in check_bind(host, configured, settings.insecure_dev):
            server.log.warning(line)
