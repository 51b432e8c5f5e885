"""The amoCRM widget's script in a real Chromium, on a stub of amoCRM's widget runtime."""

import json
import zipfile
from pathlib import Path

import pytest
from playwright.sync_api import Error as PlaywrightError
from playwright.sync_api import Page, Route, expect

from installers.amo_widget import LOCALES, SOURCE, build, render_manifest
from sandbox.amocrm import mount_amo_responses
from tests.integration.amo import Amo, make_amo

pytestmark = pytest.mark.browser

LEAD_PAGE = "https://acme.amocrm.ru/leads/detail/5"
BACKEND = "https://rc.app.test"  # our app as the browser sees it: HTTPS, proxied to the live server
WIDGET_CODE = "rc_refusal_control"

# What amoCRM gives a widget: AMD `define`, AMOCRM.data.current_card, and on the instance get_settings,
# system, i18n and $authorizedAjax (which adds the disposable X-Auth-Token header).
RUNTIME = """
<!doctype html><html><head><meta charset="utf-8"></head><body>
%(body)s
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
  widget.system = function () { return {area: "%(area)s", amouser_id: 1}; };
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
  if ("%(area)s" === "digital_pipeline") { widget.callbacks.dpSettings(); }
  // The settings window passes its body as a jQuery object; the left-menu page calls initMenuPage.
  if ("%(area)s" === "settings") {
    var modal = document.querySelector(".widget-settings__modal-body");
    widget.callbacks.settings({0: modal, length: 1, jquery: "3.7.1"});
  }
  if ("%(area)s" === "widget_page") {
    widget.callbacks.initMenuPage({location: "widget_page", item_code: "refusal_control"});
  }
  window.__rcWidget = widget;
</script>
</body></html>
"""
LEAD_CARD = """
<div class="card-tabs">
  <div class="card-tabs__item" data-id="main">Основное</div>
  <div class="card-tabs__item" data-id="%(code)s"><span>%(title)s</span></div>
</div>
<div id="%(code)s"></div>
"""
# The action form amoCRM shows when an admin adds our widget to a status in the Digital Pipeline: one text
# input per field of the manifest's `dp.settings`, named by the field's key.
DP_FIELD = """
<div class="widget_settings_block__item_field" id="row-%(key)s">
  <div class="widget_settings_block__title_field">%(label)s</div>
  <div class="widget_settings_block__input_field"><input type="text" name="%(key)s" value="%(value)s"></div>
</div>
"""
DP_PAGE = "https://acme.amocrm.ru/leads/pipeline/1/?dp=1"
# The widget's settings window (amoCRM → Integrations → our widget): its description area is ours.
SETTINGS_PAGE = "https://acme.amocrm.ru/settings/widgets/"
SETTINGS_WINDOW = """
<div class="modal widget-settings"><div class="widget-settings__modal-body">
  <div class="widget-settings__desc-space"><p>Описание</p></div>
</div></div>
"""
# Our left-menu section (location widget_page): amoCRM gives the page a work area named after the widget.
MENU_PAGE = f"https://acme.amocrm.ru/widget_page/{WIDGET_CODE}/refusal_control/"
MENU_WORK_AREA = '<div id="work_area"><div id="work-area-%(code)s"></div></div>'


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

    def forward(route: Route) -> None:
        try:
            route.fulfill(response=route.fetch(url=route.request.url.replace(BACKEND, live_url)))
        except PlaywrightError:
            # The test ended and closed the page while this request (a script the page loads) was in flight.
            return

    page.route(f"{BACKEND}/**", forward)


def widget_page(page: Page, live_url: str, tokens: list[str], tmp_path, url: str, area: str, body: str) -> dict:
    """Serve an amoCRM page with the built widget on the runtime stub; returns the built manifest."""
    serve_backend(page, live_url)
    archive = build(tmp_path / "widget.zip", BACKEND)
    with zipfile.ZipFile(archive) as zipped:
        script = zipped.read("script.js").decode()
        i18n = json.loads(zipped.read("i18n/ru.json"))
        manifest = json.loads(zipped.read("manifest.json"))
    values = {"code": WIDGET_CODE, "title": i18n["tab"]["title"], "area": area}
    html = RUNTIME % {
        **values,
        "body": body % values,
        "tokens": json.dumps(tokens),
        "script": script,
        "i18n": json.dumps(i18n),
    }
    page.route(url, lambda route: route.fulfill(body=html, content_type="text/html; charset=utf-8"))
    page.goto(url)
    return manifest


