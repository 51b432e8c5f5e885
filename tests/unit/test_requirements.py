"""Stage requirements and the next-step rule against the in-memory CRM: who is sent back from which move, what
the notice names, what counts as filled in, the setting's validation and the report counts."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

import pytest
import sqlalchemy as sa
from marshmallow import ValidationError

from app.core.db import db
from app.core.models import AuditEntry, Portal, utcnow
from app.crm.port import DealField
from app.domain import requirements
from tests.unit.conftest import HEAD, MANAGER, OTHER_MANAGER, QA, configure, event, seen_deal
from tests.unit.fake_crm import InMemoryCrm


@pytest.fixture
def fields(crm: InMemoryCrm) -> InMemoryCrm:
    """The portal's deal fields: the amount, an invoice number, a payment date, a delivery list, a flag."""
    crm.add_field("OPPORTUNITY", "Сумма", "number")
    crm.add_field("UF_CRM_INVOICE_NO", "Номер счёта")
    crm.add_field("UF_CRM_PAY_DATE", "Дата оплаты", "date")
    crm.add_field("UF_CRM_DELIVERY", "Способ доставки", "enum")
    crm.add_field("UF_CRM_SIGNED", "Договор подписан", "boolean")
    crm.add_field("ASSIGNED_BY_ID", "Ответственный", "link")
    return crm


def require(portal: Portal, stage: str, *codes: str) -> None:
    """An admin requires fields on a stage."""
    requirements.update_stage_requirements(portal, {stage: {"required": list(codes)}})
    db.session.commit()


def audits(deal_id: str, attempted: str = requirements.ATTEMPTED) -> list[AuditEntry]:
    db.session.expire_all()
    query = sa.select(AuditEntry).where(AuditEntry.deal_id == deal_id, AuditEntry.attempted == attempted)
    return list(db.session.scalars(query))


def test_a_move_forward_without_the_required_fields_goes_back_with_a_notice_naming_them(
    portal: Portal, fields: InMemoryCrm
) -> None:
    require(portal, "LATE", "OPPORTUNITY", "UF_CRM_INVOICE_NO")
    deal_id = seen_deal(portal, fields, stage="WORKING", title="Поставка станков")

    fields.move(deal_id, "LATE", by=MANAGER)
    event(portal, deal_id)

    assert fields.deals[deal_id].stage_id == "WORKING"
    [notice] = fields.inbox(MANAGER)
    assert "«Поставка станков» нельзя перевести на стадию «Late»" in notice
    assert "«Сумма», «Номер счёта»" in notice and fields.deal_url(deal_id) in notice
    [row] = audits(deal_id)
    assert row.outcome == "reverted" and row.details["missing"] == ["OPPORTUNITY", "UF_CRM_INVOICE_NO"]
    assert row.details["violation"] is True and row.details["stage_id"] == "LATE"


def test_with_the_fields_filled_in_the_move_stands(portal: Portal, fields: InMemoryCrm) -> None:
    require(portal, "LATE", "OPPORTUNITY", "UF_CRM_INVOICE_NO")
    deal_id = seen_deal(portal, fields, stage="WORKING")
    fields.fill(deal_id, {"OPPORTUNITY": "150000.00", "UF_CRM_INVOICE_NO": "С-118"}, by=MANAGER)
    event(portal, deal_id)

    fields.move(deal_id, "LATE", by=MANAGER)
    event(portal, deal_id)

    assert fields.deals[deal_id].stage_id == "LATE"
    assert fields.inbox(MANAGER) == [] and audits(deal_id) == []


def test_only_the_fields_still_missing_are_named(portal: Portal, fields: InMemoryCrm) -> None:
    require(portal, "LATE", "OPPORTUNITY", "UF_CRM_INVOICE_NO")
    deal_id = seen_deal(portal, fields, stage="WORKING")
    fields.fill(deal_id, {"OPPORTUNITY": "150000.00"}, by=MANAGER)

    fields.move(deal_id, "LATE", by=MANAGER)
    event(portal, deal_id)

    [notice] = fields.inbox(MANAGER)
    assert "«Номер счёта»" in notice and "«Сумма»" not in notice


@pytest.mark.parametrize(
    ("code", "empty", "filled"),
    [
        ("OPPORTUNITY", "0.00", "1.00"),
        ("OPPORTUNITY", "0|RUB", "100|RUB"),
        ("UF_CRM_INVOICE_NO", "   ", "С-118"),
        ("UF_CRM_PAY_DATE", "", "2026-12-08T00:00:00+03:00"),
        ("UF_CRM_DELIVERY", None, "41"),
        ("UF_CRM_SIGNED", "0", "1"),
        ("ASSIGNED_BY_ID", "0", "7"),
    ],
)
def test_each_kind_of_field_has_its_own_check(
    portal: Portal, fields: InMemoryCrm, code: str, empty: str | None, filled: str
) -> None:
    require(portal, "LATE", code)
    deal_id = seen_deal(portal, fields, stage="WORKING")
    fields.fill(deal_id, {code: empty}, by=MANAGER)
    fields.move(deal_id, "LATE", by=MANAGER)
    event(portal, deal_id)
    assert fields.deals[deal_id].stage_id == "WORKING", f"{code}={empty!r} counts as not filled in"

    fields.fill(deal_id, {code: filled}, by=MANAGER)
    fields.move(deal_id, "LATE", by=MANAGER)
    event(portal, deal_id)
    assert fields.deals[deal_id].stage_id == "LATE", f"{code}={filled!r} counts as filled in"


