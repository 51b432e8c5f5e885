"""CPL resolution order and the append-only penalty ledger."""

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
import sqlalchemy as sa
from marshmallow import ValidationError

from app.core.db import db
from app.core.models import Penalty, RefusalCase
from app.crm.port import Deal
from app.domain import penalties
from tests.helpers import make_portal


def deal(**fields) -> Deal:
    base = {
        "id": "42",
        "title": "Станки",
        "pipeline_id": "1",
        "stage_id": "C1:RC_REFUSAL",
        "stage_semantics": "process",
        "responsible_id": "2",
        "modified_by_id": "2",
        "modified_at": None,
        "source_id": "WEB",
        "currency": "RUB",
    }
    return Deal(**{**base, **fields})


def open_case(portal, deal_id: str = "42", manager: str = "2") -> RefusalCase:
    case = RefusalCase(
        portal_id=portal.id, deal_id=deal_id, pipeline_id="1", manager_id=manager, reason="price", state="leaked"
    )
    db.session.add(case)
    db.session.commit()
    return case


@pytest.fixture
def portal(app):
    row = make_portal("member-p")
    penalties.update_cpl_settings(
        row, {"currency": "RUB", "default": "500", "by_source": {"WEB": "1 200,50"}, "by_pipeline": {"1": "900"}}
    )
    db.session.commit()
    return row


def test_cpl_comes_from_the_deal_then_source_then_pipeline_then_default(portal):
    assert penalties.resolve_cpl(portal, deal(cpl=Decimal("3000"))) == penalties.Cpl(
        Decimal("3000.00"), "RUB", "deal_cpl"
    )
    assert penalties.resolve_cpl(portal, deal()) == penalties.Cpl(Decimal("1200.50"), "RUB", "source:WEB")
    assert penalties.resolve_cpl(portal, deal(source_id="CALL")).rule == "pipeline:1"
    assert penalties.resolve_cpl(portal, deal(source_id="CALL", pipeline_id="2")) == penalties.Cpl(
        Decimal("500.00"), "RUB", "portal_default"
    )


def test_bad_cpl_settings_are_refused_with_the_field(portal):
    with pytest.raises(ValidationError) as error:
        penalties.update_cpl_settings(portal, {"by_source": {"WEB": "дорого"}})
    assert "by_source" in error.value.messages


def test_a_case_is_fined_once(portal):
    case = open_case(portal)
    first = penalties.issue_penalty(portal, case, deal(), created_by="7")
    db.session.commit()
    second = penalties.issue_penalty(portal, case, deal(), created_by="7")
    db.session.commit()
    assert first.id == second.id
    assert db.session.scalar(sa.select(sa.func.count()).select_from(Penalty)) == 1
    assert penalties.balances(portal.id) == {"2": Decimal("1200.50")}


def test_an_appeal_appends_a_reversal_and_the_fine_leaves_the_totals(portal):
    fine = penalties.issue_penalty(portal, open_case(portal), deal(), created_by="7")
    other = penalties.issue_penalty(portal, open_case(portal, deal_id="43", manager="3"), deal(id="43"), created_by="7")
    db.session.commit()
    reversal = penalties.appeal(portal, fine.id, by="9", reason="Клиент подтвердил отказ")
    db.session.commit()
    rows = db.session.scalars(sa.select(Penalty).order_by(Penalty.id)).all()
    assert [(r.kind, r.amount) for r in rows] == [
        ("penalty", Decimal("1200.50")),
        ("penalty", Decimal("1200.50")),
        ("reversal", Decimal("-1200.50")),
    ]
    assert reversal.reverses_id == fine.id
    assert penalties.balances(portal.id) == {"2": Decimal("0.00"), "3": Decimal("1200.50")}
    with pytest.raises(penalties.AppealError, match="already cancelled"):
        penalties.appeal(portal, fine.id, by="9", reason="ещё раз")
    with pytest.raises(penalties.AppealError, match="only a fine"):
        penalties.appeal(portal, reversal.id, by="9", reason="x")
    assert other.amount == Decimal("1200.50")


def test_an_appeal_from_another_portal_finds_nothing(portal):
    fine = penalties.issue_penalty(portal, open_case(portal), deal(), created_by="7")
    db.session.commit()
    stranger = make_portal("member-q")
    with pytest.raises(penalties.AppealError, match="no such penalty"):
        penalties.appeal(stranger, fine.id, by="9", reason="x")


def test_balances_count_a_reversal_in_its_fines_period(portal):
    fine = penalties.issue_penalty(portal, open_case(portal), deal(), created_by="7")
    db.session.commit()
    fine_time = fine.created_at
    penalties.appeal(portal, fine.id, by="9", reason="ошибка")
    db.session.commit()
    period_start = fine_time - timedelta(minutes=1)
    assert penalties.balances(portal.id, period_start, fine_time + timedelta(minutes=1)) == {"2": Decimal("0.00")}
    later = datetime.now(UTC) + timedelta(days=1)
    assert penalties.balances(portal.id, later, later + timedelta(days=7)) == {}
