"""Audit trail (AuditEvent per request on patient data, searchable by administrators, no secrets or
clinical content) and erasure (a person's resources and history physically removed, audited)."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select

from gateway.store import schema
from tests.security.conftest import FHIR, N_ME, bearer, get_token, idp_token, secret


def _events(app) -> list[dict]:
    """Every stored AuditEvent, after writing what the background audit writer still holds."""
    import orjson

    app.extensions["gateway.security"].audit_writer.flush()
    store = app.extensions["gateway.store"]
    with store.engine.connect() as conn:
        rows = conn.execute(select(schema.resources.c.content).where(schema.resources.c.type == "AuditEvent"))
        return [orjson.loads(r[0]) for r in rows]


def test_reads_are_audited_and_searchable_by_admin(http, keys, world, sec_app):
    tok = get_token(http, keys, "leeds-ehr")
    r = http.get("/fhir/Patient/leeds-me", headers={**bearer(tok), "X-Request-ID": "req-123"})
    assert r.status_code == 200
    events = [e for e in _events(sec_app) if any(x.get("what", {}).get("identifier", {}).get("value") == "req-123"
                                               for x in e["entity"])]
    assert len(events) == 1
    ev = events[0]
    assert ev["subtype"][0]["code"] == "read" and ev["action"] == "R" and ev["outcome"] == "0"
    assert ev["agent"][0]["who"]["identifier"]["value"] == "leeds-ehr"
    assert {"reference": "Patient/leeds-me"} in [x["what"] for x in ev["entity"]]

    admin = bearer(get_token(http, keys, "admin-console"))
    found = http.get("/fhir/AuditEvent?patient=Patient/leeds-me&agent=leeds-ehr", headers=admin).get_json()
    assert [e["resource"]["id"] for e in found["entry"]] == [ev["id"]]
    assert http.get("/fhir/AuditEvent", headers=bearer(tok)).status_code == 403


def test_audit_holds_no_secrets_or_clinical_content(http, keys, world, sec_app):
    tok = idp_token(keys)
    http.get("/fhir/Condition?code=http://snomed.info/sct|393563007", headers=bearer(tok))
    http.get("/fhir/Patient/leeds-other", headers=bearer(tok))  # denied (404), still audited
    backend = get_token(http, keys, "leeds-ehr")
    http.put("/fhir/Patient/leeds-me", json={"resourceType": "Patient", "id": "leeds-me"}, headers=bearer(backend))
    events = _events(sec_app)
    assert len(events) >= 3
    text = str(events)
    for needle in (N_ME, tok, backend, "393563007", "SECRET-", "snomed"):
        assert needle not in text
    assert {e["outcome"] for e in events} >= {"0", "4"}


def test_denied_and_unauthenticated_requests_are_audited(http, keys, world, sec_app):
    http.get("/fhir/Patient/leeds-me", headers=FHIR)
    sponsor = get_token(http, keys, "sponsor-a")
    http.get("/fhir/Patient/leeds-me", headers=bearer(sponsor))
    events = _events(sec_app)
    agents = {(e["agent"][0]["who"]["identifier"]["value"], e["outcome"]) for e in events}
    assert ("anonymous", "4") in agents and ("sponsor-a", "4") in agents


def test_automatic_actions_can_be_audited(sec_app, world):
    from gateway.store.audit import record_automatic

    store = sec_app.extensions["gateway.store"]
    ev = record_automatic(store, "notify", people=["Patient/leeds-me"], resources=["Subscription/sub-me"])
    stored = [e for e in _events(sec_app) if e["id"] == ev.get("id", e["id"]) and e["subtype"][0]["code"] == "notify"]
    assert stored and stored[0]["agent"][0]["requestor"] is False


def _count(store, table, **where) -> int:
    with store.engine.connect() as conn:
        stmt = select(func.count()).select_from(table)
        for k, v in where.items():
            stmt = stmt.where(getattr(table.c, k) == v)
        return conn.execute(stmt).scalar_one()


def test_erasure_removes_a_person_and_their_history(http, keys, world, sec_app):
    store = sec_app.extensions["gateway.store"]
    admin = bearer(get_token(http, keys, "admin-console"))
    # history to erase too: a second version of the Condition
    http.put("/fhir/Condition/cond-leeds-me", json={**world["cond-leeds-me"], "language": "en-GB"}, headers=admin)
    body = {"resourceType": "Parameters", "parameter": [{"name": "nhsNumber", "valueString": N_ME}]}
    _other_layers_rows(store)

    dry = http.post("/admin/erasure?dryRun=true", json=body, headers=admin)
    assert dry.status_code == 200
    assert http.get("/fhir/Patient/leeds-me", headers=admin).status_code == 200

    r = http.post("/admin/erasure", json=body, headers=admin)
    assert r.status_code == 200, r.get_json()
    report = {p["name"]: p for p in r.get_json()["parameter"]}
    removed = {p["part"][0]["valueCode"]: p["part"][1]["valueInteger"] for p in r.get_json()["parameter"]
               if p["name"] == "removed"}
    assert removed == {"Patient": 1, "Condition": 1, "Observation": 1, "Consent": 1, "ResearchSubject": 1,
                       "Subscription": 1}
    assert report["versionsRemoved"]["valueInteger"] == 7
    assert report["otherRowsRemoved"]["valueInteger"] == 2
    assert _count(store, schema.match_notices) == 1  # the other person's notice stays
    assert _count(store, schema.outbox) == 0
    for rid, rtype in (("leeds-me", "Patient"), ("cond-leeds-me", "Condition"), ("sub-me", "Subscription"),
                       ("subj-leeds-me", "ResearchSubject")):
        assert http.get(f"/fhir/{rtype}/{rid}", headers=admin).status_code == 404
        assert _count(store, schema.resource_versions, type=rtype, id=rid) == 0
    assert http.get(f"/fhir/Patient?identifier={N_ME}", headers=admin).get_json()["total"] == 0
    with store.engine.connect() as conn:
        contents = " ".join(r[0] or "" for r in conn.execute(select(schema.resource_versions.c.content)))
    assert secret("leeds-me") not in contents and secret("cond-leeds-me") not in contents
    # everyone else is untouched
    for rid, rtype in (("leeds-other", "Patient"), ("cond-christie", "Condition"), ("study-a", "ResearchStudy")):
        assert http.get(f"/fhir/{rtype}/{rid}", headers=admin).status_code == 200
    # and the erasure itself is on record (ids only)
    erasures = [e for e in _events(sec_app) if e["subtype"][0]["code"] == "erase"]
    assert len(erasures) == 1 and N_ME not in str(erasures)
    assert {"reference": "Patient/leeds-me"} in [x["what"] for x in erasures[0]["entity"]]


def _other_layers_rows(store) -> None:
    """Rows other layers keep about people: a match notice per person, an outbox job for the contact request."""
    from sqlalchemy import insert

    now = "2026-11-23T20:00:00+00:00"
    with store.engine.begin() as conn:
        conn.execute(insert(schema.match_notices), [
            {"study_id": "study-a", "person": N_ME, "kind": "alert", "at": now},
            {"study_id": "study-a", "person": "9434765870", "kind": "alert", "at": now}])
        conn.execute(insert(schema.outbox).values(
            kind="research-subject", destination="leeds", resource_type="ResearchSubject",
            resource_id="subj-leeds-me", resource_version=1, dedupe_key="k1", payload="{}", state="pending",
            attempts=0, max_attempts=5, next_attempt_at=now, created_at=now, updated_at=now))


@pytest.mark.parametrize("client_id", ["leeds-ehr", "sponsor-a"])
def test_erasure_is_for_administrators(http, keys, world, client_id):
    body = {"resourceType": "Parameters", "parameter": [{"name": "nhsNumber", "valueString": N_ME}]}
    r = http.post("/admin/erasure", json=body, headers=bearer(get_token(http, keys, client_id)))
    assert r.status_code == 403


def test_erasure_of_unknown_person_is_404(http, keys, world):
    body = {"resourceType": "Parameters", "parameter": [{"name": "nhsNumber", "valueString": "9999999999"}]}
    r = http.post("/admin/erasure", json=body, headers=bearer(get_token(http, keys, "admin-console")))
    assert r.status_code == 404
