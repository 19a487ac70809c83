"""Outbound fixtures: a test hospital file, the outbound environment, an app and a worker that use them."""

from __future__ import annotations

import pytest

from gateway.api.app import create_app
from gateway.outbound.kinds import DeliveryContext
from gateway.outbound.worker import Worker

HOSPITAL_BASE = "https://fhir.leeds.test/R4"
HOSPITAL_YAML = f"""\
name: leeds-test
title: Leeds (test double)
ods_code: RR8
fhir_base_url: {HOSPITAL_BASE}
auth: {{type: bearer, token_env: LEEDS_TEST_TOKEN}}
write_back: {{research_subject: true, task: true}}
"""
# A trust with a file whose host is not allow-listed.
ELSEWHERE_YAML = """\
name: elsewhere
ods_code: RXX
fhir_base_url: https://fhir.elsewhere.test/R4
"""


@pytest.fixture
def hospital_dir(tmp_path):
    d = tmp_path / "hospitals"
    d.mkdir()
    (d / "leeds-test.yaml").write_text(HOSPITAL_YAML)
    (d / "elsewhere.yaml").write_text(ELSEWHERE_YAML)
    return d


@pytest.fixture
def outbound_env(monkeypatch, hospital_dir):
    monkeypatch.setenv("GATEWAY_HOSPITALS_PATH", str(hospital_dir))
    monkeypatch.setenv("GATEWAY_ALLOWED_HOSTS", "fhir.leeds.test")
    monkeypatch.setenv("GATEWAY_CONTACT_ID_KEY", "test-contact-key")
    monkeypatch.setenv("GATEWAY_OUTBOX_BACKOFF_BASE", "0.001")
    monkeypatch.setenv("GATEWAY_OUTBOX_MAX_ATTEMPTS", "3")
    monkeypatch.setenv("LEEDS_TEST_TOKEN", "leeds-token")


@pytest.fixture
def app(outbound_env, settings):
    application = create_app(settings)
    application.config["TESTING"] = True
    yield application
    application.extensions["gateway.store"].engine.dispose()


@pytest.fixture
def worker(app) -> Worker:
    dest = app.extensions["gateway.outbound"]
    return Worker(DeliveryContext(store=app.extensions["gateway.store"], destinations=dest, settings=dest.settings),
                  name="test-worker")
