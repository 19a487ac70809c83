"""Per-client rate limit, development-mode rules, operation parameters, client files."""

from __future__ import annotations

import pytest
import yaml

from gateway.api.app import create_app
from gateway.security.clients import ClientConfigError, load_clients
from gateway.security.devmode import check_bind, is_loopback
from gateway.security.ratelimit import RateLimiter
from tests.conftest import ROOT
from tests.security.conftest import FHIR, WORLD, bearer, close_app, get_token, idp_token, public_jwk, with_security
from tests.security.test_tenant_matrix import VISIBLE


def test_rate_limit_answers_429_with_retry_after(sec_settings, keys):
    app = create_app(with_security(sec_settings, rate_limit=3))
    http = app.test_client()
    tok = get_token(http, keys, "leeds-ehr")
    other = get_token(http, keys, "christie-ehr")
    codes = [http.get("/fhir/Patient", headers=bearer(tok)).status_code for _ in range(4)]
    assert codes == [200, 200, 200, 429]
    r = http.get("/fhir/Patient", headers=bearer(tok))
    assert r.status_code == 429 and int(r.headers["Retry-After"]) >= 1
    assert r.get_json()["issue"][0]["code"] == "throttled"
    assert http.get("/fhir/Patient", headers=bearer(other)).status_code == 200  # per client
    close_app(app)


def test_token_bucket_refills():
    rl = RateLimiter(60)
    assert all(rl.take("c", now=0.0) == 0.0 for _ in range(60))
    wait = rl.take("c", now=0.0)
    assert 0.9 < wait <= 1.0
    assert rl.take("c", now=1.0) == 0.0


def test_insecure_dev_warns_on_every_response(settings):
    app = create_app(with_security(settings, insecure_dev=True))
    c = app.test_client()
    for path in ("/fhir/metadata", "/fhir/Patient", "/healthz"):
        assert "insecure development mode" in c.get(path, headers=FHIR).headers["Warning"]
    close_app(app)


def test_no_warning_header_with_clients(http, keys):
    assert "Warning" not in http.get("/fhir/metadata", headers=FHIR).headers


def test_security_headers_and_no_stack_traces(http, keys):
    r = http.get("/fhir/Patient/x", headers=bearer("a.b.c"))
    assert r.headers["X-Content-Type-Options"] == "nosniff"
    assert "Traceback" not in r.get_data(as_text=True)


def test_bind_rules():
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("10.0.0.5")
    assert check_bind("0.0.0.0", clients_configured=True, insecure_dev=False) == []
    assert "development mode" in check_bind("127.0.0.1", clients_configured=False, insecure_dev=False)[0]
    with pytest.raises(SystemExit, match="refusing to bind 0.0.0.0"):
        check_bind("0.0.0.0", clients_configured=False, insecure_dev=False)
    assert len(check_bind("0.0.0.0", clients_configured=False, insecure_dev=True)) == 2


def test_serve_refuses_public_bind_without_clients(tmp_path):
    from click.testing import CliRunner

    from gateway.cli import cli

    (tmp_path / "empty").mkdir()  # a configured folder with no client files: development mode
    # the command's own environment (CliRunner sets it only while the command runs; None unsets a variable)
    env = {"GATEWAY_DATABASE_URL": f"sqlite:///{tmp_path / 'gw.sqlite3'}",
           "GATEWAY_CLIENTS_PATH": str(tmp_path / "empty"), "GATEWAY_INSECURE_DEV": None}
    result = CliRunner().invoke(cli, ["serve", "--host", "0.0.0.0", "--port", "0"], env=env)
    assert result.exit_code != 0
    assert "refusing to bind 0.0.0.0" in str(result.exception) + result.output


# -- operations: parameters name only people the caller may act for -----------------------------------
def test_operation_parameters_naming_another_person_are_refused(http, keys, world):
    tok = idp_token(keys)
    other = {"resourceType": "Parameters", "parameter": [
        {"name": "patient", "valueReference": {"reference": "Patient/leeds-other"}}]}
    r = http.post("/fhir/ResearchStudy/$match", json=other, headers=bearer(tok))
    assert r.status_code == 403
    assert "SECRET-" not in r.get_data(as_text=True)
    r = http.get("/fhir/ResearchStudy/$match?patient=Patient/leeds-other", headers=bearer(tok))
    assert r.status_code == 403
    mine = {"resourceType": "Parameters", "parameter": [
        {"name": "patient", "valueReference": {"reference": "Patient/leeds-me"}}]}
    r = http.post("/fhir/ResearchStudy/$match", json=mine, headers=bearer(tok))
    assert r.status_code not in (401, 403), r.get_data(as_text=True)


def test_research_team_candidates_only_for_its_studies(http, keys, world):
    tok = bearer(get_token(http, keys, "team-a"))
    assert http.get("/fhir/ResearchStudy/study-b/$candidates", headers=tok).status_code == 403
    assert http.get("/fhir/ResearchStudy/study-a/$candidates", headers=tok).status_code not in (401, 403)


def test_sponsor_may_not_match_patients(http, keys, world):
    tok = bearer(get_token(http, keys, "sponsor-a"))
    assert http.post("/fhir/ResearchStudy/$match", json={"resourceType": "Parameters", "parameter": []},
                     headers=tok).status_code == 403


def test_admin_paths_are_for_administrators(http, keys, world):
    assert http.get("/admin/outbox", headers=bearer(get_token(http, keys, "leeds-ehr"))).status_code == 403


# -- client files ---------------------------------------------------------------------------------------
def test_example_clients_load():
    reg = load_clients(ROOT / "mappings" / "clients" / "examples")
    assert {c.role for c in reg.clients.values()} == {"admin", "sponsor", "hospital", "research-team",
                                                      "patient-app"}


