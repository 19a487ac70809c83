"""GATEWAY_READ_DATABASE_URL: search and matching reads from a read database, writes and read-your-write paths on
the primary.

Two ways of showing it. (1) On every backend: the read database is a separate SQLite file holding other data
(a stand-in for a lagging replica), so which database answered is visible in the answer. (2) With a real
PostgreSQL primary and streaming replica on 127.0.0.1 (tests/pgpair.py): replay is paused on the replica, so a
write acknowledged by the primary is invisible to the gateway's reads until replay resumes.
"""

from __future__ import annotations

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from gateway.api.app import create_app
from gateway.config import Settings, StoreSettings
from gateway.fhir import conventions as cv
from gateway.store.engine import make_engine
from tests.conftest import ROOT
from tests.matching import builders as b
from tests.pgpair import PgPair, missing_reason
from tests.procs import free_port, wait_until

GLIOBLASTOMA = (cv.SNOMED, "393563007")


def _app(primary: str, read: str | None, tmp_path):
    app = create_app(Settings(store=StoreSettings(primary, read_database_url=read), instance_path=tmp_path,
                              mappings_path=ROOT / "mappings"))
    app.config["TESTING"] = True
    return app


def _dispose(app) -> None:
    store = app.extensions["gateway.store"]
    store.engine.dispose()
    if store.read_engine is not None:
        store.read_engine.dispose()


def _put(client, resource: dict) -> None:
    resp = client.put(f"/fhir/{resource['resourceType']}/{resource['id']}", json=resource)
    assert resp.status_code in (200, 201), resp.get_data(as_text=True)


def _match_ids(client, pid: str) -> list[str]:
    resp = client.get(f"/fhir/ResearchStudy/$match?patient-id={pid}")
    assert resp.status_code == 200, resp.get_data(as_text=True)
    return sorted(e["resource"]["id"] for e in resp.get_json().get("entry", []) if e["search"]["mode"] == "match")


def _conditional_create(client, ident: str):
    body = {"resourceType": "Patient", "identifier": [{"system": "https://example.org/mrn", "value": ident}]}
    return client.post("/fhir/Patient", json=body,
                       headers={"If-None-Exist": f"identifier=https://example.org/mrn|{ident}"})


# -- (1) any backend: a read database with other data -------------------------------------------------------
@pytest.fixture
def stale_read_url(tmp_path) -> str:
    """A separate SQLite database holding only Patient/only-in-read-db (what a replica that lags would hold)."""
    url = f"sqlite:///{tmp_path / 'read.sqlite3'}"
    seed = _app(url, None, tmp_path / "seed")
    _put(seed.test_client(), b.patient("only-in-read-db"))
    _dispose(seed)
    return url


def test_reads_from_read_database_writes_to_primary(db_url, stale_read_url, tmp_path):
    app = _app(db_url, stale_read_url, tmp_path)
    client = app.test_client()
    try:
        # the write succeeds: it went to the primary (the read engine refuses writes, see the next test)
        _put(client, b.patient("p1"))
        # GET read and search answer from the read database: p1 is not there, only-in-read-db is
        assert client.get("/fhir/Patient/p1").status_code == 404
        assert client.get("/fhir/Patient/only-in-read-db").status_code == 200
        ids = [e["resource"]["id"] for e in client.get("/fhir/Patient").get_json().get("entry", [])]
        assert ids == ["only-in-read-db"]
        posted = client.post("/fhir/Patient/_search", data={"_id": "only-in-read-db"})
        assert posted.get_json()["total"] == 1
        # read-your-write paths use the primary: update of p1 sees version 1, conditional create sees its twin
        again = client.put("/fhir/Patient/p1", json={**b.patient("p1"), "gender": "male"})
        assert again.status_code == 200 and again.headers["ETag"] == 'W/"2"'
        first, second = _conditional_create(client, "A-1"), _conditional_create(client, "A-1")
        assert (first.status_code, second.status_code) == (201, 200)
        assert first.headers["Location"].split("/_history")[0] == second.headers["Location"].split("/_history")[0]
        # a transaction's conditional create also checks the primary
        tx = {"resourceType": "Bundle", "type": "transaction", "entry": [{
            "resource": {"resourceType": "Patient", "identifier": [{"system": "https://example.org/mrn",
                                                                    "value": "A-1"}]},
            "request": {"method": "POST", "url": "Patient", "ifNoneExist": "identifier=https://example.org/mrn|A-1"}}]}
        resp = client.post("/fhir", json=tx)
        assert resp.status_code == 200, resp.get_data(as_text=True)
        assert resp.get_json()["entry"][0]["response"]["status"].startswith("200")
        # and the store read outside a request (the worker, the CLI) reads the primary
        assert app.extensions["gateway.store"].read("Patient", "p1").version == 2
    finally:
        _dispose(app)


