"""The patient pages through Flask's test client (SQLite and PostgreSQL): search form, errors, study page,
privacy (no postcode in a URL), CSRF and authorization. The same pages in a real browser: test_browser.py."""

from __future__ import annotations

from urllib.parse import urlsplit

import pytest

from tests.conftest import FHIR_JSON
from tests.web.pages import BMETS_TITLE, DEMO, GBM_TITLE, STUDY_FILES, csrf_token, study_ids


@pytest.fixture
def demo(client) -> dict[str, str]:
    for name in STUDY_FILES:
        r = client.post("/fhir", data=(DEMO / name).read_text(), headers=FHIR_JSON)
        assert r.status_code == 200, r.text
    return study_ids(client.get)


def search(client, **form):
    token = csrf_token(client.get("/trials").text)
    data = {"words": "", "postcode": "", "distance": "50", "recruiting": "yes", "csrf_token": token, **form}
    return client.post("/trials", data=data)


def test_root_leads_to_trials(client):
    r = client.get("/")
    assert r.status_code == 302 and urlsplit(r.headers["Location"]).path == "/trials"


def test_form_is_labelled_and_recruiting_only_is_on(client):
    html = client.get("/trials").text
    for field, label in (("words", "Condition or keywords"), ("postcode", "Postcode"), ("distance", "Distance"),
                         ("recruiting", "Recruiting only")):
        assert f'for="{field}">{label}</label>' in html
    assert 'id="recruiting" name="recruiting" type="checkbox" value="yes" checked' in html
    assert 'method="post"' in html and 'class="nhsuk-skip-link"' in html and "<h1>" in html


def test_search_is_posted_and_redirected_without_the_postcode_in_any_url(client, demo):
    r = search(client, words="brain tumour", postcode="LS6 3HE")
    assert r.status_code == 303
    loc = r.headers["Location"]
    assert "LS6" not in loc.upper() and "brain" not in loc and urlsplit(loc).path == "/trials"
    page = client.get("/trials")
    assert page.status_code == 200
    assert GBM_TITLE in page.text and BMETS_TITLE not in page.text
    assert "St James&#39;s University Hospital Oncology, Leeds" in page.text  # nearest recruiting site
    for link in (a.split('"')[0] for a in page.text.split('href="')[1:]):
        assert "LS6" not in link.upper() and "3HE" not in link.upper()


@pytest.mark.parametrize("postcode", ["ZZ9 9ZZ", "not a postcode", "Q1 1QQ"])
def test_unknown_postcode_is_an_error_on_the_page_not_a_500(client, demo, postcode):
    r = search(client, words="glioblastoma", postcode=postcode)
    assert r.status_code == 400
    html = r.text
    assert "There is a problem" in html and 'href="#postcode"' in html and "nhsuk-error-message" in html
    assert "<title>Error: " in html
    assert 'aria-describedby="postcode-hint postcode-error"' in html


def test_empty_search_and_bad_distance_are_errors(client):
    r = search(client, words="", postcode="", distance="7")
    assert r.status_code == 400
    assert 'href="#words"' in r.text and 'href="#distance"' in r.text


def test_form_without_or_with_a_wrong_csrf_token_is_refused(client, demo):
    r = client.post("/trials", data={"words": "glioblastoma", "distance": "50"})
    assert r.status_code == 400 and "session has expired" in r.text
    client.get("/trials")
    r = client.post("/trials", data={"words": "glioblastoma", "distance": "50", "csrf_token": "forged"})
    assert r.status_code == 400
    assert client.get("/trials").text.count("studies found") == 0  # nothing was searched


def test_study_page_shows_sites_eligibility_and_sign_in(client, demo):
    search(client, words="glioblastoma", postcode="LS6 3HE")
    html = client.get(f"/trials/{demo[GBM_TITLE]}").text
    assert f"<h1>{GBM_TITLE}</h1>" in html
    assert "Nearest recruiting site: <strong>" in html
    leeds, christie = html.index("St James&#39;s University Hospital"), html.index("The Christie Neuro-Oncology")
    assert leeds < christie  # nearest first
    assert "Aged 18 to 70" in html and "People who have had bevacizumab" in html
    assert "Histologically confirmed glioblastoma" in html  # the verbatim criteria
    assert "Sign in to request contact" in html and "Request contact</button>" not in html


