"""Outbound fixtures: a test hospital file, the outbound settings, an app and a worker that use them."""

from __future__ import annotations

from dataclasses import replace

import pytest

from gateway.api.app import create_app
from gateway.outbound.allowlist import AllowList
from gateway.outbound.settings import OutboundSettings
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
def allowed_hosts() -> str:
    """GATEWAY_ALLOWED_HOSTS of the outbound tests (a test that needs more overrides this fixture)."""
    return "fhir.leeds.test"


@pytest.fixture
def outbound_env(hospital_dir, allowed_hosts) -> OutboundSettings:
    """The outbound branch of the settings: the test hospital files, the allow-list, the contact key, fast
    retries, and the environment the hospital file's token variable is looked up in."""
    return OutboundSettings(hospitals_path=hospital_dir, allowed_hosts=AllowList.parse(allowed_hosts),
                            contact_id_key="test-contact-key", backoff_base=0.001, max_attempts=3,
                            env={"LEEDS_TEST_TOKEN": "leeds-token"})


@pytest.fixture
def app(outbound_env, settings):
    application = create_app(replace(settings, outbound=outbound_env))
    application.config["TESTING"] = True
    yield application
    application.extensions["gateway.store"].engine.dispose()


@pytest.fixture
def worker(app) -> Worker:
    return app.extensions["gateway.root"].worker(name="test-worker")
