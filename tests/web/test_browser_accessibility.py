"""axe-core on the pages the patient's story (test_browser.py) does not reach, in the same real browser (OS
Chromium through Playwright): the empty search form, the 404 page, the sign-in-needed page of a patient action, the
expired-form page (CSRF), and the results at phone width (WCAG 2.2 AA reflow: no sideways scrolling at 390 px).
Also: the search works from the keyboard alone. Issue #14, "The web page" / "Tests, in a real browser"."""

from __future__ import annotations

import pytest

from tests.web.browser import CHROMIUM, World
from tests.web.pages import BMETS_TITLE, GBM_TITLE
from tests.web.test_browser import OUTSIDE, assert_accessible, browser, result_titles  # noqa: F401 (fixture)

pytestmark = pytest.mark.skipif(not CHROMIUM.exists(),
                                reason="/usr/bin/chromium is not installed (apt-get install chromium; .ci/run does)")


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    w = World(tmp_path_factory.mktemp("browser-a11y")).start()
    yield w
    w.stop()


@pytest.fixture
def fresh(browser):  # noqa: F811
    """A new visitor each test (no search kept, not signed in); CSP bypassed only so that axe can be injected."""
    context = browser.new_context(bypass_csp=True, viewport={"width": 1000, "height": 900})
    context.route(OUTSIDE, lambda route: route.abort())
    pg = context.new_page()
    pg.set_default_timeout(20_000)
    yield pg
    context.close()


def _post_from_the_page(page, action: str, token: str | None) -> int:
    """Submit a form the way a browser does (a real navigation), as a page of another origin or an old tab could;
    -> the status of the page it lands on."""
    with page.expect_navigation() as nav:
        page.evaluate("""([action, token]) => {
            const f = document.createElement('form'); f.method = 'post'; f.action = action;
            if (token !== null) { const i = document.createElement('input'); i.type = 'hidden';
                                  i.name = 'csrf_token'; i.value = token; f.appendChild(i); }
            document.body.appendChild(f); f.submit(); }""", [action, token])
    return nav.value.status


def test_the_empty_search_form_is_accessible_and_labelled(world, fresh):
    resp = fresh.goto(f"{world.base}/")  # / leads to /trials
    assert resp.status == 200 and fresh.url.endswith("/trials")
    for label in ("Condition or keywords", "Postcode", "Distance", "Recruiting only"):
        assert fresh.get_by_label(label).count() == 1, label
    assert fresh.get_by_label("Distance").input_value() == "50"
    assert_accessible(fresh)


def test_the_not_found_page_is_accessible(world, fresh):
    resp = fresh.goto(f"{world.base}/trials/no-such-study")
    assert resp.status == 404
    assert fresh.get_by_role("heading", level=1).count() == 1
    assert_accessible(fresh)


def test_an_action_without_a_signed_in_patient_is_an_accessible_sign_in_page(world, fresh):
    sid = world.study_id("NOTC-GBM-01")
    fresh.goto(f"{world.base}/trials")  # the search form carries the session's CSRF token
    token = fresh.locator("input[name=csrf_token]").first.get_attribute("value")
    assert token
    fresh.goto(f"{world.base}/trials/{sid}")
    assert _post_from_the_page(fresh, f"/trials/{sid}/contact", token) == 401
    assert "sign in" in fresh.get_by_role("main").inner_text().lower()
    assert_accessible(fresh)
    assert not world.team_tasks(), "nothing reached the research team"


def test_a_form_without_its_csrf_token_is_an_accessible_refusal(world, fresh):
    sid = world.study_id("NOTC-GBM-01")
    fresh.goto(f"{world.base}/trials/{sid}")
    assert _post_from_the_page(fresh, f"/trials/{sid}/contact", None) == 400
    assert "try again" in fresh.get_by_role("main").inner_text().lower()
    assert_accessible(fresh)
    assert _post_from_the_page(fresh, "/trials", "forged") == 400


def test_the_search_works_from_the_keyboard_alone(world, fresh):
    fresh.goto(f"{world.base}/trials")
    fresh.keyboard.press("Tab")  # the skip link first (test_browser.py), then into the page
    fresh.get_by_label("Condition or keywords").focus()
    fresh.keyboard.type("brain tumour")
    fresh.keyboard.press("Tab")
    fresh.keyboard.type("LS6 3HE")  # focus moved to the postcode by Tab, not by a click
    with fresh.expect_navigation():
        fresh.keyboard.press("Enter")
    titles = result_titles(fresh)
    assert GBM_TITLE in titles and BMETS_TITLE not in titles
    assert fresh.get_by_label("Postcode").input_value() == "LS6 3HE"  # Tab led from the words to the postcode
    assert "km away" in fresh.locator(".nhsuk-card", has_text=GBM_TITLE).inner_text()


def test_results_at_phone_width_reflow_without_sideways_scrolling(world, browser):  # noqa: F811
    context = browser.new_context(bypass_csp=True, viewport={"width": 390, "height": 844})
    context.route(OUTSIDE, lambda route: route.abort())
    pg = context.new_page()
    try:
        pg.goto(f"{world.base}/trials")
        pg.get_by_label("Condition or keywords").fill("brain tumour")
        pg.get_by_label("Postcode").fill("LS6 3HE")
        pg.get_by_role("button", name="Search", exact=True).click()
        pg.wait_for_load_state()
        assert GBM_TITLE in result_titles(pg)
        assert pg.evaluate("document.documentElement.scrollWidth <= window.innerWidth"), "sideways scrolling"
        assert_accessible(pg)
    finally:
        context.close()


def test_the_alerts_form_its_errors_and_what_was_opted_in_to_are_accessible(world, fresh):
    sid = world.study_id("NOTC-GBM-01")
    fresh.goto(f"{world.base}/trials/{sid}")
    fresh.get_by_role("button", name="Sign in to request contact").click()  # -> test issuer -> back here
    fresh.wait_for_url(f"{world.base}/trials/{sid}")
    fresh.get_by_label("Postcode for alerts").fill("ZZ9 9ZZ")
    fresh.get_by_role("button", name="Tell me about similar trials").click()
    fresh.wait_for_load_state()
    assert fresh.title().startswith("Error:")
    assert "postcode" in fresh.locator(".nhsuk-error-summary").inner_text().lower()
    assert_accessible(fresh)
    fresh.get_by_label("Postcode for alerts").fill("LS6 3HE")
    fresh.get_by_label("Distance for alerts").select_option("25")
    fresh.get_by_role("button", name="Tell me about similar trials").click()
    fresh.wait_for_load_state()
    assert "within 25 km of LS6" in fresh.locator("#alert-interests").inner_text()
    assert "3HE" not in fresh.url.upper()
    assert_accessible(fresh)
    fresh.get_by_role("button", name="Stop alerts about new trials").click()
    fresh.wait_for_load_state()
    assert fresh.get_by_label("Postcode for alerts").is_visible()