def test_a_robot_is_held_to_the_rule_and_the_responsible_is_told(portal: Portal, fields: InMemoryCrm) -> None:
    require(portal, "LATE", "UF_CRM_INVOICE_NO")
    deal_id = seen_deal(portal, fields, stage="WORKING")

    fields.move(deal_id, "LATE", by=None)
    event(portal, deal_id, automation=True)

    assert fields.deals[deal_id].stage_id == "WORKING"
    assert len(fields.inbox(MANAGER)) == 1
    assert [row.actor for row in audits(deal_id)] == ["automation"]


def test_heads_are_held_too_but_exempt_users_pass(portal: Portal, fields: InMemoryCrm) -> None:
    require(portal, "LATE", "UF_CRM_INVOICE_NO")
    deal_id = seen_deal(portal, fields, stage="WORKING")
    fields.move(deal_id, "LATE", by=HEAD)
    event(portal, deal_id)
    assert fields.deals[deal_id].stage_id == "WORKING"

    fields.move(deal_id, "LATE", by=QA)
    event(portal, deal_id)
    assert fields.deals[deal_id].stage_id == "WORKING", "QA staff too"

    configure(portal, "guard", exempt_users=[OTHER_MANAGER])
    fields.move(deal_id, "LATE", by=OTHER_MANAGER)
    event(portal, deal_id)
    assert fields.deals[deal_id].stage_id == "LATE"


def test_moves_back_and_to_another_pipeline_are_not_checked(portal: Portal, fields: InMemoryCrm) -> None:
    require_many = {"NEW": {"required": ["UF_CRM_INVOICE_NO"]}, "C5:WORKING": {"required": ["UF_CRM_INVOICE_NO"]}}
    requirements.update_stage_requirements(portal, require_many)
    db.session.commit()
    deal_id = seen_deal(portal, fields, stage="WORKING")

    fields.move(deal_id, "NEW", by=MANAGER)
    event(portal, deal_id)
    assert fields.deals[deal_id].stage_id == "NEW", "a move back passes"

    fields.move(deal_id, "C5:WORKING", by=MANAGER)
    event(portal, deal_id)
    assert fields.deals[deal_id].stage_id == "C5:WORKING", "a move to another pipeline passes"
    assert audits(deal_id) == []


def test_a_deal_created_straight_into_the_stage_is_judged_as_coming_from_the_first_stage(
    portal: Portal, fields: InMemoryCrm
) -> None:
    require(portal, "LATE", "UF_CRM_INVOICE_NO")
    imported = fields.add_deal(stage_id="LATE", responsible_id=MANAGER, title="Импорт")
    event(portal, imported.id, is_new=True)
    assert fields.deals[imported.id].stage_id == "NEW"
    assert "«Номер счёта»" in fields.inbox(MANAGER)[0]

    filled = fields.add_deal(stage_id="LATE", responsible_id=MANAGER, values={"UF_CRM_INVOICE_NO": ("С-1",)})
    event(portal, filled.id, is_new=True)
    assert fields.deals[filled.id].stage_id == "LATE"


def test_a_deal_created_before_install_stays_in_its_stage(portal: Portal, fields: InMemoryCrm) -> None:
    require(portal, "LATE", "UF_CRM_INVOICE_NO")
    old = fields.add_deal(stage_id="LATE", responsible_id=MANAGER)
    fields.deals[old.id] = replace(old, moved_at=None)  # amoCRM keeps no time of the last move
    assert old.created_at is not None
    portal.installed_at = old.created_at + timedelta(minutes=5)  # the app was installed after the deal was made
    db.session.commit()
    fields.clock += timedelta(minutes=10)
    fields.fill(old.id, {"COMMENTS": "позвонить в понедельник"}, by=MANAGER)
    event(portal, old.id)
    assert fields.deals[old.id].stage_id == "LATE" and fields.inbox(MANAGER) == []


def test_won_with_requirements_is_checked(portal: Portal, fields: InMemoryCrm) -> None:
    require(portal, "WON", "UF_CRM_SIGNED")
    deal_id = seen_deal(portal, fields, stage="LATE")
    fields.move(deal_id, "WON", by=MANAGER)
    event(portal, deal_id)
    assert fields.deals[deal_id].stage_id == "LATE"
    assert "«Договор подписан»" in fields.inbox(MANAGER)[0]


