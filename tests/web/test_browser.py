"""The patient pages in a real browser (headless Chromium from the OS package, driven by Playwright): search near a
postcode, the study page, sign-in with the local OIDC test issuer, contact request and withdrawal as the research
team sees them, alerts, axe-core on every page, and screenshots for docs/pages.md.

The tests in this module share one world of processes and run in file order (a patient's story)."""

from __future__ import annotations

import os
import re
import time
from pathlib import Path

import pytest

from tests.procs import wait_until
from tests.web.browser import (
    CHROMIUM,
    CHROMIUM_ARGS,
    DOC_IMAGES,
    World,
    describe,
    run_axe,
    second_glioblastoma_study,
)
from tests.web.pages import BMETS_TITLE, GBM_TITLE

OUTSIDE = re.compile(r"^https?://(?!127\.0\.0\.1[:/])")
pytestmark = pytest.mark.skipif(not CHROMIUM.exists(),
                                reason="/usr/bin/chromium is not installed (apt-get install chromium; .ci/run does)")


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    w = World(tmp_path_factory.mktemp("browser")).start()
    yield w
    w.stop()


@pytest.fixture(scope="module")
def shots(tmp_path_factory) -> Path:
    """Where screenshots go: docs/img/ when GATEWAY_WEB_SCREENSHOTS=1 (to refresh the docs), else a temp folder."""
    return DOC_IMAGES if os.environ.get("GATEWAY_WEB_SCREENSHOTS") == "1" else tmp_path_factory.mktemp("shots")


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        yield b
        b.close()


@pytest.fixture(scope="module")
def page(browser):
    """One browser session for the patient's story. CSP is bypassed only so that axe-core can be injected."""
    context = browser.new_context(bypass_csp=True, viewport={"width": 1000, "height": 900})
    context.route(OUTSIDE, lambda route: route.abort())  # nothing leaves 127.0.0.1 (the CSS names web fonts)
    pg = context.new_page()
    pg.set_default_timeout(20_000)
    yield pg
    context.close()


def assert_accessible(page) -> None:
    violations = run_axe(page)
    assert violations == [], f"axe-core: serious or critical violations on {page.url}:\n{describe(violations)}"


def search(page, base: str, words: str, postcode: str = "LS6 3HE", distance: str = "50") -> None:
    page.goto(f"{base}/trials")
    page.get_by_label("Condition or keywords").fill(words)
    page.get_by_label("Postcode").fill(postcode)
    page.get_by_label("Distance").select_option(distance)
    page.get_by_role("button", name="Search", exact=True).click()
    page.wait_for_load_state()


def result_titles(page) -> list[str]:
    return [t.strip() for t in page.locator("#results .nhsuk-card__link").all_inner_texts()]


def test_search_near_a_postcode_finds_the_glioblastoma_study_not_the_brain_metastases_one(world, page, shots):
    search(page, world.base, "brain tumour")
    titles = result_titles(page)
    assert GBM_TITLE in titles and BMETS_TITLE not in titles
    assert "LS6" not in page.url.upper() and "brain" not in page.url  # post/redirect/get: nothing in the URL
    card = page.locator(".nhsuk-card", has_text=GBM_TITLE)
    assert "St James's University Hospital Oncology, Leeds" in card.inner_text()
    assert re.search(r"Leeds – \d+ km away|less than 1 km", card.inner_text())
    assert page.get_by_label("Recruiting only").is_checked()
    assert_accessible(page)
    page.screenshot(path=str(shots / "search.png"), full_page=True)


@pytest.mark.parametrize("words", ["glioblastomma", "brain tumor", "glioblastoma"])
def test_a_misspelling_and_another_spelling_still_find_it(world, page, words):
    search(page, world.base, words)
    assert GBM_TITLE in result_titles(page)


def test_unknown_postcode_is_an_error_message_on_the_form(world, page):
    search(page, world.base, "brain tumour", postcode="ZZ9 9ZZ")
    summary = page.locator(".nhsuk-error-summary")
    assert summary.is_visible() and "postcode" in summary.inner_text().lower()
    assert page.title().startswith("Error:")
    assert page.get_by_label("Postcode").input_value() == "ZZ9 9ZZ"
    assert_accessible(page)


def test_the_study_page_shows_the_nearest_recruiting_site(world, page, shots):
    search(page, world.base, "brain tumour")
    page.get_by_role("link", name=GBM_TITLE).click()
    page.wait_for_load_state()
    assert page.get_by_role("heading", level=1).inner_text() == GBM_TITLE
    nearest = page.locator("p", has_text="Nearest recruiting site").inner_text()
    assert "St James's University Hospital Oncology, Leeds" in nearest
    rows = page.locator("table.nhsuk-table tbody tr").all_inner_texts()
    assert rows[0].startswith("St James's") and any("The Christie" in r for r in rows)
    assert page.get_by_role("button", name="Sign in to request contact").is_visible()
    assert_accessible(page)
    page.screenshot(path=str(shots / "study.png"), full_page=True)


