"""Structured logs: one JSON object a line, the request id joins a log line to its AuditEvent, and no patient
value or token ever reaches a line (query values redacted, patterns scrubbed)."""

from __future__ import annotations

import io
import json
import logging

import pytest

from gateway.api.app import create_app
from gateway.config import SecuritySettings, Settings, StoreSettings
from gateway.fhir.conventions import NHS_NUMBER
from gateway.observability import logs
from tests.conftest import ROOT

NHS = "9449306060"


@pytest.fixture
def captured():
    """Every log record of the test as the JSON lines the processes write."""
    buf = io.StringIO()
    handler = logs.configure("INFO", stream=buf)
    yield lambda: [json.loads(line) for line in buf.getvalue().splitlines() if line.strip()]
    logging.getLogger().removeHandler(handler)


@pytest.fixture
def audited_app(db_url, tmp_path):
    (tmp_path / "clients").mkdir()
    app = create_app(Settings(store=StoreSettings(db_url), instance_path=tmp_path, mappings_path=ROOT / "mappings",
                              security=SecuritySettings(clients_path=tmp_path / "clients", audit="on")))
    yield app
    app.extensions["gateway.security"].audit_writer.close()
    app.extensions["gateway.store"].engine.dispose()


def test_redact_target_keeps_names_and_drops_values():
    q = f"identifier={NHS_NUMBER}|{NHS}&birthdate=1980-04-17&address-postalcode=LS6%202AB&_count=5"
    assert logs.redact_target("/fhir/Patient", q) == ("/fhir/Patient?identifier=<redacted>&birthdate=<redacted>"
                                                      "&address-postalcode=<redacted>&_count=<redacted>")
    assert logs.redact_target("/fhir/Patient/9449306060", "") == "/fhir/Patient/<redacted>"  # an id chosen = NHS no.
    assert logs.redact_target("/fhir/ResearchStudy/$match", b"patient-id=abc") == \
        "/fhir/ResearchStudy/$match?patient-id=<redacted>"


@pytest.mark.parametrize(("text", "secret"), [
    (f"GET /fhir/Patient?identifier={NHS_NUMBER}|{NHS} 200", NHS),
    ("hospital said: patient 944 930 6060 unknown", "944 930 6060"),
    ("address LS6 2AB not found", "LS6 2AB"),
    ("born 1980-04-17", "1980-04-17"),
    ("born 17/04/1980", "17/04/1980"),
    ("Authorization: Bearer abc.def-ghi", "abc.def-ghi"),
    ("token eyJhbGciOiJSUzM4NCJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJl", "eyJzdWIiOiJ4In0"),
    ("mail jane.whitaker@example.org", "jane.whitaker@example.org"),
])
def test_scrub_removes_recognisable_values(text, secret):
    assert secret not in logs.scrub(text)


def test_scrub_keeps_what_operators_need():
    line = "job 12 (contact-request -> leeds) delivered in 35 ms at 2026-12-04T15:50:18.208+00:00: 201"
    assert logs.scrub(line) == line


@pytest.mark.parametrize(("given", "valid"), [("abc-123", True), ("0f6e.7:trace_1", True), ("x" * 128, True),
                                              ("x" * 129, False), ("a b", False), ("<script>", False),
                                              ("id\u00e9", False), ("", False), ("-leading", False)])
def test_request_id_validation(given, valid):
    assert (logs.valid_request_id(given) == given) is valid


def test_formatter_writes_one_json_object_with_fields_and_exception_frames_only(captured):
    log = logging.getLogger("gateway.test")
    log.info("delivered %s", "job 7", extra={"destination": "leeds"})
    try:
        raise ValueError(f"bad NHS number {NHS}")
    except ValueError:
        log.exception("failed")
    first, second = captured()
    assert first["event"] == "delivered job 7" and first["destination"] == "leeds" and first["level"] == "info"
    assert first["ts"].endswith("Z") and first["logger"] == "gateway.test"
    assert second["exc_type"] == "ValueError" and NHS not in json.dumps(second)
    assert all(":" in frame for frame in second["stack"])


def test_each_request_logs_one_line_with_its_id_and_no_query_values(audited_app, captured):
    http = audited_app.test_client()
    r = http.get("/fhir/Patient", query_string={"identifier": f"{NHS_NUMBER}|{NHS}", "birthdate": "1980-04-17"},
                 headers={"X-Request-ID": "trace-42"})
    assert r.status_code == 200 and r.headers["X-Request-ID"] == "trace-42"
    generated = http.get("/fhir/Patient", headers={"X-Request-ID": "not valid!"}).headers["X-Request-ID"]
    assert generated != "not valid!" and logs.valid_request_id(generated)
    lines = [x for x in captured() if x["logger"] == "gateway.request"]
    assert [x["request_id"] for x in lines] == ["trace-42", generated]
    first = lines[0]
    assert first["path"] == "/fhir/Patient?identifier=<redacted>&birthdate=<redacted>"
    assert first["route"] == "/fhir/<rtype>" and first["status"] == 200 and first["method"] == "GET"
    assert isinstance(first["duration_ms"], float)
    everything = json.dumps(captured())
    assert NHS not in everything and "1980-04-17" not in everything


def test_the_audit_event_carries_the_request_id_of_the_log_line(audited_app, captured):
    http = audited_app.test_client()
    patient = {"resourceType": "Patient", "identifier": [{"system": NHS_NUMBER, "value": NHS}]}
    r = http.post("/fhir/Patient", json=patient, headers={"X-Request-ID": "join-me-1"})
    assert r.status_code == 201, r.get_json()
    generated = http.get(f"/fhir/Patient/{r.get_json()['id']}").headers["X-Request-ID"]
    audited_app.extensions["gateway.security"].audit_writer.flush()
    events = http.get("/fhir/AuditEvent", query_string={"_count": "50"}).get_json()["entry"]
    ids = {ent["what"]["identifier"]["value"] for e in events for ent in e["resource"]["entity"]
           if ent.get("type", {}).get("code") == "XrequestId"}
    assert {"join-me-1", generated} <= ids
    logged = {x["request_id"] for x in captured() if x["logger"] == "gateway.request"}
    assert {"join-me-1", generated} <= logged


def test_the_configured_level_applies_to_the_gateway_loggers(audited_app):
    root, ours = logging.getLogger(), logging.getLogger("gateway")
    saved = root.level, ours.level
    buf = io.StringIO()
    handler = logs.configure("WARNING", stream=buf)
    try:
        assert audited_app.test_client().get("/fhir/Patient").status_code == 200
        logging.getLogger("gateway.test").warning("kept")
    finally:
        root.removeHandler(handler)
        root.setLevel(saved[0])
        ours.setLevel(saved[1])
    assert [json.loads(x)["event"] for x in buf.getvalue().splitlines()] == ["kept"]