def test_study_page_404_for_unknown_or_malformed_ids(client, demo):
    for sid in ("does-not-exist", "bad id!", "x" * 80):
        r = client.get(f"/trials/{sid}")
        assert r.status_code == 404 and "Page not found" in r.text


def test_patient_actions_need_a_signed_in_patient(client, demo):
    sid = demo[GBM_TITLE]
    token = csrf_token(client.get("/trials").text)
    for action in ("contact", "withdraw", "alerts", "stop-alerts"):
        r = client.post(f"/trials/{sid}/{action}", data={"csrf_token": token})
        assert r.status_code == 401 and "Sign in" in r.text
    r = client.post(f"/trials/{sid}/contact")
    assert r.status_code == 400  # no CSRF token: refused before anything else


def test_pages_act_as_the_public_not_as_the_development_administrator(client, demo, service):
    """In development mode the API's caller is the local administrator; the pages still show only what the public
    may see (a study in review is hidden)."""
    sid = demo[BMETS_TITLE]
    st = client.get(f"/fhir/ResearchStudy/{sid}").json
    st["status"] = "in-review"
    assert client.put(f"/fhir/ResearchStudy/{sid}", json=st, headers=FHIR_JSON).status_code == 200
    assert client.get(f"/trials/{sid}").status_code == 404
    assert client.get(f"/trials/{demo[GBM_TITLE]}").status_code == 200


def test_pages_send_a_strict_content_security_policy_and_no_referrer(client):
    r = client.get("/trials")
    csp = r.headers["Content-Security-Policy"]
    assert "default-src 'none'" in csp and "style-src 'self'" in csp and "form-action 'self'" in csp
    assert r.headers["Referrer-Policy"] == "no-referrer"
    for path in ("/static/web/nhsuk/nhsuk-frontend.min.css", "/assets/images/nhsuk-icon-arrow-down.svg",
                 "/static/web/init.js"):
        with client.get(path) as asset:
            assert asset.status_code == 200, path


@pytest.fixture
def secured_client(db_url, tmp_path):
    """A gateway with clients configured (production): every API request needs a bearer token."""
    from gateway.api.app import create_app
    from gateway.config import OidcSettings, SecuritySettings, Settings, StoreSettings
    from tests.web.pages import ROOT

    clients = tmp_path / "clients"
    clients.mkdir()
    (clients / "nhs-app.yaml").write_text("client_id: nhs-app\nname: Patient app\nrole: patient-app\n"
                                          "scopes: [patient/ResearchStudy.rs]\n")
    app = create_app(Settings(store=StoreSettings(db_url), instance_path=tmp_path, mappings_path=ROOT / "mappings",
                              security=SecuritySettings(clients_path=clients, rate_limit=0),
                              oidc=OidcSettings(session_secret="pages-test-secret")))
    svc = app.extensions["gateway.service"]
    import json

    for name in STUDY_FILES:
        svc.process_bundle(json.loads((DEMO / name).read_text()))
    yield app.test_client()
    app.extensions["gateway.store"].engine.dispose()


def test_pages_are_public_when_the_api_needs_tokens(secured_client):
    c = secured_client
    assert c.get("/fhir/ResearchStudy").status_code == 401  # the API still needs a token
    assert c.get("/").status_code == 302
    page = c.get("/trials")
    assert page.status_code == 200
    r = c.post("/trials", data={"words": "glioblastoma", "postcode": "LS6 3HE", "distance": "50",
                                "recruiting": "yes", "csrf_token": csrf_token(page.text)})
    assert r.status_code == 303
    results = c.get("/trials").text
    assert GBM_TITLE in results
    with c.get("/static/web/nhsuk/nhsuk-frontend.min.css") as css:
        assert css.status_code == 200
    sid = results.split('href="/trials/')[1].split('"')[0]
    assert "Sign in to request contact" in c.get(f"/trials/{sid}").text
    r = c.post(f"/trials/{sid}/contact", data={"csrf_token": csrf_token(results)})
    assert r.status_code == 401  # an action needs a signed-in patient, not just a visitor
