"""A pipeline created after install, against the in-memory CRM: its Conditional refusal stage is added once,
before the guard decides, by the first deal event from it or by the reconciliation."""

from __future__ import annotations

from app.core.models import Portal
from app.domain.reconcile import reconcile_portal
from tests.unit.conftest import MANAGER, event, the_case
from tests.unit.fake_crm import InMemoryCrm

NEW_PIPELINE = [("C9:NEW", "process"), ("C9:WORKING", "process"), ("C9:WON", "success"), ("C9:LOSE", "failure")]


def test_the_first_event_from_a_new_pipeline_adds_its_stage_before_the_guard_decides(
    portal: Portal, crm: InMemoryCrm
) -> None:
    crm.add_pipeline("9", NEW_PIPELINE)
    deal = crm.add_deal(stage_id="C9:WORKING", responsible_id=MANAGER)
    crm.fill_refusal(deal.id, by=MANAGER, reason="price", comment="Too expensive")
    crm.move(deal.id, "C9:LOSE", by=MANAGER)

    event(portal, deal.id)

    assert portal.settings["refusal_stages"]["9"] == "9:RC_REFUSAL"
    assert crm.deals[deal.id].stage_id == "9:RC_REFUSAL"
    case = the_case(deal.id)
    assert case is not None and case.pipeline_id == "9"
    assert [w.target for w in crm.writes if w.method == "ensure_stage"] == ["9"]

    crm.move(deal.id, "C9:WORKING", by=MANAGER)
    event(portal, deal.id)
    assert [w.target for w in crm.writes if w.method == "ensure_stage"] == ["9"], "a known pipeline is not asked again"


def test_reconciliation_adds_the_stage_of_every_unknown_pipeline_once(portal: Portal, crm: InMemoryCrm) -> None:
    crm.add_pipeline("9", NEW_PIPELINE)

    assert reconcile_portal(portal.id)["pipelines"] == 1
    assert reconcile_portal(portal.id)["pipelines"] == 0

    assert [w.target for w in crm.writes if w.method == "ensure_stage"] == ["9"]
    assert [s.id for s in crm.pipelines["9"].stages][:3] == ["C9:NEW", "C9:WORKING", "9:RC_REFUSAL"]
