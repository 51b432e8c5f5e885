"""What the repeat-client look-up costs on the wire: Bitrix24 answers it in four batch requests at most (the deal and
its contact bindings; the clients; their duplicates by phone and e-mail; their details and open deals), and a
deal without any client in two."""

from __future__ import annotations

from app.crm.factory import client_for
from tests.integration.b24 import B24


def http_requests(b24: B24) -> int:
    return b24.portal.counters.get("http_requests", 0)


def test_the_look_up_of_a_deal_with_a_contact_takes_four_batch_requests(installed: B24) -> None:
    portal = installed.portal
    with installed.sandbox.lock:
        portal.contacts[901] = {"ID": 901, "NAME": "Иван", "ASSIGNED_BY_ID": 3, "DATE_CREATE": 1_700_000_000,
                                "PHONE": ["+7 900 123-45-67"], "EMAIL": ["ivan@client.test"]}  # fmt: skip
        portal.contacts[902] = {"ID": 902, "NAME": "Иван П.", "ASSIGNED_BY_ID": 2, "DATE_CREATE": 1_600_000_000,
                                "PHONE": ["89001234567"]}  # fmt: skip
    earlier = installed.sandbox.act(portal, 2).create_deal(TITLE="Раньше", CATEGORY_ID=0, STAGE_ID="NEW",
                                                           ASSIGNED_BY_ID=2, CONTACT_ID=902)  # fmt: skip
    deal_id = installed.sandbox.act(portal, 3).create_deal(TITLE="Сейчас", CATEGORY_ID=0, STAGE_ID="NEW",
                                                           ASSIGNED_BY_ID=3, CONTACT_ID=901)  # fmt: skip
    crm = client_for(installed.our_portal())
    before = http_requests(installed)

    history = crm.client_history(str(deal_id))

    assert http_requests(installed) - before == 4
    assert [(c.kind, c.id, c.responsible_id) for c in history.own] == [("contact", "901", "3")]
    assert [(c.kind, c.id) for c in history.duplicates] == [("contact", "902")]
    assert [deal.id for deal in history.open_deals] == [str(earlier)]


def test_a_deal_without_a_client_costs_two_requests(installed: B24) -> None:
    deal_id = installed.sandbox.act(installed.portal, 3).create_deal(TITLE="Без клиента", CATEGORY_ID=0,
                                                                     STAGE_ID="NEW", ASSIGNED_BY_ID=3)  # fmt: skip
    crm = client_for(installed.our_portal())
    before = http_requests(installed)

    history = crm.client_history(str(deal_id))

    assert http_requests(installed) - before <= 2
    assert history.own == () and history.duplicates == () and history.open_deals == ()
