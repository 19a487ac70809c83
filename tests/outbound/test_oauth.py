"""authlib's OAuth 2 session sending through the one outbound client (gateway/outbound/oauth.py)."""

from __future__ import annotations

import base64
import logging

import pytest
import responses

from gateway.outbound.allowlist import AllowList
from gateway.outbound.errors import DestinationNotAllowed
from gateway.outbound.http import HttpClient
from gateway.outbound.oauth import OutboundOAuth2Session

TOKEN_URL = "https://idp.example.org/token"


def _session(allowed: str = "idp.example.org") -> OutboundOAuth2Session:
    http = HttpClient(allowed_hosts=AllowList.parse(allowed), max_retries=0)
    return OutboundOAuth2Session("gateway-web", "web-secret", outbound=http, redirect_uri="https://gw.example.org/cb")


@responses.activate
def test_a_code_exchange_keeps_authlibs_client_authentication_and_gets_the_log_line(caplog):
    responses.post(TOKEN_URL, json={"access_token": "at-1", "token_type": "Bearer", "expires_in": 60})
    caplog.set_level(logging.INFO, logger="gateway.outbound")
    token = _session().fetch_token(TOKEN_URL, code="c-1", grant_type="authorization_code")
    assert token["access_token"] == "at-1"
    sent = responses.calls[0].request
    assert sent.headers["Authorization"] == "Basic " + base64.b64encode(b"gateway-web:web-secret").decode()
    assert "code=c-1" in sent.body
    lines = [r.getMessage() for r in caplog.records if r.name == "gateway.outbound"]
    assert lines and lines[0].startswith("POST /token -> 200 in ")
    assert not any("c-1" in x or "at-1" in x for x in lines)


@responses.activate
def test_a_host_off_the_allow_list_is_refused_before_anything_is_sent():
    with pytest.raises(DestinationNotAllowed, match="idp.example.org"):
        _session(allowed="other.example.org").fetch_token(TOKEN_URL, code="c-1", grant_type="authorization_code")
    assert len(responses.calls) == 0


def test_an_argument_that_would_bypass_the_client_is_refused():
    with pytest.raises(TypeError, match="verify"):
        _session().request("GET", "https://idp.example.org/jwks", withhold_token=True, verify=False)