def test_read_engine_refuses_writes(db_url):
    """The read engine is read-only even when its URL names a writable database: misrouted writes fail loudly."""
    primary = make_engine(db_url)
    primary.dispose()  # only the URL's schema matters; create_app migrated nothing here
    engine = make_engine(db_url, read_only=True)
    try:
        with pytest.raises(DBAPIError), engine.begin() as conn:
            conn.execute(text("CREATE TABLE read_only_probe (x integer)"))
    finally:
        engine.dispose()


def test_unreachable_read_database_falls_back_to_primary(db_url, tmp_path):
    """A replica that is down does not take reads down: they are served by the primary (never behind it)."""
    down = f"postgresql+psycopg://postgres@127.0.0.1:{free_port()}/none?connect_timeout=2"
    app = _app(db_url, down, tmp_path)
    client = app.test_client()
    try:
        _put(client, b.patient("p1"))
        assert client.get("/fhir/Patient/p1").status_code == 200
        assert client.get("/fhir/Patient?_id=p1").get_json()["total"] == 1
    finally:
        _dispose(app)


# -- (2) PostgreSQL streaming replication ---------------------------------------------------------------------
@pytest.fixture(scope="module")
def pg_pair():
    reason = missing_reason()
    if reason:
        pytest.skip(reason)
    with PgPair() as pair:
        yield pair


def test_streaming_replica_serves_reads(pg_pair, tmp_path):
    app = _app(pg_pair.primary_url, pg_pair.replica_url, tmp_path)  # migrates the primary; DDL replicates
    client = app.test_client()
    replica = make_engine(pg_pair.replica_url)
    try:
        with replica.connect() as conn:
            assert conn.execute(text("SELECT pg_is_in_recovery()")).scalar() is True
            # a standby refuses writes: everything the gateway wrote below went to the primary
            with pytest.raises(DBAPIError, match="read-only transaction"):
                conn.execute(text("INSERT INTO counters (name, value) VALUES ('probe', 1)"))
            conn.rollback()

        _put(client, b.study("s1", [GLIOBLASTOMA]))
        _put(client, b.patient("p1"))
        _put(client, b.condition("c1", "p1", GLIOBLASTOMA))
        # replication catches up: the gateway's reads see the writes
        wait_until(lambda: client.get("/fhir/Condition/c1").status_code == 200, 20, "replication of c1")
        assert _match_ids(client, "p1") == ["s1"]

        with replica.connect() as conn:
            conn.execute(text("SELECT pg_wal_replay_pause()"))
        try:
            _put(client, b.study("s2", [GLIOBLASTOMA]))  # acknowledged by the primary
            _put(client, b.patient("p2"))
            # reads come from the paused replica: the new resources are not visible through the gateway ...
            assert client.get("/fhir/ResearchStudy/s2").status_code == 404
            assert client.get("/fhir/ResearchStudy?_id=s2").get_json()["total"] == 0
            assert _match_ids(client, "p1") == ["s1"]
            # ... while the write paths read the primary: the update sees version 1, conditional create its twin
            assert client.put("/fhir/Patient/p2", json={**b.patient("p2"), "gender": "male"}).headers["ETag"] \
                == 'W/"2"'
            first, second = _conditional_create(client, "B-1"), _conditional_create(client, "B-1")
            assert (first.status_code, second.status_code) == (201, 200)
        finally:
            with replica.connect() as conn:
                conn.execute(text("SELECT pg_wal_replay_resume()"))
        # replay resumes: the gateway's reads catch up, $match included (its indexes follow the replica's feed).
        # Wait for the last write made while paused (p2's update); s2 was written before it, in WAL order.
        wait_until(lambda: client.get("/fhir/Patient/p2").get_json().get("gender") == "male", 20,
                   "replication of p2's update")
        assert client.get("/fhir/ResearchStudy/s2").status_code == 200
        assert _match_ids(client, "p1") == ["s1", "s2"]
    finally:
        replica.dispose()
        _dispose(app)
