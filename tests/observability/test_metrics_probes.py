"""/metrics (Prometheus text format, route templates, outbox backlog from the database, no identifiers in labels),
/healthz and /readyz."""

from __future__ import annotations

import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import create_engine, delete, func, select

from gateway.fhir.conventions import NHS_NUMBER
from gateway.observability import metrics
from gateway.outbound import outbox
from gateway.store import schema
from tests.conftest import DATA, ROOT

NHS = "9449306060"
DEMO = ROOT / "fixtures" / "demo"


def scrape(client) -> dict[str, list]:
    r = client.get("/metrics")
    assert r.status_code == 200 and r.content_type.startswith("text/plain; version="), r.get_data(as_text=True)
    out: dict[str, list] = {}
    for family in text_string_to_metric_families(r.get_data(as_text=True)):
        out.setdefault(family.name, []).extend(family.samples)
    return out


def value(samples, name: str, **labels) -> float:
    return sum(s.value for s in samples if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()))


def test_requests_are_counted_by_route_template_and_status_never_by_raw_path(client):
    pid = client.post("/fhir/Patient", json={"resourceType": "Patient", "identifier": [
        {"system": NHS_NUMBER, "value": NHS}], "birthDate": "1980-04-17"}).get_json()["id"]
    before = scrape(client)
    client.get(f"/fhir/Patient/{pid}")
    client.get("/fhir/Patient", query_string={"identifier": f"{NHS_NUMBER}|{NHS}"})
    client.get("/fhir/Patient/does-not-exist")
    client.get(f"/no/such/path/{NHS}")
    after = scrape(client)
    route = "/fhir/<rtype>/<rid>"
    reqs, family = "gateway_http_requests_total", "gateway_http_requests"

    def grew(**labels) -> float:
        return value(after[family], reqs, **labels) - value(before.get(family, []), reqs, **labels)

    assert grew(route=route, status="200", method="GET") == 1
    assert grew(route=route, status="404", method="GET") == 1
    assert grew(route="/fhir/<rtype>", status="200", method="GET") == 1
    assert grew(route="<unmatched>", status="404") == 1
    hist = after["gateway_http_request_duration_seconds"]
    assert value(hist, "gateway_http_request_duration_seconds_count", route=route, status="200") >= 1
    labels = {v for samples in after.values() for s in samples for v in s.labels.values()}
    assert not [v for v in labels if NHS in v or pid in v or "1980" in v or "/no/such" in v]


def test_match_latency_has_its_own_histogram(client):
    for name in ("01-sponsor-glioblastoma-study.json", "03-leeds-patient-glioblastoma.json"):
        assert client.post("/fhir", data=(DEMO / name).read_bytes(),
                           headers={"Content-Type": "application/fhir+json"}).status_code == 200
    pid = client.get("/fhir/Patient", query_string={"identifier": f"{NHS_NUMBER}|{NHS}"}).get_json()[
        "entry"][0]["resource"]["id"]
    before = value(scrape(client).get("gateway_operation_duration_seconds", []),
                   "gateway_operation_duration_seconds_count", operation="ResearchStudy/$match", status="200")
    assert client.get("/fhir/ResearchStudy/$match", query_string={"patient-id": pid}).status_code == 200
    after = scrape(client)["gateway_operation_duration_seconds"]
    assert value(after, "gateway_operation_duration_seconds_count", operation="ResearchStudy/$match",
                 status="200") == before + 1
    assert {s.labels["operation"] for s in after} <= {"ResearchStudy/$match", "ResearchStudy/$candidates"}


