"""The settings tree (gateway/config.py): the one reader of the environment, read once, checked at start-up; data
files checked the same way (one line naming the file and the field, exit code 1); data shipped as package data."""

from __future__ import annotations

import ast
import glob
import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from gateway.config import Settings
from gateway.datafiles import BUNDLED_MAPPINGS, bundled
from tests.conftest import ROOT

GATEWAY = ROOT / "gateway"


# -- one reader of the environment -----------------------------------------------------------------
def _environment_reads(path: Path) -> list[str]:
    """Places in one module that read the process environment: os.environ, os.getenv, os.environb, and the
    same names imported from os."""
    tree = ast.parse(path.read_text(), str(path))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "os" \
                and node.attr in ("environ", "environb", "getenv", "getenvb"):
            found.append(f"{path.relative_to(ROOT)}:{node.lineno}: os.{node.attr}")
        if isinstance(node, ast.ImportFrom) and node.module == "os":
            found += [f"{path.relative_to(ROOT)}:{node.lineno}: from os import {a.name}" for a in node.names
                      if a.name in ("environ", "environb", "getenv", "getenvb")]
    return found


def test_no_module_outside_config_reads_the_environment():
    modules = sorted(GATEWAY.rglob("*.py"))
    assert len(modules) > 50
    reads = [r for m in modules if m != GATEWAY / "config.py" for r in _environment_reads(m)]
    assert reads == [], "read settings through gateway.config.Settings, passed down:\n" + "\n".join(reads)
    assert _environment_reads(GATEWAY / "config.py")  # the scan does see a read


# -- the tree -------------------------------------------------------------------------------------
def test_every_branch_is_read_from_the_environment_once(tmp_path):
    env = {"GATEWAY_DATABASE_URL": "sqlite:///x.db", "GATEWAY_BASE_URL": "https://gw.example.org/fhir",
           "GATEWAY_ALLOWED_HOSTS": "a.example.org, b.example.org:8443", "GATEWAY_HOSPITALS_PATH": str(tmp_path),
           "GATEWAY_OUTBOX_MAX_ATTEMPTS": "4", "GATEWAY_OUTBOX_BACKOFF_BASE": "0.5", "GATEWAY_OUTBOUND_RETRIES": "1",
           "GATEWAY_SUBSCRIPTION_ERROR_AFTER": "5", "GATEWAY_NATIONAL_OPTOUT": "/data/optout.txt",
           "GATEWAY_LOG_LEVEL": "debug", "GATEWAY_WORKER_METRICS_PORT": "9101", "PROMETHEUS_MULTIPROC_DIR": "/tmp/p",
           "GATEWAY_BIND": "127.0.0.1:9000", "GATEWAY_WORKERS": "3", "GATEWAY_THREADS": "8",
           "GATEWAY_READ_DATABASE_URL": "sqlite:///replica.db", "LEEDS_TOKEN": "t"}
    s = Settings.from_env(env)
    assert s.store.database_url == "sqlite:///x.db" and s.store.read_database_url == "sqlite:///replica.db"
    assert s.outbound.allowed_hosts.allows("https://b.example.org:8443/fhir")
    assert not s.outbound.allowed_hosts.allows("https://c.example.org/fhir")
    assert (s.outbound.hospitals_path, s.outbound.max_attempts, s.outbound.backoff_base, s.outbound.client_retries) \
        == (tmp_path, 4, 0.5, 1)
    assert s.outbound.env["LEEDS_TOKEN"] == "t"  # secrets named by hospital files are looked up here
    assert (s.notify.subscription_error_after, s.notify.national_optout) == (5, "/data/optout.txt")
    assert (s.observability.log_level, s.observability.worker_metrics_port,
            s.observability.prometheus_multiproc_dir) == ("DEBUG", 9101, "/tmp/p")
    assert (s.server.bind, s.server.workers, s.server.threads) == ("127.0.0.1:9000", 3, 8)
    env["GATEWAY_OUTBOX_MAX_ATTEMPTS"] = "9"
    env["LEEDS_TOKEN"] = "changed"
    assert s.outbound.max_attempts == 4 and s.outbound.env["LEEDS_TOKEN"] == "t"  # a snapshot, never re-read


def test_defaults_need_no_environment():
    s = Settings.from_env({})
    assert s.mappings_path == BUNDLED_MAPPINGS and (BUNDLED_MAPPINGS / "ctgov-v2.yaml").is_file()
    assert s.base_url is None and s.outbound.allowed_hosts.entries == ()
    assert s.outbound_settings().hospitals_path == BUNDLED_MAPPINGS / "hospitals"
    assert (s.server.bind, s.server.workers, s.server.threads) == ("0.0.0.0:8080", 2, 4)
    assert s.notify.subscription_error_after == 3 and s.observability.log_level == "INFO"


