"""The tabs of /amocrm/app on an installed amoCRM sandbox account: every tab's API answers for the right
people and the CPL table offers the account's lead sources (utm_source). The exchange scenarios (claims, caps)
run on both CRMs in tests/scenarios/test_exchange.py."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest

from app.core.models import utcnow
from app.crm.factory import client_for
from app.crm.port import Deal, NewTodo
from app.domain import penalties
from tests.integration.amo import HEAD, MANAGER, OTHER_MANAGER, QA, Amo, new_lead
from tests.integration.amo_review_helpers import open_lead_tab, page_config
from tests.integration.b24 import configure_guard

ADMIN = 1
POOL = 12  # «Биржа лидов», the amoCRM user that holds pool leads


def add_pool_user(amo: Amo) -> None:
    template = amo.account.users[MANAGER]
    amo.account.users[POOL] = {
        **template,
        "id": POOL,
        "name": "Биржа лидов",
        "email": f"pool@{amo.account.subdomain}.example",
        "rights": {**template["rights"]},
    }


@pytest.fixture
def account(amo: Amo) -> Amo:
    add_pool_user(amo)
    amo.install()
    configure_guard(amo.our_portal())
    return amo


def page_token(amo: Amo, user_id: int) -> dict[str, str]:
    """The token the main page (opened from the widget outside a lead) carries."""
    return {"X-RC-Token": page_config(open_lead_tab(amo, user_id))["token"]}


def test_every_tab_of_the_main_page_answers_for_an_amocrm_account(account: Amo):
    new_lead(account, utm_source="yandex")
    new_lead(account, utm_source="Avito")
    new_lead(account)
    admin, head, qa, manager = (page_token(account, user) for user in (ADMIN, HEAD, QA, MANAGER))
    today = utcnow().astimezone(ZoneInfo("Europe/Moscow")).date().isoformat()
    main = str(account.account.main_pipeline())
    checks = [
        ("/api/settings", admin, 200),
        ("/api/settings", manager, 403),
        ("/api/settings/cpl", admin, 200),
        ("/api/settings/reports", admin, 200),
        ("/api/review/settings", admin, 200),
        ("/api/review/queue", qa, 200),
        ("/api/review/queue", manager, 200),  # his own cases only («Мои отказы»)
        ("/api/exchange/lots", manager, 200),
        ("/api/exchange/settings", admin, 200),
        ("/api/exchange/rota?department_id=1", head, 200),
        ("/api/exchange/stats", head, 200),
        (f"/api/reports?from={today}&to={today}", head, 200),
        (f"/api/reports/view?from={today}&to={today}", head, 200),
        (f"/api/reports?from={today}&to={today}", manager, 403),
    ]
    for url, headers, status in checks:
        answer = account.client.get(url, headers=headers)
        assert answer.status_code == status, (url, answer.get_data(as_text=True)[:300])
    settings = account.client.get("/api/settings", headers=admin).get_json()
    assert {"id": str(QA), "name": "Контроль Мария"} in [{"id": u["id"], "name": u["name"]} for u in settings["users"]]
    assert {"id": "2", "name": "Отдел контроля качества"} in settings["departments"]
    assert main in [p["id"] for p in settings["pipelines"]]
    cpl = account.client.get("/api/settings/cpl", headers=admin).get_json()
    assert cpl["sources"] == [{"id": "Avito", "name": "Avito"}, {"id": "yandex", "name": "yandex"}]
    assert main in [p["id"] for p in cpl["pipelines"]]


def test_the_cpl_table_by_source_resolves_a_leads_cost_from_its_utm_source(account: Amo):
    lead_id = new_lead(account, utm_source="yandex")
    admin = page_token(account, ADMIN)
    saved = account.client.put(
        "/api/settings/cpl", json={"currency": "RUB", "default": "700", "by_source": {"yandex": "1500"}}, headers=admin
    )
    assert saved.status_code == 200, saved.get_json()
    refused = account.client.put("/api/settings/cpl", json={"by_source": {"google": "10"}}, headers=admin)
    assert refused.status_code == 400 and refused.get_json()["message"]
    portal = account.our_portal()
    deal = client_for(portal).get_deal(str(lead_id))
    assert deal.source_id == "yandex"
    assert penalties.resolve_cpl(portal, deal) == penalties.Cpl(Decimal("1500.00"), "RUB", "source:yandex")
    plain = client_for(portal).get_deal(str(new_lead(account)))
    assert plain.source_id == ""
    assert penalties.resolve_cpl(portal, plain).rule == "portal_default"


def test_adapter_counts_open_leads_of_a_pipeline_and_creates_call_todos(account: Amo):
    main = account.account.main_pipeline()
    other = next(pid for pid in account.pipelines() if pid != main)
    first = new_lead(account, manager=OTHER_MANAGER)
    new_lead(account, manager=OTHER_MANAGER)
    new_lead(account, manager=OTHER_MANAGER, status="Новая заявка", pipeline=other)
    new_lead(account, manager=MANAGER)
    account.sandbox.act(account.account, OTHER_MANAGER).move_lead(first, 142)
    account.settle()
    crm = client_for(account.our_portal())
    assert crm.count_open_deals(str(OTHER_MANAGER), str(main)) == 1
    assert crm.count_open_deals(str(OTHER_MANAGER), str(other)) == 1
    assert crm.count_open_deals(str(HEAD), str(main)) == 0
    deal: Deal = crm.get_deal(str(first))
    assert deal.last_activity_at is not None and deal.last_activity_at == deal.modified_at
    due = utcnow() + timedelta(hours=3)
    todo_id = crm.create_todo(NewTodo("Перезвонить", str(QA), str(first), due, "Клиент просил"))
    [task] = [t for t in account.sandbox.tasks_for(account.account, lead_id=first) if str(t["id"]) == todo_id]
    assert (task["task_type_id"], task["responsible_user_id"], task["complete_till"]) == (1, QA, int(due.timestamp()))
    assert task["text"] == "Перезвонить\nКлиент просил"