def test_signed_in_patient_requests_contact_then_withdraws_and_the_research_team_sees_it(world, page, shots):
    sid = world.study_id("NOTC-GBM-01")
    page.goto(f"{world.base}/trials/{sid}")
    page.get_by_role("button", name="Sign in to request contact").click()  # -> test issuer -> callback -> here
    page.wait_for_url(re.compile(rf"/trials/{sid}$"))
    assert page.get_by_role("button", name="Sign out").is_visible()
    page.get_by_role("button", name="Request contact").click()
    page.wait_for_load_state()
    assert "Your request has been sent" in page.locator("[role=status]").inner_text()
    assert_accessible(page)
    page.screenshot(path=str(shots / "study-signed-in.png"), full_page=True)
    task = wait_until(lambda: next(iter(world.team_tasks()), None), what="the research team's Task")
    assert task["status"] == "requested"
    assert task["for"]["identifier"]["value"] == "9449306060"
    page.get_by_role("button", name="Withdraw my request").click()
    page.wait_for_load_state()
    assert "withdrawn" in page.locator("[role=status]").inner_text()
    wait_until(lambda: [t["status"] for t in world.team_tasks()] == ["cancelled"], what="the Task cancelled")


def test_opt_in_then_a_new_matching_study_gives_one_alert(world, page):
    sid = world.study_id("NOTC-GBM-01")
    page.goto(f"{world.base}/trials/{sid}")
    page.get_by_role("button", name="Tell me about similar trials").click()
    page.wait_for_load_state()
    assert "We will tell you" in page.locator("[role=status]").inner_text()
    assert page.get_by_role("button", name="Stop alerts about new trials").is_visible()
    assert_accessible(page)
    world.load(second_glioblastoma_study(world.folder))  # a sponsor's new study reaches the gateway
    new_id = world.study_id("NOTC-GBM-03")
    wait_until(lambda: world.alerts_about(new_id), timeout=40, what="the alert about the new study")
    time.sleep(2)  # a second notification about it would have arrived by now
    assert len(world.alerts_about(new_id)) == 1
    page.get_by_role("button", name="Stop alerts about new trials").click()  # opting out is one step
    page.wait_for_load_state()
    assert "You will not get alerts" in page.locator("[role=status]").inner_text()
    assert page.get_by_role("button", name="Tell me about similar trials").is_visible()


def test_pages_work_without_javascript_and_load_only_their_own_files(world, browser):
    context = browser.new_context(java_script_enabled=False)  # the real Content-Security-Policy applies here
    pg = context.new_page()
    outside: list[str] = []
    pg.on("request", lambda req: None if req.url.startswith(world.base) else outside.append(req.url))
    failed: list[str] = []
    pg.on("requestfailed", lambda req: failed.append(req.url))
    search(pg, world.base, "glioblastoma")
    assert GBM_TITLE in result_titles(pg)
    header_colour = pg.locator("header.nhsuk-header").evaluate("e => getComputedStyle(e).backgroundColor")
    assert header_colour == "rgb(0, 94, 184)"  # NHS blue: the vendored CSS loaded under the page's CSP
    assert [u for u in outside if not u.startswith("https://assets.nhs.uk/fonts/")] == []
    assert [u for u in failed if u.startswith(world.base)] == []
    context.close()


def test_the_skip_link_is_the_first_thing_the_keyboard_reaches(world, browser):
    context = browser.new_context()
    pg = context.new_page()
    pg.goto(f"{world.base}/trials")
    pg.keyboard.press("Tab")
    assert pg.evaluate("document.activeElement.textContent.trim()") == "Skip to main content"
    pg.keyboard.press("Enter")
    # following a same-page link updates the URL after the key event returns: wait for it (5 s), then check focus
    pg.wait_for_url("**#maincontent", timeout=5000)
    assert pg.url.endswith("#maincontent")
    context.close()


def test_no_postcode_search_words_or_nhs_number_in_the_gateway_log(world):
    """Everything above went through the gateway: its log (one JSON line a request) never holds the postcode, the
    condition words, the NHS number or a session cookie."""
    log = world.gw.log()
    assert "/trials" in log  # the page requests were logged
    for secret in ("LS6 3HE", "LS6+3HE", "LS6%203HE", "ZZ9", "brain tumour", "brain+tumour", "glioblastomma",
                   "9449306060", "gateway_session="):
        assert secret.lower() not in log.lower(), secret
