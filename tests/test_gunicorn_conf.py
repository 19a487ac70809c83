"""The container's gunicorn refuses a public bind in development mode, like `gateway serve`."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from gateway import gunicorn_conf
from gateway.config import SecuritySettings, Settings, StoreSettings


class _Server:
    def __init__(self, *binds: str):
        self.cfg = type("Cfg", (), {"bind": list(binds)})()
        self.log = logging.getLogger("test.gunicorn")


def _settings(tmp_path, **kw) -> Settings:
    # an empty clients folder: no clients (development mode)
    return Settings(store=StoreSettings(f"sqlite:///{tmp_path / 'gw.sqlite3'}"),
                    security=SecuritySettings(clients_path=tmp_path, **kw))


def test_public_bind_without_clients_is_refused(tmp_path):
    with pytest.raises(SystemExit, match="refusing to bind 0.0.0.0"):
        gunicorn_conf.start_checks(_Server("0.0.0.0:8080"), _settings(tmp_path))


def test_loopback_or_explicit_opt_in_starts_with_a_warning(tmp_path, caplog):
    gunicorn_conf.start_checks(_Server("127.0.0.1:8080"), _settings(tmp_path))
    with caplog.at_level(logging.WARNING, logger="test.gunicorn"):
        gunicorn_conf.start_checks(_Server("0.0.0.0:8080"), _settings(tmp_path, insecure_dev=True))
    assert "GATEWAY_INSECURE_DEV=true" in caplog.text


def test_importing_the_configuration_changes_nothing_in_this_process():
    import os
    import sys

    assert gunicorn_conf.accesslog is None  # gunicorn's access line carries full query strings
    assert any(e.startswith("PROMETHEUS_MULTIPROC_DIR=") for e in gunicorn_conf.raw_env)
    assert "prometheus_client" not in sys.modules or os.environ.get("PROMETHEUS_MULTIPROC_DIR") is None
    fmt = gunicorn_conf.logconfig_dict["formatters"]["json"]["()"]
    assert fmt == "gateway.observability.logs.JsonFormatter"


def _request_pids(log: Path) -> set[int]:
    """The pids of the worker processes that logged a FHIR search so far."""
    pids = set()
    for x in log.read_text().splitlines():
        try:
            rec = json.loads(x)
        except ValueError:
            continue  # a line still being written
        if rec.get("logger") == "gateway.request" and rec.get("route") == "/fhir/<rtype>":
            pids.add(rec["pid"])
    return pids


def test_gunicorn_writes_json_lines_without_query_values_and_adds_up_metrics_of_every_worker(tmp_path):
    """The shipped configuration, run for real: 2 worker processes, the access log replaced by ours,
    /metrics in any worker counts the requests every worker answered (multiprocess mode)."""
    import requests

    from gateway.store.engine import make_engine
    from gateway.store.schema import migrate
    from tests.conftest import ROOT
    from tests.procs import free_port

    db = f"sqlite:///{tmp_path / 'gateway.sqlite3'}"
    engine = make_engine(db)
    migrate(engine)  # as the image's entry point does (`gateway db upgrade`) before the workers start
    engine.dispose()
    (tmp_path / "clients").mkdir()
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GATEWAY_", "PROMETHEUS_"))}
    env.update({"GATEWAY_BIND": f"127.0.0.1:{port}", "GATEWAY_DATABASE_URL": db, "GATEWAY_WORKERS": "2",
                "GATEWAY_INSTANCE_PATH": str(tmp_path), "GATEWAY_CLIENTS_PATH": str(tmp_path / "clients"),
                "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "prom")})
    out = (tmp_path / "gunicorn.log").open("wb")
    proc = subprocess.Popen([sys.executable, "-m", "gunicorn", "-c", "python:gateway.gunicorn_conf",
                             "gateway.api.app:create_app()"], env=env, stdout=out, stderr=subprocess.STDOUT,
                            cwd=ROOT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 40
        while True:
            try:
                if requests.get(f"{base}/readyz", timeout=30).status_code == 200:
                    break
            except requests.ConnectionError:
                pass
            assert time.monotonic() < deadline and proc.poll() is None, (tmp_path / "gunicorn.log").read_text()
            time.sleep(0.2)
        nhs = "9449306060"
        sent = 0
        # Batches of 20, each request on a fresh connection, until both workers have answered some: which worker
        # accepts a connection is up to the kernel, and on a busy machine one worker can take a whole batch.
        while sent < 400 and len(_request_pids(tmp_path / "gunicorn.log")) < 2:
            for _ in range(20):
                r = requests.get(f"{base}/fhir/Patient",
                                 params={"identifier": f"https://fhir.nhs.uk/Id/nhs-number|{nhs}"},
                                 headers={"X-Request-ID": "gunicorn-test"}, timeout=10)
                assert r.status_code == 200 and r.headers["X-Request-ID"] == "gunicorn-test"
            sent += 20
            time.sleep(0.2)  # let the log lines reach the file
        text = requests.get(f"{base}/metrics", timeout=10).text
        line = next(x for x in text.splitlines() if x.startswith("gateway_http_requests_total{")
                    and 'route="/fhir/<rtype>"' in x and 'status="200"' in x)
        assert float(line.rsplit(" ", 1)[1]) == sent
    finally:
        proc.terminate()
        proc.wait(timeout=20)
        out.close()
    lines = [x for x in (tmp_path / "gunicorn.log").read_text().splitlines() if x.strip()]
    records = [json.loads(x) for x in lines]  # every line is one JSON object
    assert nhs not in "\n".join(lines)
    requests_logged = [r for r in records if r["logger"] == "gateway.request" and r.get("route") == "/fhir/<rtype>"]
    assert len(requests_logged) == sent
    assert {r["request_id"] for r in requests_logged} == {"gunicorn-test"}
    assert {r["path"] for r in requests_logged} == {"/fhir/Patient?identifier=<redacted>"}
    assert len({r["pid"] for r in requests_logged}) == 2, "both workers answered; /metrics added their counts"
