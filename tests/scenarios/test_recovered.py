"""The money the app saved, on both CRMs: a deal QA returned to sales after a false refusal is followed to its end;
when its new manager wins it, the reports show it under the manager whose refusal was false, with the amount, next
to his fine, on the page and in the CSV."""

from __future__ import annotations

from decimal import Decimal

import sqlalchemy as sa

from app.core.db import db
from app.core.models import RecoveredDeal
from app.domain import reports
from tests.scenarios.driver import HEAD, MANAGER, OTHER_MANAGER, QA, CrmDriver
from tests.scenarios.test_penalties import returned_to_sales


def recovered(deal_id: str) -> RecoveredDeal:
    db.session.expire_all()
    row = db.session.scalar(sa.select(RecoveredDeal).where(RecoveredDeal.deal_id == str(deal_id)))
    assert row is not None
    return row


def report_csv(crm: CrmDriver, table: str) -> list[list[str]]:
    today = reports.today(crm.portal()).isoformat()
    answer = crm.client.get(f"/api/reports/{table}.csv?from={today}&to={today}", headers=crm.token(HEAD))
    assert answer.status_code == 200, answer.get_data(as_text=True)
    text = answer.get_data(as_text=True).lstrip("\ufeff")
    return [line.split(";") for line in text.strip().split("\r\n")]


def test_a_returned_deal_won_later_is_revenue_returned_from_a_false_refusal(crm: CrmDriver):
    deal_id, _case, _fine = returned_to_sales(crm, MANAGER)
    crm.settle()
    row = recovered(deal_id)
    new_manager = crm.responsible(deal_id)
    assert new_manager != MANAGER
    assert (row.outcome, row.leaker_id, row.manager_id) == ("open", str(MANAGER), str(new_manager))

    crm.move(deal_id, "won", by=new_manager)
    crm.settle()
    row = recovered(deal_id)
    assert row.outcome == "won" and row.closed_at is not None
    assert Decimal(row.amount) == Decimal("150000")

    managers = report_csv(crm, "recovered")
    assert managers[0][:3] == ["Менеджер", "Возвращено в продажи", "Выиграно после возврата"]
    assert "Выручка, ₽" in managers[0] and "Штрафы, ₽" in managers[0]
    [leaker] = [line for line in managers[1:] if line[0] == crm.user_name(MANAGER)]
    by_column = dict(zip(managers[0], leaker, strict=True))
    assert by_column["Возвращено в продажи"] == "1" and by_column["Выиграно после возврата"] == "1"
    assert by_column["Выручка, ₽"] == "150000,00" and by_column["Штрафы, ₽"] == "1500,00"
    deals = report_csv(crm, "recovered_deals")
    [listed] = deals[1:]
    assert "Поставка станков" in listed and crm.user_name(MANAGER) in listed and "выиграна" in listed

    today = reports.today(crm.portal()).isoformat()
    page = crm.client.get(f"/api/reports/view?from={today}&to={today}", headers=crm.token(HEAD))
    html = page.get_data(as_text=True)
    assert "Выручка, возвращённая из ложных отказов" in html
    assert "150\u00a0000\u00a0₽" in html and "1\u00a0500\u00a0₽" in html


def test_a_returned_deal_that_is_lost_again_brings_no_revenue(crm: CrmDriver):
    deal_id, _case, _fine = returned_to_sales(crm, OTHER_MANAGER)
    crm.settle()
    crm.move(deal_id, "lost", by=QA)  # QA may close it as lost for good
    crm.settle()
    assert recovered(deal_id).outcome == "lost"
    managers = report_csv(crm, "recovered")
    [leaker] = [line for line in managers[1:] if line[0] == crm.user_name(OTHER_MANAGER)]
    by_column = dict(zip(managers[0], leaker, strict=True))
    assert by_column["Возвращено в продажи"] == "1" and by_column["Выиграно после возврата"] == "0"
    assert by_column["Выручка, ₽"] == "0,00"


def test_the_money_saved_and_the_exchange_are_in_the_reports_json(crm: CrmDriver):
    deal_id, _case, _fine = returned_to_sales(crm, MANAGER)
    crm.settle()
    new_manager = crm.responsible(deal_id)
    crm.move(deal_id, "won", by=new_manager)
    crm.settle()

    today = reports.today(crm.portal()).isoformat()
    answer = crm.client.get(f"/api/reports?from={today}&to={today}", headers=crm.token(HEAD))
    assert answer.status_code == 200
    data = answer.get_json()
    saved = data["recovery"]
    assert saved["totals"]["recovered"] == 1 and saved["totals"]["won"] == 1
    assert saved["totals"]["revenue"] == {"RUB": "150000.00"}
    [row] = saved["managers"]
    assert (row["manager_id"], row["name"], row["won"]) == (str(MANAGER), crm.user_name(MANAGER), 1)
    [deal] = saved["deals"]
    assert (deal["deal_id"], deal["outcome"]) == (deal_id, "won")
    assert data["exchange"] == [], "nobody took a deal from the exchange in the period"


def test_a_returned_deal_deleted_later_is_no_longer_in_progress(crm: CrmDriver):
    deal_id, _case, _fine = returned_to_sales(crm, MANAGER)
    crm.settle()
    assert recovered(deal_id).outcome == "open"

    crm.delete(deal_id, by=HEAD)
    crm.settle()

    row = recovered(deal_id)
    assert row.outcome == "deleted" and row.closed_at is not None
    deals = report_csv(crm, "recovered_deals")
    [listed] = deals[1:]
    assert "удалена" in listed and "в работе" not in listed
    managers = report_csv(crm, "recovered")
    [leaker] = [line for line in managers[1:] if line[0] == crm.user_name(MANAGER)]
    by_column = dict(zip(managers[0], leaker, strict=True))
    assert by_column["Возвращено в продажи"] == "1" and by_column["Выручка, ₽"] == "0,00"


def test_the_scheduled_summary_tells_the_money_saved_and_links_the_app_inside_the_crm(crm: CrmDriver):
    deal_id, _case, _fine = returned_to_sales(crm, MANAGER)
    crm.settle()
    crm.move(deal_id, "won", by=crm.responsible(deal_id))
    crm.settle()
    portal = crm.portal()
    if crm.name == "amocrm":  # the widget tells its code when a page opens (the lead tab, settings, the menu)
        portal.settings = {**portal.settings, reports.AMO_WIDGET_CODE: "rc_widget"}
        db.session.commit()
    today = reports.today(portal).isoformat()
    period = reports.parse_period(portal, today, today)

    summary = reports.summary_text(
        portal, reports.Due("weekly", period, "weekly:test"), reports.build_report(portal, period)
    )

    summary = summary.replace("\u00a0", " ")
    assert "Возвращено в продажи из ложных отказов: 1, выиграно: 1 на 150 000 ₽." in summary
    link = summary.rsplit("Отчёт: ", 1)[1]
    if crm.name == "amocrm":
        assert link == f"https://{portal.domain}/widget_page/rc_widget/refusal_control/"
    else:
        assert link.startswith(f"https://{portal.domain}/marketplace/")