def test_outbox_backlog_is_read_from_the_database_when_scraped(client, store):
    with store.write() as tx:
        outbox.enqueue(tx.conn, kind="contact-request", destination="leeds", payload={"x": 1}, dedupe_key="a",
                       max_attempts=3)
        outbox.enqueue(tx.conn, kind="contact-request", destination="leeds", payload={"x": 2}, dedupe_key="b",
                       max_attempts=3)
        outbox.enqueue(tx.conn, kind="subscription-handshake", destination="Subscription/secret-id",
                       payload={}, dedupe_key="c", max_attempts=3)
    with store.write() as tx:  # one of them is two minutes old
        tx.conn.execute(schema.outbox.update().where(schema.outbox.c.dedupe_key == "a")
                        .values(created_at=outbox.iso_in(-120)))
        tx.conn.execute(schema.outbox.update().where(schema.outbox.c.dedupe_key == "c").values(state="dead"))
    got = scrape(client)
    assert value(got["gateway_outbox_jobs"], "gateway_outbox_jobs", kind="contact-request", state="pending") == 2
    age = value(got["gateway_outbox_oldest_pending_age_seconds"], "gateway_outbox_oldest_pending_age_seconds",
                kind="contact-request")
    assert 119 < age < 200
    dead = got["gateway_outbox_dead_jobs"]
    assert value(dead, "gateway_outbox_dead_jobs", kind="subscription-handshake", destination="subscriber") == 1
    assert "secret-id" not in str(dead)


def test_imports_are_counted_by_mapping_and_outcome(client):
    before = value(scrape(client).get("gateway_import_records", []), "gateway_import_records_total",
                   mapping="ctgov-v2")
    r = client.post("/ingest/ctgov-v2", data=(DATA / "ctgov" / "get_nct02576665_20260811.json").read_bytes(),
                    headers={"Content-Type": "application/json"})
    assert r.status_code == 200, r.get_data(as_text=True)[:300]
    after = value(scrape(client)["gateway_import_records"], "gateway_import_records_total", mapping="ctgov-v2")
    assert after == before + len(r.get_json()["entry"])


def test_destination_labels_are_keys_never_patient_values():
    assert metrics.destination_label("leeds") == "leeds"
    assert metrics.destination_label("Subscription/7d1c9a") == "subscriber"
    assert metrics.destination_label("https://x.example/hook?nhs=9449306060") == "other"


def test_healthz_and_readyz(client):
    assert client.get("/healthz").get_json() == {"status": "ok"}
    r = client.get("/readyz")
    assert r.status_code == 200 and r.get_json() == {
        "status": "ready", "checks": {"database": "ok", "schema": "ok", "data": "ok"}}


def test_readyz_is_503_when_the_schema_is_behind(client, store):
    top = max(v for v, _ in schema.MIGRATIONS)
    with store.write() as tx:
        tx.conn.execute(delete(schema.schema_version).where(schema.schema_version.c.version == top))
    r = client.get("/readyz")
    assert r.status_code == 503 and r.get_json()["status"] == "unavailable"
    assert r.get_json()["checks"]["schema"] == f"at version {top - 1}, this code needs {top}"
    with store.engine.connect() as conn:
        assert conn.execute(select(func.max(schema.schema_version.c.version))).scalar() == top - 1


def test_readyz_is_503_when_the_database_is_unreachable(app, client, tmp_path):
    store = app.extensions["gateway.store"]
    real = store.engine
    store.engine = create_engine(f"sqlite:///{tmp_path / 'missing-folder' / 'x.sqlite3'}")
    try:
        r = client.get("/readyz")
    finally:
        store.engine = real
    assert r.status_code == 503
    assert r.get_json()["checks"] == {"database": "unreachable", "schema": "unknown", "data": "ok"}
    assert str(tmp_path) not in r.get_data(as_text=True)


@pytest.mark.parametrize("missing", ["gateway.mappings", "gateway.topics"])
def test_readyz_names_data_that_is_not_loaded(app, client, missing):
    saved = app.extensions.pop(missing)
    try:
        r = client.get("/readyz")
    finally:
        app.extensions[missing] = saved
    assert r.status_code == 503 and r.get_json()["checks"]["data"].startswith("not loaded: ")