def lead_page(page: Page, live_url: str, tokens: list[str], tmp_path) -> None:
    widget_page(page, live_url, tokens, tmp_path, LEAD_PAGE, "lcard", LEAD_CARD)


def dp_page(page: Page, live_url: str, tokens: list[str], tmp_path, robot: str = "") -> None:
    """The Digital Pipeline action form of our widget, fields as the built manifest declares them."""
    manifest = json.loads(render_manifest(BACKEND))
    labels = json.loads((SOURCE / "i18n" / "ru.json").read_text(encoding="utf-8"))["dp"]
    fields = "".join(
        DP_FIELD % {"key": key, "label": labels[key], "value": robot if key == "robot" else ""}
        for key in manifest["dp"]["settings"]
    )
    form = f'<div data-action="send_widget_hook">{fields}<button class="js-trigger-save">Сохранить</button></div>'
    widget_page(page, live_url, tokens, tmp_path, DP_PAGE, "digital_pipeline", form.replace("%", "%%"))


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
    assert json.loads(sent["data"]) == {"lead_id": "5", "widget_code": WIDGET_CODE}
    # Clicking the tab again keeps the open page; it does not spend another token.
    page.get_by_text("Проверка отказа").click()
    assert len(page.evaluate("window.__rc.sent")) == 1
    # ... and its button leads on to the main page (QA queue, exchange, settings, reports).
    frame.locator("#rc-open-app").click()
    expect(frame.locator("h1")).to_have_text("Контроль отказов", timeout=10_000)
    expect(frame.get_by_role("tab", name="Настройки")).to_be_visible()
    # The same page as inside Bitrix24, in amoCRM's variant of the look and without BX24.
    expect(frame.locator("body")).to_have_class("rc-crm-amocrm")
    assert frame.locator("body").get_attribute("data-bx24") is None
    artifacts = Path(__file__).resolve().parents[2] / "test-artifacts" / "browser"
    artifacts.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(artifacts / "amocrm-main-page-ru.png"))


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


def test_the_dp_form_gets_the_secret_and_a_list_of_robots(amo_installed: Amo, live_server, page: Page, tmp_path):
    amo = amo_installed
    amo.app.config["PUBLIC_URL"] = BACKEND
    token = amo.sandbox.widget_token(amo.account, 1, "https://app.example.test")
    dp_page(page, live_server.url, [token], tmp_path)
    select = page.locator("select.rc-dp-robot")
    expect(select).to_be_visible(timeout=10_000)
    [sent] = page.evaluate("window.__rc.sent")
    assert sent["url"] == f"{BACKEND}/amocrm/widget/dp"
    secret = amo.our_portal().settings["amo_dp_secret"]
    assert page.locator('input[name="secret"]').input_value() == secret
    expect(page.locator("#row-secret")).to_be_hidden()
    expect(page.locator('input[name="robot"]')).to_be_hidden()
    assert select.locator("option").all_text_contents() == [
        "Выберите робота",
        "Выставить на биржу лидов",
        "Перезвонить через N дней",
        "Проверить задачи",
    ]
    select.select_option(label="Перезвонить через N дней")
    assert page.locator('input[name="robot"]').input_value() == "rc_callback"
    expect(page.locator(".rc-dp-notice")).to_have_count(0)


def test_an_existing_action_keeps_its_robot(amo_installed: Amo, live_server, page: Page, tmp_path):
    amo = amo_installed
    amo.app.config["PUBLIC_URL"] = BACKEND
    token = amo.sandbox.widget_token(amo.account, 1, "https://app.example.test")
    dp_page(page, live_server.url, [token], tmp_path, robot="rc_put_on_exchange")
    expect(page.locator("select.rc-dp-robot")).to_have_value("rc_put_on_exchange", timeout=10_000)


def test_a_manager_cannot_set_up_robots(amo_installed: Amo, live_server, page: Page, tmp_path):
    amo = amo_installed
    amo.app.config["PUBLIC_URL"] = BACKEND
    token = amo.sandbox.widget_token(amo.account, 2, "https://app.example.test")
    dp_page(page, live_server.url, [token], tmp_path)
    expect(page.locator(".rc-dp-error")).to_contain_text("только администратор", timeout=10_000)
    assert page.locator('input[name="secret"]').input_value() == ""
    assert page.locator("select.rc-dp-robot").count() == 0


