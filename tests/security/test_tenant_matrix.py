"""The tenant matrix: type x interaction x {own tenant, other tenant, other patient} -> expected status, 0 leaks.

Patient-app cases use an IdP-issued patient token; the whole matrix runs again with IdP tokens impersonating
backend clients (401 everywhere).

Each case acts as one caller against the seeded world (tests/security/conftest.py WORLD). Every
response is searched for the secret marker of every resource that caller may not see: 0 leaks.
"""

from __future__ import annotations

import json

import pytest

from tests.security.conftest import WORLD, bearer, idp_token, secret

BY_ID = {r["id"]: r for r in WORLD}
STUDY_SIDE = {"study-a", "study-b", "study-b2", "group-a", "group-b", "loc-a", "loc-b"}

# What each caller may see (the policy, written out): everything else must never appear.
VISIBLE = {
    "hospital": STUDY_SIDE | {"leeds-me", "leeds-other", "cond-leeds-me", "cond-leeds-other", "obs-leeds-me",
                              "obs-leeds-other", "consent-leeds-me", "consent-leeds-other", "subj-leeds-me",
                              "subj-leeds-other"},
    "sponsor": set(STUDY_SIDE),
    "patient-app": STUDY_SIDE | {"leeds-me", "cond-leeds-me", "obs-leeds-me", "consent-leeds-me", "subj-leeds-me",
                                 "sub-me"},
    "research-team": STUDY_SIDE | {"subj-leeds-me"},
}

# (caller, type) -> (own id, other id, what 'other' is); None: the caller has no own resource of the type.
TARGETS = {
    ("hospital", "Patient"): ("leeds-me", "christie-pat", "other tenant"),
    ("hospital", "Condition"): ("cond-leeds-me", "cond-christie", "other tenant"),
    ("hospital", "Observation"): ("obs-leeds-me", "obs-christie", "other tenant"),
    ("hospital", "Consent"): ("consent-leeds-me", "consent-christie", "other tenant"),
    ("hospital", "ResearchSubject"): ("subj-leeds-me", "subj-christie", "other tenant"),
    ("hospital", "ResearchStudy"): (None, "study-b-draft", "other tenant"),
    ("hospital", "Group"): (None, "group-members", "other tenant"),
    ("sponsor", "ResearchStudy"): ("study-a", "study-b", "other tenant"),
    ("sponsor", "Group"): ("group-a", "group-b", "other tenant"),
    ("sponsor", "Location"): ("loc-a", "loc-b", "other tenant"),
    ("sponsor", "Patient"): (None, "leeds-me", "other tenant"),
    ("sponsor", "ResearchSubject"): (None, "subj-leeds-me", "other tenant"),
    ("patient-app", "Patient"): ("leeds-me", "leeds-other", "other patient"),
    ("patient-app", "Condition"): ("cond-leeds-me", "cond-leeds-other", "other patient"),
    ("patient-app", "Observation"): ("obs-leeds-me", "obs-leeds-other", "other patient"),
    ("patient-app", "Consent"): ("consent-leeds-me", "consent-leeds-other", "other patient"),
    ("patient-app", "ResearchSubject"): ("subj-leeds-me", "subj-leeds-other", "other patient"),
    ("patient-app", "Subscription"): ("sub-me", "sub-other", "other patient"),
    ("patient-app", "ResearchStudy"): (None, "study-b-draft", "other tenant"),
    ("research-team", "ResearchSubject"): ("subj-leeds-me", "subj-leeds-other", "other tenant"),
    ("research-team", "Patient"): (None, "leeds-me", "other patient"),
}

# Types each caller may write at all (role and scopes); others answer 403 for every write.
WRITES = {
    "hospital": {"Patient", "Condition", "Observation", "Consent", "ResearchSubject"},
    "sponsor": {"ResearchStudy", "Group", "Location"},
    "patient-app": {"Consent", "ResearchSubject", "Subscription"},
    "research-team": {"ResearchSubject"},  # update only (scopes rus)
}
READS = {  # types each caller may read or search at all
    "hospital": {"Patient", "Condition", "Observation", "Consent", "ResearchSubject", "ResearchStudy", "Group"},
    "sponsor": {"ResearchStudy", "Group", "Location"},
    "patient-app": {"Patient", "Condition", "Observation", "Consent", "ResearchSubject", "Subscription",
                    "ResearchStudy"},
    "research-team": {"ResearchSubject"},
}
INTERACTIONS = ["read", "search", "history", "update", "delete", "create", "transaction"]


