"""The pages in the CRM frames: inside Bitrix24 they load the BX24 library (B24_JS_URL) and the shared frame
helper, with the Bitrix24 UI kit's tokens and a Bitrix24 body class; inside amoCRM the same templates carry
the amoCRM body class and no BX24."""

from __future__ import annotations

from flask import Flask

from tests.integration.b24 import B24


def test_a_bitrix24_page_loads_bx24_and_the_ui_kit(app: Flask, installed: B24):
    app.config["B24_JS_URL"] = "https://api.bitrix24.com/api/v1/"
    page = installed.client.post(f"/b24/app?DOMAIN={installed.portal.domain}&LANG=ru", data=installed.frame(1))
    assert page.status_code == 200, page.get_data(as_text=True)
    html = page.get_data(as_text=True)
    assert 'class="rc-crm-bitrix24"' in html
    assert '<script src="https://api.bitrix24.com/api/v1/"></script>' in html
    assert html.index("api.bitrix24.com/api/v1/") < html.index("js/frame.js") < html.index("js/app.js")
    assert html.index("css/b24style.css") < html.index("css/app.css")
    tokens = installed.client.get("/static/rc/css/b24style.css").get_data(as_text=True)
    assert "--rc-primary: #2fc6f6;" in tokens and 'theme("' not in tokens  # built from the kit, nothing left to build


def test_an_amocrm_page_has_the_amocrm_look_and_no_bx24(app: Flask):
    page = app.test_client().get("/amocrm/oauth?error=access_denied", headers={"Accept": "text/html"})
    assert page.status_code == 400
    html = page.get_data(as_text=True)
    assert 'class="rc-crm-amocrm"' in html
    assert "api/v1" not in html and "js/frame.js" in html


def test_only_the_demo_lets_the_apps_own_address_frame_the_pages(app: Flask, installed: B24):
    """The demo serves the sandbox kanban on the app's address (/sandbox), so there the pages may also be framed
    by 'self'; anywhere else only the portal frames them."""
    url = f"/b24/app?DOMAIN={installed.portal.domain}&LANG=ru"
    page = installed.client.post(url, data=installed.frame(1))
    assert page.headers["Content-Security-Policy"] == f"frame-ancestors https://{installed.portal.domain}"
    app.config["SANDBOX_ENABLED"] = True
    page = installed.client.post(url, data=installed.frame(1))
    assert page.headers["Content-Security-Policy"] == f"frame-ancestors https://{installed.portal.domain} 'self'"
