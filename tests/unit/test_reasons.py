"""The company's refusal reasons against the in-memory CRM: seeding, both-way sync with the CRM's field, the guard
adopting an item added in the CRM and refusing a retired reason, the admin's changes, the comment tokenizer."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from app.core.db import db
from app.core.models import AuditEntry, Portal
from app.crm.errors import CrmError
from app.domain import reason_analytics, reasons
from app.domain.catalog import REASONS
from tests.unit.conftest import ADMIN, MANAGER, event, seen_deal, the_case
from tests.unit.fake_crm import InMemoryCrm


def codes(portal: Portal) -> list[str]:
    return [row.code for row in reasons.listing(portal.id)]


def test_a_new_portal_starts_with_the_seven_reasons_in_order(portal: Portal) -> None:
    assert codes(portal) == list(REASONS)
    assert reasons.name_of(portal.id, "price", "ru") == "Дорого"
    assert reasons.name_of(portal.id, "price", "en") == "Price too high"
    assert reasons.name_of(portal.id, None, "ru") == "—"


def test_push_writes_every_reason_to_the_field_and_records_the_items(portal: Portal, crm: InMemoryCrm) -> None:
    reasons.push_to_crm(portal, crm)
    assert [option.name for option in crm.list_reason_options()] == [label.ru for label in REASONS.values()]
    assert set(reasons.item_ids(portal.id)) == set(REASONS)
    reasons.push_to_crm(portal, crm)
    assert len(crm.reason_options) == len(REASONS), "a second push adds nothing"


def test_an_item_added_in_the_crm_is_adopted_and_accepted_by_the_guard(portal: Portal, crm: InMemoryCrm) -> None:
    reasons.push_to_crm(portal, crm)
    code = crm.add_reason_option("Нет парковки")
    crm.reads.clear()
    deal_id = seen_deal(portal, crm)
    crm.fill_refusal(deal_id, by=MANAGER, reason=code, comment="Нужна подземная парковка")
    event(portal, deal_id)
    crm.move(deal_id, "LOSE", by=MANAGER)
    event(portal, deal_id)

    assert crm.deals[deal_id].stage_id == "REFUSAL"
    case = the_case(deal_id)
    assert case is not None and case.reason == code
    row = reasons.find(portal.id, code)
    assert row is not None and row.name_ru == row.name_en == "Нет парковки" and not row.retired
    assert "Нет парковки" in crm.inbox(MANAGER)[0]
    assert crm.reads["list_reason_options"] == 1, "the field is read once, when the unknown item shows up"


def test_a_retired_reason_is_refused_with_a_notice_and_kept_in_history(portal: Portal, crm: InMemoryCrm) -> None:
    reasons.set_retired(portal, ADMIN, "price", True)
    db.session.commit()
    deal_id = seen_deal(portal, crm)
    crm.fill_refusal(deal_id, by=MANAGER, reason="price", comment="Too expensive")
    event(portal, deal_id)
    crm.move(deal_id, "LOSE", by=MANAGER)
    event(portal, deal_id)

    assert crm.deals[deal_id].stage_id == "WORKING"
    assert the_case(deal_id) is None
    assert "больше не используется" in crm.inbox(MANAGER)[0] and "Дорого" in crm.inbox(MANAGER)[0]
    assert "price" in reasons.names(portal.id, "ru")
    assert "price" not in [choice["code"] for choice in reasons.choices(portal.id, "ru")]


def test_the_crm_renames_and_deletions_reach_the_app(portal: Portal, crm: InMemoryCrm) -> None:
    reasons.push_to_crm(portal, crm)
    price = reasons.find(portal.id, "price")
    other = reasons.find(portal.id, "other")
    assert price is not None and other is not None
    crm.reason_options = [
        option.__class__(option.id, "Очень дорого", option.sort) if option.id == price.crm_item_id else option
        for option in crm.reason_options
        if option.id != other.crm_item_id
    ]
    changes = reasons.pull_from_crm(portal, crm)

    assert reasons.name_of(portal.id, "price", "ru") == "Очень дорого"
    assert reasons.name_of(portal.id, "price", "en") == "Price too high", "the other language is the app's"
    retired = reasons.find(portal.id, "other")
    assert retired is not None and retired.retired, "an item deleted in the CRM retires its reason"
    assert len(changes) == 2
    [row] = db.session.scalars(sa.select(AuditEntry).where(AuditEntry.outcome == "changed in the CRM")).all()
    assert row.actor == "crm"


def test_a_change_the_crm_did_not_take_is_written_by_the_reconciliation_and_never_undone(
    portal: Portal, crm: InMemoryCrm
) -> None:
    reasons.push_to_crm(portal, crm)
    reasons.rename(portal, ADMIN, "price", "Слишком дорого", "")
    crm.fail_next("save_reason_options", CrmError("down"))
    assert reasons.publish(portal, crm) is False
    assert reasons.sync_quietly(portal, crm) is True
    assert reasons.name_of(portal.id, "price", "ru") == "Слишком дорого"
    assert "Слишком дорого" in [option.name for option in crm.reason_options]
    assert not (portal.settings or {}).get(reasons.PUSH_PENDING)


def test_admin_changes_are_checked(portal: Portal) -> None:
    with pytest.raises(reasons.ReasonError) as empty:
        reasons.add(portal, ADMIN, " ", "Empty")
    assert empty.value.status == 400 and empty.value.message == "Укажите название причины."
    with pytest.raises(reasons.ReasonError) as twice:
        reasons.add(portal, ADMIN, "ДОРОГО", "")
    assert twice.value.status == 409 and twice.value.message == "Причина «ДОРОГО» уже есть."
    added = reasons.add(portal, ADMIN, "Выбрал конкурента", "Chose a competitor")
    assert codes(portal)[-1] == added.code
    reasons.reorder(portal, ADMIN, [added.code, *[code for code in REASONS]])
    assert codes(portal)[0] == added.code
    with pytest.raises(reasons.ReasonError):
        reasons.reorder(portal, ADMIN, ["price"])
    for code in [added.code, *list(REASONS)[:-1]]:
        reasons.set_retired(portal, ADMIN, code, True)
    with pytest.raises(reasons.ReasonError) as last:
        reasons.set_retired(portal, ADMIN, "other", True)
    assert last.value.status == 409


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Клиент сказал, что ЦЕНА высокая!", ["цена", "высокая"]),
        ("Ещё не решили; ёлка", ["решили", "елка"]),
        ("The client said the price is too high", ["price", "high"]),
        ("", []),
    ],
)
def test_the_tokenizer_keeps_meaningful_words(text: str, expected: list[str]) -> None:
    assert reason_analytics.tokens(text) == expected


def test_frequent_phrases_come_before_their_words() -> None:
    comments = [
        "Нет подземной парковки, нужна парковка",
        "Хотят подземной парковки",
        "Дорого и нет подземной парковки",
    ]
    found = reason_analytics.terms(comments)
    assert found[0] == ("подземной парковки", 3)
    assert "подземной" not in [term for term, _ in found]


def test_inflected_forms_count_as_one_word_shown_in_the_commonest_form() -> None:
    comments = ["Нужна подземная парковка", "Хочет подземную парковку", "Нет подземной парковки", "Подземная парковка"]
    found = reason_analytics.terms(comments)
    assert found[0] == ("подземная парковка", 4)
    assert reason_analytics.stem("парковку") == reason_analytics.stem("парковки") == "парковк"
    assert reason_analytics.stem("prices") == "price"


def test_each_portal_has_its_own_reasons(portal: Portal) -> None:
    from tests.helpers import make_portal

    other = make_portal("another-portal", status="installed")
    reasons.rename(portal, ADMIN, "price", "Слишком дорого", "")
    reasons.set_retired(portal, ADMIN, "other", True)
    db.session.commit()
    assert reasons.name_of(other.id, "price", "ru") == "Дорого"
    assert "other" in [choice["code"] for choice in reasons.choices(other.id, "ru")]
    assert reasons.name_of(portal.id, "price", "ru") == "Слишком дорого"
