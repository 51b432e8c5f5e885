"""The amoCRM widget's script in a real Chromium, on a stub of amoCRM's widget runtime."""

import json
import zipfile

import pytest
from playwright.sync_api import Page, expect

from app.sandbox.amocrm import mount_amo_responses
from installers.amo_widget import LOCALES, SOURCE, build
from tests.integration.amo import Amo, make_amo

pytestmark = pytest.mark.browser

LEAD_PAGE = "https://acme.amocrm.ru/leads/detail/5"
BACKEND = "https://rc.app.test"  # our app as the browser sees it: HTTPS, proxied to the live server
WIDGET_CODE = "rc_refusal_control"

# What amoCRM gives a widget: AMD `define`, AMOCRM.data.current_card, and on the instance get_settings,
# system, i18n and $authorizedAjax (which adds the disposable X-Auth-Token header).
RUNTIME = """
<!doctype html><html><head><meta charset="utf-8"></head><body>
<div class="card-tabs">
  <div class="card-tabs__item" data-id="main">Основное</div>
  <div class="card-tabs__item" data-id="%(code)s"><span>%(title)s</span></div>
</div>
<div id="%(code)s"></div>
<script>
  window.AMOCRM = {data: {current_card: {id: 5}}};
  window.__rc = {tokens: %(tokens)s, sent: []};
  window.define = function (deps, factory) { window.__rcFactory = factory; };
</script>
<script>%(script)s</script>
<script>
  var Widget = window.__rcFactory();
  var widget = new Widget();
  widget.get_settings = function () { return {widget_code: "%(code)s"}; };
  widget.system = function () { return {area: "lcard", amouser_id: 1}; };
  widget.i18n = function (key) { return %(i18n)s[key]; };
  widget.$authorizedAjax = function (options) {
    var token = window.__rc.tokens.shift() || "";
    window.__rc.sent.push({url: options.url, data: options.data, token: token});
    return fetch(options.url, {
      method: options.type,
      headers: {"X-Auth-Token": token, "Content-Type": options.contentType},
      body: options.data
    }).then(function (response) {
      if (!response.ok) { throw new Error("HTTP " + response.status); }
      return response.json();
    });
  };
  widget.callbacks.init();
  widget.callbacks.render();
  widget.callbacks.bind_actions();
  window.__rcWidget = widget;
</script>
</body></html>
"""


@pytest.fixture
def amo_installed(app, live_server):
    """An installed sandbox account; the browser reaches the live server directly."""
    import responses

    sandbox, account = make_amo(app)
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        mount_amo_responses(sandbox, mock)
        mock.add_passthru(live_server.url)
        amo = Amo(app=app, client=app.test_client(), sandbox=sandbox, account=account)
        amo.install()
        yield amo


def serve_backend(page: Page, live_url: str) -> None:
    """https://rc.app.test/... is answered by the live server (the browser never talks to loopback itself)."""
    page.route(
        f"{BACKEND}/**",
        lambda route: route.fulfill(response=route.fetch(url=route.request.url.replace(BACKEND, live_url))),
    )


def lead_page(page: Page, live_url: str, tokens: list[str], tmp_path) -> None:
    serve_backend(page, live_url)
    archive = build(tmp_path / "widget.zip", BACKEND)
    with zipfile.ZipFile(archive) as zipped:
        script = zipped.read("script.js").decode()
        i18n = json.loads(zipped.read("i18n/ru.json"))
    html = RUNTIME % {
        "code": WIDGET_CODE,
        "title": i18n["tab"]["title"],
        "tokens": json.dumps(tokens),
        "script": script,
        "i18n": json.dumps(i18n),
    }
    page.route(LEAD_PAGE, lambda route: route.fulfill(body=html, content_type="text/html; charset=utf-8"))
    page.goto(LEAD_PAGE)


def test_the_lead_tab_opens_our_page_with_a_verified_token(amo_installed: Amo, live_server, page: Page, tmp_path):
    amo = amo_installed
    amo.app.config["PUBLIC_URL"] = BACKEND
    token = amo.sandbox.widget_token(amo.account, 1, "https://app.example.test")
    lead_page(page, live_server.url, [token], tmp_path)
    page.get_by_text("Проверка отказа").click()
    frame = page.frame_locator(f"#{WIDGET_CODE} iframe.rc-widget-frame")
    # In a lead card the tab is that lead's QA review (lead 5 has none yet) ...
    expect(frame.locator("#rc-no-case")).to_be_visible(timeout=10_000)
    [sent] = page.evaluate("window.__rc.sent")
    assert sent["url"] == f"{BACKEND}/amocrm/widget/session"
    assert json.loads(sent["data"]) == {"lead_id": "5"}
    # Clicking the tab again keeps the open page; it does not spend another token.
    page.get_by_text("Проверка отказа").click()
    assert len(page.evaluate("window.__rc.sent")) == 1
    # ... and its button leads on to the main page (QA queue, exchange, settings, reports).
    frame.locator("#rc-open-app").click()
    expect(frame.locator("h1")).to_have_text("Контроль отказов", timeout=10_000)
    expect(frame.get_by_role("tab", name="Настройки")).to_be_visible()


def test_a_replayed_token_shows_an_error_in_the_tab(amo_installed: Amo, live_server, page: Page, tmp_path):
    amo = amo_installed
    amo.app.config["PUBLIC_URL"] = BACKEND
    token = amo.sandbox.widget_token(amo.account, 1, "https://app.example.test")
    used = amo.client.post("/amocrm/widget/session", headers={"X-Auth-Token": token})
    assert used.status_code == 200
    lead_page(page, live_server.url, [token], tmp_path)
    page.get_by_text("Проверка отказа").click()
    expect(page.locator(f"#{WIDGET_CODE} .rc-widget-error")).to_contain_text("Не удалось открыть")
    assert page.locator(f"#{WIDGET_CODE} iframe").count() == 0


def test_the_archive_has_what_amocrm_needs(tmp_path):
    archive = build(tmp_path / "widget.zip", "https://rc.example.com")
    with zipfile.ZipFile(archive) as zipped:
        names = set(zipped.namelist())
        manifest = json.loads(zipped.read("manifest.json"))
        script = zipped.read("script.js").decode()
    assert {"manifest.json", "script.js", *(f"i18n/{locale}.json" for locale in LOCALES)} <= names
    assert {"images/logo_min.png", "images/logo_main.png", "images/logo.png"} <= names
    assert {"lcard-0", "card_sdk"} <= set(manifest["locations"])
    assert '"https://rc.example.com"' in script and "%BACKEND_URL%" not in script
    assert (SOURCE / "script.js").exists()
    with pytest.raises(ValueError):
        build(tmp_path / "bad.zip", "ftp://nope")
