"""The amoCRM pages as a person opens them: the widget tells its code (the left-menu page's address, which the
scheduled summaries link), and a page that cannot be shown is an HTML page in the account's language."""

from app.core.db import db
from app.domain import reports
from handlers import amo_verify
from tests.integration.amo import APP_URL, Amo

HTML = {"Accept": "text/html,application/xhtml+xml,*/*;q=0.8"}  # what a browser frame asks for


def session(amo: Amo, body: dict) -> str:
    token = amo.sandbox.widget_token(amo.account, 1, APP_URL)
    answer = amo.client.post(
        "/amocrm/widget/session",
        headers={"X-Auth-Token": token, "Origin": f"https://{amo.account.domain}"},
        json=body,
    )
    assert answer.status_code == 200, answer.get_json()
    return str(answer.get_json()["url"]).removeprefix(APP_URL)


def test_the_widget_tells_its_code_and_the_summary_links_its_page(amo_installed: Amo):
    amo = amo_installed
    portal = amo.our_portal()
    assert reports.report_link(portal) == f"https://{amo.account.domain}/settings/widgets/"

    session(amo, {"lead_id": "", "widget_code": "rc_refusal_control"})
    db.session.expire_all()
    portal = amo.our_portal()
    assert portal.settings[reports.AMO_WIDGET_CODE] == "rc_refusal_control"
    link = reports.report_link(portal)
    assert link == f"https://{amo.account.domain}/widget_page/rc_refusal_control/refusal_control/"
    assert "/marketplace/" not in link

    session(amo, {"lead_id": "", "widget_code": "../../evil?x=1"})  # not a widget code: kept as it was
    db.session.expire_all()
    assert amo.our_portal().settings[reports.AMO_WIDGET_CODE] == "rc_refusal_control"


def test_a_spent_ticket_is_an_html_page_in_the_accounts_language(amo_installed: Amo):
    amo = amo_installed
    url = session(amo, {"lead_id": ""})
    assert "lang=ru" in url
    assert amo.client.get(url, headers=HTML).status_code == 200
    again = amo.client.get(url, headers=HTML)
    assert again.status_code == 401 and again.mimetype == "text/html"
    html = again.get_data(as_text=True)
    assert 'data-reason="link_expired"' in html and "Ссылка на страницу устарела" in html
    assert "Обновите страницу amoCRM" in html

    portal = amo.our_portal()
    portal.language = "en"
    db.session.commit()
    english = session(amo, {"lead_id": ""})
    assert "lang=en" in english
    amo.client.get(english, headers=HTML)
    spent = amo.client.get(english, headers=HTML).get_data(as_text=True)
    assert "The link to this page has expired" in spent and "Reload the amoCRM page" in spent


def test_an_uninstalled_account_and_a_program_get_their_own_answers(amo_installed: Amo):
    amo = amo_installed
    portal = amo.our_portal()
    ticket = amo_verify.issue_ticket(portal.id, "1", True, "")
    portal.status = "uninstalled"
    db.session.commit()
    page = amo.client.get(f"/amocrm/app?ticket={ticket}", headers=HTML)
    assert page.status_code == 401 and 'data-reason="not_installed"' in page.get_data(as_text=True)
    assert "Интеграция отключена" in page.get_data(as_text=True)
    program = amo.client.get("/amocrm/app?ticket=forged", headers={"Accept": "application/json"})
    assert program.status_code == 401 and program.get_json()["error"] == "unauthorized"
