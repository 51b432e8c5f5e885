"""The company's own refusal reasons on both CRMs (issue #19): a reason an admin adds in the CRM field is accepted
by the guard and shows in the analytics and the CSV; a rename in the app shows in the CRM field; a retired reason
stays in history and reports but is refused for a new refusal."""

from __future__ import annotations

import csv
import io

import sqlalchemy as sa

from app.core.db import db
from app.core.models import AuditEntry, RefusalCase
from app.domain import reports
from tests.scenarios.driver import ADMIN, HEAD, MANAGER, CrmDriver

PARKING = "Нет подземной парковки"


def cases(deal_id: str) -> list[RefusalCase]:
    db.session.expire_all()
    return list(db.session.scalars(sa.select(RefusalCase).where(RefusalCase.deal_id == deal_id)))


def today(crm: CrmDriver) -> str:
    day = reports.today(crm.portal()).isoformat()
    return f"from={day}&to={day}"


def report(crm: CrmDriver) -> dict:
    answer = crm.client.get(f"/api/reports?{today(crm)}", headers=crm.token(HEAD))
    assert answer.status_code == 200, answer.get_data(as_text=True)
    return answer.get_json()


def csv_rows(crm: CrmDriver, table: str) -> list[list[str]]:
    answer = crm.client.get(f"/api/reports/{table}.csv?{today(crm)}", headers=crm.token(HEAD))
    assert answer.status_code == 200, answer.get_data(as_text=True)
    return list(csv.reader(io.StringIO(answer.get_data(as_text=True).lstrip("\ufeff")), delimiter=";"))


def admin(crm: CrmDriver) -> dict[str, str]:
    return crm.token(ADMIN, admin=True)


def test_a_reason_added_in_the_crm_is_accepted_by_the_guard_and_reported(crm: CrmDriver):
    crm.add_reason_item(PARKING)
    deal_id = crm.new_deal(title="Дом в Подмосковье")
    crm.pick_reason_item(deal_id, MANAGER, PARKING, "Клиенту нужна подземная парковка, у нас её нет")
    crm.settle()
    crm.move(deal_id, "lost", by=MANAGER)
    crm.settle()

    assert crm.stage_of(deal_id) == "refusal", "the guard accepts the new reason at once"
    [case] = cases(deal_id)
    assert case.reason.startswith("crm_")
    [notice] = crm.notices(MANAGER)
    assert PARKING in notice

    listed = crm.client.get("/api/reasons", headers=admin(crm)).get_json()["reasons"]
    [adopted] = [r for r in listed if r["code"] == case.reason]
    assert adopted["name_ru"] == PARKING and adopted["from_crm"] and not adopted["retired"]

    data = report(crm)
    [row] = [r for r in data["reasons"] if r["reason"] == case.reason]
    assert (row["name"], row["claimed"]) == (PARKING, 1)
    [terms] = [r for r in data["reason_analytics"]["comment_terms"] if r["reason"] == case.reason]
    assert "парковка" in [t["term"] for t in terms["terms"]]
    [comment] = data["reason_analytics"]["comments"]
    assert comment["reason_name"] == PARKING and comment["url"] == crm.deal_url(deal_id)
    [stage] = data["reason_analytics"]["stages"]
    assert stage["stage_id"] == crm.stage_id("working") and stage["claimed"] == 1

    assert any(row[:2] == [PARKING, "1"] for row in csv_rows(crm, "reasons"))
    comment_text = "Клиенту нужна подземная парковка, у нас её нет"
    assert any(PARKING in row and comment_text in row for row in csv_rows(crm, "comments"))


def test_a_rename_in_the_app_shows_in_the_crm_field(crm: CrmDriver):
    answer = crm.client.put(
        "/api/reasons/price", json={"name_ru": "Слишком дорого", "name_en": "Too expensive"}, headers=admin(crm)
    )
    assert answer.status_code == 200, answer.get_data(as_text=True)
    assert answer.get_json()["written"] is True
    items = crm.reason_items()
    assert "Слишком дорого" in items and "Дорого" not in items
    db.session.expire_all()
    [row] = [
        r
        for r in db.session.scalars(sa.select(AuditEntry).where(AuditEntry.attempted == "refusal reasons"))
        if r.outcome == "renamed"
    ]
    assert row.actor == str(ADMIN) and row.details["changed"]["from"]["name_ru"] == "Дорого"

    deal_id = crm.new_deal()
    crm.fill_refusal(deal_id, MANAGER, "price", "Дорого для них")
    crm.settle()
    crm.move(deal_id, "lost", by=MANAGER)
    crm.settle()
    assert crm.stage_of(deal_id) == "refusal"
    assert "Слишком дорого" in crm.notices(MANAGER)[0]


def test_a_retired_reason_stays_in_history_and_is_refused_for_a_new_refusal(crm: CrmDriver):
    first = crm.new_deal(title="Первая сделка")
    crm.fill_refusal(first, MANAGER, "no_budget", "Бюджет на следующий год")
    crm.settle()
    crm.move(first, "lost", by=MANAGER)
    crm.settle()
    assert crm.stage_of(first) == "refusal"

    answer = crm.client.post("/api/reasons/no_budget/retire", headers=admin(crm))
    assert answer.status_code == 200, answer.get_data(as_text=True)
    assert "Нет бюджета" in crm.reason_items(), "the item stays: deals holding it keep their value"

    second = crm.new_deal(title="Вторая сделка")
    crm.fill_refusal(second, MANAGER, "no_budget", "Нет денег")
    crm.settle()
    crm.move(second, "lost", by=MANAGER)
    crm.settle()
    assert crm.stage_of(second) == "working"
    assert cases(second) == []
    assert any("больше не используется" in text and "Нет бюджета" in text for text in crm.notices(MANAGER))

    [case] = cases(first)
    assert case.reason == "no_budget"
    [row] = [r for r in report(crm)["reasons"] if r["reason"] == "no_budget"]
    assert row["name"] == "Нет бюджета" and row["claimed"] == 1

    assert crm.client.post("/api/reasons/no_budget/restore", headers=admin(crm)).status_code == 200
    third = crm.new_deal(title="Третья сделка")
    crm.fill_refusal(third, MANAGER, "no_budget", "Нет денег совсем")
    crm.settle()
    crm.move(third, "lost", by=MANAGER)
    crm.settle()
    assert crm.stage_of(third) == "refusal"


def test_names_are_checked_and_only_admins_edit(crm: CrmDriver):
    empty = crm.client.post("/api/reasons", json={"name_ru": "  ", "name_en": ""}, headers=admin(crm))
    assert empty.status_code == 400 and empty.get_json()["message"] == "Укажите название причины."
    twice = crm.client.post("/api/reasons", json={"name_ru": "дорого", "name_en": ""}, headers=admin(crm))
    assert twice.status_code == 409 and twice.get_json()["message"] == "Причина «дорого» уже есть."
    manager = crm.client.post("/api/reasons", json={"name_ru": "Новая"}, headers=crm.token(MANAGER))
    assert manager.status_code == 403
    added = crm.client.post("/api/reasons", json={"name_ru": "Выбрал конкурента", "name_en": ""}, headers=admin(crm))
    assert added.status_code == 200, added.get_data(as_text=True)
    assert "Выбрал конкурента" in crm.reason_items()
    [row] = [r for r in added.get_json()["reasons"] if r["name_ru"] == "Выбрал конкурента"]
    assert row["name_en"] == "Выбрал конкурента" and row["in_crm"]
