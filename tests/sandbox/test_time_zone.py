"""A sandbox portal in its own time zone: dates people type in its UI (the actor the kanban acts through) are the
portal's wall clock, as the REST API reads and prints them, not Moscow's."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

from sandbox import Portal, Sandbox

from .conftest import call

NOVOSIBIRSK = ZoneInfo("Asia/Novosibirsk")  # UTC+7 all year, 4 hours ahead of Moscow


def test_dates_people_set_are_the_portals_wall_clock(sandbox: Sandbox, portal: Portal, token: str) -> None:
    portal.time_zone = "Asia/Novosibirsk"
    manager = sandbox.act(portal, 2)
    deal_id = manager.create_deal(TITLE="Станки", BEGINDATE="01.12.2026", CLOSEDATE="2026-12-20T10:00:00")
    manager.update_deal(deal_id, {"CLOSEDATE": "21.12.2026 18:30:00"})
    task_id = manager.create_task(TITLE="Перезвонить", RESPONSIBLE_ID=2, DEADLINE="10.12.2026 09:00:00")

    status, body = call(sandbox, token, "crm.deal.get", {"id": deal_id})
    assert status == 200, body
    assert body["result"]["BEGINDATE"] == "2026-12-01T00:00:00+07:00"
    assert body["result"]["CLOSEDATE"] == "2026-12-21T18:30:00+07:00"
    closes = datetime(2026, 12, 21, 18, 30, tzinfo=NOVOSIBIRSK).timestamp()
    assert portal.deals[deal_id].closedate == closes, "18:30 in Novosibirsk is 14:30 in Moscow"
    assert sandbox.deal(portal, deal_id)["CLOSEDATE"] == "2026-12-21T18:30:00+07:00"

    status, body = call(sandbox, token, "tasks.task.get", {"taskId": task_id})
    assert status == 200, body
    assert body["result"]["task"]["deadline"] == "2026-12-10T09:00:00+07:00"


def test_a_moscow_portal_next_to_it_keeps_moscow_time(sandbox: Sandbox, portal: Portal, token: str) -> None:
    other = sandbox.seed_portal(domain="east.bitrix24.ru", seed=7)
    other.time_zone = "Asia/Novosibirsk"
    sandbox.act(other, 2).create_deal(TITLE="Восток", CLOSEDATE="21.12.2026 18:30:00")
    deal_id = sandbox.act(portal, 2).create_deal(TITLE="Москва", CLOSEDATE="21.12.2026 18:30:00")
    status, body = call(sandbox, token, "crm.deal.get", {"id": deal_id})
    assert status == 200, body
    assert body["result"]["CLOSEDATE"] == "2026-12-21T18:30:00+03:00"