def test_the_setting_is_validated_with_a_message_per_stage(portal: Portal, fields: InMemoryCrm) -> None:
    with pytest.raises(ValidationError) as not_object:
        requirements.update_stage_requirements(portal, ["LATE"])
    assert "JSON object keyed by stage id" in str(not_object.value.messages)
    with pytest.raises(ValidationError) as bad:
        requirements.update_stage_requirements(
            portal, {"LATE": {"required": "OPPORTUNITY"}, "NEW": {"fields": []}, "WON": {"required": [""]}}
        )
    messages = bad.value.messages["stage_requirements"]  # type: ignore[call-overload,index]
    assert set(messages) == {"LATE", "NEW", "WON"}
    with pytest.raises(ValidationError) as unknown:
        requirements.update_stage_requirements(portal, {"LATE": {"required": ["UF_CRM_NOPE"]}, "NOPE": {}}, fields)
    assert "no deal field UF_CRM_NOPE" in str(unknown.value.messages)
    stored = requirements.update_stage_requirements(
        portal, {"LATE": {"required": ["OPPORTUNITY", "OPPORTUNITY"]}, "NEW": {"required": []}}, fields
    )
    assert stored == {"LATE": {"required": ["OPPORTUNITY"]}}


def test_refused_moves_are_counted_per_manager_and_stage(portal: Portal, fields: InMemoryCrm) -> None:
    require(portal, "LATE", "UF_CRM_INVOICE_NO", "OPPORTUNITY")
    for _ in range(2):
        deal_id = seen_deal(portal, fields, stage="WORKING")
        fields.move(deal_id, "LATE", by=MANAGER)
        event(portal, deal_id)
    now = utcnow()
    [row] = requirements.refusal_counts(portal.id, now - timedelta(hours=1), now + timedelta(hours=1))
    assert (row["manager_id"], row["stage_id"], row["count"]) == (MANAGER, "LATE", 2)
    assert row["fields"] == {"Номер счёта": 2, "Сумма": 2}
    assert requirements.refusal_counts(portal.id, now - timedelta(days=3), now - timedelta(days=2)) == []


def test_missing_fields_use_the_labels_and_codes_the_crm_no_longer_lists() -> None:
    deal_fields = [DealField("price", "Бюджет", "money")]
    from tests.unit.fake_crm import InMemoryCrm as Fake

    fake = Fake()
    fake.add_pipeline("1", [("10", "process")])
    deal = fake.add_deal(stage_id="10", responsible_id="2")
    missing = requirements.missing_fields(deal, ["price", "555"], deal_fields)
    assert [(f.code, f.label) for f in missing] == [("price", "Бюджет"), ("555", "555")]


# ---------------------------------------------------------------------------------------------- next step


def test_with_the_next_step_rule_a_deal_without_a_task_cannot_be_won(portal: Portal, crm: InMemoryCrm) -> None:
    configure(portal, "taskcontrol", require_task_to_advance=True)
    deal_id = seen_deal(portal, crm, stage="LATE", title="Поставка станков")

    crm.move(deal_id, "WON", by=MANAGER)
    event(portal, deal_id)

    assert crm.deals[deal_id].stage_id == "LATE"
    [notice] = crm.inbox(MANAGER)
    assert "«Поставка станков» нельзя закрыть как успешную без открытой задачи" in notice
    assert [row.outcome for row in audits(deal_id, "close as won")] == ["reverted"]

    crm.add_task(deal_id, MANAGER, title="Передать в производство", deadline=utcnow() + timedelta(days=1))
    crm.move(deal_id, "WON", by=MANAGER)
    event(portal, deal_id)
    assert crm.deals[deal_id].stage_id == "WON"


def test_the_next_step_rule_leaves_lost_to_the_guard_and_lets_heads_win(portal: Portal, crm: InMemoryCrm) -> None:
    configure(portal, "taskcontrol", require_task_to_advance=True)
    deal_id = seen_deal(portal, crm, stage="LATE")
    crm.move(deal_id, "LOSE", by=MANAGER)
    event(portal, deal_id)
    assert audits(deal_id, "close as won") == [] and audits(deal_id, "move forward") == []

    won = seen_deal(portal, crm, stage="LATE")
    crm.move(won, "WON", by=HEAD)
    event(portal, won)
    assert crm.deals[won].stage_id == "WON"


def test_without_the_rule_a_deal_is_won_without_a_task(portal: Portal, crm: InMemoryCrm) -> None:
    deal_id = seen_deal(portal, crm, stage="LATE")
    crm.move(deal_id, "WON", by=MANAGER)
    event(portal, deal_id)
    assert crm.deals[deal_id].stage_id == "WON" and crm.inbox(MANAGER) == []
