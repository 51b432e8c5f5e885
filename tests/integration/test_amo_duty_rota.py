"""amoCRM only: the duty day is the account's (its time zone comes from the account at install), not Moscow's.

Bitrix24 portals in the sandbox all live in Moscow time; the shared duty-rota scenarios are in
tests/scenarios/test_duty_rota.py."""

from __future__ import annotations

from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from tests.integration.amo import Amo
from tests.integration.b24 import configure_guard
from tests.scenarios.driver import MANAGER, OTHER_MANAGER, AmoDriver
from tests.scenarios.test_duty_rota import configure_duty, incoming, put_rota

YEKATERINBURG = ZoneInfo("Asia/Yekaterinburg")  # UTC+5, two hours ahead of Moscow


def test_the_duty_day_follows_the_accounts_time_zone(amo: Amo):
    amo.account.timezone = "Asia/Yekaterinburg"
    crm = AmoDriver(amo)
    crm.add_pool_user()
    assert crm.install().timezone == "Asia/Yekaterinburg"
    configure_guard(crm.portal())
    configure_duty(crm)
    midnight = datetime.now(YEKATERINBURG).replace(hour=0, minute=0, second=0, microsecond=0)
    yesterday, today = (midnight - timedelta(days=1)).date(), midnight.date()
    assert put_rota(crm, {yesterday: MANAGER, today: OTHER_MANAGER}).status_code == 200
    # 00:01 in Yekaterinburg is still 22:01 of the day before in Moscow.
    crm.set_clock(midnight + timedelta(minutes=1))
    deal_id = incoming(crm, title="Заявка с Урала")
    assert crm.responsible(deal_id) == OTHER_MANAGER
