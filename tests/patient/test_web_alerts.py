"""'Tell me about similar trials' on the study page, signed in (issue #14: opt in "for a condition and area", "see
what they opted in to, and opt out in one step"): the patient gives the area on the page (signing in starts a
fresh session, so no earlier search is left to take it from), sees what they opted in to, and opts out."""

from __future__ import annotations

import re

from gateway.api import patient as actions
from gateway.notify.subscriptions import EXT_FILTER_CRITERIA
from gateway.security.principal import Caller
from tests.patient.conftest import ME, sign_in

_ALERT_TOKEN = re.compile(r'action="/trials/[^"]+/(?:alerts|stop-alerts)" method="post"[^>]*>\s*'
                          r'<input type="hidden" name="csrf_token" value="([^"]+)"')


def _token(html: str) -> str:
    m = _ALERT_TOKEN.search(html)
    assert m, "the alerts form and its CSRF token are on the page"
    return m.group(1)


def _filters(app) -> list[str]:
    with app.test_request_context():
        found = actions.alerts(Caller(client_id="t", role="patient-app", nhs_number=ME))
    return [x["valueString"] for r in found if r["resourceType"] == "Subscription"
            for x in r["_criteria"]["extension"] if x["url"] == EXT_FILTER_CRITERIA]


def test_opt_in_near_a_postcode_from_the_study_page_shows_it_and_opts_out(app, client, issuer, demo):
    sid = demo["study"]
    issuer.nhs_number = ME
    sign_in(client, f"/trials/{sid}")
    page = client.get(f"/trials/{sid}").text
    assert 'for="alert-postcode">Postcode for alerts</label>' in page and 'for="alert-distance"' in page
    assert re.search(r'id="alert-postcode"[^>]*value=""', page, re.S), "no search kept after sign-in: empty"
    r = client.post(f"/trials/{sid}/alerts", data={"csrf_token": _token(page), "alert_postcode": "ls6 3he",
                                                   "alert_distance": "25"})
    assert r.status_code == 303 and "LS6" not in r.headers["Location"].upper()
    page = client.get(f"/trials/{sid}").text
    assert "Alerts are on" in page
    (shown,) = re.findall(r'<ul class="nhsuk-list nhsuk-list--bullet" id="alert-interests">(.*?)</ul>', page, re.S)
    assert "within 25 km of LS6" in " ".join(shown.split()) and "3HE" not in page.upper()
    (criteria,) = _filters(app)
    assert "postcode=LS6" in criteria and "distance=25" in criteria
    r = client.post(f"/trials/{sid}/stop-alerts", data={"csrf_token": _token(page)})
    assert r.status_code == 303
    page = client.get(f"/trials/{sid}").text
    assert "You will not get alerts" in page and "Tell me about similar trials" in page
    assert _filters(app) == []


def test_no_postcode_means_anywhere_and_says_so(app, client, issuer, demo):
    sid = demo["study"]
    issuer.nhs_number = ME
    sign_in(client, f"/trials/{sid}")
    page = client.get(f"/trials/{sid}").text
    r = client.post(f"/trials/{sid}/alerts", data={"csrf_token": _token(page), "alert_postcode": "",
                                                   "alert_distance": "50"})
    assert r.status_code == 303
    page = client.get(f"/trials/{sid}").text
    assert "anywhere in the UK" in page and "near you" not in page
    (criteria,) = _filters(app)
    assert "postcode=" not in criteria and "condition=" in criteria


def test_an_unknown_postcode_or_distance_is_an_error_on_the_page_and_nothing_is_stored(app, client, issuer, demo):
    sid = demo["study"]
    issuer.nhs_number = ME
    sign_in(client, f"/trials/{sid}")
    token = _token(client.get(f"/trials/{sid}").text)
    r = client.post(f"/trials/{sid}/alerts", data={"csrf_token": token, "alert_postcode": "ZZ9 9ZZ",
                                                   "alert_distance": "50"})
    assert r.status_code == 400 and "<title>Error: " in r.text
    assert 'href="#alert-postcode"' in r.text and 'id="alert-postcode-error"' in r.text
    assert 'aria-describedby="alert-postcode-hint alert-postcode-error"' in r.text
    r = client.post(f"/trials/{sid}/alerts", data={"csrf_token": token, "alert_postcode": "", "alert_distance": "7"})
    assert r.status_code == 400 and 'href="#alert-distance"' in r.text
    assert _filters(app) == []