def test_the_store_security_and_sign_in_branches(tmp_path):
    """Every environment variable keeps its name; the values land in their branch."""
    env = {"GATEWAY_SQL_ECHO": "1", "GATEWAY_CLIENTS_PATH": str(tmp_path), "GATEWAY_TOKEN_SIGNING_KEY": "pem",
           "GATEWAY_IDP_JWKS_URL": "https://idp.example.org/jwks", "GATEWAY_IDP_ISSUER": "https://idp.example.org",
           "GATEWAY_IDP_AUDIENCE": "gw", "GATEWAY_IDP_NHS_NUMBER_CLAIM": "nhs", "GATEWAY_RATE_LIMIT": "7",
           "GATEWAY_AUDIT": "on", "GATEWAY_INSECURE_DEV": "true", "GATEWAY_OIDC_ISSUER": "https://login.example.org/",
           "GATEWAY_OIDC_CLIENT_ID": "web", "GATEWAY_OIDC_CLIENT_SECRET": "s", "GATEWAY_OIDC_REDIRECT_URI": "https://x/cb",
           "GATEWAY_OIDC_SCOPES": "openid", "GATEWAY_OIDC_VTR": "P9", "GATEWAY_SESSION_SECRET": "k",
           "GATEWAY_SESSION_COOKIE_SECURE": "false", "GATEWAY_PATIENT_SESSION_MINUTES": "5",
           "GATEWAY_PATIENT_ALERT_ENDPOINT": "https://alerts.example.org/hook", "GATEWAY_PATIENT_ALERT_HEADER": "A: b"}
    s = Settings.from_env(env)
    assert s.store.sql_echo and s.security.clients_path == tmp_path and s.security.token_signing_key == "pem"
    assert (s.security.idp_jwks_url, s.security.idp_issuer, s.security.idp_audience, s.security.idp_nhs_number_claim) \
        == ("https://idp.example.org/jwks", "https://idp.example.org", "gw", "nhs")
    assert (s.security.rate_limit, s.security.audit, s.security.insecure_dev) == (7, "on", True)
    o = s.oidc
    assert (o.issuer, o.client_id, o.client_secret, o.redirect_uri, o.scopes, o.vtr) \
        == ("https://login.example.org", "web", "s", "https://x/cb", "openid", "P9")
    assert (o.session_secret, o.session_cookie_secure, o.session_minutes) == ("k", False, 5)
    assert (s.notify.patient_alert_endpoint, s.notify.patient_alert_header) \
        == ("https://alerts.example.org/hook", "A: b")


def test_settings_are_frozen_after_start_up():
    import dataclasses

    s = Settings.from_env({"GATEWAY_RATE_LIMIT": "5"})
    for branch, name in [(s, "base_url"), (s.store, "database_url"), (s.security, "rate_limit"),
                         (s.oidc, "issuer"), (s.outbound, "allowed_hosts"), (s.notify, "national_optout"),
                         (s.observability, "log_level"), (s.server, "workers")]:
        with pytest.raises(dataclasses.FrozenInstanceError):
            setattr(branch, name, None)
    assert s.security.rate_limit == 5


@pytest.mark.parametrize(("name", "value", "says"), [
    ("GATEWAY_OUTBOX_MAX_ATTEMPTS", "many", "must be an integer"),
    ("GATEWAY_OUTBOX_BACKOFF_BASE", "fast", "must be a number"),
    ("GATEWAY_SUBSCRIPTION_ERROR_AFTER", "3x", "must be an integer"),
    ("GATEWAY_WORKERS", "two", "must be an integer"),
    ("GATEWAY_AUDIT", "sometimes", "must be one of auto, on, off"),
    ("GATEWAY_LOG_LEVEL", "LOUD", "must be one of"),
])
def test_an_invalid_value_names_its_variable(name, value, says):
    with pytest.raises(SystemExit) as exc:
        Settings.from_env({name: value})
    assert str(exc.value.code).startswith(name) and says in str(exc.value.code) and value in str(exc.value.code)


# -- start-up, as an operator sees it ------------------------------------------------------------------
def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GATEWAY_", "PROMETHEUS_"))}
    env.update({"GATEWAY_DATABASE_URL": f"sqlite:///{tmp_path / 'gw.sqlite3'}", "GATEWAY_INSTANCE_PATH": str(tmp_path),
                **extra})
    return env