def test_default_clients_folder_holds_no_active_clients():
    """mappings/clients/ itself stays empty (examples live one level down), so development mode is the default."""
    assert not load_clients(ROOT / "mappings" / "clients")


@pytest.mark.parametrize(("change", "message"), [
    ({"role": "superuser"}, "bad.yaml: role: Must be one of"),
    ({"scopes": ["system/Patient.write2"]}, "bad.yaml: scopes: 'system/Patient.write2' is not a SMART scope"),
    ({"scopes": ["patient/Patient.r"]}, "bad.yaml: scopes: patient/ scopes are for patient-app clients"),
    ({"tenant": None}, "bad.yaml: tenant: a hospital client needs its organisation"),
    ({"jwks": None}, "bad.yaml: jwks: backend clients need their public keys"),
    ({"jwks": {"keys": [{"kty": "RSA", "kid": "k", "n": "x", "e": "AQAB", "d": "secret"}]}},
     "private or secret key material (d)"),
    ({"client_id": "has spaces"}, "bad.yaml: client_id: String does not match"),
])
def test_client_file_errors_name_file_and_field(tmp_path, keys, change, message):
    doc = {"client_id": "x", "role": "hospital", "tenant": "RR8", "scopes": ["system/*.rs"],
           "jwks": {"keys": [public_jwk(keys.rsa, "k1")]}}
    doc.update(change)
    doc = {k: v for k, v in doc.items() if v is not None}
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(doc))
    with pytest.raises(ClientConfigError) as err:
        load_clients(tmp_path)
    assert message in str(err.value)


def test_duplicate_client_ids_are_refused(tmp_path, keys):
    doc = {"client_id": "x", "role": "admin", "scopes": ["system/*.cruds"], "jwks": {"keys": [public_jwk(keys.rsa,
                                                                                                        "k1")]}}
    (tmp_path / "a.yaml").write_text(yaml.safe_dump(doc))
    (tmp_path / "b.yaml").write_text(yaml.safe_dump(doc))
    with pytest.raises(ClientConfigError, match="b.yaml: client_id: 'x' is already defined in a.yaml"):
        load_clients(tmp_path)


def test_candidates_without_consent_is_for_administrators(http, keys, world):
    tok = bearer(get_token(http, keys, "team-a"))
    assert http.get("/fhir/ResearchStudy/study-a/$candidates?consent=any", headers=tok).status_code == 403


def test_match_results_never_show_private_studies(http, keys, world):
    """The safety net on operation results: a patient app never sees another sponsor's draft study."""
    tok = idp_token(keys)
    body = {"resourceType": "Parameters", "parameter": [
        {"name": "patient", "valueReference": {"reference": "Patient/leeds-me"}}]}
    r = http.post("/fhir/ResearchStudy/$match", json=body, headers=bearer(tok))
    assert r.status_code not in (401, 403)
    assert "study-b-draft" not in r.get_data(as_text=True)


def test_operation_results_are_filtered_for_the_caller(http, keys, world, sec_app):
    """An operation whose handler forgets to filter still returns only what the caller may see."""
    from gateway.api import operations
    from gateway.api.http import fhir_response
    from gateway.security import policy

    store = sec_app.extensions["gateway.store"]

    def dump(_rtype, _rid):
        rows = store.read_many([(r["resourceType"], r["id"]) for r in WORLD])
        return fhir_response({"resourceType": "Bundle", "type": "searchset", "total": len(rows),
                              "entry": [{"resource": r.resource()} for r in rows]})

    op = operations.register(operations.Operation("test-dump", "Patient", False, dump, ("GET",)))
    policy.register_operation("Patient", "test-dump", {"patient-app"})
    try:
        r = http.get("/fhir/Patient/$test-dump", headers=bearer(idp_token(keys)))
        assert r.status_code == 200
        ids = {e["resource"]["id"] for e in r.get_json()["entry"]}
        assert ids == VISIBLE["patient-app"] and "total" not in r.get_json()
    finally:
        operations._REGISTRY.pop((op.resource_type, op.name, op.instance), None)
        policy.OPERATION_ROLES.pop(("Patient", "test-dump"), None)


def test_deleted_resource_of_another_tenant_is_404_not_410(http, keys, world):
    christie = bearer(get_token(http, keys, "christie-ehr"))
    assert http.delete("/fhir/Condition/cond-christie", headers=christie).status_code == 204
    assert http.get("/fhir/Condition/cond-christie", headers=christie).status_code == 410
    leeds = bearer(get_token(http, keys, "leeds-ehr"))
    assert http.get("/fhir/Condition/cond-christie", headers=leeds).status_code == 404
    assert http.get("/fhir/Condition/cond-christie/_history/2", headers=leeds).status_code == 404


def test_authorize_for_code_outside_the_views(sec_app, world):
    from gateway.fhir.errors import Forbidden, NotFound
    from gateway.security import Access, Caller, authorize

    store = sec_app.extensions["gateway.store"]
    acc = Access(Caller("leeds-ehr", "hospital", tenant="RR8", scopes=frozenset({"system/*.cruds"})), store)
    authorize(acc, "read", "Patient", store.read("Patient", "leeds-me").resource())
    with pytest.raises(NotFound):
        authorize(acc, "read", "Patient", store.read("Patient", "christie-pat").resource())
    with pytest.raises(Forbidden):
        authorize(acc, "create", "Condition", {"resourceType": "Condition",
                                               "subject": {"reference": "Patient/christie-pat"}})
    sponsor = Access(Caller("sponsor-a", "sponsor", tenant="SPA", scopes=frozenset({"system/*.cruds"})), store)
    with pytest.raises(Forbidden):
        authorize(sponsor, "search", "Patient")
