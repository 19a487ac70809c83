"""Issue #13, item 3: a configured GATEWAY_CLIENTS_PATH that is missing or unreadable is a start-up error
(an exception from create_app; one line and exit code 1 from the CLI), never a silent development mode."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from gateway.api.app import create_app
from gateway.config import SecuritySettings, Settings, StoreSettings
from gateway.security.clients import ClientConfigError, load_clients
from tests.conftest import ROOT
from tests.security.conftest import close_app, with_security


def test_create_app_refuses_a_missing_clients_folder(settings, tmp_path):
    missing = tmp_path / "no-such-folder"
    with pytest.raises(ClientConfigError, match="does not exist"):
        create_app(with_security(settings, clients_path=missing))


def test_create_app_refuses_a_file_as_clients_folder(settings, tmp_path):
    file = tmp_path / "clients.yaml"
    file.write_text("client_id: x\n")
    with pytest.raises(ClientConfigError, match="is not a folder"):
        create_app(with_security(settings, clients_path=file))


def test_an_unreadable_clients_folder_is_an_error(tmp_path, monkeypatch):
    folder = tmp_path / "clients"
    folder.mkdir()

    def denied(self):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(Path, "iterdir", denied)  # the tests may run as root, for whom chmod 000 changes nothing
    with pytest.raises(ClientConfigError, match="cannot be read: Permission denied"):
        load_clients(folder)


def test_an_unreadable_client_file_is_an_error(tmp_path, monkeypatch):
    folder = tmp_path / "clients"
    folder.mkdir()
    (folder / "a.yaml").write_text("client_id: a\n")

    def denied(self, *args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(Path, "read_text", denied)
    with pytest.raises(ClientConfigError, match="a.yaml: cannot be read: Permission denied"):
        load_clients(folder)


def test_an_empty_configured_folder_is_development_mode(settings, tmp_path):
    """An existing folder without client files is what ``mappings/clients`` ships as: development mode
    (loopback only; a public bind is refused, test_limits_devmode.py)."""
    (tmp_path / "empty").mkdir()
    app = create_app(with_security(settings, clients_path=tmp_path / "empty"))
    assert not app.extensions["gateway.security"].registry
    close_app(app)


def test_unset_path_uses_the_mappings_clients_folder_never_the_working_folder(tmp_path, monkeypatch):
    """Unset: ``<mappings path>/clients`` (the package's own, or GATEWAY_MAPPINGS_PATH's) if it exists, else
    development mode; a ``mappings/clients`` folder in the working folder changes nothing."""
    from gateway.datafiles import BUNDLED_MAPPINGS

    monkeypatch.chdir(tmp_path)
    (tmp_path / "mappings" / "clients").mkdir(parents=True)  # the working folder's: never used
    assert Settings.from_env({}).security.clients_path == BUNDLED_MAPPINGS / "clients"
    assert Settings.from_env({"GATEWAY_CLIENTS_PATH": ""}).security.clients_path == BUNDLED_MAPPINGS / "clients"
    mappings = tmp_path / "site-mappings"
    mappings.mkdir()
    assert Settings.from_env({"GATEWAY_MAPPINGS_PATH": str(mappings)}).security.clients_path is None
    (mappings / "clients").mkdir()
    assert Settings.from_env({"GATEWAY_MAPPINGS_PATH": str(mappings)}).security.clients_path == mappings / "clients"
    gone = tmp_path / "gone"
    assert Settings.from_env({"GATEWAY_CLIENTS_PATH": str(gone)}).security.clients_path == gone


@pytest.mark.parametrize("command", [["serve", "--port", "0"], ["load", "--quiet", "README.md"]])
def test_cli_start_up_error_is_one_line_and_exit_code_1(tmp_path, command):
    env = {**os.environ, "GATEWAY_DATABASE_URL": f"sqlite:///{tmp_path / 'gw.sqlite3'}",
           "GATEWAY_CLIENTS_PATH": str(tmp_path / "missing-clients")}
    proc = subprocess.run([sys.executable, "-c", "from gateway.cli import main; main()", *command], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    assert "GATEWAY_CLIENTS_PATH" in lines[0] and "does not exist" in lines[0]
    assert "Traceback" not in proc.stderr


def test_gunicorn_refuses_to_start(tmp_path, monkeypatch):
    from gateway import gunicorn_conf

    class Log:
        def __init__(self):
            self.errors: list[str] = []

        def error(self, msg, *args):
            self.errors.append(msg % args)

        def warning(self, msg, *args):
            pass

    class Server:
        log = Log()
        cfg = type("Cfg", (), {"bind": ["0.0.0.0:8080"]})()

    settings = Settings(store=StoreSettings(f"sqlite:///{tmp_path / 'gw.sqlite3'}"),
                        security=SecuritySettings(clients_path=tmp_path / "missing"))
    with pytest.raises(SystemExit) as exc:
        gunicorn_conf.start_checks(Server(), settings)  # what on_starting runs with the settings of its process
    assert exc.value.code == 1
    assert "does not exist" in Server.log.errors[0]
