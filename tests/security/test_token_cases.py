"""Token cases once per kind of interaction, against one seeded app per module: no token, expired, wrong
audience, alg none, HS256 signed with the public key, unknown key id, IdP tokens gone wrong -> 401;
scope too narrow -> 403. (Replayed assertions: test_tokens.py.)"""

from __future__ import annotations

import pytest

from tests.security.conftest import FHIR, bearer
from tests.security.test_tokens import BAD_TOKENS, INTERACTIONS


@pytest.mark.parametrize("interaction", sorted(INTERACTIONS))
@pytest.mark.parametrize("case", sorted(BAD_TOKENS))
def test_bad_tokens_get_401(shared, interaction, case):
    http, keys = shared.http, shared.keys
    method, path, body = INTERACTIONS[interaction]
    make = BAD_TOKENS[case]
    headers = dict(FHIR) if make is None else bearer(make(keys))
    r = http.open(path, method=method, json=body, headers=headers)
    assert r.status_code == 401, r.get_data(as_text=True)
    assert r.get_json()["resourceType"] == "OperationOutcome"
    assert r.get_json()["issue"][0]["code"] == "login"
    assert r.headers["WWW-Authenticate"].startswith("Bearer")
    assert "SECRET-" not in r.get_data(as_text=True)


@pytest.mark.parametrize("interaction", sorted(INTERACTIONS))
def test_scope_too_narrow_gets_403(shared, interaction):
    method, path, body = INTERACTIONS[interaction]
    tok = shared.token("narrow")  # a hospital allowed system/Organization.r only
    r = shared.http.open(path, method=method, json=body, headers=bearer(tok))
    assert r.status_code == 403, r.get_data(as_text=True)
    assert r.get_json()["issue"][0]["code"] == "forbidden"
    assert "SECRET-" not in r.get_data(as_text=True)
