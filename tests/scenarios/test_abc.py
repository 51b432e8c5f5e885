"""ABC qualification on both CRMs: the install adds need, budget, urgency and class fields (and the reconciliation
adds them to a portal installed before); the class follows the manager's answers on every deal event and is written
only when it changed; the exchange lists A before B before C before unclassified deals and shows the class; an idle
class A deal notifies its manager once per idle period; the reports count deals, wins, refusals and leaks by class."""

from __future__ import annotations

import json
from datetime import timedelta

import sqlalchemy as sa
from sqlalchemy.orm.attributes import flag_modified

from app.cli.settings import settings_cli
from app.core.db import db
from app.core.models import DealClass, utcnow
from app.crm.factory import client_for
from app.domain import abc, reconcile
from tests.scenarios.driver import ADMIN, HEAD, MANAGER, OTHER_MANAGER, CrmDriver
from tests.scenarios.test_exchange import configure_exchange, incoming

FIELDS = ("abc_need", "abc_budget", "abc_urgency", "abc_class")


def settings_key(crm: CrmDriver) -> str:
    return "b24_fields" if crm.name == "bitrix24" else "amo_fields"


def test_the_class_follows_the_answers_and_is_written_only_when_it_changes(crm: CrmDriver):
    crm.set_clock(utcnow())  # each step a few seconds after the last (amoCRM stamps events in whole seconds)
    deal = crm.new_deal(title="Поставка станков")
    assert crm.deal_field(deal, "abc_class") is None
    before = crm.deal_writes(deal)

    crm.qualify(deal, MANAGER, need="yes", budget="yes", urgency="yes")
    crm.settle()
    assert crm.deal_field(deal, "abc_class") == "A"
    assert crm.deal_writes(deal) == before + 1  # one write of the class; its echo writes nothing

    crm.wait(5)
    crm.set_amount(deal, 200000, by=MANAGER)  # a change that leaves the answers as they are
    crm.settle()
    assert crm.deal_writes(deal) == before + 1

    crm.wait(5)
    crm.qualify(deal, MANAGER, urgency="no")
    crm.settle()
    assert crm.deal_field(deal, "abc_class") == "B"
    crm.wait(5)
    crm.qualify(deal, MANAGER, budget="no")
    crm.settle()
    assert crm.deal_field(deal, "abc_class") == "C"
    crm.wait(5)
    crm.qualify(deal, MANAGER, need="no")
    crm.settle()
    assert crm.deal_field(deal, "abc_class") is None  # no need: no class
    assert crm.deal_writes(deal) == before + 4

    crm.wait(5)
    crm.qualify(deal, MANAGER, class_="A")  # a class typed by hand is put right
    crm.settle()
    assert crm.deal_field(deal, "abc_class") is None


def test_a_portal_installed_before_abc_gets_the_fields_from_the_reconciliation(crm: CrmDriver):
    """Neither the CRM nor the app knows the ABC fields (a portal installed before them): the reconciliation
    creates them in the CRM, and from then on the class follows the answers."""
    portal = crm.portal()
    mapping = dict(portal.settings[settings_key(crm)])
    for name in FIELDS:
        mapping.pop(name)
    portal.settings = {**portal.settings, settings_key(crm): mapping}
    flag_modified(portal, "settings")
    db.session.commit()
    crm.drop_our_fields(*FIELDS)
    assert not any(crm.our_field_exists(name) for name in FIELDS)
    assert crm.our_field_exists("refusal_reason")
    deal = crm.new_deal()  # deal events before the repair are decided as before, without a class
    assert crm.stage_of(deal) == "working" and crm.deal_field(deal, "refusal_reason") is None
    assert abc.installed(crm.portal()) is False

    reconcile.reconcile_portal(crm.portal().id)
    crm.work()
    assert abc.installed(crm.portal())
    assert all(crm.our_field_exists(name) for name in FIELDS)  # created in the CRM, not only remembered
    crm.qualify(deal, MANAGER, need="yes", budget="yes", urgency="yes")
    crm.settle()
    assert crm.deal_field(deal, "abc_class") == "A"