def test_the_archive_has_what_amocrm_needs(tmp_path):
    archive = build(tmp_path / "widget.zip", "https://rc.example.com")
    with zipfile.ZipFile(archive) as zipped:
        names = set(zipped.namelist())
        manifest = json.loads(zipped.read("manifest.json"))
        script = zipped.read("script.js").decode()
        ru = json.loads(zipped.read("i18n/ru.json"))
    assert {"manifest.json", "script.js", *(f"i18n/{locale}.json" for locale in LOCALES)} <= names
    assert {"images/logo_min.png", "images/logo_main.png", "images/logo.png", "images/logo_dp.png"} <= names
    assert {"lcard-0", "card_sdk", "settings", "digital_pipeline", "widget_page"} <= set(manifest["locations"])
    assert manifest["left_menu"] == {"refusal_control": {"title": "left_menu.title", "icon": "images/left_menu.svg"}}
    assert "images/left_menu.svg" in names and ru["left_menu"]["title"] == "Контроль отказов"
    assert "initMenuPage" in script
    dp = manifest["dp"]
    assert dp["webhook_url"] == "https://rc.example.com/amocrm/dp/robots" and dp["action_multiple"] is False
    assert list(dp["settings"]) == ["robot", "reason", "days", "hour", "text", "secret"]
    assert {spec["type"] for spec in dp["settings"].values()} == {"text"}
    assert all(ru["dp"][key] for key in dp["settings"]) and "dpSettings" in script
    assert '"https://rc.example.com"' in script and "%BACKEND_URL%" not in script
    assert (SOURCE / "script.js").exists()
    with pytest.raises(ValueError):
        build(tmp_path / "bad.zip", "ftp://nope")


def test_the_settings_window_opens_the_main_page(amo_installed: Amo, live_server, page: Page, tmp_path):
    amo = amo_installed
    amo.app.config["PUBLIC_URL"] = BACKEND
    token = amo.sandbox.widget_token(amo.account, 1, "https://app.example.test")
    widget_page(page, live_server.url, [token], tmp_path, SETTINGS_PAGE, "settings", SETTINGS_WINDOW)
    frame = page.frame_locator(".widget-settings__desc-space .rc-widget-main iframe.rc-widget-frame")
    expect(frame.locator("h1")).to_have_text("Контроль отказов", timeout=10_000)
    expect(frame.get_by_role("tab", name="Настройки")).to_be_visible()
    [sent] = page.evaluate("window.__rc.sent")
    assert json.loads(sent["data"]) == {"lead_id": "", "widget_code": WIDGET_CODE}
    assert page.locator(".widget-settings__desc-space p").first.text_content() == "Описание", "amoCRM's text stays"
    assert amo.our_portal().settings["amo_widget_code"] == WIDGET_CODE, "the summaries can link our page"


def test_the_left_menu_page_opens_the_main_page(amo_installed: Amo, live_server, page: Page, tmp_path):
    amo = amo_installed
    amo.app.config["PUBLIC_URL"] = BACKEND
    token = amo.sandbox.widget_token(amo.account, 2, "https://app.example.test")  # a manager
    widget_page(page, live_server.url, [token], tmp_path, MENU_PAGE, "widget_page", MENU_WORK_AREA)
    frame = page.frame_locator(f"#work-area-{WIDGET_CODE} iframe.rc-widget-frame")
    expect(frame.locator("h1")).to_have_text("Контроль отказов", timeout=10_000)
    expect(frame.get_by_role("tab", name="Биржа лидов")).to_be_visible()
    expect(frame.get_by_role("tab", name="Настройки")).to_have_count(0)  # a manager is no admin


def test_the_left_menu_page_says_so_when_it_cannot_open(amo_installed: Amo, live_server, page: Page, tmp_path):
    amo = amo_installed
    amo.app.config["PUBLIC_URL"] = BACKEND
    widget_page(page, live_server.url, ["forged"], tmp_path, MENU_PAGE, "widget_page", MENU_WORK_AREA)
    expect(page.locator(f"#work-area-{WIDGET_CODE} .rc-widget-error")).to_contain_text(
        "Не удалось открыть", timeout=10_000
    )
