"""``gateway load`` (JSON, Bundles, NDJSON, directories) and ``gateway db upgrade``, via click's CliRunner."""

from __future__ import annotations

import shutil

import orjson
import pytest
from click.testing import CliRunner

from gateway.cli import cli
from gateway.store.engine import make_engine
from gateway.store.repo import Store
from gateway.store.schema import MIGRATIONS, current_version
from tests.conftest import DATA

HL7 = DATA / "hl7-examples" / "r4"


@pytest.fixture
def run(db_url, tmp_path):
    """Invoke the gateway CLI with GATEWAY_DATABASE_URL pointing at this test's database."""
    env = {"GATEWAY_DATABASE_URL": db_url, "GATEWAY_INSTANCE_PATH": str(tmp_path)}

    def invoke(*args: str):
        return CliRunner().invoke(cli, list(args), env=env, catch_exceptions=False)

    return invoke


@pytest.fixture
def db(db_url):
    engine = make_engine(db_url)
    yield Store(engine)
    engine.dispose()


def test_db_upgrade_then_up_to_date(run, db_url, tmp_path):
    if db_url.startswith("sqlite"):
        first = run("db", "upgrade")
        assert first.exit_code == 0
        assert first.output.strip() == f"applied migrations: {[v for v, _ in MIGRATIONS]}"
    again = run("db", "upgrade")
    assert again.exit_code == 0 and again.output.strip() == "schema is up to date"
    engine = make_engine(db_url)
    assert current_version(engine) == MIGRATIONS[-1][0]
    engine.dispose()


def test_load_single_resources_with_and_without_id(run, db, tmp_path):
    with_id = HL7 / "researchstudy-example.json"
    no_id = tmp_path / "new-patient.json"
    no_id.write_bytes(orjson.dumps({"resourceType": "Patient", "gender": "female"}))
    r = run("load", "--quiet", str(with_id), str(no_id))
    assert r.exit_code == 0, r.output
    assert r.stdout.strip() == "created 2, updated 0, unchanged 0, failed 0"
    again = run("load", "--quiet", str(with_id))
    assert again.stdout.strip() == "created 0, updated 0, unchanged 1, failed 0"
    assert db.read("ResearchStudy", "example").version == 1
    assert db.count("Patient") == 1


def test_load_transaction_bundle(run, db):
    record = next((DATA / "synthea").glob("Buster_*.json"))
    n = len(orjson.loads(record.read_bytes())["entry"])
    r = run("load", "--quiet", str(record))
    assert r.exit_code == 0
    assert r.stdout.strip() == f"created {n}, updated 0, unchanged 0, failed 0"
    assert db.count() == n


def test_load_collection_bundle_loads_each_entry(run, db):
    bundle = HL7 / "patient-examples-general.json"
    n = len(orjson.loads(bundle.read_bytes())["entry"])
    r = run("load", "--quiet", str(bundle))
    assert r.exit_code == 0 and r.stdout.strip() == f"created {n}, updated 0, unchanged 0, failed 0"
    assert db.count("Patient") == n


def test_load_ndjson_reports_failures_with_reasons(run, db, tmp_path):
    lines = [orjson.dumps({"resourceType": "Patient", "id": f"nd{i}", "gender": "male"}) for i in range(3)]
    lines.insert(1, b"{not json")
    lines.append(orjson.dumps({"resourceType": "Patient", "id": "bad", "gender": "robot"}))
    path = tmp_path / "patients.ndjson"
    path.write_bytes(b"\n".join(lines) + b"\n\n")
    r = run("load", "--quiet", str(path))
    assert r.exit_code == 1, "any failure makes the exit status non-zero"
    assert r.stdout.strip() == "created 3, updated 0, unchanged 0, failed 2"
    assert "patients.ndjson:2: not valid JSON" in r.stderr
    assert "patients.ndjson:5:" in r.stderr and "robot" in r.stderr
    assert db.count("Patient") == 3


def test_load_directory_recursively(run, db, tmp_path):
    folder = tmp_path / "data" / "nested"
    folder.mkdir(parents=True)
    for name in ("condition-example.json", "observation-example.json", "patient-example.json"):
        shutil.copy(HL7 / name, folder / name)
    (tmp_path / "data" / "notes.txt").write_text("not FHIR, ignored")
    r = run("load", str(tmp_path / "data"))
    assert r.exit_code == 0
    assert r.stdout.strip() == "created 3, updated 0, unchanged 0, failed 0"
    assert "file" in r.stderr, "a progress bar is drawn on stderr unless --quiet"
    assert {db.count(t) for t in ("Condition", "Observation", "Patient")} == {1}


def test_load_needs_an_existing_path():
    r = CliRunner().invoke(cli, ["load", "/no/such/file.json"])
    assert r.exit_code == 2 and "does not exist" in r.output


def test_load_obeys_the_same_write_rules_as_the_api(run, db):
    """The loader uses the API's service with its hooks: a classic (non-topic) Subscription is refused."""
    r = run("load", "--quiet", str(HL7 / "subscription-example.json"))
    assert r.exit_code == 1
    assert r.stdout.strip() == "created 0, updated 0, unchanged 0, failed 1"
    assert "is not a topic this server offers" in r.stderr
    assert db.count("Subscription") == 0