def test_the_exchange_lists_a_then_b_then_c_then_unclassified_with_the_class(bare_crm: CrmDriver):
    crm = bare_crm
    crm.add_pool_user()
    crm.install()
    configure_exchange(crm)
    plain = incoming(crm, "Без квалификации")
    c_deal = incoming(crm, "Класс C")
    b_deal = incoming(crm, "Класс B")
    a_deal = incoming(crm, "Класс A")
    crm.qualify(c_deal, MANAGER, need="yes", budget="no")
    crm.qualify(b_deal, MANAGER, need="yes", budget="yes", urgency="no")
    crm.qualify(a_deal, MANAGER, need="yes", budget="yes", urgency="yes")
    crm.settle()

    answer = crm.client.get("/api/exchange/lots", headers=crm.token(OTHER_MANAGER))
    assert answer.status_code == 200, answer.get_json()
    lots = [(lot["deal_id"], lot["abc_class"]) for lot in answer.get_json()["lots"]]
    assert lots == [(a_deal, "A"), (b_deal, "B"), (c_deal, "C"), (plain, "")]


def test_an_idle_class_a_deal_notifies_its_manager_once_per_idle_period(crm: CrmDriver):
    deal = crm.new_deal(title="Срочная поставка")
    crm.qualify(deal, MANAGER, need="yes", budget="yes", urgency="yes")
    other = crm.new_deal(title="Не срочная поставка")
    crm.qualify(other, MANAGER, need="yes", budget="yes", urgency="no")
    crm.settle()
    portal, client = crm.portal(), client_for(crm.portal())
    seen = len(crm.notices(MANAGER))

    assert abc.notify_idle(portal, client, now=utcnow() + timedelta(hours=23)) == 0  # 24 h by default
    assert abc.notify_idle(portal, client, now=utcnow() + timedelta(hours=25)) == 1
    crm.settle()
    fresh = crm.notices(MANAGER)[seen:]
    assert len(fresh) == 1
    assert "«Срочная поставка»" in fresh[0] and "24 ч" in fresh[0] and crm.deal_url(deal) in fresh[0]
    assert crm.notices(HEAD) == []  # heads only with abc_a_idle_heads
    assert abc.notify_idle(portal, client, now=utcnow() + timedelta(hours=30)) == 0  # once per idle period

    # The admin turns it off from the CLI.
    result = crm.app.test_cli_runner().invoke(settings_cli, ["set", str(portal.id), "abc_a_idle_hours=0"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["abc_a_idle_hours"] == 0
    db.session.expire_all()
    assert abc.notify_idle(crm.portal(), client, now=utcnow() + timedelta(days=3)) == 0
    bad = crm.client.put("/api/settings", json={"abc_a_idle_hours": -1}, headers=crm.token(ADMIN, admin=True))
    assert bad.status_code == 400 and "abc_a_idle_hours" in bad.get_json()["field_errors"]


def test_the_reports_count_deals_wins_and_refusals_by_class(crm: CrmDriver):
    won = crm.new_deal(title="Выиграна")
    crm.qualify(won, MANAGER, need="yes", budget="yes", urgency="yes")
    other_a = crm.new_deal(title="A в работе")
    crm.qualify(other_a, MANAGER, need="yes", budget="yes", urgency="yes")
    refused = crm.new_deal(title="C отказ")
    crm.qualify(refused, MANAGER, need="yes", budget="no")
    crm.settle()
    crm.move(won, "won", by=MANAGER)
    crm.fill_refusal(refused, MANAGER, reason="price", comment="дорого")
    crm.move(refused, "lost", by=MANAGER)
    crm.settle()
    assert crm.stage_of(refused) == "refusal"
    db.session.expire_all()
    outcomes = dict(db.session.execute(sa.select(DealClass.deal_id, DealClass.outcome)).all())
    assert outcomes[won] == "won" and outcomes[refused] == "open"

    csv = crm.client.get("/api/reports/abc.csv", headers=crm.token(HEAD))
    assert csv.status_code == 200
    lines = csv.data.decode("utf-8-sig").splitlines()
    assert lines[0] == "Класс ABC;Сделок;Выиграно;Конверсия, %;Условные отказы;Утечки"
    assert lines[1:] == ["A;2;1;50,0;0;0", "B;0;0;;0;0", "C;1;0;0,0;1;0", "Итого;3;1;33,3;1;0"]
    page = crm.client.get("/api/reports/view", headers=crm.token(HEAD))
    assert page.status_code == 200
    assert "Сделки по классам ABC" in page.get_data(as_text=True)


def test_the_class_goes_out_with_the_guards_move_and_notice_in_one_write(crm: CrmDriver):
    """A manager answers the questions and closes the deal as lost without a reason: the deal is sent back, he
    is told why, and the class is written, all in the guard's one write (Bitrix24: one batch with one
    crm.deal.update; amoCRM: one PATCH of the lead, then the notice task)."""
    crm.set_clock(utcnow())
    warm = crm.new_deal(title="Прогрев справочников")
    crm.move(warm, "lost", by=MANAGER)  # reads the users and pipelines once, as any portal's first decision does
    crm.settle()
    deal = crm.new_deal(title="Квалифицирована и закрыта")
    crm.settle()
    crm.wait(5)
    writes, requests, seen = crm.deal_writes(deal), crm.http_requests(), len(crm.notices(MANAGER))

    crm.qualify(deal, MANAGER, need="yes", budget="yes", urgency="yes")
    crm.move(deal, "lost", by=MANAGER)
    crm.settle()

    assert crm.stage_of(deal) == "working" and crm.deal_field(deal, "abc_class") == "A"
    assert len(crm.notices(MANAGER)) == seen + 1
    assert crm.deal_writes(deal) == writes + 1  # the move back and the class: one write of the deal
    # one read of the deal, one write with the notice (amoCRM: the notice is a note on the lead and a task
    # linked to it, a POST each); the echo of that write is recognised without a read
    assert crm.http_requests() - requests == (2 if crm.name == "bitrix24" else 4)


def test_the_reconciliation_reclassifies_a_deal_whose_answers_changed_unheard(crm: CrmDriver):
    """The event of a change of the answers was lost and the deal's stage did not move: the sweep, which reads
    the deals anyway, sees that the answers call for another class and decides the deal; a deal whose answers
    and stage are as we know them is not decided again."""
    deal = crm.new_deal(title="Потерянное событие")
    calm = crm.new_deal(title="Без изменений")
    crm.qualify(deal, MANAGER, need="yes", budget="yes", urgency="yes")
    crm.qualify(calm, MANAGER, need="yes", budget="no")
    crm.settle()
    assert crm.deal_field(deal, "abc_class") == "A" and crm.deal_field(calm, "abc_class") == "C"
    reconcile.reconcile_portal(crm.portal().id)  # what the sweep saw so far is acknowledged
    crm.settle()

    crm.drop_next_delivery()
    crm.qualify(deal, MANAGER, urgency="no")
    crm.settle()
    assert crm.deal_field(deal, "abc_class") == "A", "the event was lost: nothing happened yet"
    assert crm.stage_of(deal) == "working"

    counts = reconcile.reconcile_portal(crm.portal().id)
    crm.settle()
    assert counts["decided"] == 1
    assert crm.deal_field(deal, "abc_class") == "B" and crm.deal_field(calm, "abc_class") == "C"
    db.session.expire_all()
    kept = dict(db.session.execute(sa.select(DealClass.deal_id, DealClass.abc_class)).all())
    assert kept[deal] == "B" and kept[calm] == "C"
    assert reconcile.reconcile_portal(crm.portal().id)["decided"] == 0
