"""gunicorn settings for the container image (``gunicorn -c python:gateway.gunicorn_conf ...``).

The same bind rule as ``gateway serve``: with no clients configured, the gateway is in development mode
(every caller is the administrator), so a non-loopback bind refuses to start unless GATEWAY_INSECURE_DEV=true.

Logs: gunicorn's access log is off (it writes full query strings, i.e. NHS numbers); the app writes one redacted
JSON line per request, and gunicorn's own messages go through the same JSON formatter (``logconfig_dict``).

Metrics: prometheus-client's multiprocess mode. ``PROMETHEUS_MULTIPROC_DIR`` (a folder private to this server)
is passed to every process (``raw_env``); a folder of its own under the temporary folder when it is not set. It is
emptied at start-up and a dead worker's files are marked, so ``/metrics`` in any worker adds up all of them.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from gateway.config import Settings
from gateway.observability.logs import gunicorn_logconfig
from gateway.security.clients import ClientConfigError, load_clients
from gateway.security.devmode import check_bind
from gateway.store.engine import make_engine
from gateway.store.schema import migrate


def _default_metrics_dir() -> str:
    """A folder private to this gunicorn master (its pid), created in ``on_starting``."""
    return str(Path(tempfile.gettempdir()) / f"gateway-prometheus-{os.getpid()}")


bind = os.environ.get("GATEWAY_BIND", "0.0.0.0:8080")
workers = int(os.environ.get("GATEWAY_WORKERS", "2"))
threads = int(os.environ.get("GATEWAY_THREADS", "4"))
accesslog = None  # never gunicorn's access line (full query strings); the app logs each request, redacted
disable_redirect_access_to_syslog = True
logconfig_dict = gunicorn_logconfig(Settings.from_env().log_level)

# gunicorn applies raw_env before it loads the app (also with preload_app), so every process sees the folder
# before prometheus-client's first import; importing this module changes nothing in the importing process.
raw_env = [f"PROMETHEUS_MULTIPROC_DIR={os.environ.get('PROMETHEUS_MULTIPROC_DIR') or _default_metrics_dir()}"]


def on_starting(server) -> None:
    settings = Settings.from_env()
    try:
        configured = bool(load_clients(settings.clients_path))
    except ClientConfigError as exc:  # a configured client folder that is missing or invalid: do not start
        server.log.error("%s", exc)
        raise SystemExit(1) from None
    for address in server.cfg.bind:
        host = address.rsplit(":", 1)[0] if ":" in address else address
        for line in check_bind(host, configured, settings.insecure_dev):
            server.log.warning(line)
    # Migrate once here, in the master, before any worker starts: workers that each migrate a fresh database at
    # the same time race (SQLite answers "database is locked" to all but one).
    engine = make_engine(settings.database_url)
    try:
        migrate(engine)
    finally:
        engine.dispose()
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):  # set from raw_env by gunicorn before this hook
        folder = Path(os.environ["PROMETHEUS_MULTIPROC_DIR"])
        folder.mkdir(parents=True, exist_ok=True)
        for stale in folder.glob("*.db"):  # counters of a previous run would be added to this one's
            stale.unlink()


def child_exit(server, worker) -> None:
    """A worker process ended: its live gauges stop counting (its counters and histograms are kept)."""
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)
