"""gunicorn settings for the container image (``gunicorn -c python:gateway.gunicorn_conf ...``).

The same bind rule as ``gateway serve``: with no clients configured, the gateway is in development mode
(every caller is the administrator), so a non-loopback bind refuses to start unless GATEWAY_INSECURE_DEV=true.

Logs: gunicorn's access log is off (it writes full query strings, i.e. NHS numbers); the app writes one redacted
JSON line per request, and gunicorn's own messages go through the same JSON formatter (``logconfig_dict``).

Settings are read once, when gunicorn loads this file (``SETTINGS``); ``create_app()`` in each worker reads the same
environment. Metrics: prometheus-client's multiprocess mode. ``PROMETHEUS_MULTIPROC_DIR`` (a folder private to
this server) is passed to every process (``raw_env``); a folder of its own under the temporary folder when it is
not set. It is
emptied at start-up and a dead worker's files are marked, so ``/metrics`` in any worker adds up all of them.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from gateway.compose import check_data_files
from gateway.config import Settings
from gateway.observability.logs import gunicorn_logconfig
from gateway.security.clients import load_clients
from gateway.security.devmode import check_bind
from gateway.store.engine import make_engine
from gateway.store.schema import migrate


def _default_metrics_dir() -> str:
    """A folder private to this gunicorn master (its pid), created in ``on_starting``."""
    return str(Path(tempfile.gettempdir()) / f"gateway-prometheus-{os.getpid()}")


SETTINGS = Settings.from_env()  # read once, in the master, when gunicorn loads this file
bind = SETTINGS.server.bind
workers = SETTINGS.server.workers
threads = SETTINGS.server.threads
accesslog = None  # never gunicorn's access line (full query strings); the app logs each request, redacted
disable_redirect_access_to_syslog = True
logconfig_dict = gunicorn_logconfig(SETTINGS.observability.log_level)

# gunicorn applies raw_env before it loads the app (also with preload_app), so every process sees the folder
# before prometheus-client's first import; importing this module changes nothing in the importing process.
METRICS_DIR = SETTINGS.observability.prometheus_multiproc_dir or _default_metrics_dir()
raw_env = [f"PROMETHEUS_MULTIPROC_DIR={METRICS_DIR}"]


def on_starting(server) -> None:
    start_checks(server, SETTINGS, Path(METRICS_DIR))


def start_checks(server, settings: Settings, metrics_dir: Path | None = None) -> None:
    """Before any worker starts: the data files load (else one line each, and exit code 1), the bind rule of
    development mode, the schema migrated once, the metrics folder emptied."""
    problems = [line for found in check_data_files(settings).values() for line in found]
    for line in problems:  # a broken client, hospital, topic... file: say which and where, do not start
        server.log.error("%s", line)
    if problems:
        raise SystemExit(1)
    configured = bool(load_clients(settings.security.clients_path))
    for address in server.cfg.bind:
        host = address.rsplit(":", 1)[0] if ":" in address else address
        for line in check_bind(host, configured, settings.security.insecure_dev):
            server.log.warning(line)
    # Migrate once here, in the master, before any worker starts: workers that each migrate a fresh database at
    # the same time race (SQLite answers "database is locked" to all but one).
    engine = make_engine(settings.store.database_url)
    try:
        migrate(engine)
    finally:
        engine.dispose()
    if metrics_dir is not None:
        metrics_dir.mkdir(parents=True, exist_ok=True)
        for stale in metrics_dir.glob("*.db"):  # counters of a previous run would be added to this one's
            stale.unlink()


def child_exit(server, worker) -> None:
    """A worker process ended: its live gauges stop counting (its counters and histograms are kept)."""
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)
