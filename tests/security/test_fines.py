"""Nobody decides an appeal of his own fine: a head of sales who was fined cannot cancel the fine himself
(403 saying whom to ask, in the portal's language); another head or a portal administrator can, and the
reports page shows the head a note instead of the cancel button on his own fine."""

from __future__ import annotations

from decimal import Decimal

import pytest
import sqlalchemy as sa
from flask import Flask

from app.core.db import db
from app.core.models import Penalty, Portal, RefusalCase
from tests.security.conftest import ADMIN, HEAD, OTHER_HEAD, headers, installed_portal


def fine_of(portal: Portal, manager_id: str) -> Penalty:
    case = RefusalCase(
        portal_id=portal.id, deal_id="801", pipeline_id="0", manager_id=manager_id, reason="price", state="leaked"
    )
    db.session.add(case)
    db.session.flush()
    fine = Penalty(
        portal_id=portal.id,
        manager_id=manager_id,
        case_id=case.id,
        deal_id=case.deal_id,
        kind=Penalty.PENALTY,
        amount=Decimal("1500"),
        currency="RUB",
        rule="portal_default",
        reason="leaked client",
        created_by="7",
    )
    db.session.add(fine)
    db.session.commit()
    return fine


def reversals(portal: Portal) -> int:
    query = sa.select(sa.func.count()).where(Penalty.portal_id == portal.id, Penalty.kind == Penalty.REVERSAL)
    return db.session.scalar(query) or 0


@pytest.mark.parametrize(
    ("language", "expected"),
    [
        ("ru", "попросите другого руководителя отдела продаж или администратора портала"),
        ("en", "ask another head of sales or the portal administrator"),
    ],
)
def test_a_head_cannot_cancel_his_own_fine(app: Flask, language: str, expected: str):
    portal = installed_portal(language=language)
    fine = fine_of(portal, HEAD)
    answer = app.test_client().post(
        f"/api/penalties/{fine.id}/appeal", json={"reason": "I disagree"}, headers=headers(portal, HEAD)
    )
    assert answer.status_code == 403
    assert answer.get_json()["error"] == "forbidden"
    assert expected in answer.get_json()["message"]
    assert reversals(portal) == 0


def test_a_head_cannot_cancel_his_own_fine_even_as_an_admin(app: Flask):
    portal = installed_portal()
    fine = fine_of(portal, HEAD)
    answer = app.test_client().post(
        f"/api/penalties/{fine.id}/appeal", json={"reason": "mine"}, headers=headers(portal, HEAD, admin=True)
    )
    assert answer.status_code == 403
    assert reversals(portal) == 0


@pytest.mark.parametrize(("decider", "admin"), [(OTHER_HEAD, False), (ADMIN, True)])
def test_a_heads_fine_is_cancelled_by_another_head_or_an_admin(app: Flask, decider: str, admin: bool):
    portal = installed_portal()
    fine = fine_of(portal, HEAD)
    answer = app.test_client().post(
        f"/api/penalties/{fine.id}/appeal", json={"reason": "QA mistake"}, headers=headers(portal, decider, admin=admin)
    )
    assert answer.status_code == 201, answer.get_data(as_text=True)
    assert reversals(portal) == 1


def test_the_reports_page_tells_the_head_whom_to_ask_instead_of_offering_the_button(app: Flask):
    portal = installed_portal()
    own = fine_of(portal, HEAD)
    page = app.test_client().get("/api/reports/view", headers=headers(portal, HEAD)).get_data(as_text=True)
    assert f'data-appeal="{own.id}"' not in page
    assert f'data-own-fine="{own.id}"' in page
    assert "попросите другого руководителя отдела продаж или администратора портала" in page
    other = app.test_client().get("/api/reports/view", headers=headers(portal, OTHER_HEAD)).get_data(as_text=True)
    assert f'data-appeal="{own.id}"' in other
