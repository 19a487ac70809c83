"""The container's gunicorn refuses a public bind in development mode, like `gateway serve`."""

from __future__ import annotations

import logging

import pytest

from gateway import gunicorn_conf


class _Server:
    def __init__(self, *binds: str):
        self.cfg = type("Cfg", (), {"bind": list(binds)})()
        self.log = logging.getLogger("test.gunicorn")


def test_public_bind_without_clients_is_refused(monkeypatch, tmp_path):
    monkeypatch.setenv("GATEWAY_CLIENTS_PATH", str(tmp_path))  # an empty folder: no clients
    monkeypatch.delenv("GATEWAY_INSECURE_DEV", raising=False)
    with pytest.raises(SystemExit, match="refusing to bind 0.0.0.0"):
        gunicorn_conf.on_starting(_Server("0.0.0.0:8080"))


def test_loopback_or_explicit_opt_in_starts_with_a_warning(monkeypatch, tmp_path, caplog):
    monkeypatch.setenv("GATEWAY_CLIENTS_PATH", str(tmp_path))
    gunicorn_conf.on_starting(_Server("127.0.0.1:8080"))
    monkeypatch.setenv("GATEWAY_INSECURE_DEV", "true")
    with caplog.at_level(logging.WARNING, logger="test.gunicorn"):
        gunicorn_conf.on_starting(_Server("0.0.0.0:8080"))
    assert "GATEWAY_INSECURE_DEV=true" in caplog.text