def expected(role: str, rtype: str, interaction: str, which: str) -> int:
    rid = TARGETS[(role, rtype)][0 if which == "own" else 1]
    visible = rid in VISIBLE[role]
    if interaction in ("read", "history"):
        return 403 if rtype not in READS[role] else (200 if visible else 404)
    if interaction == "search":
        return 200 if rtype in READS[role] else 403
    writable = rtype in WRITES[role]
    if role == "research-team" and interaction in ("create", "delete"):
        writable = False
    if not writable:
        return 403
    if interaction == "create":
        return 201 if which == "own" else 403
    ok = which == "own"
    if not ok and not visible:
        return 404  # a resource the caller may not see answers like a missing one, before any version check
    if interaction == "delete":
        return 204 if ok else 403
    return 200 if ok else 403  # update, transaction entry


def cases():
    for (role, rtype), (own, other, label) in TARGETS.items():
        for interaction in INTERACTIONS:
            for which, rid in (("own", own), (label, other)):
                if rid is None:
                    continue
                yield pytest.param(role, rtype, interaction, "own" if which == "own" else "other",
                                   id=f"{role}-{rtype}-{interaction}-{which.replace(' ', '_')}")


def _new_resource(role: str, rtype: str, which: str) -> dict:
    """A new resource of ``rtype`` about the caller's own person/organisation, or about the other one."""
    own, other, _ = TARGETS[(role, rtype)]
    template = json.loads(json.dumps(BY_ID[own if which == "own" else other]))
    template.pop("id")
    template.pop("text", None)
    if which == "other" and rtype in ("ResearchStudy", "Group", "Location"):
        return template  # still carries the other sponsor's tag: the gateway must not keep it
    if rtype == "Patient":
        # a new Patient: 'other' claims another organisation through its tag (stamped over, so it is 'own')
        return template
    return template


@pytest.mark.parametrize(("role", "rtype", "interaction", "which"), list(cases()))
def test_tenant_matrix(shared, role, rtype, interaction, which):
    http, keys = shared.http, shared.keys
    tok = idp_token(keys) if role == "patient-app" else shared.token(
        {"hospital": "leeds-ehr", "sponsor": "sponsor-a", "research-team": "team-a"}[role])
    try:
        _case(http, keys, tok, role, rtype, interaction, which)
    finally:
        if interaction in ("update", "transaction", "delete"):
            own, other, _ = TARGETS[(role, rtype)]
            shared.restore(own if which == "own" else other)


# The IdP path (issue #13): an identity-provider token whose client_id names a backend client (the patient-app
# cases: the admin console) must not get that client's role. Every case of the matrix: 401, 0 leaks.
IMPERSONATED = {"hospital": "leeds-ehr", "sponsor": "sponsor-a", "research-team": "team-a",
                "patient-app": "admin-console"}


@pytest.mark.parametrize(("role", "rtype", "interaction", "which"), list(cases()))
def test_tenant_matrix_idp_impersonating_a_backend_client(shared, role, rtype, interaction, which):
    tok = idp_token(shared.keys, client_id=IMPERSONATED[role], scope="system/*.cruds")
    try:
        _case(shared.http, shared.keys, tok, role, rtype, interaction, which, want=401, visible=set())
    finally:
        if interaction in ("update", "transaction", "delete"):
            own, other, _ = TARGETS[(role, rtype)]
            shared.restore(own if which == "own" else other)


