"""The admin's settings tab read as forms (found walking every page in Chromium): stage requirements in aligned rows
with the CRM's field names (never a field code), and the checkboxes of the guard and task-control forms one per line
instead of run together into one paragraph."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import Page, expect

from sandbox.mount import mount_responses
from tests.browser.conftest import post_frame
from tests.integration.b24 import B24, configure_guard
from tests.integration.conftest import make_b24

pytestmark = pytest.mark.browser
ADMIN = 1
CODE = re.compile(r"^[A-Z][A-Z0-9_]+$")


def tops(page: Page, selector: str) -> list[float]:
    return page.locator(selector).evaluate_all("nodes => nodes.map((n) => n.getBoundingClientRect().top)")


@pytest.mark.parametrize("language", ["ru", "en"])
def test_the_settings_forms_are_aligned_and_name_fields_by_their_names(app, live_server, page: Page, language):
    import responses

    sandbox, portal = make_b24(app)
    harness = B24(app=app, client=app.test_client(), sandbox=sandbox, portal=portal)
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        mount_responses(sandbox, mock, passthru=(live_server.url,))
        configure_guard(harness.install())
        page.set_viewport_size({"width": 1060, "height": 900})
        post_frame(page, f"{live_server.url}/b24/app?DOMAIN={portal.domain}&LANG={language}", harness.frame(ADMIN))
        rows = page.locator("#rc-req-pipelines .rc-req-stage")
        expect(rows.first).to_be_visible(timeout=10_000)

        options = page.locator("#rc-req-pipelines .rc-req-picker").first.locator("label").all_text_contents()
        assert options and not [text for text in options if CODE.match(text.strip())], options

        first_pipeline = page.locator("#rc-req-pipelines fieldset").first.locator(".rc-req-picker")
        lefts = first_pipeline.evaluate_all("nodes => nodes.map((n) => Math.round(n.getBoundingClientRect().left))")
        assert len(lefts) > 1 and len(set(lefts)) == 1, lefts

        for selector in ("#rc-settings .rc-rules > label", "#rc-tc-settings fieldset > label"):
            lines = tops(page, selector)
            assert len(lines) >= 3 and len({round(top) for top in lines}) == len(lines), (selector, lines)
