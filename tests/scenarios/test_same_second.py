"""Deal events within one second, on both CRMs: both CRMs stamp their events in whole seconds (Bitrix24 `ts`,
amoCRM `last_modified`), so two real changes of one deal by one person in the same second look alike on the
wire. Neither may be lost as a "duplicate": a lost event is a lost client. A delivery sent twice as such is
still decided once."""

from __future__ import annotations

from werkzeug.test import TestResponse

from app.core.models import utcnow
from tests.scenarios.driver import MANAGER, CrmDriver


def test_two_changes_of_a_deal_by_one_manager_in_one_second_are_both_decided(crm: CrmDriver):
    crm.set_clock(utcnow())  # the CRM's clock stands still: every event below is stamped with the same second
    deal = crm.new_deal(title="Две правки за секунду")
    crm.settle()

    crm.qualify(deal, MANAGER, need="yes", budget="yes", urgency="yes")
    crm.settle()
    assert crm.deal_field(deal, "abc_class") == "A"

    crm.qualify(deal, MANAGER, urgency="no")  # the same manager, the same deal, the same second
    crm.settle()
    assert crm.deal_field(deal, "abc_class") == "B"

    crm.qualify(deal, MANAGER, budget="no")
    crm.settle()
    assert crm.deal_field(deal, "abc_class") == "C"


def test_a_change_arriving_with_the_echo_of_our_own_write_in_the_same_second_is_decided(crm: CrmDriver):
    """Our write of the class fires an event back (its echo, recognised without a read); the manager changes the
    deal again within the same second, before that echo reached us: the two deliveries wait together and the
    manager's change is still read and decided."""
    crm.set_clock(utcnow())
    deal = crm.new_deal(title="Правка вместе с эхом")
    crm.settle()

    crm.qualify(deal, MANAGER, need="yes", budget="yes", urgency="yes")
    crm.deliver()
    crm.work()  # the class A is written; the echo of that write waits in the CRM's outbox
    assert crm.deal_field(deal, "abc_class") == "A"
    crm.qualify(deal, MANAGER, urgency="no")  # same second, queued behind our echo
    crm.settle()
    assert crm.deal_field(deal, "abc_class") == "B"


def _duplicate(answer: TestResponse) -> bool:
    """Whether our endpoint answered a delivery as a duplicate (Bitrix24: one event a POST; amoCRM: one webhook
    body may carry several leads)."""
    body = answer.get_json()
    return bool(body.get("duplicate")) if "duplicate" in body else body.get("duplicates") == 1


def test_a_delivery_sent_twice_is_decided_once(crm: CrmDriver):
    crm.set_clock(utcnow())
    deal = crm.new_deal(title="Повторная доставка")
    crm.settle()
    crm.qualify(deal, MANAGER, need="yes", budget="yes", urgency="no")
    [delivery] = crm.pending_deliveries()
    crm.deliver()

    again = crm.post_delivery(delivery)  # the same body again while the first waits for its job
    assert again.status_code == 200 and _duplicate(again)
    crm.settle()
    assert crm.deal_field(deal, "abc_class") == "B"