def _case(http, keys, tok, role, rtype, interaction, which, want: int | None = None,
          visible: set[str] | None = None):
    """One matrix case; ``want``/``visible`` override the policy's expectation (the impersonation run)."""
    own, other, _ = TARGETS[(role, rtype)]
    rid = own if which == "own" else other
    h = bearer(tok)
    forced = want is not None
    want = want if forced else expected(role, rtype, interaction, which)
    visible = VISIBLE[role] if visible is None else visible
    if interaction == "read":
        r = http.get(f"/fhir/{rtype}/{rid}", headers=h)
    elif interaction == "history":
        r = http.get(f"/fhir/{rtype}/{rid}/_history", headers=h)
    elif interaction == "search":
        r = http.get(f"/fhir/{rtype}?_id={rid}", headers=h)
    elif interaction in ("update", "transaction"):
        body = {**json.loads(json.dumps(BY_ID[rid])), "language": "en-GB"}
        if interaction == "update":
            r = http.put(f"/fhir/{rtype}/{rid}", json=body, headers=h)
        else:
            bundle = {"resourceType": "Bundle", "type": "transaction",
                      "entry": [{"resource": body, "request": {"method": "PUT", "url": f"{rtype}/{rid}"}}]}
            r = http.post("/fhir", json=bundle, headers=h)
    elif interaction == "delete":
        r = http.delete(f"/fhir/{rtype}/{rid}", headers=h)
    else:  # create
        new = _new_resource(role, rtype, "own" if which == "own" else "other")
        if not forced and rtype in ("ResearchStudy", "Group", "Location", "Patient") and which != "own":
            want = 201 if rtype in WRITES[role] else 403  # a forged tenant tag is replaced, not trusted
        if rtype == "ResearchSubject":
            new["status"] = "screening"
        r = http.post(f"/fhir/{rtype}", json=new, headers=h)
        if r.status_code == 201:
            tags = [t for t in r.get_json().get("meta", {}).get("tag", [])
                    if t.get("system", "").endswith("/CodeSystem/tenant")]
            mine = {"hospital": "RR8", "sponsor": "SPA"}.get(role)
            assert [t["code"] for t in tags] == ([mine] if mine else [])
    text = r.get_data(as_text=True)
    assert r.status_code == want, text[:500]
    leaks = [i for i in BY_ID if i not in visible and secret(i) in text]
    assert leaks == []
    if interaction == "search" and want == 200:
        got = [e["resource"]["id"] for e in r.get_json().get("entry", []) if e["search"]["mode"] == "match"]
        assert got == ([rid] if rid in visible else [])


# /metrics goes through the one authorization path (gateway.api.authz, like /admin/*): administrators only;
# the probes are public (load balancers carry no token).
OPS_PATHS = {"/metrics": {"admin": 200, "anonymous": 401}, "/readyz": {}, "/healthz": {}}


@pytest.mark.parametrize("path", sorted(OPS_PATHS))
@pytest.mark.parametrize("role", ["admin", "hospital", "sponsor", "research-team", "patient-app", "anonymous"])
def test_operations_endpoints(shared, role, path):
    if role == "anonymous":
        headers = {}
    elif role == "patient-app":
        headers = bearer(idp_token(shared.keys))
    else:
        headers = bearer(shared.token({"admin": "admin-console", "hospital": "leeds-ehr", "sponsor": "sponsor-a",
                                       "research-team": "team-a"}[role]))
    want = OPS_PATHS[path].get(role, 403) if OPS_PATHS[path] else 200
    r = shared.http.get(path, headers=headers)
    assert r.status_code == want, r.get_data(as_text=True)[:300]
    if want == 200 and path == "/metrics":
        assert b"gateway_http_requests_total" in r.data


# Patient actions (/patient, gateway/api/patient.py) go through the same path: a patient app acts for its own
# person only; every other role is refused; no token is 401. None of these cases writes anything.
PATIENT_ACTIONS = {
    ("GET", "/patient/contact-requests", None): 200,
    ("GET", "/patient/alerts", None): 200,
    ("DELETE", "/patient/alerts", None): 200,  # nothing to end: 0 opt-ins
    ("POST", "/patient/contact-requests", "study-b-draft"): 404,  # another sponsor's private study
    ("DELETE", "/patient/contact-requests/subj-leeds-other", None): 404,  # another person's
    ("DELETE", "/patient/contact-requests/subj-leeds-me", None): 422,  # own, but not a contact request
}


@pytest.mark.parametrize(("method", "path", "study"), sorted(PATIENT_ACTIONS, key=str))
@pytest.mark.parametrize("role", ["admin", "hospital", "sponsor", "research-team", "patient-app", "anonymous"])
def test_patient_actions(shared, role, method, path, study):
    if role == "anonymous":
        headers = {}
    elif role == "patient-app":
        headers = bearer(idp_token(shared.keys))
    else:
        headers = bearer(shared.token({"admin": "admin-console", "hospital": "leeds-ehr", "sponsor": "sponsor-a",
                                       "research-team": "team-a"}[role]))
    body = None
    if study:
        ref = {"reference": f"ResearchStudy/{study}"}
        body = {"resourceType": "Parameters", "parameter": [{"name": "study", "valueReference": ref}]}
    r = shared.http.open(path, method=method, json=body, headers=headers)
    want = {"anonymous": 401, "patient-app": PATIENT_ACTIONS[(method, path, study)]}.get(role, 403)
    text = r.get_data(as_text=True)
    assert r.status_code == want, text[:300]
    assert r.get_json()["resourceType"] in ("Bundle", "OperationOutcome")
    assert [i for i in BY_ID if i not in VISIBLE.get(role, set()) and secret(i) in text] == []