def _gateway(env: dict[str, str], *args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", "from gateway.cli import main; main()", *args], env=env, cwd=cwd,
                          capture_output=True, text=True, timeout=300)


def _one_line(proc: subprocess.CompletedProcess) -> str:
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr
    lines = [x for x in proc.stderr.splitlines() if x.strip()]
    assert len(lines) == 1, proc.stderr
    return lines[0]


def test_a_worker_that_sends_notifications_needs_the_base_url(tmp_path):
    line = _one_line(_gateway(_env(tmp_path), "worker", "--once"))
    assert "GATEWAY_BASE_URL is required" in line
    # a worker for contact requests only never names this server: it starts
    proc = _gateway(_env(tmp_path), "worker", "--once", "--no-flows", "--kind", "research-subject")
    assert proc.returncode == 0 and "processed 0 job(s)" in proc.stdout, proc.stderr


def test_an_invalid_setting_stops_any_command_in_one_line(tmp_path):
    line = _one_line(_gateway(_env(tmp_path, GATEWAY_OUTBOX_MAX_ATTEMPTS="lots"), "outbox", "list"))
    assert line == "GATEWAY_OUTBOX_MAX_ATTEMPTS must be an integer, got 'lots'"


def test_a_broken_hospital_file_fails_the_check_and_start_up_naming_file_and_field(tmp_path):
    hospitals = tmp_path / "hospitals"
    hospitals.mkdir()
    (hospitals / "leeds.yaml").write_text("name: leeds\nods_code: RR8\nfhir_base_url: 42\n")
    env = _env(tmp_path, GATEWAY_HOSPITALS_PATH=str(hospitals))
    check = _gateway(env, "mappings", "check")
    assert check.returncode == 1
    errors = [x for x in check.stderr.splitlines() if x.startswith("error")]
    assert len(errors) == 1 and "leeds.yaml" in errors[0] and "fhir_base_url" in errors[0], check.stderr
    assert "ok  topics under" in check.stdout  # every other data file was checked too
    for command in (["serve", "--port", "0"], ["load", "--quiet", str(ROOT / "README.md")], ["rematch"]):
        line = _one_line(_gateway(env, *command))
        assert "leeds.yaml" in line and "fhir_base_url" in line, command


@pytest.mark.parametrize(("folder", "name", "text", "field"), [
    ("topics", "broken.yaml", "url: 3\n", "broken.yaml"),
    ("legal-bases", "broken.yaml", "name: x\nreference: r\ndescription: d\nstudies: [nope]\nenabled: true\n",
     "studies"),
])
def test_the_check_covers_topics_and_legal_bases(tmp_path, folder, name, text, field):
    import shutil

    mappings = tmp_path / "mappings"
    shutil.copytree(BUNDLED_MAPPINGS, mappings, ignore=shutil.ignore_patterns("geo", "terminology"))
    (mappings / folder / name).write_text(text)
    check = _gateway(_env(tmp_path, GATEWAY_MAPPINGS_PATH=str(mappings)), "mappings", "check")
    assert check.returncode == 1
    errors = [x for x in check.stderr.splitlines() if x.startswith("error")]
    assert errors and all(name in e for e in errors) and any(field in e for e in errors), check.stderr


# -- package data --------------------------------------------------------------------------------
def test_mappings_check_works_from_any_working_folder(tmp_path):
    """The data files are found through the package (importlib.resources), not through the working folder."""
    env = _env(tmp_path)
    env["PYTHONPATH"] = str(ROOT)  # the package, as installed; nothing in the working folder
    proc = _gateway(env, "mappings", "check", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "ctgov-v2" in proc.stdout and "ok  hospitals under" in proc.stdout and "ok  lexicons under" in proc.stdout
    assert not (tmp_path / "mappings").exists()


def test_the_package_data_patterns_ship_every_data_file():
    """pyproject's package-data globs (as setuptools expands them) cover every file under gateway/data."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    patterns = config["tool"]["setuptools"]["package-data"]["gateway.data"]
    data = Path(str(bundled()))
    root = GATEWAY / "data"
    shipped = {Path(p) for pat in patterns for p in glob.glob(str(root / pat), recursive=True) if Path(p).is_file()}
    every = {Path(d) / f for d, _, files in os.walk(root, followlinks=True) for f in files
             if "__pycache__" not in Path(d).parts}
    assert every and every <= shipped, sorted(str(p.relative_to(root)) for p in every - shipped)[:10]
    assert (data / "mappings" / "topics").is_dir() and (data / "demo").is_dir()
